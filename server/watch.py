"""Fresh on every save (issue 12): watch a served root with inotify and keep a per-file delta merged
over its index until a background build folds it in.

Contract: `RootWatcher(config, root, index_dir, apply, busy)`:
- `prepare()` (at start, before the fork server): compare the tree with the index's manifest by size
  and mtime, then by sha256 for the files that differ (a touched file is no change), and write the
  delta of what really changed (index/delta.py) so the first call already sees it. Nothing is
  re-chunked for an unchanged file.
- `run()` until cancelled: supervises the watcher process (server/watch_events.py: watchfiles over
  inotify, JSON lines), restarting it when it dies (state "restarting", `restarts` counted, then a
  rescan by stats for what it missed); merges each batch of events into the delta: only the files
  named are read and only a file whose text changed is chunked, a `.gitignore` edit rescans the tree
  by the walk's rules (files it now ignores are hidden, files it now allows are added), a directory
  moved or deleted takes its files with it. Events that arrive while a delta is being written wait
  and are merged in the next one (a branch switch of thousands of files is a few deltas). After each
  new delta `apply()` makes the fork server merge it before any later call starts.
- Compaction: once the tree has been quiet for `config.compact_after_s` with a non-empty delta (and
  `busy()` says no other build runs), the ordinary incremental build runs in a low-priority process
  (python -m server.vectors: nice 19, idle I/O class; vectors only if the index has them, re-embedding
  only chunks whose text changed). Its new version is switched in between calls by the Refresher,
  which then calls `base_changed()`: the delta is recomputed against it (usually to nothing).
- `describe()`: the watcher's state for index_status (state, events pending, last event time, delta
  size, restarts, last error, compaction).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import json
import logging
import os
import pickle
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from index import DeltaWriter, IndexStoreError, SourceDoc, read_manifest, read_tree_files, scan_sources

from .config import ServerConfig

__all__ = ["RootWatcher"]

logger = logging.getLogger(__name__)

EVENTS_SCRIPT = Path(__file__).with_name("watch_events.py")
RESTART_BACKOFF_S = (0.2, 1.0, 5.0)  # after the 1st, 2nd, 3rd+ death in a row
STALL_S = 15.0  # no line (heartbeats come every second) for this long: the watcher hangs; replace it
MTIME_TOLERANCE_S = 1e-3  # the manifest keeps mtimes as float seconds
NICENESS = 19
GITIGNORE = ".gitignore"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class RootWatcher:
    """The watcher, delta and compaction of one served root (see module contract)."""

    def __init__(self, config: ServerConfig, root: Path, index_dir: Path, apply: Callable[[], Awaitable[None]],
                 busy: Callable[[], bool] = lambda: False) -> None:
        self._config = config
        self.root = root
        self.index_dir = index_dir
        self._apply = apply
        self._busy = busy
        self._writer = DeltaWriter(index_dir, config.index)
        self.state = "not started"  # not started | starting | watching | restarting
        self.restarts = 0
        self.last_error: str | None = None
        self.last_event_at: str | None = None
        self.last_applied_at: str | None = None
        self._last_event_clock = 0.0
        self._pending: set[str] = set()  # root-relative paths reported, not yet merged
        self._rescan = False  # a .gitignore changed or events may have been missed
        self._base_changed = False
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set while nothing is pending or being merged
        self._idle.set()
        self._base_version: str | None = None
        self._base_files: dict[str, dict[str, Any]] = {}
        self._base_paths: list[str] = []  # sorted, for the files under a moved or deleted folder
        self._docs: dict[str, SourceDoc] = {}  # the delta: current text of files differing from the base
        self._hidden: set[str] = set()  # base paths deleted or no longer indexed
        self._written: object = None  # what the delta on disk holds (to skip identical rewrites)
        self.delta_chunks = 0
        self.compacting = False
        self.compactions = 0
        self._process: asyncio.subprocess.Process | None = None

    # ----------------------------------------------------------------- status
    def describe(self) -> dict[str, Any]:
        """The watcher part of index_status."""
        return {
            "state": self.state,
            "events_pending": len(self._pending),
            "last_event_at": self.last_event_at,
            "last_applied_at": self.last_applied_at,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "delta_files": len(self._docs),
            "delta_chunks": self.delta_chunks,
            "delta_hidden": len(self._hidden),
            "compacting": self.compacting,
            "compactions": self.compactions,
            # How the served view differs from the base's counts (stripped from the status entry).
            "files_change": sum(1 for p in self._docs if p not in self._base_files) - len(self._hidden),
            "chunks_change": self.delta_chunks - self.delta_shape[0],
        }

    @property
    def delta_shape(self) -> tuple[int, int]:
        """(chunks the base hides, chunks the delta adds): for the served vector coverage."""
        hidden = {*self._hidden, *self._docs}
        hidden_chunks = sum(int(self._base_files[p].get("chunks") or 0) for p in hidden if p in self._base_files)
        return hidden_chunks, self.delta_chunks

    async def settled(self) -> None:
        """Wait until every event reported so far is merged and applied (tests, benchmarks)."""
        while self._pending or not self._idle.is_set():
            await asyncio.sleep(0.05)

    # ----------------------------------------------------------------- start
    async def prepare(self) -> None:
        """Before the fork server starts: the delta of what changed while nothing watched."""
        await asyncio.to_thread(self._load_base)
        await asyncio.to_thread(self._merge, set(), True)

    def base_changed(self) -> None:
        """A new index version is served (compaction, the background vector build): recompute the delta."""
        self._base_changed = True
        self._idle.clear()
        self._wake.set()

    # ----------------------------------------------------------------- loops
    async def run(self) -> None:
        """Watch, merge and compact until cancelled."""
        tasks = [asyncio.create_task(self._watch(), name="watch"), asyncio.create_task(self._merge_loop(), name="merge"),
                 asyncio.create_task(self._compact_loop(), name="compact")]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # re-raise: the runtime reports the watcher dead and restarts it
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            await self._stop_process()

    async def _watch(self) -> None:
        """Run the watcher process; when it dies, say so, start another and rescan."""
        failures = 0
        while True:
            self.state = "starting" if self.restarts == 0 else "restarting"
            started = time.monotonic()
            problem = await self._watch_once()
            self.last_error = problem
            if time.monotonic() - started > 60:
                failures = 0
            failures += 1
            self.restarts += 1
            self.state = "restarting"
            logger.warning("the file watcher stopped (%s); restarting it, then rescanning the tree", problem)
            await asyncio.sleep(RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S)) - 1])

    async def _watch_once(self) -> str:
        """One watcher process's life: read its lines until it ends; returns why it ended."""
        process = self._process = await asyncio.create_subprocess_exec(
            sys.executable, str(EVENTS_SCRIPT), str(self.root), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=None, limit=1 << 24,
        )
        first = True
        try:
            while True:
                try:
                    line = await asyncio.wait_for(process.stdout.readline(), STALL_S)
                except asyncio.TimeoutError:
                    return f"no heartbeat for {STALL_S:.0f} s"
                if not line:
                    code = await process.wait()
                    return f"the watcher process exited with code {code}"
                changes = json.loads(line).get("changes") or []
                if first:  # the watches are in place: what changed before them is found by a rescan
                    first = False
                    self.state = "watching"
                    self._rescan = True  # changes made while the watches were being set up
                    self._idle.clear()
                    self._wake.set()
                if changes:
                    self._on_changes(changes)
        finally:
            await self._stop_process()

    def _on_changes(self, changes: list[list[str]]) -> None:
        root = str(self.root) + os.sep
        for _kind, path in changes:
            if not path.startswith(root):
                continue
            rel = path[len(root):].replace(os.sep, "/")
            if rel == GITIGNORE or rel.endswith("/" + GITIGNORE):
                self._rescan = True
            self._pending.add(rel)
        self.last_event_at = _now()
        self._last_event_clock = time.monotonic()
        self._idle.clear()
        self._wake.set()

    async def _merge_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, set()
            rescan, self._rescan = self._rescan, False
            reload, self._base_changed = self._base_changed, False
            try:
                if reload:
                    await asyncio.to_thread(self._load_base)
                changed = await asyncio.to_thread(self._merge, batch, rescan or reload)
                if changed:
                    await self._apply()
                    self.last_applied_at = _now()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep the paths: the next event retries them
                self._pending |= batch
                self._rescan |= rescan
                self._base_changed |= reload
                self._wake.set()  # retried after the pause below, even if no other event comes
                self.last_error = f"merging changes failed: {' '.join(str(exc).split())}"
                logger.warning("%s; retrying at the next change", self.last_error)
                logger.debug("traceback", exc_info=True)
                await asyncio.sleep(1.0)
            if not self._pending and not self._rescan and not self._base_changed:
                self._idle.set()

    # ----------------------------------------------------------------- the delta
    def _load_base(self) -> None:
        """The served version's manifest: which files (size, mtime, sha256) the base holds."""
        try:
            manifest = read_manifest(self.index_dir)
        except IndexStoreError:
            manifest = {}
        self._base_version = manifest.get("built_at")
        self._base_files = dict(manifest.get("files") or {})
        self._base_paths = sorted(self._base_files)

    def _merge(self, batch: set[str], rescan: bool) -> bool:
        """Fold reported paths (or a whole rescan) into the delta; write it if it changed. True then."""
        paths = set(batch)
        if rescan:
            paths |= self._changed_by_stats()
            paths |= set(self._docs) | self._hidden
        else:
            paths |= self._expand_folders(batch)
        if paths:
            self._update(paths)
        signature = (self._base_version, tuple(sorted((p, d.sha256) for p, d in self._docs.items())),
                     tuple(sorted(self._hidden)))
        if signature == self._written:
            return False
        self._writer.write(list(self._docs.values()), set(self._hidden), self._base_version, self.root)
        self.delta_chunks = self._writer.chunks
        self._written = signature
        logger.info("delta: %d changed files (%d chunks), %d hidden; %d files chunked so far", len(self._docs),
                    self.delta_chunks, len(self._hidden), self._writer.chunked)
        return True

    def _changed_by_stats(self) -> set[str]:
        """Paths whose size or mtime differ from the base (or that appeared or went), by the walk's
        path rules: no file is read here."""
        found = {}
        for item in scan_sources([self.root], self._config.index):
            found[item.rel] = item
        changed = set(self._base_files) - set(found)
        for rel, item in found.items():
            info = self._base_files.get(rel)
            if (info is None or info.get("size") != item.size
                    or abs(float(info.get("mtime") or 0.0) - item.mtime_ns / 1e9) > MTIME_TOLERANCE_S):
                changed.add(rel)
        return changed

    def _expand_folders(self, batch: Iterable[str]) -> set[str]:
        """Files under reported folders: a folder moved in (its files exist now) or away (its indexed
        files are gone; inotify may name only the folder)."""
        extra: set[str] = set()
        for rel in batch:
            path = self.root / rel
            if path.is_dir() and not path.is_symlink():
                for dirpath, dirnames, filenames in os.walk(path):
                    dirnames[:] = [d for d in dirnames if d not in {".git", "node_modules", ".venv", "__pycache__"}]
                    base = Path(dirpath).relative_to(self.root).as_posix()
                    extra.update(f"{base}/{name}" for name in filenames)
            prefix = rel + "/"
            start = bisect.bisect_left(self._base_paths, prefix)
            for known in self._base_paths[start:]:
                if not known.startswith(prefix):
                    break
                extra.add(known)
            extra.update(p for p in self._docs if p.startswith(prefix))
        return extra

    def _update(self, paths: set[str]) -> None:
        """Read `paths` by the walk's rules and set each one's place: in the delta (text differs from
        the base), hidden (the base has it, the tree no longer does), or nothing (same as the base)."""
        docs, skipped = read_tree_files(self.root, paths, self._config.index)
        for doc in docs:
            base = self._base_files.get(doc.path)
            self._hidden.discard(doc.path)
            if base is not None and base.get("sha256") == doc.sha256:
                self._docs.pop(doc.path, None)  # back to the indexed text (or only touched)
            else:
                self._docs[doc.path] = doc
        for rel in skipped:
            self._docs.pop(rel, None)
            if rel in self._base_files:
                self._hidden.add(rel)
            else:
                self._hidden.discard(rel)

    # ----------------------------------------------------------------- compaction
    async def _compact_loop(self) -> None:
        quiet = max(self._config.compact_after_s, 0.5)
        while True:
            await asyncio.sleep(min(quiet, 5.0))
            if not (self._docs or self._hidden) or self.compacting or self._busy() or self._pending:
                continue
            if time.monotonic() - self._last_event_clock < quiet:
                continue
            if not self._idle.is_set():
                continue
            await self._compact()

    async def _compact(self) -> None:
        from .vectors import has_vectors

        self.compacting = True
        started = time.perf_counter()
        try:
            with_vectors = self._config.index.with_vectors and await asyncio.to_thread(has_vectors, self.index_dir)
            config = dataclasses.replace(self._config.index, with_vectors=with_vectors, show_progress=False)
            command = [sys.executable, "-m", "server.vectors"]
            if shutil.which("nice"):
                command = ["nice", "-n", str(NICENESS), *command]
            if shutil.which("ionice"):
                command = ["ionice", "-c", "3", *command]
            logger.info("compacting: folding %d changed files into a new index version (low-priority process)",
                        len(self._docs) + len(self._hidden))
            process = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=None,
                cwd=os.getcwd(),
            )
            try:
                await process.communicate(pickle.dumps((self.root, self.index_dir, config)))
            except asyncio.CancelledError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
                raise
            if process.returncode == 0:
                self.compactions += 1
                logger.info("compaction done in %.1f s; switching to it between calls", time.perf_counter() - started)
            else:
                logger.warning("compaction exited with code %s; the delta keeps serving the changes",
                               process.returncode)
                self._last_event_clock = time.monotonic()  # retry after another quiet period
        finally:
            self.compacting = False

    async def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            with contextlib.suppress(Exception):
                await process.wait()

    @property
    def process_pid(self) -> int | None:
        """The watcher process's pid while it runs."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None
