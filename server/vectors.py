"""Vectors in the background (issue 12, keyword first): embed a served root's index in a separate,
low-priority process while BM25, grep, definitions and read already answer.

Contract: `VectorBuilder.run()` loops until cancelled: whenever the index of `root` has no vectors
(and the configuration wants them) it starts `python -m server.vectors` at nice 19 (and the idle
I/O class when `ionice` exists), which runs the ordinary incremental `build_index` with vectors
(stdin: the pickled root, index directory and IndexConfig; stdout: nothing, the MCP channel is
never inherited; stderr: its log lines). The build switches the index's CURRENT version when done;
the `Refresher` then switches the fork server to it between calls, as for any rebuild. Nothing runs
in the fork server or blocks the event loop. After MAX_FAILURES failed jobs it gives up (logged:
hybrid keeps ranking with BM25 alone and index_status keeps showing the coverage).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pickle
import shutil
import sys
import time
from pathlib import Path

from index import IndexConfig, IndexStoreError, read_manifest

__all__ = ["VectorBuilder", "has_vectors"]

logger = logging.getLogger(__name__)

MAX_FAILURES = 3
NICENESS = 19


def has_vectors(index_dir: Path) -> bool:
    """True when the current version of index_dir was built with vectors (False: none, or no index)."""
    try:
        return bool((read_manifest(index_dir).get("models") or {}).get("embed"))
    except IndexStoreError:
        return False


class VectorBuilder:
    """The background vector build of one served root (see module contract)."""

    def __init__(self, root: Path, index_dir: Path, config: IndexConfig, interval_s: float) -> None:
        self._root = root
        self._index_dir = index_dir
        self._config = dataclasses.replace(config, with_vectors=True, show_progress=False)
        self._interval_s = max(interval_s, 0.2)
        self._process: asyncio.subprocess.Process | None = None
        self.state = "idle"  # idle | embedding | done | failed

    async def run(self) -> None:
        failures = 0
        try:
            while failures < MAX_FAILURES:
                if not await asyncio.to_thread(has_vectors, self._index_dir):
                    failures = 0 if await self._build_once() else failures + 1
                await asyncio.sleep(self._interval_s)
            self.state = "failed"
            logger.error("background vector build failed %d times; giving up: hybrid search keeps ranking with "
                         "BM25 alone (coverage 0), semantic search stays unavailable", MAX_FAILURES)
        finally:
            await self._stop()

    async def _build_once(self) -> bool:
        started = time.perf_counter()
        self.state = "embedding"
        logger.info("building vectors in the background (low-priority process)")
        command = [sys.executable, "-m", "server.vectors"]
        if shutil.which("nice"):
            command = ["nice", "-n", str(NICENESS), *command]  # from its first instruction (imports too)
        if shutil.which("ionice"):
            command = ["ionice", "-c", "3", *command]  # idle I/O class: disk reads of calls go first
        self._process = process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=None,
            cwd=os.getcwd(),
        )
        payload = pickle.dumps((self._root, self._index_dir, self._config))
        await process.communicate(payload)
        self._process = None
        seconds = time.perf_counter() - started
        if process.returncode == 0:
            self.state = "done"
            logger.info("background vector build done in %.1f s; switching to it between calls", seconds)
            return True
        self.state = "failed"
        logger.warning("background vector build exited with code %s after %.1f s", process.returncode, seconds)
        return False

    async def _stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(process.wait(), 10)
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()


def _main() -> int:
    if os.getpriority(os.PRIO_PROCESS, 0) < NICENESS:  # no `nice` binary: lower it here
        os.nice(NICENESS)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s vectors %(levelname)s %(message)s")
    from index import build_index

    root, index_dir, config = pickle.loads(sys.stdin.buffer.read())
    try:
        report = build_index([root], index_dir, config)
    except Exception as exc:  # noqa: BLE001 - one line for the server's log; the server retries
        print(f"background vector build failed: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    logger.info("vectors: %d embedded, %d reused, %.1f s", report.chunks_embedded, report.chunks_reused,
                report.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
