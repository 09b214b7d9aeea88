"""Soak: 200 execute_code/search_code calls, 20% hostile, over two real servers driven by the SDK client.

Pass: every call gets exactly one reply (counted on the wire) with the outcome the contract gives it,
no zombie below either server, descriptors of server and fork server back to their baseline, no fork
server restart, and a later program sees nothing a hostile one tried to change.
"""

import anyio
import pytest

from tests.reliability import soak

pytestmark = [pytest.mark.anyio, pytest.mark.linux_only, pytest.mark.model, pytest.mark.slow]

CALLS_SESSION_A = 150  # 4 in flight
CALLS_SESSION_B = 50  # a second server process, its own client, 2 in flight


async def _warm(conn):
    """Bring the server to its steady state (loaded, spare child forked) and take the baseline."""
    for _ in range(3):
        outcome = await soak.call_once(conn, soak.normal_call(0))
        assert outcome.problem is None, outcome.problem
    return await anyio.to_thread.run_sync(soak.steady_snapshot, conn.server_pid)


async def test_soak_two_servers_hostile_mix_keeps_replies_processes_and_descriptors(built_index, tmp_path):
    """It answers 200 mixed calls exactly once each with the contract's outcome and leaks nothing."""
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    home_a.mkdir()
    home_b.mkdir()
    command, args = soak.serve_command("--index", str(built_index))
    plan_a = soak.build_plan(CALLS_SESSION_A)
    plan_b = soak.build_plan(CALLS_SESSION_B, offset=CALLS_SESSION_A)
    assert sum(c.is_hostile for c in plan_a + plan_b) == 40

    async with soak.counted_session(command, args, env=soak.soak_env(home_a), log_path=home_a / "server.log") as conn_a:
        async with soak.counted_session(command, args, env=soak.soak_env(home_b), log_path=home_b / "server.log") as conn_b:
            base_a, base_b = await _warm(conn_a), await _warm(conn_b)
            results = {}

            async def drive(name, conn, plan, in_flight):
                results[name] = await soak.run_plan(conn, plan, in_flight)

            async with anyio.create_task_group() as group:
                group.start_soon(drive, "a", conn_a, plan_a, 4)
                group.start_soon(drive, "b", conn_b, plan_b, 2)

            for conn, base in ((conn_a, base_a), (conn_b, base_b)):
                final = await soak.call_once(conn, soak.unpoisoned_call())
                assert final.problem is None, final.problem
                after = await anyio.to_thread.run_sync(soak.settled_snapshot, conn.server_pid, base)
                assert after.fork_server_pid == base.fork_server_pid, "the fork server was restarted during the soak"
                assert after.zombies == (), f"zombies below the server: {after.zombies}"
                # A leak shows as more descriptors than at the baseline (fewer: a spare child was mid-fork then).
                assert after.server_fds <= base.server_fds, (base, after)
                assert after.fork_server_fds <= base.fork_server_fds, (base, after)

            outcomes = results["a"] + results["b"]
            assert len(outcomes) == CALLS_SESSION_A + CALLS_SESSION_B
            assert soak.problems_of(outcomes) == []
            counts = soak.outcome_counts(outcomes)
            assert {"ok", "timeout", "memory_limit", "runtime_error", "validation_error"} <= set(counts), counts
            assert "internal_error" not in counts and "busy" not in counts, counts
    for conn in (conn_a, conn_b):
        assert conn.wire_problems() == []
        assert sum(conn.sent_request_ids.values()) >= 2  # initialize + the calls went through the counter
