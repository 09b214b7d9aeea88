"""The runtime over the real stdio server: a killed fork server is replaced before the next call needs it."""

import os
import re
import signal

import anyio
import pytest

from tests.reliability import procs, soak
from tests.server.conftest import server_env

pytestmark = [pytest.mark.anyio, pytest.mark.linux_only, pytest.mark.model, pytest.mark.slow]

CHECK = "result = [h.path for h in bm25('token bucket capacity', k=1)]"
RESTART_DEADLINE_S = 300.0  # generous: the replacement reloads the models and the index


def _restarted_pid(log_path, old_pid):
    """The pid the server logged as its restarted fork server (INFO), if any other than ``old_pid``."""
    pids = [int(pid) for pid in re.findall(r"the fork server restarted \(pid (\d+)\)", log_path.read_text())]
    return next((pid for pid in reversed(pids) if pid != old_pid), None)


async def _call(conn, code):
    reply = await conn.session.call_tool("execute_code", {"code": code})
    return reply.structured_content


async def test_runtime_replaces_a_killed_fork_server_before_the_next_call(built_index, tmp_path):
    """It restarts a SIGKILLed fork server in the background (Ready with no call made); the next execute_code succeeds on it."""
    log_path = tmp_path / "server.log"
    command, args = soak.serve_command("--index", str(built_index))
    async with soak.counted_session(command, args, env=server_env(tmp_path), log_path=log_path) as conn:
        assert (await _call(conn, CHECK))["result"] == ["src/ratelimit.py"]
        old = procs.fork_server_of(conn.server_pid)
        os.kill(old.pid, signal.SIGKILL)

        new_pid = await anyio.to_thread.run_sync(
            lambda: procs.wait_for(lambda: _restarted_pid(log_path, old.pid), lambda pid: pid is not None,
                                   RESTART_DEADLINE_S)
        )
        assert new_pid is not None, "the server never logged a restarted fork server"
        assert procs.fork_server_of(conn.server_pid).pid == new_pid
        assert procs.children_of(new_pid), "a Ready fork server holds its spare children"

        reply = await _call(conn, CHECK)
        assert reply["outcome"] == "ok" and reply["result"] == ["src/ratelimit.py"], reply
        assert procs.fork_server_of(conn.server_pid).pid == new_pid  # the call started no fork server of its own
        assert [p.pid for p in procs.descendants_of(conn.server_pid) if p.state == "Z"] == []
    assert conn.wire_problems() == []
