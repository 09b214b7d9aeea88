"""The stdio wire under abuse, written byte by byte where the SDK client cannot: malformed JSON-RPC,
oversized messages, a client that vanishes mid-call, stdin closed during warm-up.

Pass: the server answers what it can, keeps serving, never spins while idle, and when its client
goes away it exits and takes the fork server and every sandbox child with it.
"""

import json
import os
import select
import subprocess
import sys
import time

import pytest

from tests.reliability import procs
from tests.server.conftest import ROOT, server_env

pytestmark = [pytest.mark.linux_only, pytest.mark.model, pytest.mark.slow]

IDLE_WINDOW_S = 3.0
IDLE_CPU_BUDGET_S = 0.3  # a spinning loop would burn ~IDLE_WINDOW_S
EXIT_TIMEOUT_S = 30.0
OVERSIZED_BYTES = 16 * 1024 * 1024


class RawServer:
    """`knowledge-mcp serve` on raw pipes: write any bytes, read JSON-RPC lines."""

    def __init__(self, index_dir, home):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--index", str(index_dir)], cwd=ROOT,
            env=server_env(home, KNOWLEDGE_MCP_LOG_LEVEL="WARNING"),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(home / "stderr.log", "wb"),
        )
        self.lines = []

    def send(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send_json(self, message: dict) -> None:
        self.send((json.dumps(message) + "\n").encode())

    def read_line(self, timeout_s: float) -> bytes | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        if line:
            self.lines.append(line)
        return line

    def reply_to(self, request_id, timeout_s: float = 300) -> dict:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            line = self.read_line(1.0)
            if line == b"":
                raise AssertionError("the server closed stdout")
            if line and json.loads(line).get("id") == request_id:
                return json.loads(line)
        raise AssertionError(f"no reply to request {request_id}")

    def initialize(self) -> None:
        from mcp_types import LATEST_PROTOCOL_VERSION

        self.send_json({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
            "protocolVersion": LATEST_PROTOCOL_VERSION, "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}})
        assert "result" in self.reply_to("init")
        self.send_json({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def execute(self, request_id, code: str, timeout_s: float = 30) -> None:
        self.send_json({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                        "params": {"name": "execute_code", "arguments": {"code": code, "timeout_s": timeout_s}}})

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _cpu_seconds(pid: int) -> float:
    info = procs.read_proc(pid)
    assert info is not None, "the server exited"
    return info.cpu_seconds


def _gone(pids) -> list[procs.ProcInfo]:
    """Those of `pids` still alive (not zombies), after a bounded wait."""
    return procs.wait_for(
        lambda: [p for p in map(procs.read_proc, pids) if p is not None and p.state != "Z"], lambda alive: not alive,
        EXIT_TIMEOUT_S,
    )


MALFORMED = [
    b"not json at all\n",
    b'{"jsonrpc":"2.0","id":"m1","method":\n',  # truncated JSON
    b"[1, 2, 3]\n",
    b'{"jsonrpc":"1.0","id":"m2","method":"tools/list"}\n',  # wrong protocol version
    b'{"id":"m3"}\n',
    b"\xff\xfe\x00 not utf-8\n",
    b"\n",
    b'{"jsonrpc":"2.0","id":"m4","method":"tools/call","params":"not an object"}\n',
    b'{"jsonrpc":"2.0","id":"m5","result":{}}\n',  # a reply to nothing
    b"{" * 100000 + b"\n",  # deep nesting for the JSON parser
    b"x" * OVERSIZED_BYTES + b"\n",  # an oversized line that is not JSON
]


def test_wire_malformed_and_oversized_messages_keep_the_server_serving(built_index, tmp_path):
    """It survives malformed and oversized input, answers valid requests once each, idles without spinning, and exits on EOF."""
    server = RawServer(built_index, tmp_path)
    try:
        server.initialize()
        server.execute("warm", "result = 1")
        assert server.reply_to("warm")["result"]["structuredContent"]["result"] == 1
        family = [p.pid for p in procs.descendants_of(server.proc.pid)]
        assert family, "the fork server should be running"

        for junk in MALFORMED:
            server.send(junk)
        # Valid JSON-RPC with bad contents: each gets exactly one reply.
        server.send_json({"jsonrpc": "2.0", "id": "unknown-method", "method": "no/such/method"})
        server.send_json({"jsonrpc": "2.0", "id": "no-name", "method": "tools/call", "params": {"arguments": {}}})
        huge_code = "x = 1\n" * (OVERSIZED_BYTES // 6)
        server.send_json({"jsonrpc": "2.0", "id": "huge", "method": "tools/call",
                          "params": {"name": "execute_code", "arguments": {"code": huge_code}}})
        server.execute("after", "result = 40 + 2")

        assert "error" in server.reply_to("unknown-method")
        no_name = server.reply_to("no-name")
        assert "error" in no_name or no_name["result"]["isError"] is True
        huge = server.reply_to("huge")
        assert "error" in huge or huge["result"]["isError"] is True
        assert len(json.dumps(huge)) < 10_000, "the refusal must not echo the oversized program"
        assert server.reply_to("after")["result"]["structuredContent"]["result"] == 42

        ids = [json.loads(line).get("id") for line in server.lines]
        for request_id in ("unknown-method", "no-name", "huge", "after"):
            assert ids.count(request_id) == 1, (request_id, ids)
        assert all(json.loads(line)["jsonrpc"] == "2.0" for line in server.lines)

        before = _cpu_seconds(server.proc.pid)
        time.sleep(IDLE_WINDOW_S)
        assert _cpu_seconds(server.proc.pid) - before < IDLE_CPU_BUDGET_S, "the idle server is spinning"

        server.proc.stdin.close()
        assert server.proc.wait(timeout=EXIT_TIMEOUT_S) == 0
        assert _gone(family) == []
    finally:
        server.kill()


def test_wire_client_vanishing_mid_call_takes_every_child_down(built_index, tmp_path):
    """It exits when the client disappears during a running call, and no fork server or child survives it."""
    server = RawServer(built_index, tmp_path)
    try:
        server.initialize()
        server.execute("warm", "result = 1")
        server.reply_to("warm")
        server.execute("spin", "while True:\n    pass", timeout_s=120)
        fork_server = procs.fork_server_of(server.proc.pid)
        running = procs.wait_for(
            lambda: [c for c in procs.children_of(fork_server.pid) if c.state == "R" and c.cpu_seconds > 1.0],
            bool, 30.0, 0.05,
        )
        assert running, "the program never started"
        family = [p.pid for p in procs.descendants_of(server.proc.pid)]

        server.proc.stdin.close()  # the client is gone: both of its pipe ends close
        server.proc.stdout.close()

        server.proc.wait(timeout=EXIT_TIMEOUT_S)
        leftover = _gone(family)
        for process in leftover:  # never leave a spinning program on the machine
            os.kill(process.pid, 9)
        assert leftover == []
    finally:
        server.kill()


def test_wire_stdin_closed_during_warm_up_leaves_nothing_behind(built_index, tmp_path):
    """It exits cleanly when stdin closes while the fork server is still loading, and no process is left."""
    server = RawServer(built_index, tmp_path)
    try:
        server.initialize()
        server.execute("early", "result = 1")  # waits for warm-up inside the server
        family = procs.wait_for(lambda: procs.descendants_of(server.proc.pid), bool, 30.0, 0.05)
        server.proc.stdin.close()
        assert server.proc.wait(timeout=EXIT_TIMEOUT_S + 60) == 0  # may finish loading first
        assert _gone([p.pid for p in family]) == []
    finally:
        server.kill()
