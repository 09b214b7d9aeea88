"""Faults inside the sandbox machinery: the fork server killed with SIGKILL, a child stuck in a C call.

Driven through the real server and SDK client; processes are observed from outside through /proc.
"""

import os
import signal

import anyio
import pytest

from tests.reliability import procs, soak

pytestmark = [pytest.mark.anyio, pytest.mark.linux_only, pytest.mark.model, pytest.mark.slow]

SPIN = "while True:\n    pass"
STUCK_IN_C = "x = 10 ** 10 ** 8"  # one C call: Python signal handlers never run, only SIGKILL stops it
STUCK_TIMEOUT_S = 5
CHECK = "result = [h.path for h in bm25('token bucket capacity', k=1)]"


RUNNING_CPU_S = 1.0  # more than a spare child spends warming up (about 0.3 s), so it is the program


def _running_child(fork_server_pid: int) -> procs.ProcInfo | None:
    """The fork server's child that is burning CPU (the one running the program)."""
    busy = [c for c in procs.children_of(fork_server_pid) if c.state == "R" and c.cpu_seconds >= RUNNING_CPU_S]
    return max(busy, key=lambda c: c.cpu_seconds, default=None)


async def _wait_running_child(fork_server_pid: int) -> procs.ProcInfo:
    child = await anyio.to_thread.run_sync(
        lambda: procs.wait_for(lambda: _running_child(fork_server_pid), lambda c: c is not None, 30.0, 0.05)
    )
    assert child is not None, "the program never started running in a child"
    return child


async def _call(conn, code, timeout_s=30):
    reply = await conn.session.call_tool("execute_code", {"code": code, "timeout_s": timeout_s})
    return reply.structured_content


async def test_fork_server_killed_mid_call_fails_that_call_then_restarts(built_index, tmp_path):
    """It answers the in-flight call with a clear error, leaves no orphan, and serves later calls on a new fork server."""
    command, args = soak.serve_command("--index", str(built_index))
    async with soak.counted_session(command, args, env=soak.soak_env(tmp_path), log_path=tmp_path / "server.log") as conn:
        assert (await _call(conn, CHECK))["result"] == ["src/ratelimit.py"]
        fork_server = procs.fork_server_of(conn.server_pid)
        replies = {}

        async def spin():
            replies["spin"] = await _call(conn, SPIN, timeout_s=60)

        with anyio.fail_after(120):
            async with anyio.create_task_group() as group:
                group.start_soon(spin)
                child = await _wait_running_child(fork_server.pid)
                os.kill(fork_server.pid, signal.SIGKILL)

        lost = replies["spin"]
        assert lost["outcome"] == "internal_error", lost
        assert "lost" in lost["error"]["message"] and "retry" in lost["error"]["hint"], lost["error"]
        # The program's process must not outlive its fork server (it would spin on, unsupervised).
        leftover = await anyio.to_thread.run_sync(
            lambda: procs.wait_for(lambda: procs.in_group(child.pgid), lambda group: not group, 10.0)
        )
        if leftover:  # do not leave it spinning on the CI machine
            os.killpg(child.pgid, signal.SIGKILL)
        assert leftover == [], f"the killed fork server's child still runs: {leftover}"

        with anyio.fail_after(300):
            assert (await _call(conn, CHECK))["result"] == ["src/ratelimit.py"]
        restarted = procs.fork_server_of(conn.server_pid)
        assert restarted.pid != fork_server.pid
        assert [p.pid for p in procs.descendants_of(conn.server_pid) if p.state == "Z"] == []
    assert conn.wire_problems() == []


async def test_child_stuck_in_c_call_is_killed_with_its_group_at_the_deadline(built_index, tmp_path):
    """It stops a child that no signal handler can interrupt (SIGKILL of its group), reports timeout, reaps it."""
    command, args = soak.serve_command("--index", str(built_index))
    async with soak.counted_session(command, args, env=soak.soak_env(tmp_path), log_path=tmp_path / "server.log") as conn:
        assert (await _call(conn, CHECK))["result"] == ["src/ratelimit.py"]
        fork_server = procs.fork_server_of(conn.server_pid)
        replies = {}

        async def stuck():
            replies["stuck"] = await _call(conn, STUCK_IN_C, timeout_s=STUCK_TIMEOUT_S)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                group.start_soon(stuck)
                child = await _wait_running_child(fork_server.pid)
        assert child.pgid == child.pid, "the child must lead its own process group"
        assert replies["stuck"]["outcome"] == "timeout", replies["stuck"]
        assert f"{STUCK_TIMEOUT_S} s" in replies["stuck"]["error"]["message"]
        gone = await anyio.to_thread.run_sync(
            lambda: procs.wait_for(lambda: procs.read_proc(child.pid), lambda p: p is None, 10.0)
        )
        assert gone is None, f"the timed-out child was not reaped: {gone}"
        assert procs.in_group(child.pgid) == []
        assert procs.fork_server_of(conn.server_pid).pid == fork_server.pid
        assert (await _call(conn, CHECK))["result"] == ["src/ratelimit.py"]
    assert conn.wire_problems() == []
