"""The pure outcome mapping of a dead child (wait status + peak RSS + kill reason -> result), no fork."""

from __future__ import annotations

import signal

import pytest

from sandbox.forkserver_outcomes import MEMORY_KILL_FRACTION, ChildDeath, death_result, describe_status

MB = 1024 * 1024
BASELINE = 300 * MB  # the fork server's RSS, shared by every child
TIMINGS = {"queue": 0.5, "execute": 12.0}


def killed_by(signum: int) -> int:
    return int(signum)  # wait status of a signal death: the signal number in the low 7 bits


def exited_with(code: int) -> int:
    return code << 8


def outcome(status: int, *, kill_reason: str | None = None, maxrss_mb: int = 310, memory_mb: int = 100,
            blocked: str | None = None, is_blocked_reported: bool = False, timeout_s: float = 5.0):
    death = ChildDeath(pid=4242, status=status, maxrss_kb=maxrss_mb * 1024, kill_reason=kill_reason,
                       blocked_syscall=blocked, is_blocked_reported=is_blocked_reported)
    return death_result("rid-1", death, timeout_s=timeout_s, memory_mb=memory_mb, baseline_rss_bytes=BASELINE,
                        timings=TIMINGS)


def test_outcome_of_a_deadline_kill_is_timeout_naming_the_limit() -> None:
    """It maps the fork server's deadline SIGKILL to timeout, whatever the child's memory use."""
    result = outcome(killed_by(signal.SIGKILL), kill_reason="timeout", maxrss_mb=2000, timeout_s=2.5)
    assert (result.outcome, result.request_id) == ("timeout", "rid-1")
    assert "2.5 s" in result.error["message"]
    assert result.timings_ms == TIMINGS


def test_outcome_of_a_cancel_is_crashed_and_of_a_protocol_kill_internal_error() -> None:
    """It says the call was cancelled, and gives a protocol breaker an incident id only."""
    cancelled = outcome(killed_by(signal.SIGKILL), kill_reason="cancel")
    assert cancelled.outcome == "crashed" and "cancelled" in cancelled.error["message"]
    broken = outcome(killed_by(signal.SIGKILL), kill_reason="protocol")
    assert broken.outcome == "internal_error"
    assert broken.error["message"].startswith("internal error ") and "4242" not in broken.error["message"]


@pytest.mark.parametrize(("blocked", "status"), [("socket", killed_by(signal.SIGSYS)), (None, killed_by(signal.SIGSYS)),
                                                 ("ptrace", exited_with(0))])
def test_outcome_of_seccomp_is_blocked_syscall_naming_the_call(blocked: str | None, status: int) -> None:
    """It maps a reported syscall, or a bare SIGSYS, to blocked_syscall (the report wins over the status)."""
    result = outcome(status, blocked=blocked, is_blocked_reported=blocked is not None)
    assert result.outcome == "blocked_syscall"
    assert result.error["exception"] == (blocked or "unknown")
    assert (repr(blocked) if blocked else "unknown which") in result.error["message"]


def test_outcome_of_sigxcpu_is_timeout() -> None:
    """It maps the CPU rlimit signal to timeout."""
    assert outcome(killed_by(signal.SIGXCPU)).outcome == "timeout"


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS])
def test_outcome_of_a_memory_death_depends_on_memory_touched_above_the_baseline(signum: int) -> None:
    """It says memory_limit only when the child touched most of its budget beyond the shared baseline."""
    over = BASELINE // MB + int(MEMORY_KILL_FRACTION * 100) + 1
    under = BASELINE // MB + int(MEMORY_KILL_FRACTION * 100) - 5
    assert outcome(killed_by(signum), maxrss_mb=over, memory_mb=100).outcome == "memory_limit"
    crashed = outcome(killed_by(signum), maxrss_mb=under, memory_mb=100)
    assert crashed.outcome == "crashed"
    assert crashed.error["exception"] == signal.Signals(signum).name


def test_outcome_of_other_signals_and_exits_is_crashed() -> None:
    """It names the signal (or its number when unnamed) and the exit status."""
    assert outcome(killed_by(signal.SIGTERM)).error["exception"] == "SIGTERM"
    assert outcome(killed_by(63)).error["exception"] == "signal 63"  # a real-time signal has no name
    exited = outcome(exited_with(3))
    assert exited.outcome == "crashed" and "status 3" in exited.error["message"]


def test_describe_status_names_signal_or_exit_code() -> None:
    """It describes a wait status for the log."""
    assert describe_status(killed_by(signal.SIGSEGV)) == f"killed by signal {int(signal.SIGSEGV)}"
    assert describe_status(exited_with(7)) == "exit status 7"
