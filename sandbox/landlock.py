"""Landlock: confine the calling process to reading a few directory trees (raw syscalls via ctypes).

Contract: ``build_read_only_ruleset(paths)`` (in the fork server, which can still open every
path) and ``LandlockRuleset.enforce()`` (in each child) handle every file-system access right the running
kernel knows (ABI 1-7, masked down for older kernels) and grants only read access beneath
``paths``: no write, create, remove, truncate, ioctl or execute anywhere, no read elsewhere (no
~/.ssh, canary files, other projects or /proc of other processes). From ABI 4 on it also denies
every TCP bind and connect, and from ABI 6 on it scopes signals and abstract unix sockets to the
domain (no kill of the fork server or the server). The process must already have
``PR_SET_NO_NEW_PRIVS`` (or CAP_SYS_ADMIN); the restriction is inherited and irreversible.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sandbox.errors import SandboxError

__all__ = [
    "LandlockError",
    "LandlockReport",
    "LandlockRuleset",
    "build_read_only_ruleset",
    "landlock_abi_version",
    "restrict_to_read_only",
]

# x86_64 and aarch64 share these numbers (they were added after the syscall tables converged).
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1 << 0
LANDLOCK_RULE_PATH_BENEATH = 1

# File-system rights, with the ABI that introduced them.
ACCESS_FS_EXECUTE = 1 << 0
ACCESS_FS_WRITE_FILE = 1 << 1
ACCESS_FS_READ_FILE = 1 << 2
ACCESS_FS_READ_DIR = 1 << 3
ACCESS_FS_ABI1 = (1 << 13) - 1  # execute .. make_sym
ACCESS_FS_REFER = 1 << 13  # ABI 2
ACCESS_FS_TRUNCATE = 1 << 14  # ABI 3
ACCESS_FS_IOCTL_DEV = 1 << 15  # ABI 5
ACCESS_NET_ALL = (1 << 0) | (1 << 1)  # bind_tcp | connect_tcp, ABI 4
SCOPE_ALL = (1 << 0) | (1 << 1)  # abstract unix sockets | signals, ABI 6
# Rights that make sense on a regular file (others are EINVAL in a rule for a file).
FILE_RIGHTS = ACCESS_FS_EXECUTE | ACCESS_FS_WRITE_FILE | ACCESS_FS_READ_FILE | ACCESS_FS_TRUNCATE | ACCESS_FS_IOCTL_DEV
READ_RIGHTS = ACCESS_FS_READ_FILE | ACCESS_FS_READ_DIR

O_PATH = getattr(os, "O_PATH", 0o10000000)


class LandlockError(SandboxError):
    """Landlock is unavailable or a rule could not be added; the child must not run unconfined."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in linux/landlock.h
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


@dataclass(frozen=True, slots=True)
class LandlockReport:
    """What was enforced: the kernel's ABI and the paths granted read access."""

    abi: int
    readable: tuple[str, ...]
    handles_network: bool
    scopes_signals: bool


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def landlock_abi_version() -> int:
    """The kernel's Landlock ABI (0 when unsupported or disabled, or not Linux)."""
    if platform.system() != "Linux":
        return 0
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(
        ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION)
    )
    return max(int(abi), 0)


def _handled_fs_rights(abi: int) -> int:
    rights = ACCESS_FS_ABI1
    if abi >= 2:
        rights |= ACCESS_FS_REFER
    if abi >= 3:
        rights |= ACCESS_FS_TRUNCATE
    if abi >= 5:
        rights |= ACCESS_FS_IOCTL_DEV
    return rights


@dataclass(frozen=True, slots=True)
class LandlockRuleset:
    """A ruleset built (by a privileged parent) and not yet enforced: ``fd`` is inherited by fork."""

    fd: int
    abi: int
    readable: tuple[str, ...]

    def enforce(self) -> LandlockReport:
        """Restrict the calling thread (and its future threads) to this ruleset; closes ``fd``."""
        libc = _libc()
        libc.syscall.restype = ctypes.c_long
        try:
            if libc.syscall(ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_int(self.fd), ctypes.c_uint32(0)) < 0:
                _raise_errno("landlock_restrict_self (is PR_SET_NO_NEW_PRIVS set?)")
        finally:
            os.close(self.fd)
        return LandlockReport(abi=self.abi, readable=self.readable, handles_network=self.abi >= 4, scopes_signals=self.abi >= 6)

    def close(self) -> None:
        os.close(self.fd)


def build_read_only_ruleset(paths: Iterable[str | os.PathLike[str]]) -> LandlockRuleset:
    """A ruleset granting read-only access beneath each existing path in ``paths``, nothing else.

    Paths that do not exist are skipped (e.g. an optional model folder); directories get
    read-file + read-dir, files get read-file. Built once in the fork server (which can still
    open every path) and enforced by each child. Raises LandlockError if the kernel lacks Landlock.
    """
    abi = landlock_abi_version()
    if abi < 1:
        raise LandlockError(
            "Landlock is not available on this kernel (needs Linux >= 5.13 with CONFIG_SECURITY_LANDLOCK and "
            "'landlock' in the lsm= boot list); refusing to run code without file-system confinement"
        )
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    handled_fs = _handled_fs_rights(abi)
    attr = _RulesetAttr(
        handled_access_fs=handled_fs,
        handled_access_net=ACCESS_NET_ALL if abi >= 4 else 0,
        scoped=SCOPE_ALL if abi >= 6 else 0,
    )
    # Older kernels reject a larger struct with unknown non-zero fields: pass only what they know.
    attr_size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset_fd = libc.syscall(
        ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(attr_size), ctypes.c_uint32(0)
    )
    if ruleset_fd < 0:
        _raise_errno("landlock_create_ruleset")
    granted: list[str] = []
    try:
        for raw in paths:
            path = Path(raw)
            try:
                fd = os.open(path, O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                is_dir = path.is_dir()
                allowed = (READ_RIGHTS & handled_fs) if is_dir else ACCESS_FS_READ_FILE
                rule = _PathBeneathAttr(allowed_access=allowed, parent_fd=fd)
                rc = libc.syscall(
                    ctypes.c_long(SYS_LANDLOCK_ADD_RULE),
                    ctypes.c_int(ruleset_fd),
                    ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH),
                    ctypes.byref(rule),
                    ctypes.c_uint32(0),
                )
                if rc < 0:
                    _raise_errno(f"landlock_add_rule({path})")
                granted.append(str(path))
            finally:
                os.close(fd)
    except BaseException:
        os.close(ruleset_fd)
        raise
    return LandlockRuleset(fd=int(ruleset_fd), abi=abi, readable=tuple(granted))


def restrict_to_read_only(paths: Iterable[str | os.PathLike[str]]) -> LandlockReport:
    """Build and enforce a read-only ruleset for ``paths`` on the calling process (irreversible)."""
    return build_read_only_ruleset(paths).enforce()


def _raise_errno(what: str) -> None:
    code = ctypes.get_errno()
    raise LandlockError(f"{what} failed: [{errno.errorcode.get(code, code)}] {os.strerror(code)}")
