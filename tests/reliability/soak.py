"""The soak driver shared by tests/reliability/test_soak.py and benchmarks/bench_reliability_soak.py.

A real `knowledge-mcp serve` is spawned over stdio and driven by the mcp SDK client; between the two,
`counted_session` counts every JSON-RPC request the client sends and every reply the server sends
back, so "exactly one reply per call" is checked on the wire, not inferred. The call plan mixes
normal programs (each with its exact expected answer) and hostile ones (each with the outcome the
contract, ../shared/INTERFACES.md, gives it) about 4 to 1.
"""

from __future__ import annotations

import collections
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from tests.reliability import procs
from tests.server.conftest import ROOT, server_env

HOSTILE_EVERY = 5  # every 5th call is hostile: 20%
CLIENT_READ_TIMEOUT_S = 300.0

Check = Callable[[dict[str, Any]], str | None]


@dataclass(frozen=True, slots=True)
class Call:
    """One tool call of the plan and how to judge its reply."""

    kind: str
    is_hostile: bool
    tool: str
    arguments: dict[str, Any]
    check: Check


@dataclass(slots=True)
class Outcome:
    call: Call
    structured: dict[str, Any] | None
    is_error: bool
    problem: str | None
    seconds: float


@dataclass(slots=True)
class Connection:
    """An initialized client session plus what the wire carried and who serves it."""

    session: Any  # mcp.client.session.ClientSession
    server_pid: int
    sent_request_ids: collections.Counter = field(default_factory=collections.Counter)
    reply_ids: collections.Counter = field(default_factory=collections.Counter)

    def wire_problems(self) -> list[str]:
        """Requests without exactly one reply, and replies to requests never sent."""
        problems = [f"request {rid} got {self.reply_ids[rid]} replies" for rid in self.sent_request_ids if self.reply_ids[rid] != 1]
        problems += [f"reply to unknown request {rid}" for rid in self.reply_ids if rid not in self.sent_request_ids]
        problems += [f"request id {rid} sent {n} times" for rid, n in self.sent_request_ids.items() if n != 1]
        return problems


@asynccontextmanager
async def counted_session(
    command: str,
    args: list[str],
    *,
    env: dict[str, str],
    log_path: Path,
    cwd: Path = ROOT,
) -> AsyncIterator[Connection]:
    """Spawn `command args` as an MCP stdio server, initialize, and count requests and replies."""
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client
    from mcp.shared.message import SessionMessage
    from mcp_types import JSONRPCError, JSONRPCRequest, JSONRPCResponse

    params = StdioServerParameters(command=command, args=args, cwd=str(cwd), env=env)
    before = procs.own_children()
    with open(log_path, "a") as log:
        async with stdio_client(params, errlog=log) as (read, write):
            conn = Connection(session=None, server_pid=procs.new_server_pid(before))
            to_session, session_read = anyio.create_memory_object_stream(0)
            session_write, from_session = anyio.create_memory_object_stream(0)

            async def inbound() -> None:
                async with to_session:
                    async for item in read:
                        if isinstance(item, SessionMessage) and isinstance(item.message, (JSONRPCResponse, JSONRPCError)):
                            conn.reply_ids[item.message.id] += 1
                        await to_session.send(item)

            async def outbound() -> None:
                async with from_session:
                    async for item in from_session:
                        if isinstance(item.message, JSONRPCRequest):
                            conn.sent_request_ids[item.message.id] += 1
                        await write.send(item)

            async with anyio.create_task_group() as group:
                group.start_soon(inbound)
                group.start_soon(outbound)
                async with ClientSession(session_read, session_write, read_timeout_seconds=CLIENT_READ_TIMEOUT_S) as session:
                    await session.initialize()
                    conn.session = session
                    yield conn
                group.cancel_scope.cancel()


def serve_command(*serve_args: str) -> tuple[str, list[str]]:
    return sys.executable, ["-m", "server", "serve", *serve_args]


# --------------------------------------------------------------------------- the call plan


def expect_result(expected: Any) -> Check:
    def check(data: dict[str, Any]) -> str | None:
        if data.get("outcome") != "ok":
            return f"outcome {data.get('outcome')} ({(data.get('error') or {}).get('message')}), expected ok"
        if data.get("result") != expected:
            return f"result {data.get('result')!r}, expected {expected!r}"
        return None

    return check


def expect_ok_where(predicate: Callable[[dict[str, Any]], bool], what: str) -> Check:
    def check(data: dict[str, Any]) -> str | None:
        if data.get("outcome") != "ok":
            return f"outcome {data.get('outcome')} ({(data.get('error') or {}).get('message')}), expected ok"
        return None if predicate(data) else f"{what}: got {data!r:.300}"

    return check


def expect_outcome(*allowed: str, exception: str | None = None) -> Check:
    def check(data: dict[str, Any]) -> str | None:
        if data.get("outcome") not in allowed:
            return f"outcome {data.get('outcome')} ({(data.get('error') or {}).get('message')}), expected one of {allowed}"
        if data["outcome"] == "runtime_error" and exception and (data.get("error") or {}).get("exception") != exception:
            return f"exception {(data.get('error') or {}).get('exception')}, expected {exception}"
        return None

    return check


