"""Resource limits of a sandbox child."""

from __future__ import annotations

import resource

import pytest

from sandbox.limits import MIB, apply_rlimits, plan_rlimits, read_vmsize_bytes

from .conftest import run_in_child

pytestmark = pytest.mark.linux_only


def test_plan_rlimits_is_relative_to_inherited_size() -> None:
    """It sets the address space to the inherited VmSize plus the budget, and FSIZE/CORE to 0."""
    plan = plan_rlimits(memory_mb=100, max_wall_s=10, inherited_vmsize_bytes=2_000 * MIB)
    limits = dict(plan.limits)
    assert limits[resource.RLIMIT_AS] == 2_100 * MIB
    assert limits[resource.RLIMIT_FSIZE] == 0
    assert limits[resource.RLIMIT_CORE] == 0
    assert limits[resource.RLIMIT_CPU] == 25  # 10 s x 2 threads + 5 s slack
    assert limits[resource.RLIMIT_NOFILE] == 64
    assert plan.as_dict()["RLIMIT_AS"] == 2_100 * MIB


@pytest.mark.parametrize("kwargs", [{"memory_mb": 0}, {"max_wall_s": 0}, {"inherited_vmsize_bytes": -1}])
def test_plan_rlimits_refuses_bad_input(kwargs: dict) -> None:
    """It raises ValueError naming the bad argument."""
    args = {"memory_mb": 10, "max_wall_s": 1, "inherited_vmsize_bytes": 0, **kwargs}
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        plan_rlimits(**args)


def test_apply_rlimits_stops_allocation_beyond_budget_and_file_writes(open_dir) -> None:
    """It makes an allocation above the budget fail with MemoryError and a file write fail (FSIZE 0)."""
    target = open_dir / "written"

    def attack() -> dict:
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so the write fails with EFBIG instead of killing
        apply_rlimits(plan_rlimits(memory_mb=64, max_wall_s=5, inherited_vmsize_bytes=read_vmsize_bytes()))
        outcome = {}
        try:
            bytearray(200 * MIB)
            outcome["alloc"] = "allowed"
        except MemoryError:
            outcome["alloc"] = "MemoryError"
        small = bytearray(8 * MIB)  # well inside the budget
        outcome["small"] = len(small)
        try:
            with open(target, "wb") as handle:
                handle.write(b"x" * 10)
            outcome["write"] = "allowed"
        except OSError as exc:
            outcome["write"] = exc.strerror
        try:
            resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            outcome["raise"] = "allowed"
        except (ValueError, OSError):
            outcome["raise"] = "refused"
        return outcome

    outcome = run_in_child(attack, drop_root=True)
    assert outcome == {"alloc": "MemoryError", "small": 8 * MIB, "write": "File too large", "raise": "refused"}
    assert not target.exists() or target.stat().st_size == 0


def test_read_vmsize_bytes_reads_this_process() -> None:
    """It returns a positive size that grows when memory is mapped."""
    before = read_vmsize_bytes()
    block = bytearray(64 * MIB)
    assert read_vmsize_bytes() >= before + 32 * MIB
    del block
