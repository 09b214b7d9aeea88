"""Landlock: a child may read only beneath the granted paths and nothing may be written."""

from __future__ import annotations

import ctypes
import socket
import sys
from pathlib import Path

import pytest

from sandbox.landlock import build_read_only_ruleset, landlock_abi_version, restrict_to_read_only

from .conftest import run_in_child

pytestmark = [
    pytest.mark.linux_only,
    pytest.mark.skipif(landlock_abi_version() < 1, reason="kernel without Landlock"),
]
PR_SET_NO_NEW_PRIVS = 38


def _no_new_privs() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def _attempt(fn) -> str:
    try:
        fn()
    except OSError as exc:
        return type(exc).__name__
    return "allowed"


def test_restrict_blocks_reads_outside_and_writes_everywhere(open_dir: Path) -> None:
    """It lets the child read a granted tree but not a world-readable canary, and write nowhere."""
    granted = open_dir / "granted"
    granted.mkdir()
    (granted / "ok.txt").write_text("fine")
    canary = open_dir / "canary.txt"
    canary.write_text("SECRET")
    canary.chmod(0o666)
    for path in (granted, granted / "ok.txt"):
        path.chmod(0o777 if path.is_dir() else 0o666)

    def attack() -> dict:
        _no_new_privs()
        report = restrict_to_read_only([granted, "/nonexistent/skipped"])
        return {
            "readable": list(report.readable),
            "read_granted": (granted / "ok.txt").read_text(),
            "read_canary": _attempt(lambda: canary.read_text()),
            "list_outside": _attempt(lambda: list(open_dir.iterdir())),
            "write_granted": _attempt(lambda: (granted / "ok.txt").write_text("changed")),
            "create_outside": _attempt(lambda: (open_dir / "new.txt").write_text("x")),
            "unlink": _attempt(lambda: canary.unlink()),
            "etc_passwd": _attempt(lambda: Path("/etc/passwd").read_text()),
            "parent_environ": _attempt(lambda: Path("/proc/1/environ").read_bytes()),
        }

    outcome = run_in_child(attack, drop_root=False)  # root: Landlock alone must hold
    assert outcome["readable"] == [str(granted)]
    assert outcome["read_granted"] == "fine"
    denied = {k: v for k, v in outcome.items() if k not in ("readable", "read_granted")}
    assert set(denied.values()) == {"PermissionError"}, denied
    assert canary.read_text() == "SECRET"
    assert (granted / "ok.txt").read_text() == "fine"
    assert not (open_dir / "new.txt").exists()


def test_restrict_blocks_tcp_connect_to_loopback_listener() -> None:
    """It refuses a TCP connect (ABI >= 4) and the listener sees no connection."""
    if landlock_abi_version() < 4:
        pytest.skip("Landlock ABI < 4 has no network rules")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]

    def attack() -> str:
        _no_new_privs()
        restrict_to_read_only([sys.prefix])
        return _attempt(lambda: socket.create_connection(("127.0.0.1", port), timeout=2))

    try:
        assert run_in_child(attack) == "PermissionError"
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


def test_ruleset_built_by_parent_is_enforced_in_child(open_dir: Path) -> None:
    """It builds the ruleset once (privileged parent) and each child enforces the inherited fd."""
    (open_dir / "f.txt").write_text("data")
    ruleset = build_read_only_ruleset([open_dir / "f.txt"])
    try:

        def child() -> list:
            _no_new_privs()
            ruleset.enforce()
            return [(open_dir / "f.txt").read_text(), _attempt(lambda: Path("/etc/hostname").read_text())]

        assert run_in_child(child) == ["data", "PermissionError"]
    finally:
        ruleset.close()