def execute_call(kind: str, code: str, check: Check, *, is_hostile: bool = False, timeout_s: float = 30, max_output_tokens: int = 2000) -> Call:
    arguments = {"code": code, "timeout_s": timeout_s, "max_output_tokens": max_output_tokens}
    return Call(kind, is_hostile, "execute_code", arguments, check)


def normal_call(i: int) -> Call:
    """A well-behaved call whose exact answer is known (the corpus of tests/server/corpus.py)."""
    kinds = (
        lambda: execute_call("arith", f"result = sum(range({1000 + i}))", expect_result(sum(range(1000 + i)))),
        lambda: execute_call("print", f"print('call', {i})", expect_ok_where(lambda d: d["stdout"] == f"call {i}\n", "stdout")),
        lambda: execute_call(
            "bm25", "result = [h.path for h in bm25('token bucket capacity refill rate', k=3)]",
            expect_ok_where(lambda d: d["result"][0] == "src/ratelimit.py", "first bm25 hit"),
        ),
        lambda: execute_call(
            "search_rerank",
            "hits = search('how are passwords hashed and verified', k=5)\n"
            "result = [h.path for h in rerank('password hashing', hits, k=2)]",
            expect_ok_where(lambda d: d["result"][0] == "src/auth.py", "first reranked hit"),
        ),
        lambda: execute_call(
            "read", "result = read('config/settings.yaml', 3, 3)",
            expect_ok_where(lambda d: "retry_limit: 5" in d["result"], "line 3 of settings.yaml"),
        ),
        lambda: execute_call(
            "files", "result = files('src/*.py')", expect_result(["src/auth.py", "src/cache.py", "src/ratelimit.py"])
        ),
        lambda: execute_call(
            "compact", "result = count_tokens(compact(bm25('retry limit circuit breaker', k=3), max_tokens=80))",
            expect_ok_where(lambda d: 0 < d["result"] <= 80, "compact within budget"),
        ),
        lambda: Call(
            "search_code", False, "search_code",
            {"query": "password hashing", "k": 3, "mode": "bm25", "rerank": False},
            expect_ok_where(lambda d: d["hits"][0]["path"] == "src/auth.py", "first search_code hit"),
        ),
    )
    return kinds[i % len(kinds)]()


def hostile_call(i: int) -> Call:
    """An attack with the outcome the contract gives it (programs from the sandbox's own tests)."""
    kinds = (
        lambda: execute_call("spin", "while True:\n    pass", expect_outcome("timeout"), is_hostile=True, timeout_s=1),
        # Stuck inside one C call: no bytecode boundary, so only a SIGKILL from outside stops it.
        lambda: execute_call("c_loop", "x = 10 ** 10 ** 8", expect_outcome("timeout"), is_hostile=True, timeout_s=1),
        lambda: execute_call("memory_bomb", "x = bytes(10 ** 9)", expect_outcome("memory_limit"), is_hostile=True),
        lambda: execute_call(
            "memory_creep", "x = []\nwhile True:\n    x.append(' ' * 10 ** 7)", expect_outcome("memory_limit"), is_hostile=True
        ),
        lambda: execute_call(
            "output_flood", "print('x' * 3000000)\nresult = 'x' * 500000",
            lambda d: None if d.get("outcome") == "ok" and d.get("truncated") is True else f"flood not truncated: {d!r:.200}",
            is_hostile=True, max_output_tokens=500,
        ),
        # Deep C recursion: a clean RecursionError, or at worst a crashed child; never the server.
        lambda: execute_call(
            "c_recursion_repr", "x = []\nfor i in range(50000):\n    x = [x]\nresult = len(repr(x))",
            expect_outcome("runtime_error", "crashed", exception="RecursionError"), is_hostile=True,
        ),
        lambda: execute_call(
            "c_recursion_json", "import json\nresult = json.loads('[' * 200000 + ']' * 200000)",
            expect_outcome("runtime_error", "crashed", exception="RecursionError"), is_hostile=True,
        ),
        # Attempts to poison what later programs see.
        lambda: execute_call("poison_module", "import json\njson.loads = None", expect_outcome("runtime_error", exception="TypeError"), is_hostile=True),
        lambda: execute_call("poison_api", "search.k = 1", expect_outcome("runtime_error", exception="TypeError"), is_hostile=True),
        lambda: execute_call(
            "poison_hit", "h = bm25('token bucket', k=1)[0]\nh.path = 'evil.py'", expect_outcome("runtime_error", exception="TypeError"),
            is_hostile=True,
        ),
        # Network and files: refused by validation (the OS layers are tested alone in tests/sandbox/).
        lambda: execute_call(
            "network", "import socket\nsocket.create_connection(('127.0.0.1', 9))", expect_outcome("validation_error"), is_hostile=True
        ),
        lambda: execute_call(
            "read_outside", "result = read('../../../../etc/passwd')", expect_outcome("runtime_error", exception="LookupError"),
            is_hostile=True,
        ),
    )
    return kinds[i % len(kinds)]()


