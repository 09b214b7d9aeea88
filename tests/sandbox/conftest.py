"""Shared fixtures of the sandbox tests: fork helpers, canaries and fork-server clients."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.markers import holds_model

NOBODY = 65534


def run_in_child(fn: Callable[[], Any], *, drop_root: bool = False) -> Any:
    """Run ``fn`` in a forked child and return its JSON-able result (re-raising its failure).

    drop_root: become uid/gid 65534 first (so a root test process proves the layer, not DAC).
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 0
        try:
            os.close(read_fd)
            if drop_root and os.geteuid() == 0:
                os.setgroups([])
                os.setresgid(NOBODY, NOBODY, NOBODY)
                os.setresuid(NOBODY, NOBODY, NOBODY)
            payload = {"value": fn()}
        except BaseException:  # noqa: BLE001 - report everything to the parent
            payload = {"error": traceback.format_exc()}
            status = 1
        try:
            data = json.dumps(payload).encode()
            while data:
                data = data[os.write(write_fd, data) :]
        finally:
            os._exit(status)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 65536):
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        raise AssertionError(f"child died without a result (wait status {status:#x})")
    payload = json.loads(b"".join(chunks))
    if "error" in payload:
        raise AssertionError("child failed:\n" + payload["error"])
    return payload["value"]


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A world-writable temp dir outside pytest's 0700 tree: only the layer under test may stop a write."""
    path = Path(tempfile.mkdtemp(prefix="kmcp-open-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# fork-server fixtures

CANARY_ENV = "KMCP_TEST_CANARY_SECRET"
CANARY_VALUE = "canary-3f9d1c-do-not-leak"


class SandboxHandle:
    """A started ForkServerClient driven from synchronous tests (one private event loop)."""

    def __init__(self, config, *, index_dir=None, search_config=None) -> None:
        import asyncio

        from sandbox import ForkServerClient

        self.config = config
        self.loop = asyncio.new_event_loop()
        self.client = ForkServerClient(config, index_dir=index_dir, search_config=search_config, log_level="WARNING")
        self.ready = self.loop.run_until_complete(self.client.start())
        self._counter = 0

    def request(self, source: str, *, timeout_s: float = 10.0, state: dict | None = None, mode: str | None = None):
        from sandbox import ExecRequest, PolicyConfig
        from sandbox.policy import compile_program

        policy = PolicyConfig(mode=mode) if mode else self.config.policy
        self._counter += 1
        return ExecRequest(
            request_id=f"t{self._counter}-{os.getpid()}",
            program=compile_program(source, policy).to_bytes(),
            timeout_s=timeout_s,
            memory_mb=self.config.memory_mb,
            output_cap_bytes=self.config.stdout_cap_bytes,
            state=state or {},
        )

    def run(self, source: str, **kwargs):
        return self.loop.run_until_complete(self.client.execute(self.request(source, **kwargs)))

    def gather(self, *coroutines):
        import asyncio

        async def both():
            return await asyncio.gather(*coroutines)

        return self.loop.run_until_complete(both())

    def stats(self):
        return self.loop.run_until_complete(self.client.stats())

    def settle(self, *, spares: int | None = None, timeout_s: float = 10.0):
        """Wait until no call runs (and ``spares`` idle children exist); returns the last Stats."""
        import time

        deadline = time.monotonic() + timeout_s
        while True:
            stats = self.stats()
            wanted = spares if spares is not None else self.config.spare_children
            if (stats.running == 0 and stats.queued == 0 and stats.spares == wanted) or time.monotonic() > deadline:
                return stats
            time.sleep(0.05)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


def plain_config(**overrides):
    from sandbox import PolicyConfig, SandboxConfig

    values = {"policy": PolicyConfig(mode="plain"), "memory_mb": 256, "timeout_s": 10.0, "max_workers": 2,
              "spare_children": 1, "stdout_cap_bytes": 100_000}
    values.update(overrides)
    return SandboxConfig(**values)


def _write_small_index(with_vectors: bool) -> Path:
    """A tiny real index (a retry helper, an LRU cache, a README), readable by the unprivileged uid."""
    from index import IndexConfig, build_index

    root = Path(tempfile.mkdtemp(prefix="kmcp-index-"))
    root.chmod(0o755)
    source = root / "src"
    source.mkdir()
    (source / "retry.py").write_text(
        '"""Retry helpers."""\n\n\ndef retry_with_backoff(fn, attempts=3):\n'
        '    """Call fn again after a failure, doubling the delay each time."""\n'
        '    for attempt in range(attempts):\n        try:\n            return fn()\n'
        '        except Exception:\n            pass\n'
    )
    (source / "cache.py").write_text(
        '"""An LRU cache."""\n\n\nclass LruCache:\n    """Keeps the most recently used entries."""\n\n'
        '    def get(self, key):\n        return self.entries.get(key)\n'
    )
    (source / "README.md").write_text("# Demo\n\nA demo project with a retry helper and an LRU cache.\n")
    out = root / "index"
    build_index([source], out, IndexConfig(show_progress=False, with_vectors=with_vectors))
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return out


@pytest.fixture(scope="session")
@holds_model
def small_index() -> Iterator[Path]:
    """A tiny real index with vectors, readable by the unprivileged uid. A broken index package fails
    every test that needs it (never a silent skip of security tests)."""
    out = _write_small_index(with_vectors=True)
    yield out
    shutil.rmtree(out.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def small_index_bm25() -> Iterator[Path]:
    """The same tiny index without vectors (no model opened): for tests of BM25, read, files and arguments
    that open it in process."""
    out = _write_small_index(with_vectors=False)
    yield out
    shutil.rmtree(out.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def canary_env() -> Iterator[str]:
    """A secret in the server's environment before any fork server starts."""
    os.environ[CANARY_ENV] = CANARY_VALUE
    yield CANARY_VALUE
    os.environ.pop(CANARY_ENV, None)


@pytest.fixture(scope="session")
def plain_sandbox(canary_env, small_index) -> Iterator[SandboxHandle]:
    """A fork server with both Python layers off: only rlimits, uid drop, Landlock and seccomp remain."""
    handle = SandboxHandle(plain_config(spare_children=2), index_dir=small_index)
    yield handle
    handle.close()


def child_pids_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def zombies_of(pid: int) -> list[int]:
    """Children of ``pid`` in state Z."""
    zombies = []
    for child in child_pids_of(pid):
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            zombies.append(child)
    return zombies
