"""Soak at 1,000 calls: two real servers over stdio, the SDK client, 20% hostile programs.

The same call plan and wire counting as tests/reliability/test_soak.py (tests/reliability/soak.py),
five times longer. Reports lost and duplicate replies, wrong outcomes, zombies, fork-server
restarts, and the drift of descriptors and RSS (server and fork server, each) from a baseline taken after
warm-up (goal: < 10%). Prints one JSON line.

Run: .venv/bin/pytest benchmarks/bench_reliability_soak.py -o python_files='bench_*.py' -p no:cacheprovider -s -q
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import anyio
import pytest

import common
from metrics import percentile
from tests.reliability import soak
from tests.server.corpus import write_corpus

CALLS_A = 750  # one session, 4 in flight
CALLS_B = 250  # a second server process with its own client, 2 in flight
WARMUP_CALLS = 60  # per server, before the baseline: every hostile kind once (allocator high-water marks settle)
DRIFT_GOAL = 0.10


@pytest.fixture(scope="module")
def soak_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The corpus lives outside the repository: benchmarks/.cache is gitignored, so the walker would skip it.
    corpus = write_corpus(tmp_path_factory.mktemp("reliability-corpus"))
    return common.build_cached_index("reliability-index", [corpus])


def _drift(before: int, after: int) -> float:
    return round((after - before) / before, 4) if before else 0.0


async def _soak(index_dir: Path, home: Path) -> dict:
    command, args = soak.serve_command("--index", str(index_dir))
    (home / "a").mkdir(parents=True, exist_ok=True)
    (home / "b").mkdir(parents=True, exist_ok=True)
    env_a, env_b = soak.soak_env(home / "a"), soak.soak_env(home / "b")
    async with soak.counted_session(command, args, env=env_a, log_path=home / "a" / "server.log") as conn_a:
        async with soak.counted_session(command, args, env=env_b, log_path=home / "b" / "server.log") as conn_b:
            baselines = {}
            for name, conn in (("a", conn_a), ("b", conn_b)):
                warm = await soak.run_plan(conn, soak.build_plan(WARMUP_CALLS, offset=12_000), 4)
                assert soak.problems_of(warm) == [], soak.problems_of(warm)
                baselines[name] = await anyio.to_thread.run_sync(soak.steady_snapshot, conn.server_pid)

            results: dict[str, list[soak.Outcome]] = {"a": [], "b": []}
            middles = {}

            async def drive(name, conn, plan, in_flight):
                half = len(plan) // 2
                results[name] += await soak.run_plan(conn, plan[:half], in_flight)
                middles[name] = await anyio.to_thread.run_sync(soak.snapshot, conn.server_pid)
                results[name] += await soak.run_plan(conn, plan[half:], in_flight)

            started = time.perf_counter()
            async with anyio.create_task_group() as group:
                group.start_soon(drive, "a", conn_a, soak.build_plan(CALLS_A), 4)
                group.start_soon(drive, "b", conn_b, soak.build_plan(CALLS_B, offset=CALLS_A), 2)
            seconds = time.perf_counter() - started

            finals, ends = {}, {}
            for name, conn in (("a", conn_a), ("b", conn_b)):
                check = soak.unpoisoned_call()
                finals[name] = (await soak.call_once(conn, check)).problem
                ends[name] = await anyio.to_thread.run_sync(soak.settled_snapshot, conn.server_pid, baselines[name])

    outcomes = results["a"] + results["b"]
    normal_seconds = [o.seconds for o in outcomes if not o.call.is_hostile]
    per_server = {}
    for name, conn in (("a", conn_a), ("b", conn_b)):
        base, middle, end = baselines[name], middles[name], ends[name]
        per_server[name] = {
            "lost_replies": sum(1 for rid in conn.sent_request_ids if conn.reply_ids[rid] == 0),
            "duplicate_replies": sum(1 for rid in conn.sent_request_ids if conn.reply_ids[rid] > 1),
            "zombies": len(end.zombies),
            "fork_server_restarts": int(end.fork_server_pid != base.fork_server_pid),
            "server_fds": [base.server_fds, end.server_fds],
            "fork_server_fds": [base.fork_server_fds, end.fork_server_fds],
            "fd_drift": max(_drift(base.server_fds, end.server_fds), _drift(base.fork_server_fds, end.fork_server_fds)),
            # [baseline, half-way, end]: growth that stops by half-way is a high-water mark, not a leak.
            "server_rss_mb": [round(s.server_rss_bytes / 2**20, 1) for s in (base, middle, end)],
            "fork_server_rss_mb": [round(s.fork_server_rss_bytes / 2**20, 1) for s in (base, middle, end)],
            "rss_drift": max(
                _drift(base.server_rss_bytes, end.server_rss_bytes), _drift(base.fork_server_rss_bytes, end.fork_server_rss_bytes)
            ),
            "rss_drift_second_half": max(
                _drift(middle.server_rss_bytes, end.server_rss_bytes),
                _drift(middle.fork_server_rss_bytes, end.fork_server_rss_bytes),
            ),
            "unpoisoned": finals[name] is None,
        }
    return {
        "calls": len(outcomes),
        "hostile_calls": sum(o.call.is_hostile for o in outcomes),
        "wrong_outcomes": len(soak.problems_of(outcomes)),
        "wrong_outcome_examples": soak.problems_of(outcomes)[:5],
        "outcomes": soak.outcome_counts(outcomes),
        "lost_replies": sum(s["lost_replies"] for s in per_server.values()),
        "duplicate_replies": sum(s["duplicate_replies"] for s in per_server.values()),
        "zombies": sum(s["zombies"] for s in per_server.values()),
        "fork_server_restarts": sum(s["fork_server_restarts"] for s in per_server.values()),
        "max_fd_drift": max(s["fd_drift"] for s in per_server.values()),
        "max_rss_drift": max(s["rss_drift"] for s in per_server.values()),
        "max_rss_drift_second_half": max(s["rss_drift_second_half"] for s in per_server.values()),
        "seconds": round(seconds, 1),
        "calls_per_s": round(len(outcomes) / seconds, 2),
        "normal_call_p50_s": round(percentile(normal_seconds, 0.5), 4),
        "normal_call_p95_s": round(percentile(normal_seconds, 0.95), 4),
        "normal_call_mean_s": round(statistics.fmean(normal_seconds), 4),
        "servers": per_server,
    }


def test_reliability_soak_1000_calls(soak_index: Path, tmp_path: Path, benchmark) -> None:
    metrics = benchmark.pedantic(lambda: anyio.run(_soak, soak_index, tmp_path), rounds=1, iterations=1)
    metrics = common.with_goals(metrics, {
        **{key: (metrics[key], "==", 0) for key in ("lost_replies", "duplicate_replies", "wrong_outcomes", "zombies")},
        "max_fd_drift": (metrics["max_fd_drift"], "<", DRIFT_GOAL),
        "max_rss_drift": (metrics["max_rss_drift"], "<", DRIFT_GOAL),
    })
    common.emit(
        "reliability_soak",
        {"calls": CALLS_A + CALLS_B, "in_flight": {"a": 4, "b": 2}, "hostile_every": soak.HOSTILE_EVERY,
         "warmup_calls": WARMUP_CALLS, "max_workers": 2},
        metrics,
    )
    assert metrics["lost_replies"] == 0 and metrics["duplicate_replies"] == 0
    assert metrics["wrong_outcomes"] == 0, metrics["wrong_outcome_examples"]
    assert metrics["zombies"] == 0
