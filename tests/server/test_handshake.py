"""The early `initialize` reply (server/handshake.py): the SDK's own reply, sent before the SDK loads."""

import json
import subprocess
import sys

import mcp_types
import pytest

from server.handshake import HANDSHAKE_PROTOCOL_VERSIONS
from tests.server.conftest import ROOT, PipeLines, server_env


def _initialize(request_id: int, version: str) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}


def _session(tmp_path, name: str, messages: list[dict], wanted_ids: list[int]) -> tuple[dict, list[bytes]]:
    """Spawn `serve` (no index: nothing loads before a client's roots), send `messages`, and return the
    replies to `wanted_ids` and every line the server wrote."""
    home = tmp_path / name
    process = subprocess.Popen([sys.executable, "-m", "server", "serve"], cwd=ROOT, env=server_env(home),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    lines = PipeLines(process.stdout)
    try:
        process.stdin.write(b"".join(json.dumps(message).encode() + b"\n" for message in messages))
        process.stdin.flush()
        replies = {wanted: lines.until_id(wanted, timeout_s=60) for wanted in wanted_ids}
        process.stdin.close()
        process.wait(timeout=60)
        while (line := lines.next_line(5)) not in (b"", None):
            pass
    finally:
        process.kill()
        process.wait()
    return replies, lines.seen


def _early_and_sdk_replies(tmp_path, version: str) -> tuple[dict, dict, list[bytes]]:
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    tools = {"jsonrpc": "2.0", "id": 9, "method": "tools/list"}
    early, early_lines = _session(tmp_path, "early", [_initialize(1, version), initialized, tools], [1, 9])
    # A notification first: the server's own reader hands the initialize on to the SDK, which answers.
    sdk, _ = _session(tmp_path, "sdk", [
        {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}, _initialize(1, version), initialized,
    ], [1])
    return early, sdk[1], early_lines


def test_handshake_early_reply_is_the_sdks_and_answered_once(tmp_path):
    """It answers a first `initialize` exactly as the SDK answers one that is not the first line (same
    capabilities, server info, instructions, version), once, and the session then serves."""
    early, sdk, early_lines = _early_and_sdk_replies(tmp_path, "2025-06-18")
    assert early[1] == sdk and sdk["result"]["protocolVersion"] == "2025-06-18"
    assert sum(json.loads(line).get("id") == 1 for line in early_lines) == 1
    assert {tool["name"] for tool in early[9]["result"]["tools"]} >= {"execute_code", "search_code"}


@pytest.mark.slow
def test_handshake_unknown_version_gets_the_sdks_newest(tmp_path):
    """It offers the SDK's newest `initialize` revision to a client asking for one it does not know."""
    early, sdk, _ = _early_and_sdk_replies(tmp_path, "2099-01-01")
    assert early[1] == sdk and sdk["result"]["protocolVersion"] == HANDSHAKE_PROTOCOL_VERSIONS[-1]


def test_handshake_versions_are_the_sdks():
    """It negotiates among the same `initialize` revisions as the installed SDK."""
    assert HANDSHAKE_PROTOCOL_VERSIONS == mcp_types.version.HANDSHAKE_PROTOCOL_VERSIONS
