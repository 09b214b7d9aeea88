"""ForkServerClient's recovery: a dead fork server is replaced in the background, boundedly, and close() leaks nothing."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time

import pytest

from sandbox import ExecRequest, ForkServerClient, compile_program
from tests.reliability import procs

from .conftest import SandboxHandle, plain_config

pytestmark = pytest.mark.linux_only

DEADLINE_S = 120.0  # generous: a replacement loads in about a second here; a loaded CI machine may take longer
CLIENT_LOGGER = "sandbox.forkserver_client"


def _fork_servers() -> set[int]:
    """Pids of this test process's fork servers (other tests' module fixtures included)."""
    return {p.pid for p in procs.children_of(os.getpid()) if "sandbox.forkserver_main" in p.cmdline}


def _pump(loop: asyncio.AbstractEventLoop, until, timeout_s: float = DEADLINE_S, interval_s: float = 0.05):
    """Run the client's event loop (no call made) until ``until()`` is truthy or the deadline; returns its value."""
    deadline = time.monotonic() + timeout_s
    value = until()
    while not value and time.monotonic() < deadline:
        loop.run_until_complete(asyncio.sleep(interval_s))
        value = until()
    return value


def _kill(pid: int) -> list[int]:
    """SIGKILL the fork server ``pid``; returns it and its children (all must end up gone)."""
    doomed = [pid, *(p.pid for p in procs.children_of(pid))]
    os.kill(pid, signal.SIGKILL)
    return doomed


def _request(source: str, config) -> ExecRequest:
    return ExecRequest(request_id=os.urandom(8).hex(), program=compile_program(source, config.policy).to_bytes(),
                       timeout_s=10.0, memory_mb=config.memory_mb, output_cap_bytes=config.stdout_cap_bytes, state={})


def _gone(pids: list[int]) -> bool:
    return all((info := procs.read_proc(pid)) is None or info.state == "Z" for pid in pids)


@pytest.mark.slow  # starts a second fork server after the first dies: seconds
def test_client_replaces_a_killed_fork_server_in_the_background(canary_env) -> None:
    """It starts a new, Ready fork server after a SIGKILL without any call, and the next call runs on it."""
    handle = SandboxHandle(plain_config())
    try:
        old_pid = handle.client.pid
        doomed = _kill(old_pid)
        new_pid = _pump(handle.loop, lambda: handle.client.pid not in (None, old_pid) and handle.client.pid)
        assert new_pid, "no replacement fork server became Ready"
        assert handle.client.is_running
        assert "sandbox.forkserver_main" in procs.read_proc(new_pid).cmdline
        assert procs.children_of(new_pid), "a Ready fork server holds its spare child"
        assert _pump(handle.loop, lambda: _gone(doomed), 30.0), "the killed fork server or a child of it lives on"

        after = handle.run("result = 'back'")
        assert after.outcome == "ok" and after.result == "back"
        assert handle.client.pid == new_pid  # the call used the replacement, it started none of its own
        assert _fork_servers() >= {new_pid} and old_pid not in _fork_servers()
    finally:
        handle.close()


def _sandbox_processes(exempt_roots: set[int]) -> set[int]:
    """Live fork servers and sandbox children (a child keeps its fork server's command line), but not
    those of other tests' fork servers ``exempt_roots``; an orphaned child is reparented, so it is not exempt."""
    exempt = exempt_roots | {p.pid for root in exempt_roots for p in procs.descendants_of(root)}
    live = {p.pid for p in procs.all_processes() if "sandbox.forkserver_main" in p.cmdline and p.state != "Z"}
    return live - exempt


