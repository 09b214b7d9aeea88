"""Pure: how a sandbox child's death maps to its ``ExecutionResult`` (no fork, no syscall).

Contract: ``death_result`` takes what the fork server knows when it reaps a child that never
answered (its wait status, its peak RSS, why the fork server killed it if it did, the syscall
seccomp reported) and returns the one result its request gets. The order decides: the fork
server's own kill reason first (timeout, cancel, protocol), then a reported blocked syscall, then
the signal (SIGSYS -> ``blocked_syscall``, SIGXCPU -> ``timeout``, a kill after touching most of
the memory budget -> ``memory_limit``, any other -> ``crashed``), then a plain exit (``crashed``).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from sandbox.config import MAX_TIMEOUT_S
from sandbox.forkserver_common import incident
from sandbox.protocol import ExecutionResult

__all__ = ["MEMORY_KILL_FRACTION", "ChildDeath", "blocked_result", "death_result", "describe_status", "memory_result"]

MEMORY_KILL_FRACTION = 0.8  # a signal death after touching this much of the budget is memory_limit
# Signals the kernel or the allocator send when memory runs out (OOM kill, RLIMIT_AS fallout).
MEMORY_SIGNALS = frozenset({signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS})


@dataclass(frozen=True, slots=True)
class ChildDeath:
    """What the fork server knows about a reaped child that did not answer its request."""

    pid: int
    status: int  # as from os.wait4
    maxrss_kb: int  # rusage.ru_maxrss of the child
    kill_reason: str | None  # "timeout" | "cancel" | "protocol" | "retire" | None (it died by itself)
    blocked_syscall: str | None  # the syscall the child's SIGSYS handler reported, if any
    is_blocked_reported: bool = False  # a BlockedSyscall frame arrived (its syscall may be unknown)


def death_result(
    request_id: str,
    death: ChildDeath,
    *,
    timeout_s: float,
    memory_mb: int,
    baseline_rss_bytes: int,
    timings: dict[str, float],
) -> ExecutionResult:
    """The result of a request whose child died (``baseline_rss_bytes``: the fork server's RSS,
    which a child shares and so does not count as its own use)."""
    rid, status = request_id, death.status
    if death.kill_reason == "timeout":
        return ExecutionResult.failure(
            rid, "timeout", f"the program ran longer than its {timeout_s:g} s limit (wall clock) and was stopped",
            hint=f"do less work per call, or raise timeout_s (at most {MAX_TIMEOUT_S:g})", timings_ms=timings,
        )
    if death.kill_reason == "cancel":
        return ExecutionResult.failure(rid, "crashed", "the call was cancelled; its process was killed", timings_ms=timings)
    if death.kill_reason == "protocol":
        return ExecutionResult.failure(rid, "internal_error", incident("child %d broke the protocol", death.pid), timings_ms=timings)
    if death.is_blocked_reported:
        return blocked_result(rid, death.blocked_syscall, timings)
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        if signum == signal.SIGSYS:
            return blocked_result(rid, None, timings)
        if signum == signal.SIGXCPU:
            return ExecutionResult.failure(
                rid, "timeout", "the program used up its CPU time limit and was stopped", timings_ms=timings
            )
        touched = death.maxrss_kb * 1024 - baseline_rss_bytes
        if signum in MEMORY_SIGNALS and touched >= MEMORY_KILL_FRACTION * memory_mb * 1024 * 1024:
            return memory_result(rid, memory_mb, timings)
        name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else f"signal {signum}"
        return ExecutionResult.failure(
            rid, "crashed", f"the sandbox process was killed by {name}", exception=name, timings_ms=timings
        )
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
    return ExecutionResult.failure(
        rid, "crashed", f"the sandbox process exited (status {code}) before returning a result", timings_ms=timings
    )


def blocked_result(request_id: str, syscall: str | None, timings: dict[str, float]) -> ExecutionResult:
    what = f"the system call {syscall!r}" if syscall else "a system call (unknown which)"
    return ExecutionResult.failure(
        request_id,
        "blocked_syscall",
        f"{what} is not allowed in the sandbox (seccomp); the process was stopped",
        exception=syscall or "unknown",
        hint="the sandbox has no network, processes, file writes or signals; use the search API",
        timings_ms=timings,
    )


def memory_result(request_id: str, memory_mb: int, timings: dict[str, float]) -> ExecutionResult:
    return ExecutionResult.failure(
        request_id,
        "memory_limit",
        f"the program exceeded its memory budget of {memory_mb} MB and was stopped",
        exception="MemoryError",
        hint="work on fewer or smaller results at a time",
        timings_ms=timings,
    )


def describe_status(status: int) -> str:
    """A wait status in words, for the log."""
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.WEXITSTATUS(status)}"
