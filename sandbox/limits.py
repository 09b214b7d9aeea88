"""Resource limits of a sandbox child: ``plan_rlimits`` (pure) and ``apply_rlimits`` (setrlimit).

Contract: the address-space limit is *relative*: the inherited VmSize (torch, faiss and the index
are already mapped when the child is forked) plus the call's budget. An absolute RLIMIT_AS below
the inherited size would make every later allocation fail, including the interpreter's own.
Soft and hard limits are set equal, so the child can never raise them again (it also loses
CAP_SYS_RESOURCE when it drops root, and seccomp refuses setrlimit/prlimit writes).
"""

from __future__ import annotations

import math
import resource
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RlimitPlan", "apply_rlimits", "plan_rlimits", "read_vmsize_bytes"]

MIB = 1024 * 1024
# Descriptors a child may hold: its result socket, /dev/null x3, the ONNX model file while it
# loads, eventfds of the runtime's thread pool, plus slack. Nothing else needs more.
CHILD_NOFILE = 64
# CPU seconds per wall second: the ONNX session runs up to this many threads; the wall-clock
# deadline in the fork server is the real limit, RLIMIT_CPU only backs it up.
CPU_THREADS_ALLOWANCE = 2
CPU_SLACK_S = 5


@dataclass(frozen=True, slots=True)
class RlimitPlan:
    """Soft = hard limit per resource (``resource.RLIMIT_*`` constant -> value)."""

    limits: tuple[tuple[int, int], ...]
    address_space_bytes: int
    budget_bytes: int

    def as_dict(self) -> dict[str, int]:
        names = {getattr(resource, n): n for n in dir(resource) if n.startswith("RLIMIT_")}
        return {names.get(res, str(res)): value for res, value in self.limits}


def plan_rlimits(*, memory_mb: int, max_wall_s: float, inherited_vmsize_bytes: int) -> RlimitPlan:
    """The limits for one child.

    memory_mb: address space allowed above ``inherited_vmsize_bytes`` (bytes of the parent's
    VmSize at fork time). max_wall_s: the longest wall-clock deadline the child may be given;
    CPU seconds are capped at ``max_wall_s * CPU_THREADS_ALLOWANCE + CPU_SLACK_S``.
    """
    if memory_mb < 1:
        raise ValueError(f"memory_mb must be >= 1, got {memory_mb}")
    if max_wall_s <= 0:
        raise ValueError(f"max_wall_s must be > 0, got {max_wall_s}")
    if inherited_vmsize_bytes < 0:
        raise ValueError(f"inherited_vmsize_bytes must be >= 0, got {inherited_vmsize_bytes}")
    budget = memory_mb * MIB
    address_space = inherited_vmsize_bytes + budget
    cpu_s = int(math.ceil(max_wall_s * CPU_THREADS_ALLOWANCE)) + CPU_SLACK_S
    limits = (
        (resource.RLIMIT_AS, address_space),
        (resource.RLIMIT_CPU, cpu_s),
        (resource.RLIMIT_FSIZE, 0),  # no byte may be written to a regular file
        (resource.RLIMIT_NOFILE, CHILD_NOFILE),
        (resource.RLIMIT_CORE, 0),  # no core dump of a process holding the index
        (resource.RLIMIT_MEMLOCK, 0),
        (resource.RLIMIT_MSGQUEUE, 0),
    )
    # RLIMIT_NPROC is deliberately not set: it counts every process *and thread* of the uid
    # (all children share "nobody"), so it would starve the ONNX threads; seccomp already
    # refuses fork/vfork/clone without CLONE_THREAD.
    return RlimitPlan(limits=limits, address_space_bytes=address_space, budget_bytes=budget)


def apply_rlimits(plan: RlimitPlan) -> None:
    """Set every limit of ``plan`` (soft = hard) on the calling process."""
    for res, value in plan.limits:
        _soft, hard = resource.getrlimit(res)
        # Lowering only: never ask for more than the inherited hard limit.
        target = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(res, (target, target))


def read_vmsize_bytes(status_path: Path = Path("/proc/self/status")) -> int:
    """VmSize of the calling process in bytes (Linux /proc)."""
    for line in status_path.read_text().splitlines():
        if line.startswith("VmSize:"):
            parts = line.split()
            return int(parts[1]) * 1024  # the kernel reports kB
    raise OSError(f"no VmSize line in {status_path}")
