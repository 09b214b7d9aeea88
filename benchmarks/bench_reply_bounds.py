"""Issue 10 class 2: redaction and reply fitting stay linear and off the event loop.

Two goals, one JSON line each (`goal_met` per goal):
- `reply_processing_1mb`: `server.execution_reply` on 1 MB adversarial stdouts (the shapes that made the
  old secret-assignment patterns backtrack: `'a-' * 500000` took hours) at the default budget, in
  process: the median of RUNS runs per shape stays under PROCESS_GOAL_MS (the slowest run is shown).
- `reply_concurrent_delay`: through the real stdio server, the slowest trivial `execute_code` call made
  while an adversarial 1 MB call is in flight, against the slowest one made while a benign output of
  the same size (`'x' * 1000000`, which the old patterns also handled in linear time) is in flight:
  the adversarial content may add at most DELAY_GOAL_MS. Moving 1 MB through the sandbox itself
  (the child, the fork server's relay, a spare child to refill: the trivial call's `queue` time) and
  two busy cores add the same to both; the figures against the trivial call alone are shown too.

Run: .venv/bin/pytest benchmarks/bench_reply_bounds.py -o python_files='bench_*.py' -p no:cacheprovider -s -q
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import anyio
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CACHE, REPO, build_cached_index, emit  # noqa: E402

BUDGET = 2000  # execute_code's default max_output_tokens
RUNS = 5
PROCESS_GOAL_MS = 100.0
DELAY_GOAL_MS = 50.0
BASELINE_CALLS = 40
ROUNDS = 5
TRIVIAL = "result = 1"

ADVERSARIAL_STDOUTS = {
    "a-": "a-" * 500_000,
    "password-run": "password" + "a-" * 500_000,
    "name-chars": "api_key." * 125_000,
    "non-ascii": "é-" * 500_000,
    "dense-secrets": "password=abcdef é " * 55_000,
}
CONTROL_PROGRAM = "print('x' * 999999)"
ADVERSARIAL_PROGRAMS = {
    "a-": "print('a-' * 499000)",
    "password-run": "print('password' + 'a-' * 499000)",
    "secret-error": "raise ValueError('secret_token:' + 'a-' * 400000)",
}


def test_bench_reply_processing_1mb():
    """execution_reply on 1 MB adversarial stdouts: the slowest run per shape (goal < 100 ms)."""
    from sandbox import TokenCounter
    from server import execution_reply

    counter = TokenCounter.open()
    per_shape = {}
    for name, stdout in ADVERSARIAL_STDOUTS.items():
        times_ms = []
        for _ in range(RUNS):
            started = time.perf_counter()
            reply = execution_reply(outcome="ok", stdout=stdout, counter=counter, max_output_tokens=BUDGET)
            times_ms.append((time.perf_counter() - started) * 1000)
            assert reply.structured["output_tokens"] <= BUDGET
        per_shape[name] = {"p50_ms": round(statistics.median(times_ms), 1), "max_ms": round(max(times_ms), 1)}
    worst = max(shape["p50_ms"] for shape in per_shape.values())
    emit("reply_processing_1mb", {"budget": BUDGET, "runs": RUNS, "stdout_bytes": 1_000_000},
         {"per_shape": per_shape, "worst_p50_ms": worst, "goal_ms": PROCESS_GOAL_MS, "goal_met": worst < PROCESS_GOAL_MS})


@pytest.fixture(scope="module")
def docs_index() -> Path:
    """This repository's docs indexed once (the server only needs an index to serve)."""
    return build_cached_index("reply-bounds-docs", [REPO / "docs"], model_cache_dir=CACHE / "models")


def test_bench_reply_concurrent_delay(docs_index, tmp_path):
    """Trivial calls during an adversarial 1 MB call: delay beyond the lone p50 (goal <= 50 ms)."""
    metrics = anyio.run(_measure_delay, docs_index, tmp_path)
    emit("reply_concurrent_delay", {"budget": BUDGET, "rounds": ROUNDS, "programs": sorted(ADVERSARIAL_PROGRAMS)},
         metrics)


async def _measure_delay(index_dir: Path, home: Path) -> dict:
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "KNOWLEDGE_MCP_STATE_DIR": str(home / "state"),
           "KNOWLEDGE_MCP_CACHE_DIR": str(home / "cache"), "KNOWLEDGE_MCP_LOG_LEVEL": "WARNING"}
    params = StdioServerParameters(command=sys.executable, args=["-m", "server", "serve", "--index", str(index_dir)],
                                   cwd=str(REPO), env=env)
    with open(home / "server.log", "a") as log:
        async with stdio_client(params, errlog=log) as (read, write), \
                ClientSession(read, write, read_timeout_seconds=600) as session:
            await session.initialize()

            async def trivial_ms() -> float:
                started = time.perf_counter()
                reply = await session.call_tool("execute_code", {"code": TRIVIAL})
                assert reply.structured_content["result"] == 1, reply
                return (time.perf_counter() - started) * 1000

            for _ in range(5):
                await trivial_ms()
            alone = [await trivial_ms() for _ in range(BASELINE_CALLS)]
            programs = {"control": CONTROL_PROGRAM, **ADVERSARIAL_PROGRAMS}
            during: dict[str, list[float]] = {name: [] for name in programs}
            big_ms: dict[str, list[float]] = {name: [] for name in programs}
            for _ in range(ROUNDS):
                for name, program in programs.items():
                    done = anyio.Event()

                    async def run_big(name: str = name, program: str = program, done: anyio.Event = done) -> None:
                        started = time.perf_counter()
                        reply = await session.call_tool("execute_code", {"code": program, "max_output_tokens": BUDGET})
                        big_ms[name].append((time.perf_counter() - started) * 1000)
                        assert reply.structured_content["output_tokens"] <= BUDGET, reply
                        done.set()

                    async with anyio.create_task_group() as group:
                        group.start_soon(run_big)
                        while not done.is_set():
                            during[name].append(await trivial_ms())
    p50_alone = statistics.median(alone)
    control_max = max(during.pop("control"))
    worst_during = max(max(values) for values in during.values())
    delay = worst_during - control_max
    return {
        "trivial_alone_p50_ms": round(p50_alone, 1), "trivial_alone_max_ms": round(max(alone), 1),
        "trivial_during_control_max_ms": round(control_max, 1),
        "trivial_during_max_ms": {name: round(max(values), 1) for name, values in during.items()},
        "trivial_during_calls": {name: len(values) for name, values in during.items()},
        "big_call_p50_ms": {name: round(statistics.median(values), 1) for name, values in big_ms.items()},
        "worst_delay_vs_alone_p50_ms": round(worst_during - p50_alone, 1),
        "worst_delay_vs_control_ms": round(delay, 1), "goal_ms": DELAY_GOAL_MS, "goal_met": delay <= DELAY_GOAL_MS,
    }
