"""Fork-safe onnxruntime inference, shared by the encoder (embed.py) and the cross-encoder (search/).

Contract: ``open_session`` creates a session that runs on the calling thread only (intra- and
inter-op 1): it starts no thread pool, so a fork server may hold it and every forked child runs it,
its weights shared copy-on-write. ``run_split`` spreads work over a few Python threads started and
joined within the call: ``InferenceSession.run`` is thread-safe and releases the GIL, so one shared
session uses several cores without a pool left behind for a later fork.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["open_session", "run_split"]

Item = TypeVar("Item")


def open_session(model: bytes | str) -> Any:
    """A single-threaded onnxruntime CPU session of `model` (bytes or a path); onnxruntime's own
    exceptions propagate (callers name the model and the fix)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings from onnxruntime would go to stderr on every load
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def run_split(work: Callable[[Sequence[Item]], None], items: Sequence[Item], threads: int) -> None:
    """``work(items[i::n])`` for i < n = min(threads, len(items)), each on its own thread (inline when
    n is 1), all joined before returning; the first exception of any part is raised here."""
    parts = max(1, min(threads, len(items)))
    if parts == 1:
        work(items)
        return
    failures: list[BaseException] = []

    def guarded(part: Sequence[Item]) -> None:
        try:
            work(part)
        except BaseException as exc:  # handed to the calling thread
            failures.append(exc)

    workers = [threading.Thread(target=guarded, args=(items[i::parts],)) for i in range(parts)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if failures:
        raise failures[0]
