"""The sandbox child's lock-down, checked from outside through /proc before any request."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from sandbox import seccomp
from sandbox.landlock import build_read_only_ruleset, landlock_abi_version
from sandbox.protocol import ChildReady, read_message
from sandbox.worker import EXIT_LOCKDOWN_FAILED, ChildContext, run_child

pytestmark = [pytest.mark.linux_only, pytest.mark.skipif(landlock_abi_version() < 1, reason="no Landlock")]
NOBODY = 65534


def _context(ruleset) -> ChildContext:
    return ChildContext(
        searcher=None, token_counter=None, ruleset=ruleset, drop_uid=NOBODY, drop_gid=NOBODY,
        memory_mb=64, max_wall_s=5, state_max_bytes=1024,
    )


def _status_fields(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def _fork_child(ctx: ChildContext) -> tuple[int, socket.socket, int]:
    seccomp.load_library()
    parent_sock, child_sock = socket.socketpair()
    stray_fd = os.open("/etc/hostname", os.O_RDONLY)  # inherited by fork: the child must close it
    pid = os.fork()
    if pid == 0:
        run_child(child_sock.fileno(), ctx)
    child_fd = child_sock.fileno()
    child_sock.close()
    os.close(stray_fd)
    return pid, parent_sock, child_fd


def test_run_child_is_locked_down_when_it_reports_ready() -> None:
    """It drops to nobody with no capabilities, no-new-privs, seccomp, own session and only its socket open."""
    ruleset = build_read_only_ruleset([sys.prefix, sys.base_prefix])
    pid, sock, child_fd = _fork_child(_context(ruleset))
    ruleset.close()
    try:
        ready = read_message(sock.fileno())
        assert isinstance(ready, ChildReady) and ready.error is None and ready.pid == pid
        status = _status_fields(pid)
        if os.geteuid() == 0:
            assert status["Uid"].split() == [str(NOBODY)] * 4
            assert status["Gid"].split() == [str(NOBODY)] * 4
            assert status["Groups"] == ""
        for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
            assert int(status[cap], 16) == 0, cap
        if os.geteuid() == 0:
            assert int(status["CapBnd"], 16) == 0
        assert status["NoNewPrivs"] == "1"
        assert status["Seccomp"] == "2"  # filter mode
        assert os.getsid(pid) == pid and os.getpgid(pid) == pid
        fds = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        assert set(fds) == {0, 1, 2, child_fd}
        assert fds[0] == fds[1] == "/dev/null"
        assert fds[child_fd].startswith("socket:")
        limits = Path(f"/proc/{pid}/limits").read_text()
        assert "Max file size             0" in limits
        assert "Max core file size        0" in limits
    finally:
        sock.shutdown(socket.SHUT_WR)  # EOF: a spare that is never used exits cleanly
        _, wait_status = os.waitpid(pid, 0)
        sock.close()
    assert os.WIFEXITED(wait_status) and os.WEXITSTATUS(wait_status) == 0


def test_run_child_reports_failed_lockdown_and_never_runs_code() -> None:
    """It answers ChildReady(error=...) and exits when a layer cannot be put in place."""
    ruleset = build_read_only_ruleset([sys.prefix])
    ruleset.close()  # enforce() in the child now fails: Landlock is missing
    pid, sock, _ = _fork_child(_context(ruleset))
    try:
        ready = read_message(sock.fileno())
        assert isinstance(ready, ChildReady) and ready.error and "landlock" in ready.error.lower()
        assert read_message(sock.fileno()) is None  # nothing else follows
    finally:
        _, wait_status = os.waitpid(pid, 0)
        sock.close()
    assert os.WEXITSTATUS(wait_status) == EXIT_LOCKDOWN_FAILED