@pytest.mark.parametrize("when", ["while the replacement warms up", "once the replacement is ready"])
@pytest.mark.slow  # waits on backoff, restarts or a racing build: seconds even on an idle machine
def test_client_close_after_a_death_leaves_no_process(canary_env, when) -> None:
    """It cancels or stops the replacement on close(): no fork server or sandbox child of this client survives."""
    others = _fork_servers()
    strays = _sandbox_processes(others)  # left by earlier tests, if any: not this test's to judge
    handle = SandboxHandle(plain_config())
    try:
        old_pid = handle.client.pid
        _kill(old_pid)
        if when == "once the replacement is ready":
            assert _pump(handle.loop, lambda: handle.client.pid not in (None, old_pid))
        else:  # the replacement process exists but has not answered Ready yet (or only just)
            assert _pump(handle.loop, lambda: _fork_servers() - others - {old_pid}, interval_s=0.01)
    finally:
        handle.close()
    assert _fork_servers() - others == set()
    leftover = procs.wait_for(lambda: _sandbox_processes(others) - strays, lambda alive: not alive, 30.0)
    assert leftover == set(), f"processes left after close(): {leftover}"


@pytest.mark.slow  # waits on backoff, restarts or a racing build: seconds even on an idle machine
def test_client_gives_up_after_bounded_restarts_then_the_next_call_retries(canary_env, tmp_path, caplog) -> None:
    """It tries three times in the background when the fork server cannot start, then a call retries and says why."""
    launches = tmp_path / "launches"
    python = tmp_path / "python"

    def point_python(works: bool) -> None:
        body = f'exec {sys.executable} "$@"' if works else "exit 1"
        python.write_text(f'#!/bin/sh\necho launched >> {launches}\n{body}\n')
        python.chmod(0o755)

    def launch_count() -> int:
        return len(launches.read_text().splitlines()) if launches.exists() else 0

    point_python(works=True)
    config = plain_config()
    loop = asyncio.new_event_loop()
    client = ForkServerClient(config, python=str(python), log_level="WARNING")
    caplog.set_level(logging.INFO, logger=CLIENT_LOGGER)
    try:
        loop.run_until_complete(client.start())
        assert launch_count() == 1
        point_python(works=False)
        os.kill(client.pid, signal.SIGKILL)
        gave_up = _pump(loop, lambda: [r for r in caplog.records if "could not be restarted" in r.getMessage()])
        assert gave_up, "the background restart never gave up"
        assert launch_count() == 1 + 3 and client.pid is None and not client.is_running
        failures = [r.getMessage() for r in caplog.records if "restarting the fork server failed" in r.getMessage()]
        assert [m.split("(attempt ")[1][:6] for m in failures] == ["1 of 3", "2 of 3", "3 of 3"]

        refused = loop.run_until_complete(client.execute(_request("result = 1", config)))
        assert refused.outcome == "internal_error", refused
        assert "could not be started" in refused.error["message"] and "retry" in refused.error["hint"]
        assert launch_count() == 5

        point_python(works=True)
        served = loop.run_until_complete(client.execute(_request("result = 'again'", config)))
        assert served.outcome == "ok" and served.result == "again" and client.is_running
    finally:
        loop.run_until_complete(client.close())
        loop.close()


@pytest.mark.slow  # waits on backoff, restarts or a racing build: seconds even on an idle machine
def test_client_stops_restarting_a_fork_server_that_keeps_dying_young(canary_env, caplog) -> None:
    """It leaves the restart to the next call after three deaths in a row soon after starting (no crash loop)."""
    handle = SandboxHandle(plain_config())
    caplog.set_level(logging.INFO, logger=CLIENT_LOGGER)
    try:
        for _ in range(2):
            old_pid = handle.client.pid
            _kill(old_pid)
            assert _pump(handle.loop, lambda old=old_pid: handle.client.pid not in (None, old)), "no background restart"
        _kill(handle.client.pid)
        crash_loop = _pump(handle.loop, lambda: [r for r in caplog.records if "times within" in r.getMessage()])
        assert crash_loop and handle.client.pid is None
        after = handle.run("result = 'back'")
        assert after.outcome == "ok" and after.result == "back" and handle.client.is_running
    finally:
        handle.close()
