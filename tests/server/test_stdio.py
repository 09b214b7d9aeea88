"""The stdio wire: stdout carries only JSON-RPC lines, even when user code prints."""

import json
import subprocess
import sys

import pytest

from tests.server.conftest import ROOT, PipeLines, server_env

pytestmark = [pytest.mark.linux_only, pytest.mark.model]


def _send(proc, message):
    proc.stdin.write((json.dumps(message) + "\n").encode())
    proc.stdin.flush()


def test_stdio_stdout_carries_only_jsonrpc(built_index, tmp_path):
    """It writes nothing but JSON-RPC messages on stdout, whatever the program prints."""
    from mcp_types import LATEST_PROTOCOL_VERSION

    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--index", str(built_index)], cwd=ROOT,
        env=server_env(tmp_path, KNOWLEDGE_MCP_LOG_LEVEL="DEBUG"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=open(tmp_path / "stderr.log", "wb"),
    )
    lines = PipeLines(proc.stdout)
    try:
        _send(proc, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": LATEST_PROTOCOL_VERSION, "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}}})
        lines.until_id(1)
        _send(proc, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        code = "for i in range(200):\n    print('NOT-JSON line', i)\nresult = 'done'"
        _send(proc, {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                     "params": {"name": "execute_code", "arguments": {"code": code}}})
        reply = lines.until_id(2)
        _send(proc, {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                     "params": {"name": "execute_code", "arguments": {"code": "import sys"}}})
        lines.until_id(3)
        # Not UTF-8: a lone surrogate (a JSON escape) and a raw invalid byte inside the code string.
        proc.stdin.write(b'{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"execute_code",'
                         b'"arguments":{"code":"print(\'\\ud800\')"}}}\n')
        proc.stdin.flush()
        proc.stdin.write(b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"execute_code",'
                         b'"arguments":{"code":"print(\'\xff\xfe\')"}}}\n')
        proc.stdin.flush()
        _send(proc, {"jsonrpc": "2.0", "id": 6, "method": "tools/call",
                     "params": {"name": "execute_code", "arguments": {"code": "print('still serving')"}}})
        after = lines.until_id(6)  # the SDK refuses 4 and 5 as invalid JSON; 6 is still served
        for call_id in (4, 5):  # calls 4, 5 and 6 run at once: any may answer first
            if not any(json.loads(line).get("id") == call_id for line in lines.seen):
                lines.until_id(call_id, timeout_s=120)  # raises if the reply never comes
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert reply["result"]["structuredContent"]["result"] == "done"
    by_id = {json.loads(line).get("id"): json.loads(line) for line in lines.seen}
    # The lone surrogate: answered (never dropped) with a JSON-RPC error or a validation_error; never run.
    four = by_id[4]
    assert "error" in four or (
        four["result"]["isError"] and four["result"]["structuredContent"]["outcome"] == "validation_error"
    ), four
    # Invalid UTF-8 bytes are replaced by U+FFFD at the transport: the program runs on clean text.
    assert by_id[5]["result"]["structuredContent"]["stdout"] == "\ufffd\ufffd\n"
    assert after["result"]["structuredContent"]["stdout"] == "still serving\n"
    for line in lines.seen:
        assert json.loads(line)["jsonrpc"] == "2.0"
        assert not line.startswith(b"NOT-JSON")
    assert (tmp_path / "stderr.log").stat().st_size > 0  # logs went to stderr
