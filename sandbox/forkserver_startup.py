"""Start-up of the fork-server process: ``Init`` -> load the index and models once -> ``Ready`` -> loop.

Contract: ``serve(conn_fd)`` runs in the process ``forkserver_main`` starts. It reads ``Init``,
loads everything a child needs with every math library held to one thread (fork after threads is
undefined behaviour), preloads what children use after their lock-down, warms the request path,
freezes the heap out of the collector's sight, checks it is still single-threaded, forks the first
spares, answers ``Ready`` and hands over to ``forkserver.ForkServer``. A load failure is answered
with ``Ready(error=..., exit_code=...)`` and exit status 1.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from sandbox.config import MAX_TIMEOUT_S, PolicyConfig, SandboxConfig
from sandbox.errors import ForkServerError
from sandbox.forkserver import ForkServer, count_threads, read_status_kb
from sandbox.forkserver_common import IS_LINUX, NOT_LINUX_MESSAGE, SINGLE_THREAD_ENV
from sandbox.protocol import Init, Ready, read_message, write_message

__all__ = ["serve"]

log = logging.getLogger("sandbox.forkserver")

# Modules the children use without importing anything after their lock-down (Landlock may hide
# the Python install from the unprivileged uid; imports after it would fail).
PRELOAD_MODULES = (
    "sandbox.api",
    "sandbox.policy",
    "sandbox.runner",
    "traceback",
    "uuid",
    "json",
    "encodings.idna",  # socket/connect error paths import it lazily
    "onnxruntime",
)
PRELOAD_PACKAGES = ("index", "search", "sandbox")
# Run once in the fork server and once in every spare before it reports ready (see worker.py).
WARMUP_SOURCE = "print('warm up')\nresult = {'warm': [1, 2.5, 'up']}\n"
PR_SET_DUMPABLE = 4
MADV_COLLAPSE = 25  # linux/mman.h (6.1+): synchronously back a range with transparent huge pages
HUGE_PAGE_BYTES = 2 << 20


def serve(conn_fd: int) -> int:
    """Main of the fork-server process: ``Init`` -> load -> ``Ready`` -> loop. Returns an exit code."""
    conn = socket.socket(fileno=conn_fd)
    started = time.perf_counter()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_DUMPABLE, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    for key, value in SINGLE_THREAD_ENV.items():  # before any math library is imported
        os.environ[key] = value
    message = read_message(conn.fileno())
    if not isinstance(message, Init):
        logging.basicConfig(stream=sys.stderr, level=logging.INFO)
        log.error("fork server expected an init message, got %r", message)
        return 2
    logging.basicConfig(
        stream=sys.stderr, level=message.log_level, format="%(asctime)s %(levelname)s fork-server %(name)s: %(message)s"
    )
    # faiss's loader reports at INFO which CPU builds it tried ("Could not load library with AVX512
    # support"): noise to a user, so only shown at DEBUG.
    logging.getLogger("faiss").setLevel(logging.DEBUG if message.log_level == "DEBUG" else logging.WARNING)
    try:
        ctx, config = _load(message)
    except Exception as exc:  # reported to the server, which raises ForkServerError with the exit code
        log.exception("fork server start-up failed")
        write_message(
            conn.fileno(),
            Ready(
                pid=os.getpid(), load_ms=0.0, has_searcher=False, threads=count_threads(),
                error=f"{type(exc).__name__}: {exc}", exit_code=int(getattr(exc, "exit_code", 1)),
            ),
        )
        return 1
    threads = count_threads()
    # onnxruntime's import starts one idle helper thread (parked on a futex, holding no lock);
    # anything more means a math library left a pool running.
    expected = 2 if "onnxruntime" in sys.modules else 1
    if threads > expected:
        log.warning("fork server runs %d threads after loading (expected %d): a math library started a "
                    "thread pool; children must not use it", threads, expected)
    server = ForkServer(conn, ctx, config, rss_bytes=read_status_kb("VmRSS") * 1024)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.prefork()
    load_ms = (time.perf_counter() - started) * 1000
    write_message(conn.fileno(), Ready(pid=os.getpid(), load_ms=round(load_ms, 1), has_searcher=ctx.searcher is not None, threads=threads))
    log.info("fork server ready in %.0f ms (pid %d)", load_ms, os.getpid())
    server.serve()
    return 0


def _load(init: Init) -> tuple[Any, SandboxConfig]:
    from sandbox import seccomp
    from sandbox.landlock import build_read_only_ruleset
    from sandbox.policy import compile_program
    from sandbox.worker import ChildContext, run_warmup

    if not IS_LINUX:
        raise ForkServerError(NOT_LINUX_MESSAGE)
    sandbox_config = _sandbox_config_from_dict(init.sandbox)
    seccomp.load_library()
    _stop_tqdm_monitor(before_load=True)
    searcher = None
    search_config = None
    index_dirs = [directory for _, directory in _served_indexes(init)]
    if index_dirs:
        import search

        search_config = search.SearchConfig(**_search_config_args(init.search or {}))
        searcher = search.IndexSet.open(_served_indexes(init), search_config)
    _hold_math_libraries_to_one_thread()
    if searcher is not None:
        # Embed one query and score one pair now, single-threaded: children inherit the finished
        # lazy initialisation of both sessions instead of each paying for it.
        searcher.warm_before_fork()
    _stop_tqdm_monitor(before_load=False)
    token_counter = _open_token_counter(sandbox_config)
    _preload()
    ctx = ChildContext(
        searcher=searcher,
        token_counter=token_counter,
        ruleset=build_read_only_ruleset(_readable_paths(index_dirs, search_config)),
        drop_uid=sandbox_config.drop_uid,
        drop_gid=sandbox_config.drop_gid,
        memory_mb=sandbox_config.memory_mb,
        max_wall_s=max(sandbox_config.timeout_s, MAX_TIMEOUT_S),
        state_max_bytes=sandbox_config.state_max_bytes,
        cap_last_cap=_cap_last_cap(),
        warmup_program=compile_program(WARMUP_SOURCE, sandbox_config).to_bytes(),
    )
    run_warmup(ctx)  # one-time initialisation of the request path, shared by every child
    # Move everything loaded so far out of the collector's sight: a collection in a child would
    # otherwise write to every object's header and copy most of the heap (memory and time per call).
    gc.freeze()
    _collapse_to_huge_pages()
    return ctx, sandbox_config


def _collapse_to_huge_pages() -> None:
    """Back the loaded heap with 2 MB pages (MADV_COLLAPSE, Linux >= 6.1; a no-op elsewhere).

    fork() copies one page-table entry per page of private memory: with the model weights and the
    Python heap on huge pages it copies 512 times fewer, and a spare child costs ~3 ms instead of
    ~8-12 ms of this single-threaded loop. A child's later write still copies only 4 KB (the
    kernel splits a shared huge page on copy-on-write), so its private memory does not grow.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    started, collapsed = time.perf_counter(), 0
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        is_anonymous = len(fields) < 6 or fields[5] == "[heap]"
        if not is_anonymous or not fields[1].startswith("rw") or fields[1][3] != "p":
            continue
        low, high = (int(address, 16) for address in fields[0].split("-"))
        low = (low + HUGE_PAGE_BYTES - 1) & ~(HUGE_PAGE_BYTES - 1)
        high &= ~(HUGE_PAGE_BYTES - 1)
        if high > low and libc.madvise(low, high - low, MADV_COLLAPSE) == 0:
            collapsed += high - low
    log.debug("collapsed %d MB to huge pages in %.0f ms", collapsed >> 20, (time.perf_counter() - started) * 1000)


