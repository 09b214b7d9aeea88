"""The stdio wire under abuse, written byte by byte where the SDK client cannot: malformed JSON-RPC,
oversized messages, a client that vanishes mid-call, stdin closed during warm-up.

Pass: the server answers malformed input per JSON-RPC 2.0 (-32700 with id null for what is not JSON,
-32600 with the request's id when it can be read, nothing for malformed notifications), keeps
serving, never spins while idle, and when its client goes away it exits and takes the fork server
and every sandbox child with it. The first tests check `server.wire` alone, without the model.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from server.wire import MAX_LINE_BYTES, check_line, oversized_verdict
from tests.reliability import procs
from tests.server.conftest import ROOT, PipeLines, server_env


def real_server_marks(test):
    """The knowledge-mcp server with its model: Linux only, slow."""
    return pytest.mark.linux_only(pytest.mark.model(pytest.mark.slow(test)))


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
        self.reader = PipeLines(self.proc.stdout)
        self.lines = self.reader.seen

    def send(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send_json(self, message: dict) -> None:
        self.send((json.dumps(message) + "\n").encode())

    def reply_to(self, request_id, timeout_s: float = 300) -> dict:
        return self.reader.until_id(request_id, timeout_s)

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


PARSE_ERROR, INVALID_REQUEST = -32700, -32600

# Each malformed line with the (id, code) of the one error reply it is owed, or None for no reply.
MALFORMED = [
    (b"not json at all\n", (None, PARSE_ERROR)),
    (b'{"jsonrpc":"2.0","id":"m1","method":\n', (None, PARSE_ERROR)),  # truncated JSON: its id is unknown
    (b"[1, 2, 3]\n", (None, INVALID_REQUEST)),  # a batch: not supported
    (b'{"jsonrpc":"1.0","id":"m2","method":"tools/list"}\n', ("m2", INVALID_REQUEST)),  # wrong protocol version
    (b'{"id":"m3"}\n', ("m3", INVALID_REQUEST)),  # no method
    (b"\xff\xfe\x00 not utf-8\n", (None, PARSE_ERROR)),
    (b"\n", None),  # a blank line is not a message
    (b'{"jsonrpc":"2.0","id":"m4","method":"tools/call","params":"not an object"}\n', ("m4", INVALID_REQUEST)),
    (b'{"jsonrpc":"2.0","method":"notifications/x","params":"not an object"}\n', None),  # a notification: no reply
    (b'{"jsonrpc":"2.0","id":"m5","result":{}}\n', None),  # a valid reply to nothing
    (b"{" * 100000 + b"\n", (None, PARSE_ERROR)),  # deep nesting for the JSON parser
    (b"[" * 100000 + b"\n", (None, PARSE_ERROR)),  # deeper than Python's recursion limit
    (b"x" * OVERSIZED_BYTES + b"\n", (None, INVALID_REQUEST)),  # an oversized line that is not JSON
]


@pytest.mark.parametrize(("line", "expected"), [case for case in MALFORMED if len(case[0]) <= MAX_LINE_BYTES])
def test_wire_check_line_answers_each_malformed_line_per_json_rpc(line, expected):
    """It owes each malformed line the JSON-RPC error (id, code) of the spec, or no reply, with a message saying what to do."""
    verdict = check_line(line)
    if expected is None:
        assert verdict.error is None
        return
    assert verdict.text is None
    assert (verdict.error.id, verdict.error.error.code) == expected
    reply = json.loads(verdict.error.model_dump_json(by_alias=True, exclude_unset=True))
    assert reply["id"] == expected[0] and reply["jsonrpc"] == "2.0"  # "id": null is written, not left out
    assert "Send one JSON-RPC 2.0 message per line" in reply["error"]["message"]
    assert len(reply["error"]["message"]) < 1000


def test_wire_check_line_names_what_was_wrong_and_passes_valid_lines_unchanged():
    """It names the broken field, keeps the request's id, and hands valid messages to the SDK as they came."""
    assert "params" in check_line(MALFORMED[7][0]).error.error.message
    assert '"jsonrpc" must be "2.0"' in check_line(MALFORMED[3][0]).error.error.message
    assert "not valid UTF-8" in check_line(MALFORMED[5][0]).error.error.message
    surrogate = check_line(b'{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"code":"\\ud800"}}\n')
    assert (surrogate.error.id, surrogate.error.error.code) == (4, INVALID_REQUEST)  # JSON, but not for the SDK
    # JSON-RPC's own example: method not a string and no id is still answered, with id null.
    assert check_line(b'{"jsonrpc": "2.0", "method": 1, "params": "bar"}').error.id is None
    for valid in (b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}\n', b'{"jsonrpc":"2.0","method":"notifications/initialized"}'):
        assert check_line(valid).text == valid.decode()


