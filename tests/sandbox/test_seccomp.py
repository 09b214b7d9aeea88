"""seccomp: dangerous calls fail with EPERM, unknown ones stop the child and are named."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
from pathlib import Path

import pytest

from sandbox import seccomp
from sandbox.protocol import BlockedSyscall, read_message

from .conftest import run_in_child

pytestmark = pytest.mark.linux_only
PR_SET_NO_NEW_PRIVS = 38


def _lock() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    seccomp.install(os.getpid(), 2)


def _attempt(fn) -> str:
    try:
        fn()
    except PermissionError:
        return "PermissionError"
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "allowed"


def test_tables_do_not_overlap() -> None:
    """It never lists a syscall as both allowed and denied."""
    assert not seccomp.ALLOWED_SYSCALLS & seccomp.DENIED_SYSCALLS


def test_install_refuses_dangerous_calls_with_permission_error(open_dir: Path) -> None:
    """It makes network, exec, fork, writes, signals to others and limit changes raise PermissionError."""
    seccomp.load_library()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    marker = open_dir / "marker"
    parent = os.getpid()

    def attack() -> dict:
        _lock()
        import resource
        import subprocess
        import threading

        results = {
            "socket": _attempt(lambda: socket.create_connection(("127.0.0.1", port))),
            "fork": _attempt(os.fork),
            "exec": _attempt(lambda: os.execv("/bin/touch", ["touch", str(marker)])),
            "subprocess": _attempt(lambda: subprocess.run(["touch", str(marker)])),
            "write_file": _attempt(lambda: open(marker, "w")),
            "mkdir": _attempt(lambda: os.mkdir(open_dir / "d")),
            "unlink": _attempt(lambda: os.unlink(open_dir)),
            "kill_parent": _attempt(lambda: os.kill(parent, signal.SIGKILL)),
            "setuid": _attempt(lambda: os.setuid(0)),
            "memfd": _attempt(lambda: os.memfd_create("x")),
            "replace_sigsys": _attempt(lambda: signal.signal(signal.SIGSYS, signal.SIG_IGN)),
            "setrlimit": _attempt(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (10, 10))),
        }
        # What must keep working: reads, threads, own signals, reading limits.
        thread_result = []
        worker = threading.Thread(target=lambda: thread_result.append(sum(range(10))))
        worker.start()
        worker.join()
        results["ok_read"] = Path("/etc/hostname").exists() and len(open("/proc/self/stat").read()) > 0
        results["ok_thread"] = thread_result == [45]
        results["ok_getrlimit"] = resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 0
        os.kill(os.getpid(), 0)
        return results

    try:
        outcome = run_in_child(attack)  # as root: seccomp alone must hold
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
    refused = {k: v for k, v in outcome.items() if not k.startswith("ok_")}
    assert set(refused.values()) == {"PermissionError"} or refused["setrlimit"].startswith("ValueError"), refused
    assert {k for k, v in refused.items() if v != "PermissionError"} <= {"setrlimit"}
    assert outcome["ok_read"] and outcome["ok_thread"] and outcome["ok_getrlimit"]
    assert not marker.exists()
    assert os.getpid() == parent  # still alive


def test_unlisted_syscall_is_reported_by_name_then_child_exits() -> None:
    """It traps a syscall on neither list: the SIGSYS handler names it on the result fd and exits."""
    seccomp.load_library()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            seccomp.install(os.getpid(), write_fd)
            os.sched_rr_get_interval(0)  # not needed by inference: on neither list
            os.write(write_fd, b"survived")
        finally:
            os._exit(0)
    os.close(write_fd)
    try:
        message = read_message(read_fd)
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    assert message == BlockedSyscall(syscall="sched_rr_get_interval", number=148)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == seccomp.EXIT_BLOCKED_SYSCALL


def test_syscall_name_resolves_numbers() -> None:
    """It names native syscalls by number."""
    assert seccomp.syscall_name(0) == "read"
    assert seccomp.syscall_name(41) == "socket"
