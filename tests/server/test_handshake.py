"""The early `initialize` reply (server/handshake.py): the SDK's own reply, sent before the SDK loads."""

import json
import subprocess
import sys

import anyio
import mcp_types
import pytest
from mcp.shared.message import SessionMessage

from server import ServerConfig
from server.app import build_server
from server.handshake import HANDSHAKE_PROTOCOL_VERSIONS
from tests.server.conftest import ROOT, PipeLines, server_env

# Known revisions are echoed, an unknown one gets the newest. One server spawn each: the fast tier keeps one.
VERSIONS = ["2025-06-18", *(pytest.param(v, marks=pytest.mark.slow) for v in ("2024-11-05", "2099-01-01"))]


def _initialize(request_id: int, version: str) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}


def _stdio_session(tmp_path, messages: list[dict], wanted_ids: list[int]) -> tuple[dict, list[bytes]]:
    """Spawn `serve` (no index: nothing loads before a client's roots), send `messages`, and return the
    replies to `wanted_ids` and every line the server wrote until it exited."""
    process = subprocess.Popen([sys.executable, "-m", "server", "serve"], cwd=ROOT, env=server_env(tmp_path / "home"),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    lines = PipeLines(process.stdout)
    try:
        process.stdin.write(b"".join(json.dumps(message).encode() + b"\n" for message in messages))
        process.stdin.flush()
        replies = {wanted: lines.until_id(wanted, timeout_s=60) for wanted in wanted_ids}
        process.stdin.close()
        process.wait(timeout=60)
        while lines.next_line(5) not in (b"", None):
            pass
    finally:
        process.kill()
        process.wait()
    return replies, lines.seen


async def _sdk_reply(message: dict, tmp_path) -> dict:
    """What the SDK itself answers `message` with, serialised as its stdio transport writes it."""
    server = build_server(ServerConfig(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache"))
    lowlevel = server._lowlevel_server  # noqa: SLF001 - as wire.serve_stdio drives it
    send_in, receive_in = anyio.create_memory_object_stream(10)
    send_out, receive_out = anyio.create_memory_object_stream(10)
    async with anyio.create_task_group() as group:
        group.start_soon(lowlevel.run, receive_in, send_out, lowlevel.create_initialization_options())
        await send_in.send(SessionMessage(mcp_types.jsonrpc_message_adapter.validate_python(message)))
        reply = await receive_out.receive()
        group.cancel_scope.cancel()
    return json.loads(reply.message.model_dump_json(by_alias=True, exclude_unset=True))


@pytest.mark.parametrize("version", VERSIONS)
def test_handshake_early_reply_is_the_sdks_and_answered_once(tmp_path, version):
    """It answers a first `initialize` over stdio exactly as the SDK answers it (version negotiation,
    capabilities, server info, instructions), once, and the session then serves."""
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    tools = {"jsonrpc": "2.0", "id": 9, "method": "tools/list"}
    early, lines = _stdio_session(tmp_path, [_initialize(1, version), initialized, tools], [1, 9])
    assert early[1] == anyio.run(_sdk_reply, _initialize(1, version), tmp_path)
    expected = version if version in HANDSHAKE_PROTOCOL_VERSIONS else HANDSHAKE_PROTOCOL_VERSIONS[-1]
    assert early[1]["result"]["protocolVersion"] == expected
    assert sum(json.loads(line).get("id") == 1 for line in lines) == 1
    assert {tool["name"] for tool in early[9]["result"]["tools"]} >= {"execute_code", "search_code"}


@pytest.mark.slow  # a second server spawn
def test_handshake_other_first_line_goes_to_the_sdk(tmp_path):
    """It leaves a first line that is not `initialize` to the SDK, which then answers the handshake."""
    replies, _ = _stdio_session(tmp_path, [
        {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}, _initialize(1, "2025-06-18"),
    ], [1])
    assert replies[1] == anyio.run(_sdk_reply, _initialize(1, "2025-06-18"), tmp_path)


def test_handshake_versions_are_the_sdks():
    """It negotiates among the same `initialize` revisions as the installed SDK."""
    assert HANDSHAKE_PROTOCOL_VERSIONS == mcp_types.version.HANDSHAKE_PROTOCOL_VERSIONS
