"""No host path reaches the wire: every reply and notification of a real stdio server, read by the real
mcp client, is free of the temporary directory that holds the server's home, state, cache and sources."""

from __future__ import annotations

import os
import sys
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from tests.server.conftest import ROOT, server_env
from tests.server.corpus import write_corpus

pytestmark = [pytest.mark.anyio, pytest.mark.linux_only]

TOOL_CALLS = {
    "execute_code": {"code": "result = read('src/ratelimit.py', 1, 2)"},
    "search_code": {"query": "token bucket", "k": 3},
    "lookup_code": {"grep": "bucket"},
    "index_status": {},
    "save_skill": {"name": "top", "source": "def top():\n    return 1\n", "description": "one"},
    "delete_skill": {"name": "nope"},
}
# Programs whose replies carry errors, tracebacks and refusals (each a place a path could slip in).
ERROR_PROGRAMS = (
    "result = read('../../../../etc/passwd')",
    "import os",
    "open('/etc/hostname')",
    "def f():\n    return 1 / 0\nf()",
    "result = files('/**')",
)


@asynccontextmanager
async def tapped_session(home: Path, *serve_args: str):
    """An initialized ClientSession to `serve ARGS` and the list every server->client message is dumped into."""
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(command=sys.executable, args=["-m", "server", "serve", *serve_args],
                                   cwd=str(ROOT), env=server_env(home))
    seen: list[str] = []
    with open(home.parent / f"{home.name}.server.log", "a") as log:
        async with stdio_client(params, errlog=log) as (read, write):
            to_session, session_read = anyio.create_memory_object_stream(0)

            async def tap() -> None:
                async with to_session:
                    async for item in read:
                        message = getattr(item, "message", item)
                        seen.append(message.model_dump_json() if hasattr(message, "model_dump_json") else repr(message))
                        await to_session.send(item)

            async with anyio.create_task_group() as group:
                group.start_soon(tap)
                async with ClientSession(session_read, write, read_timeout_seconds=600) as session:
                    await session.initialize()
                    yield session, seen
                group.cancel_scope.cancel()


async def _exercise(session, progress: list[str]) -> None:
    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    for name, arguments in TOOL_CALLS.items():
        await session.call_tool(name, arguments, progress_callback=on_progress)
    for code in ERROR_PROGRAMS:
        await session.call_tool("execute_code", {"code": code}, progress_callback=on_progress)
    await session.call_tool("search_code", {"query": "x", "path_glob": "/etc/**"})
    await session.call_tool("lookup_code", {"outline": "/etc/passwd"})
    for uri in ("knowledge://api", "knowledge://index"):
        try:
            await session.read_resource(uri)
        except Exception:  # noqa: BLE001 - an error reply is still checked below, through the tap
            pass


def _host_paths(home: Path) -> set[str]:
    return {str(home), os.path.realpath(home), str(home.parent), os.path.realpath(home.parent)}


def _leaks(seen: list[str], home: Path) -> list[str]:
    return [message for message in seen if any(path in message for path in _host_paths(home))]


async def test_host_paths_never_reach_the_wire_when_loading_fails(tmp_path):
    """It answers every tool and resource of a server whose root holds nothing to index without naming
    the root, home, state or cache directory (the load failure's message included)."""
    home = tmp_path / "home"
    root = home / "project"
    (root / "build").mkdir(parents=True)
    (root / "build" / "blob.bin").write_bytes(b"\x00\x01" * 64)  # nothing indexable: the load fails
    progress: list[str] = []
    async with tapped_session(home, "--root", str(root)) as (session, seen):
        await _exercise(session, progress)
        reply = await session.call_tool("execute_code", {"code": "result = 1"})
    assert reply.is_error and "could not load" in reply.content[0].text, reply
    assert len(seen) >= len(TOOL_CALLS) + len(ERROR_PROGRAMS) + 3
    assert _leaks(seen, home) == []


@pytest.mark.model
@pytest.mark.slow
async def test_host_paths_never_reach_the_wire_while_indexing_and_serving(tmp_path):
    """It reports warm-up progress while indexing a root, then answers tools, errors and resources, and
    no reply or notification names the root, home, state or cache directory."""
    home = tmp_path / "home"
    root = write_corpus(home / "project")
    progress: list[str] = []
    async with tapped_session(home, "--root", str(root)) as (session, seen):
        await _exercise(session, progress)
    assert any("warming up" in message for message in progress), progress  # notifications were checked too
    assert any('"isError":false' in message for message in seen)
    assert _leaks(seen, home) == []