def _sandbox_config_from_dict(values: dict[str, Any]) -> SandboxConfig:
    values = dict(values)
    values["policy"] = PolicyConfig(**values.get("policy", {}))
    return SandboxConfig(**values)


def _search_config_args(values: dict[str, Any]) -> dict[str, Any]:
    # JSON turned tuples into lists; the dataclass wants its tuples back.
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _hold_math_libraries_to_one_thread() -> None:
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
        with contextlib.suppress(RuntimeError):  # only settable before the first parallel op
            torch.set_num_interop_threads(1)
    faiss = sys.modules.get("faiss")
    if faiss is not None:
        faiss.omp_set_num_threads(1)


def _stop_tqdm_monitor(*, before_load: bool) -> None:
    """tqdm starts a monitor thread on its first progress bar (model loading shows one): forbid it
    before loading, and stop one that slipped through, so the fork server stays single-threaded."""
    try:
        import tqdm
    except ImportError:
        return
    if before_load:
        tqdm.tqdm.monitor_interval = 0
        return
    monitor = getattr(tqdm.tqdm, "monitor", None)
    if monitor is not None:
        monitor.exit()
        monitor.join(timeout=5)


def _open_token_counter(config: SandboxConfig) -> Any:
    try:
        from sandbox.tokens import TokenCounter
    except ImportError:
        return None
    return TokenCounter.open(config.token_encoding)


def _preload() -> None:
    import importlib

    for name in PRELOAD_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:  # children would import it after their lock-down (or fail to)
            log.warning("preload of %s failed: %s", name, exc)
    # The packages resolve their public names on first use (PEP 562): resolve them all here, so a
    # child's first `from search import X` inside a function finds it loaded.
    for package in PRELOAD_PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            getattr(module, name)
    try:
        from sandbox.api import preload_sandbox
    except ImportError:
        return
    preload_sandbox()


def _served_indexes(init: Init) -> list[tuple[str, str]]:
    """(name, dir) of every index to serve: the named ones, or index_dir as 'default'."""
    if init.indexes:
        return [(str(name), str(directory)) for name, directory in init.indexes]
    return [] if init.index_dir is None else [("default", init.index_dir)]


def _readable_paths(index_dirs: list[str], search_config: Any) -> tuple[str, ...]:
    """Landlock read-only roots: the Python install, our packages, the index and model folders."""
    import importlib.util
    import site

    roots: list[str] = [sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages()]
    for package in ("sandbox", "search", "index"):  # located, not imported
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            roots += list(spec.submodule_search_locations)
    roots += index_dirs
    for spec in (getattr(search_config, "rerank_model", None), getattr(search_config, "embed_model", None)):
        if spec and Path(spec).is_dir():
            roots.append(spec)
    roots.append("/dev/urandom")
    unique: list[str] = []
    for root in roots:
        resolved = os.path.realpath(root)
        if resolved not in unique and os.path.exists(resolved):
            unique.append(resolved)
    return tuple(unique)


def _cap_last_cap() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 63

