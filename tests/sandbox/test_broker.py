"""The Qdrant query broker attacked from a sandbox child with only the OS layers left (policy "plain").

The fork server serves a Qdrant-backed index ("q", qdrant-client local mode) beside an in-process one
("p"); the broker (server.QueryBroker, in this test process as in the server) answers the children.
Each program finds its broker socket among its descriptors and writes raw frames to it, as someone
who read search/remote.py would; the tests check that the side effect did not happen.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path

import pytest

from sandbox import ExecRequest, ForkServerClient, PolicyConfig, SandboxConfig
from sandbox.policy import compile_program
from search import SearchConfig
from server.broker import QueryBroker
from tests.markers import holds_model
from tests.sandbox.test_memory_isolation import marker_forms, scan_memory
from tests.test_cli import ROOT, run_cli

pytestmark = [pytest.mark.linux_only, pytest.mark.model, pytest.mark.slow]

MAX_QUERIES = 6
KEY = "kmcp-broker-key-" + uuid.uuid4().hex  # built at run time: no program source holds it

# Finds the broker socket (the newest socket the child holds) and speaks its wire format raw.
PRELUDE = """
import os, json, struct, stat
def _is_sock(fd):
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False
SOCKS = [fd for fd in range(3, 1024) if _is_sock(fd)]
BROKER = max(SOCKS)
def send_raw(data):
    while data:
        data = data[os.write(BROKER, data):]
def read_exactly(n):
    out = b''
    while len(out) < n:
        try:
            chunk = os.read(BROKER, n - len(out))
        except OSError:  # reset: the broker closed with our request unread
            return None
        if not chunk:
            return None
        out += chunk
    return out
def recv():
    head = read_exactly(4)
    if head is None:
        return 'EOF'
    return json.loads(read_exactly(struct.unpack('>I', head)[0]))
def ask(obj):
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    try:
        send_raw(struct.pack('>I', len(body)) + body)
    except OSError as exc:
        return 'EPIPE ' + type(exc).__name__
    return recv()
def kind(reply):
    return reply if isinstance(reply, str) else (reply['error']['kind'] + ': ' + reply['error']['message'] if 'error' in reply else 'rows')