def build_plan(n_calls: int, offset: int = 0) -> list[Call]:
    """`n_calls` calls, every HOSTILE_EVERY-th hostile, kinds cycling so each appears regularly."""
    plan = []
    for i in range(offset, offset + n_calls):
        if i % HOSTILE_EVERY == HOSTILE_EVERY - 1:
            plan.append(hostile_call(i // HOSTILE_EVERY))
        else:
            plan.append(normal_call(i))
    return plan


# Run after the soak: nothing a hostile program did may show in a later program.
UNPOISONED_PROGRAM = (
    "import json\n"
    "h = bm25('token bucket capacity', k=1)[0]\n"
    "result = [json.loads('[1, 2]'), h.path, files('config/*'), read('config/settings.yaml', 1, 1).strip(), "
    "count_tokens('hello world')]\n"
)
UNPOISONED_RESULT = [[1, 2], "src/ratelimit.py", ["config/settings.yaml"], "service:", 2]


def unpoisoned_call() -> Call:
    return execute_call("unpoisoned", UNPOISONED_PROGRAM, expect_result(UNPOISONED_RESULT))


async def call_once(conn: Connection, call: Call) -> Outcome:
    started = time.perf_counter()
    reply = await conn.session.call_tool(call.tool, call.arguments)
    seconds = time.perf_counter() - started
    data = reply.structured_content
    if data is None:
        problem = f"no structuredContent: {reply!r:.300}"
    else:
        problem = call.check(data)
        if problem is None and reply.is_error != (data.get("outcome") != "ok"):
            problem = f"isError {reply.is_error} does not match outcome {data.get('outcome')}"
    return Outcome(call, data, bool(reply.is_error), problem, seconds)


async def run_plan(conn: Connection, plan: list[Call], in_flight: int) -> list[Outcome]:
    """Run `plan` with `in_flight` calls outstanding at once; one Outcome per call, in plan order."""
    outcomes: list[Outcome | None] = [None] * len(plan)
    positions = iter(range(len(plan)))

    async def worker() -> None:
        for position in positions:
            outcomes[position] = await call_once(conn, plan[position])

    async with anyio.create_task_group() as group:
        for _ in range(in_flight):
            group.start_soon(worker)
    return [outcome for outcome in outcomes if outcome is not None]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Resource facts of one server and its fork server at one moment."""

    server_fds: int
    fork_server_pid: int
    fork_server_fds: int
    server_rss_bytes: int
    fork_server_rss_bytes: int  # (children come and go: not counted)
    zombies: tuple[int, ...]
    children: tuple[int, ...]  # of the fork server


def snapshot(server_pid: int) -> Snapshot:
    fork_server = procs.fork_server_of(server_pid)
    below = procs.descendants_of(server_pid)
    server = procs.read_proc(server_pid)
    assert server is not None, "the server process is gone"
    return Snapshot(
        server_fds=procs.fd_count(server_pid),
        fork_server_pid=fork_server.pid,
        fork_server_fds=procs.fd_count(fork_server.pid),
        server_rss_bytes=server.rss_bytes,
        fork_server_rss_bytes=fork_server.rss_bytes,
        zombies=tuple(p.pid for p in below if p.state == "Z"),
        children=tuple(p.pid for p in below if p.ppid == fork_server.pid),
    )


def steady_snapshot(server_pid: int, timeout_s: float = 30.0) -> Snapshot:
    """A snapshot taken when two readings 0.5 s apart agree and nothing is a zombie (spares forked, dead reaped)."""
    def key(s: Snapshot) -> tuple[int, int, int, int]:
        return s.server_fds, s.fork_server_pid, s.fork_server_fds, len(s.children)

    readings = [snapshot(server_pid)]

    def probe() -> Snapshot:
        readings.append(snapshot(server_pid))
        return readings[-1]

    return procs.wait_for(
        probe, lambda s: not s.zombies and key(s) == key(readings[-2]), timeout_s, interval_s=0.5
    )


def settled_snapshot(server_pid: int, baseline: Snapshot, timeout_s: float = 30.0) -> Snapshot:
    """Wait (bounded) until the dead are reaped and descriptors are back to `baseline`, then a steady snapshot."""
    procs.wait_for(
        lambda: snapshot(server_pid),
        lambda s: not s.zombies and s.server_fds <= baseline.server_fds and s.fork_server_fds <= baseline.fork_server_fds,
        timeout_s,
        interval_s=0.25,
    )
    return steady_snapshot(server_pid, timeout_s)


def problems_of(outcomes: list[Outcome]) -> list[str]:
    return [f"{o.call.kind}: {o.problem}" for o in outcomes if o.problem]


def outcome_counts(outcomes: list[Outcome]) -> dict[str, int]:
    return dict(collections.Counter((o.structured or {}).get("outcome", "none") for o in outcomes))


def soak_env(home: Path, **extra: str) -> dict[str, str]:
    return server_env(home, KNOWLEDGE_MCP_LOG_LEVEL="WARNING", **extra)
