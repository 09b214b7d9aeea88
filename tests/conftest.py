"""Marker enforcement: a test that loads a model must say so with `@pytest.mark.model`.

Two checks:
- Statically, a test that uses a fixture marked `@holds_model` (tests/markers.py), directly or through
  other fixtures, fails in setup without the marker: a session fixture loads its model once, so later
  users would open nothing.
- At run time, the files only a model load opens are watched (`_model_files`: the packaged
  cross-encoder, PyTorch's core library that exporting the embedding model imports). Every open of
  them by this process or any process it started (the CLI, a served MCP server, its fork server)
  between a test's setup and its teardown belongs to that test; a test without the `model` marker
  whose window saw one fails in teardown. As root this uses fanotify, which names the opening
  process, so other test runs on the same machine are ignored. Without root it falls back to
  inotify, which cannot tell processes apart: run one suite at a time.

Limit: embedding with an encoder that was exported before the test (the copy inside a built index, or
one cached in a model cache that outlives the test) opens neither file when it does not also rerank;
the fixtures that build such indexes carry `@holds_model`, so their users are caught statically.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import threading
from pathlib import Path

import pytest

_OPEN = 0x20  # FAN_OPEN == IN_OPEN
_FAN_CLOEXEC, _FAN_NONBLOCK, _FAN_MARK_ADD, _AT_FDCWD = 0x1, 0x2, 0x1, -100
_IN_NONBLOCK, _IN_CLOEXEC = 0o4000, 0o2000000
_FAN_EVENT = struct.Struct("IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid
_IN_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len


def _is_own_process(pid: int) -> bool:
    """True when `pid` is this process or one of its descendants (read now, from /proc)."""
    me = os.getpid()
    while pid > 1:
        if pid == me:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False  # gone before we looked: not attributable
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


class ModelOpenWatch:
    """Watches the model weight files; `drain()` returns those opened (by us) since the last call."""

    def __init__(self, files: list[Path]) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
        self._opened: set[Path] = set()
        self._lock = threading.Lock()
        self._wd_paths: dict[int, Path] = {}
        self._fd = libc.fanotify_init(_FAN_CLOEXEC | _FAN_NONBLOCK, os.O_RDONLY | os.O_LARGEFILE)
        self.names_processes = self._fd >= 0
        if self.names_processes:
            for path in files:
                if libc.fanotify_mark(self._fd, _FAN_MARK_ADD, _OPEN, _AT_FDCWD, os.fsencode(path)) < 0:
                    raise OSError(ctypes.get_errno(), f"cannot watch {path}")
        else:
            self._fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
            if self._fd < 0:
                raise OSError(ctypes.get_errno(), "neither fanotify nor inotify is available")
            for path in files:
                wd = libc.inotify_add_watch(self._fd, os.fsencode(path), _OPEN)
                if wd < 0:
                    raise OSError(ctypes.get_errno(), f"cannot watch {path}")
                self._wd_paths[wd] = path
        self._stop_read, self._stop_write = os.pipe()
        # A thread reads events as they come, so the opener is still alive when its ancestry is checked.
        self._thread = threading.Thread(target=self._run, name="model-open-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            ready, _, _ = select.select([self._fd, self._stop_read], [], [])
            if self._stop_read in ready:
                return
            self._read_events()

    def _read_events(self) -> None:
        with self._lock:
            while True:
                try:
                    data = os.read(self._fd, 65536)
                except BlockingIOError:
                    return
                self._opened.update(self._parse(data))

    def _parse(self, data: bytes) -> set[Path]:
        opened: set[Path] = set()
        offset = 0
        while offset < len(data):
            if self.names_processes:
                length, _vers, _, _meta, mask, event_fd, pid = _FAN_EVENT.unpack_from(data, offset)
                offset += length
                if event_fd >= 0:
                    try:
                        if mask & _OPEN and _is_own_process(pid):
                            opened.add(Path(os.readlink(f"/proc/self/fd/{event_fd}")))
                    finally:
                        os.close(event_fd)
            else:
                wd, mask, _cookie, length = _IN_EVENT.unpack_from(data, offset)
                offset += _IN_EVENT.size + length
                if mask & _OPEN and wd in self._wd_paths:
                    opened.add(self._wd_paths[wd])
        return opened

    def drain(self) -> set[Path]:
        self._read_events()
        with self._lock:
            opened, self._opened = self._opened, set()
        return opened

    def close(self) -> None:
        os.write(self._stop_write, b"x")
        self._thread.join(timeout=5)
        for fd in (self._fd, self._stop_read, self._stop_write):
            os.close(fd)


def _model_files() -> list[Path]:
    """What only loading a model opens: the packaged cross-encoder's ONNX file (every fork server that
    serves an index opens it, as does any rerank), and PyTorch's core library (imported only to export
    the embedding model to ONNX; serving and BM25-only builds never import torch). The embedding weights
    themselves are no signal: every build hashes them, vectors or not."""
    import importlib.util

    from search import resolve_rerank_model

    files = [resolve_rerank_model(None).model_file]
    torch = importlib.util.find_spec("torch")
    if torch is not None and torch.submodule_search_locations:  # without torch nothing can export
        library = Path(next(iter(torch.submodule_search_locations))) / "lib" / "libtorch_cpu.so"
        files += [library] if library.is_file() else []
    return files


_WATCH = pytest.StashKey[ModelOpenWatch]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_WATCH] = ModelOpenWatch(_model_files())


def pytest_unconfigure(config: pytest.Config) -> None:
    watch = config.stash.get(_WATCH, None)
    if watch is not None:
        watch.close()


def _model_fixtures(item: pytest.Item) -> list[str]:
    """Fixtures (direct or transitive) of `item` marked `@holds_model`."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return []
    return sorted(
        name for name, definitions in info.name2fixturedefs.items()
        if any(getattr(definition.func, "holds_model", False) for definition in definitions)
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.config.stash[_WATCH].drain()  # opens before this test are not its own
    if item.get_closest_marker("model") is None and (fixtures := _model_fixtures(item)):
        pytest.fail(f"{item.nodeid} uses the model fixture(s) {', '.join(fixtures)} but is not marked "
                    "@pytest.mark.model", pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    if call.when != "teardown" or item.get_closest_marker("model") is not None:
        return
    opened = item.config.stash[_WATCH].drain()
    if opened and report.passed:
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} loaded a model ({', '.join(sorted(p.name for p in opened))} was opened, "
                           "in this process or a process it started) but is not marked @pytest.mark.model")