"""


@pytest.fixture(scope="module")
@holds_model
def served(tmp_path_factory):
    """q: search/ in Qdrant local mode (the broker's); p: docs/ in-process; a fork server over both."""
    base = tmp_path_factory.mktemp("broker")
    q, p = base / "q", base / "p"
    done = run_cli("index", "build", ROOT / "search", "--out", q, "--no-vectors", "--backend", "qdrant",
                   "--qdrant-path", base / "store", "--collection", "kq", tmp_home=base)
    assert done.returncode == 0, done.stderr
    done = run_cli("index", "build", ROOT / "docs", "--out", p, "--no-vectors", tmp_home=base)
    assert done.returncode == 0, done.stderr
    version = (q / "CURRENT").read_text().strip()
    vocab = json.loads((q / "versions" / version / "vocab.json").read_text())
    indexes = [("q", q), ("p", p)]
    config = SandboxConfig(policy=PolicyConfig(mode="plain"), max_backend_queries=MAX_QUERIES, max_workers=2)
    broker = QueryBroker(indexes, SearchConfig(), KEY, MAX_QUERIES)
    broker.open()
    loop = asyncio.new_event_loop()
    client = ForkServerClient(config, indexes=indexes, search_config=SearchConfig(), log_level="WARNING",
                              broker=broker)
    loop.run_until_complete(client.start())
    handle = {"loop": loop, "client": client, "broker": broker, "config": config, "version": version,
              "term": vocab.index("fusion"), "vocab": len(vocab), "q": q}
    yield handle
    loop.run_until_complete(client.close())
    broker.close()
    loop.close()


def _run(served, source: str, timeout_s: float = 20.0):
    request_id = uuid.uuid4().hex[:16]
    request = ExecRequest(request_id=request_id, program=compile_program(PRELUDE + source, served["config"]).to_bytes(),
                          timeout_s=timeout_s, memory_mb=served["config"].memory_mb, output_cap_bytes=100_000)
    result = served["loop"].run_until_complete(served["client"].execute(request))
    return result, served["broker"].queries_of(request_id)


def _valid(served, **override):
    return {"op": "bm25", "index": "q", "version": served["version"], "k": 5, "terms": [[served["term"], 1]],
            **override}


def test_broker_answers_through_the_api_and_the_child_holds_only_its_own_socket(served):
    """It serves bm25 on the Qdrant index through the API; the child holds exactly two sockets (its
    result socket and its own broker socket, no other spare's), and cannot pass a descriptor on it:
    sendmsg is refused by seccomp, so even a socket object cannot be made of it."""
    result, queries = _run(served, """
hits = bm25('reciprocal rank fusion', k=3, index='q')
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
sent = libc.sendmsg(BROKER, None, 0)  # any sendmsg, SCM_RIGHTS or not
errno_sendmsg = ctypes.get_errno()
try:
    import socket
    socket.socket(fileno=BROKER)
    wrapped = 'made'
except OSError as exc:
    wrapped = type(exc).__name__
result = {'hits': [[h.index, h.path] for h in hits], 'socks': len(SOCKS), 'sent': sent,
          'errno': errno_sendmsg, 'wrapped': wrapped}
""")
    assert result.outcome == "ok", result.error
    data = result.result
    assert data["hits"][0] == ["q", "fusion.py"] and {i for i, _ in data["hits"]} == {"q"}
    assert data["socks"] == 2
    assert data["sent"] == -1 and data["errno"] == 1  # EPERM
    assert data["wrapped"] == "PermissionError"
    assert queries == 1


def test_broker_refuses_hostile_requests_and_stays_in_step(served):
    """It refuses bad JSON, k=10**9, an index it does not broker (the in-process one), a made-up version,
    out-of-range term ids, a vector on a BM25 query, filter rows past the end and unknown keys, each with
    a reply saying why; a valid request after each still answers. An oversized length prefix is
    refused unread and closes the channel."""
    hostile = [
        b"{not json",
        json.dumps(_valid(served, k=10**9)).encode(),
        json.dumps(_valid(served, index="p")).encode(),
        json.dumps(_valid(served, version="../../../etc")).encode(),
        json.dumps(_valid(served, terms=[[served["vocab"] + 5, 1]])).encode(),
        json.dumps(_valid(served, vector=[0.1] * 384)).encode(),
        json.dumps(_valid(served, allow="AAAAAP///38=")).encode(),  # rows 0 and 2**31-1
        json.dumps({**_valid(served), "collection": "kq-other"}).encode(),
    ]
    refusals, follow_ups = [], []
    for body in hostile:  # one call each: every request counts against the call's query budget
        result, _ = _run(served, f"""
result = [kind(ask({body!r})), kind(ask({_valid(served)!r}))]
""")
        assert result.outcome == "ok", result.error
        refusals.append(result.result[0])
        follow_ups.append(result.result[1])
    assert all(r.startswith("refused: ") for r in refusals), refusals
    assert follow_ups == ["rows"] * len(hostile), follow_ups
    for reply, words in zip(refusals, ["JSON", "k must be", "not a served Qdrant-backed index", "no Qdrant collection",
                                        "term", "takes no vector", "filter rows", "keys"]):
        assert words in reply, (reply, words)
    result, queries = _run(served, f"""
send_raw(struct.pack('>I', 2**31 - 1) + b'x' * 1000)
result = [kind(recv()), kind(ask({_valid(served)!r}))]
""")
    assert result.outcome == "ok", result.error
    assert result.result[0].startswith("refused: request frame of 2147483647 bytes"), result.result
    assert result.result[1] == "EOF" or result.result[1].startswith("EPIPE"), result.result
    assert queries == 0


def test_broker_enforces_the_query_budget_per_call(served):
    """It answers MAX_QUERIES queries of a call, refuses the next with the budget, and closes the channel:
    the queries past the budget never reach Qdrant; the next call has a fresh budget."""
    result, queries = _run(served, f"""
result = [kind(ask({_valid(served)!r})) for _ in range({MAX_QUERIES + 4})]
""")
    assert result.outcome == "ok", result.error
    replies = result.result
    assert replies[:MAX_QUERIES] == ["rows"] * MAX_QUERIES
    assert replies[MAX_QUERIES].startswith("limit: this call used its 6 Qdrant queries")
    assert all(r == "EOF" or r.startswith("EPIPE") for r in replies[MAX_QUERIES + 1:]), replies
    assert queries == MAX_QUERIES
    again, queries = _run(served, "result = len(bm25('fusion', k=2, index='q'))")
    assert again.outcome == "ok" and again.result == 2 and queries == 1


def test_broker_api_errors_are_runtime_errors_with_the_reason(served):
    """It surfaces the budget to a program using the API as a RuntimeError that says so."""
    result, _ = _run(served, f"""
for i in range({MAX_QUERIES + 1}):
    bm25('fusion', k=2, index='q')
""")
    assert result.outcome == "runtime_error"
    assert result.error["exception"] == "RuntimeError" and "Qdrant queries" in result.error["message"]


def test_broker_closes_each_call_channel_when_the_call_ends(served):
    """It stops reading a call's socket when the call ends: requests written and left unanswered do not
    run later, and no socket is left open in the server after many such calls."""
    fds_before = len(os.listdir("/proc/self/fd"))
    counts = []
    for _ in range(8):
        result, queries = _run(served, f"""
body = json.dumps({_valid(served)!r}).encode()
frame = struct.pack('>I', len(body)) + body
send_raw(frame * 4)
result = 'left'
""")
        assert result.outcome == "ok", result.error
        counts.append(queries)
    served["loop"].run_until_complete(asyncio.sleep(0.5))
    assert all(count <= 4 for count in counts), counts
    assert sum(served["broker"].queries_of(f"x{i}") for i in range(3)) == 0
    assert len(os.listdir("/proc/self/fd")) <= fds_before + 1


def test_broker_deadline_closes_the_channel(served):
    """It answers nothing after the call's deadline: a child that waits past it finds its channel closed
    (the fork server kills it at the deadline anyway)."""
    result, _ = _run(served, """
import time
time.sleep(2.5)
result = kind(ask({'op': 'bm25'}))
""", timeout_s=2.0)
    assert result.outcome == "timeout"


@pytest.mark.skipif(os.geteuid() != 0, reason="reading another process's memory needs root")
def test_broker_key_is_nowhere_a_child_can_reach(served):
    """It keeps the Qdrant key out of the sandbox: a plain-mode program that searches its environment,
    every string in its heap and the fork server's environment finds nothing, and the key's bytes are in
    neither the fork server's memory nor a spare child's."""
    reversed_key = KEY[::-1]
    result, _ = _run(served, f"""
import gc
needle = {reversed_key!r}[::-1]
found = []
if any(needle in key or needle in value for key, value in os.environ.items()):
    found.append('os.environ')
for path in ('/proc/self/environ', '/proc/%d/environ' % os.getppid(), '/proc/%d/cmdline' % os.getppid()):
    try:
        with open(path, 'rb') as handle:
            if needle.encode() in handle.read():
                found.append(path)
    except OSError:
        pass  # not dumpable: unreadable
for obj in gc.get_objects():
    values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple, set)) else ()
    for value in values:
        if value is not needle and isinstance(value, (str, bytes)) and len(value) < 10_000_000:
            if (needle in value) if isinstance(value, str) else (needle.encode() in value):
                found.append(type(obj).__name__)
result = found
""")
    assert result.outcome == "ok", result.error
    assert result.result == []
    client = served["client"]
    stats = served["loop"].run_until_complete(client.stats())
    needles = marker_forms(KEY)
    assert scan_memory(client.pid, needles) == {}
    for pid in stats.child_pids:
        if Path(f"/proc/{pid}").exists():
            assert scan_memory(pid, needles) == {}
