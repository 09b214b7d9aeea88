"""Process facts read from /proc: the server's process tree, zombies, descriptors, CPU time, RSS.

The reliability tests observe the real server from outside, as an operator would: which children
it has (the fork server, the sandbox children), whether any is a zombie, how many descriptors each
holds. Linux only (these tests are marked `linux_only`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class ProcInfo:
    """One line of /proc/<pid>/stat, the fields we need."""

    pid: int
    ppid: int
    pgid: int
    state: str  # R, S, D, Z, T, ...
    cpu_seconds: float  # utime + stime
    rss_bytes: int
    cmdline: str


def read_proc(pid: int) -> ProcInfo | None:
    """The process `pid`, or None when it no longer exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    fields = stat[stat.rindex(")") + 2 :].split()
    return ProcInfo(
        pid=pid,
        ppid=int(fields[1]),
        pgid=int(fields[2]),
        state=fields[0],
        cpu_seconds=(int(fields[11]) + int(fields[12])) / CLOCK_TICKS,
        rss_bytes=int(fields[21]) * PAGE_BYTES,
        cmdline=cmdline,
    )


def all_processes() -> list[ProcInfo]:
    infos = (read_proc(int(name)) for name in os.listdir("/proc") if name.isdigit())
    return [info for info in infos if info is not None]


def children_of(pid: int, processes: Iterable[ProcInfo] | None = None) -> list[ProcInfo]:
    return [p for p in (all_processes() if processes is None else processes) if p.ppid == pid]


def descendants_of(pid: int) -> list[ProcInfo]:
    """Every process below `pid` (children, grandchildren, ...)."""
    processes = all_processes()
    found: list[ProcInfo] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child in children_of(parent, processes):
            found.append(child)
            frontier.append(child.pid)
    return found


def in_group(pgid: int) -> list[ProcInfo]:
    """Live (non-zombie) processes of process group `pgid`."""
    return [p for p in all_processes() if p.pgid == pgid and p.state != "Z"]


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fork_server_of(server_pid: int) -> ProcInfo:
    """The fork server: the server's child running `sandbox.forkserver_main`."""
    matches = [p for p in children_of(server_pid) if "sandbox.forkserver_main" in p.cmdline]
    assert len(matches) == 1, f"expected one fork server under {server_pid}, found {matches}"
    return matches[0]


def new_server_pid(before: set[int], timeout_s: float = 30.0) -> int:
    """The `knowledge-mcp serve` process started by this test process since `before` was taken.

    Waits for it: just after the fork, and until its exec (slow on a loaded machine), the new child still
    shows this test process's command line."""

    def servers() -> list[int]:
        return [p.pid for p in children_of(os.getpid()) if p.pid not in before and " serve" in f" {p.cmdline}"]

    matches = wait_for(servers, bool, timeout_s)
    assert len(matches) == 1, f"expected one new server process, found {matches}"
    return matches[0]


def own_children() -> set[int]:
    return {p.pid for p in children_of(os.getpid())}


def wait_for(probe: Callable[[], T], is_done: Callable[[T], bool], timeout_s: float, interval_s: float = 0.1) -> T:
    """Poll `probe()` until `is_done(value)` or the timeout; returns the last value either way."""
    deadline = time.monotonic() + timeout_s
    value = probe()
    while not is_done(value) and time.monotonic() < deadline:
        time.sleep(interval_s)
        value = probe()
    return value