def test_wire_oversized_line_is_answered_with_the_id_when_it_comes_first():
    """It finds the top-level id in the start of an oversized line, never one nested in params, else answers null."""
    head = b'{"jsonrpc": "2.0", "id": "huge", "method": "tools/call", "params": {"arguments": {"code": "x = 1\\nx'
    assert oversized_verdict(head).error.id == "huge"
    assert oversized_verdict(b'{"jsonrpc": "2.0", "params": {"id": 3, "code": "xxxx').error.id is None
    assert oversized_verdict(b"x" * 1000).error.id is None
    assert oversized_verdict(head).error.error.code == INVALID_REQUEST


TINY_SERVER = """
import anyio
from mcp.server.mcpserver import MCPServer
from server.handshake import claimed_stdin
from server.wire import serve_stdio
tiny = MCPServer("tiny")
@tiny.tool()
def add(a: int, b: int) -> int:
    return a + b
with claimed_stdin() as source:
    anyio.run(serve_stdio, tiny, source)
"""


@pytest.mark.slow  # waits on backoff, restarts or a racing build: seconds even on an idle machine
def test_wire_serve_stdio_answers_malformed_lines_and_keeps_serving(tmp_path):
    """On a tiny server (no model): each malformed line gets its one error reply in order, and the next request its answer."""
    proc = subprocess.Popen(
        [sys.executable, "-c", TINY_SERVER], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=open(tmp_path / "stderr.log", "wb"),
    )
    requests = [
        {"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
    ]
    after = {"jsonrpc": "2.0", "id": "after", "method": "tools/call", "params": {"name": "add", "arguments": {"a": 40, "b": 2}}}
    wire = b"".join((json.dumps(r) + "\n").encode() for r in requests) + b"".join(line for line, _ in MALFORMED)
    huge = {"jsonrpc": "2.0", "id": "huge", "method": "tools/call", "params": {"name": "add", "arguments": {"a": "9" * OVERSIZED_BYTES}}}
    wire += (json.dumps(huge) + "\n" + json.dumps(after) + "\n").encode()
    replies = []
    try:
        proc.stdin.write(wire)
        proc.stdin.flush()
        while not replies or replies[-1].get("id") != "after":  # EOF before the reply would cancel it
            line = proc.stdout.readline()
            assert line, "the server closed stdout"
            replies.append(json.loads(line))
        proc.stdin.close()
        assert proc.wait(timeout=EXIT_TIMEOUT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert all(reply["jsonrpc"] == "2.0" for reply in replies)
    errors = [(reply["id"], reply["error"]["code"]) for reply in replies if "error" in reply]
    assert errors == [expected for _, expected in MALFORMED if expected] + [("huge", INVALID_REQUEST)]
    assert replies[-1] == {"jsonrpc": "2.0", "id": "after", "result": {
        "content": [{"type": "text", "text": "42"}], "isError": False, "structuredContent": {"result": 42}}}
    assert "refused a message on stdin" in (tmp_path / "stderr.log").read_text()


@real_server_marks
def test_wire_malformed_and_oversized_messages_keep_the_server_serving(built_index, tmp_path):
    """It answers malformed input per JSON-RPC 2.0 and oversized input too, answers valid requests once each, idles without spinning, and exits on EOF."""
    server = RawServer(built_index, tmp_path)
    try:
        server.initialize()
        server.execute("warm", "result = 1")
        assert server.reply_to("warm")["result"]["structuredContent"]["result"] == 1
        family = [p.pid for p in procs.descendants_of(server.proc.pid)]
        assert family, "the fork server should be running"

        for junk, _ in MALFORMED:
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

        replies = [json.loads(line) for line in server.lines]
        ids = [reply.get("id") for reply in replies]
        for request_id in ("unknown-method", "no-name", "huge", "after", "m2", "m3", "m4"):
            assert ids.count(request_id) == 1, (request_id, ids)
        assert "m5" not in ids, "a reply from the client is not answered"
        assert all(reply["jsonrpc"] == "2.0" for reply in replies)
        # Each malformed line got its one error, in the order sent (only the wire writes these).
        wire_errors = [(reply["id"], reply["error"]["code"]) for reply in replies
                       if "error" in reply and reply["id"] in (None, "m2", "m3", "m4")]
        assert wire_errors == [expected for _, expected in MALFORMED if expected]

        before = _cpu_seconds(server.proc.pid)
        time.sleep(IDLE_WINDOW_S)
        assert _cpu_seconds(server.proc.pid) - before < IDLE_CPU_BUDGET_S, "the idle server is spinning"

        server.proc.stdin.close()
        assert server.proc.wait(timeout=EXIT_TIMEOUT_S) == 0
        assert _gone(family) == []
    finally:
        server.kill()


@real_server_marks
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


@real_server_marks
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
