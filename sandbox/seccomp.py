"""seccomp-bpf filter of a sandbox child (pyseccomp over libseccomp), installed last.

Contract: ``install(own_pid, result_fd)`` loads a filter on every thread of the calling process
(TSYNC, so the ONNX threads created earlier are covered too):

* an allow-list of what the interpreter, numpy, faiss, tokenizers and onnxruntime inference use
  (measured with ``strace -f`` on a child running embed + faiss search + cross-encoder rerank);
* ``EPERM`` for the dangerous calls an attacker reaches for (network, exec, new processes,
  ptrace, signals to other processes, raising limits, identity changes, every file mutation,
  namespaces, bpf, io_uring, memfd), so user code sees a readable ``PermissionError``;
* default action ``TRAP`` for everything else: a SIGSYS handler (installed by ``install``)
  writes a ``BlockedSyscall`` frame naming the call to ``result_fd`` and exits; the fork server
  reports ``blocked_syscall`` with that name. Syscalls of a foreign architecture (x32, i386)
  kill the process outright.

Pure data (the tables) is importable everywhere; ``pyseccomp`` is imported only by
``load_library()`` (the fork server calls it once before forking: it runs ``ldconfig`` to find
libseccomp, which a locked-down child could not do).
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
from types import ModuleType
from typing import Any

from sandbox.errors import SandboxError

__all__ = [
    "ALLOWED_SYSCALLS",
    "DENIED_SYSCALLS",
    "SeccompError",
    "install",
    "load_library",
    "syscall_name",
]

EXIT_BLOCKED_SYSCALL = 97  # exit status of a child whose SIGSYS handler reported a blocked call

# --- allowed without conditions -------------------------------------------------------------
ALLOWED_SYSCALLS = frozenset(
    {
        # descriptors the child already holds (result socket, /dev/null, read-only files)
        "read", "readv", "pread64", "preadv", "preadv2", "write", "writev", "pwrite64", "pwritev",
        "close", "close_range", "dup", "dup2", "dup3", "fcntl", "lseek", "fadvise64",
        "fstat", "newfstatat", "stat", "lstat", "statx", "statfs", "fstatfs",
        "getdents64", "getdents", "readlink", "readlinkat", "access", "faccessat", "faccessat2", "getcwd",
        "pipe", "pipe2", "poll", "ppoll", "select", "pselect6",
        "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
        "eventfd", "eventfd2",
        # memory (the address-space rlimit bounds it)
        "mmap", "munmap", "mprotect", "mremap", "brk", "madvise", "mbind", "get_mempolicy",
        "msync", "mincore",
        # threads and synchronisation (clone is conditional, below)
        "futex", "futex_waitv", "set_robust_list", "get_robust_list", "rseq", "set_tid_address",
        "arch_prctl", "membarrier", "sched_yield", "sched_getaffinity", "sched_setaffinity",
        "sched_getparam", "sched_getscheduler", "sched_get_priority_max", "sched_get_priority_min",
        "getcpu",
        # signals within the process (rt_sigaction of SIGSYS and kill/tgkill are conditional)
        "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "rt_sigpending", "rt_sigsuspend",
        "rt_sigtimedwait", "restart_syscall",
        # identity and time queries
        "getpid", "gettid", "getppid", "getpgrp", "getpgid", "getsid", "getuid", "geteuid",
        "getgid", "getegid", "getresuid", "getresgid", "getgroups", "capget",
        "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
        "uname", "sysinfo", "getrusage", "times", "getrlimit", "getpriority", "getrandom",
        "wait4", "waitid",  # no children exist; answers ECHILD
        "exit", "exit_group",
    }
)

# --- refused with EPERM so user code gets PermissionError -----------------------------------
DENIED_SYSCALLS = frozenset(
    {
        # network (our result socket needs only read/write)
        "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4", "sendto", "sendmsg",
        "sendmmsg", "recvfrom", "recvmsg", "recvmmsg", "getsockopt", "setsockopt", "getsockname",
        "getpeername", "shutdown",
        # new programs and processes (clone without CLONE_THREAD is refused below)
        "execve", "execveat", "fork", "vfork",
        # reaching into other processes
        "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "pidfd_open",
        "pidfd_getfd", "pidfd_send_signal", "kcmp", "tkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
        # limits and identity
        "setrlimit", "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid",
        "setfsgid", "setgroups", "capset", "setpriority", "setsid", "setpgid", "chdir", "fchdir",
        # every file mutation (open/openat for writing are refused below)
        "creat", "unlink", "unlinkat", "rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir",
        "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat", "truncate",
        "ftruncate", "link", "linkat", "symlink", "symlinkat", "mknod", "mknodat", "utime", "utimes",
        "utimensat", "futimesat", "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr",
        "fremovexattr", "fallocate", "flock", "sendfile", "splice", "tee", "copy_file_range",
        "inotify_init", "inotify_init1", "fanotify_init", "name_to_handle_at", "open_by_handle_at",
        # namespaces, mounts, the kernel
        "mount", "umount2", "unshare", "setns", "pivot_root", "chroot", "swapon", "swapoff", "reboot",
        "sethostname", "setdomainname", "init_module", "finit_module", "delete_module", "kexec_load",
        "kexec_file_load", "acct", "quotactl", "syslog", "perf_event_open", "bpf", "userfaultfd",
        "personality", "iopl", "ioperm", "keyctl", "add_key", "request_key", "seccomp",
        "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
        "io_uring_setup", "io_uring_enter", "io_uring_register", "memfd_create", "memfd_secret",
        "shmget", "shmat", "shmctl", "shmdt", "msgget", "msgsnd", "msgrcv", "msgctl", "semget",
        "semop", "semtimedop", "semctl", "mq_open", "mq_unlink", "migrate_pages", "move_pages",
        "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    }
)

# openat/open with any of these flags is a write or a create: refused.
O_TMPFILE_BIT = 0o20000000  # __O_TMPFILE without O_DIRECTORY
OPEN_WRITE_FLAGS = (os.O_WRONLY, os.O_RDWR, os.O_CREAT, os.O_TRUNC, os.O_APPEND, O_TMPFILE_BIT)
CLONE_THREAD = 0x00010000
# prctl options a runtime uses on itself (thread names, anonymous-mapping names, queries).
ALLOWED_PRCTL = (3, 15, 16, 21, 23, 39, 0x53564D41)  # GET_DUMPABLE, SET/GET_NAME, GET_SECCOMP, CAPBSET_READ, GET_NO_NEW_PRIVS, SET_VMA
# ioctl requests on descriptors the child holds: isatty, bytes readable, blocking, close-on-exec.
ALLOWED_IOCTL = (0x5401, 0x5413, 0x541B, 0x5421, 0x5450, 0x5451)  # TCGETS TIOCGWINSZ FIONREAD FIONBIO FIONCLEX FIOCLEX

_PYSECCOMP: ModuleType | None = None
_HANDLER_REF: Any = None  # keeps the ctypes callback alive for the life of the child


class SeccompError(SandboxError):
    """libseccomp is missing or the filter could not be loaded; the child must not run code."""


def load_library() -> ModuleType:
    """Import pyseccomp once (finds libseccomp.so via ldconfig: do it before any lock-down)."""
    global _PYSECCOMP
    if _PYSECCOMP is None:
        try:
            import pyseccomp
        except (ImportError, RuntimeError, OSError) as exc:
            raise SeccompError(
                "libseccomp is not available (pip package pyseccomp needs the system library: "
                f"apt-get install libseccomp2): {exc}"
            ) from exc
        _PYSECCOMP = pyseccomp
        syscall_names()
    return _PYSECCOMP


_SYSCALL_NAMES: dict[int, str] = {}


def syscall_names() -> dict[int, str]:
    """Number -> name of every native syscall (resolved once; the fork server warms this cache)."""
    if not _SYSCALL_NAMES:
        lib = load_library()
        arch = lib.system_arch()
        for number in range(0, 1024):
            try:
                name = lib.resolve_syscall(arch, number)
            except (OSError, ValueError):
                continue
            if name:
                _SYSCALL_NAMES[number] = name.decode() if isinstance(name, bytes) else str(name)
    return _SYSCALL_NAMES


def syscall_name(number: int) -> str:
    """The native-architecture name of syscall ``number`` (``"syscall_<n>"`` when unknown)."""
    lib = load_library()
    try:
        name = lib.resolve_syscall(lib.system_arch(), number)
    except (OSError, ValueError):
        return f"syscall_{number}"
    return name.decode() if isinstance(name, bytes) else str(name)


def install(own_pid: int, result_fd: int) -> None:
    """Load the filter on all threads of the calling process. Irreversible.

    own_pid: the child's pid (kill/tgkill are allowed only to it). result_fd: where the SIGSYS
    handler reports a trapped call before the child exits.
    """
    lib = load_library()
    _install_sigsys_reporter(result_fd)
    filt = lib.SyscallFilter(lib.TRAP)
    filt.set_attr(lib.Attr.CTL_TSYNC, 1)
    filt.set_attr(lib.Attr.ACT_BADARCH, lib.KILL_PROCESS)
    eperm = lib.ERRNO(errno.EPERM)
    try:
        for name in sorted(ALLOWED_SYSCALLS):
            _add(lib, filt, lib.ALLOW, name)
        for name in sorted(DENIED_SYSCALLS):
            _add(lib, filt, eperm, name)
        # open/openat: read-only opens only.
        for name, flags_arg in (("open", 1), ("openat", 2)):
            write_mask = 0
            for flag in OPEN_WRITE_FLAGS:
                write_mask |= flag
                _add(lib, filt, eperm, name, lib.Arg(flags_arg, lib.MASKED_EQ, flag, flag))
            _add(lib, filt, lib.ALLOW, name, lib.Arg(flags_arg, lib.MASKED_EQ, write_mask, 0))
        _add(lib, filt, lib.ERRNO(errno.ENOSYS), "openat2")  # flags hide behind a pointer; callers fall back
        # clone: threads only; clone3 hides its flags behind a pointer, so glibc falls back to clone.
        _add(lib, filt, lib.ALLOW, "clone", lib.Arg(0, lib.MASKED_EQ, CLONE_THREAD, CLONE_THREAD))
        _add(lib, filt, eperm, "clone", lib.Arg(0, lib.MASKED_EQ, CLONE_THREAD, 0))
        _add(lib, filt, lib.ERRNO(errno.ENOSYS), "clone3")
        # prlimit64: read only (new_limit == NULL); writes would raise or change limits.
        _add(lib, filt, lib.ALLOW, "prlimit64", lib.Arg(2, lib.EQ, 0))
        _add(lib, filt, eperm, "prlimit64", lib.Arg(2, lib.NE, 0))
        # signals: only to itself; the SIGSYS handler may not be replaced.
        _add(lib, filt, lib.ALLOW, "kill", lib.Arg(0, lib.EQ, own_pid))
        _add(lib, filt, eperm, "kill", lib.Arg(0, lib.NE, own_pid))
        _add(lib, filt, lib.ALLOW, "tgkill", lib.Arg(0, lib.EQ, own_pid))
        _add(lib, filt, eperm, "tgkill", lib.Arg(0, lib.NE, own_pid))
        _add(lib, filt, lib.ALLOW, "rt_sigaction", lib.Arg(0, lib.NE, signal.SIGSYS))
        _add(lib, filt, eperm, "rt_sigaction", lib.Arg(0, lib.EQ, signal.SIGSYS))
        for option in ALLOWED_PRCTL:
            _add(lib, filt, lib.ALLOW, "prctl", lib.Arg(0, lib.EQ, option))
        for request in ALLOWED_IOCTL:
            _add(lib, filt, lib.ALLOW, "ioctl", lib.Arg(1, lib.EQ, request))
        filt.load()
    except OSError as exc:
        raise SeccompError(f"could not load the seccomp filter: {exc}") from exc


def _add(lib: ModuleType, filt: Any, action: int, name: str, *args: Any) -> None:
    try:
        lib.resolve_syscall(lib.system_arch(), name)
    except (OSError, ValueError):
        return  # not a syscall on this architecture (e.g. "open" on aarch64)
    try:
        filt.add_rule(action, name, *args)
    except OSError as exc:
        raise SeccompError(f"seccomp rule for {name} failed: {exc}") from exc


# --- SIGSYS reporting -------------------------------------------------------------------------


class _SigsysInfo(ctypes.Structure):
    # siginfo_t for SIGSYS on 64-bit Linux: signo, errno, code, padding, then the _sigsys union
    # member { void *call_addr; int syscall; unsigned int arch; }.
    _fields_ = [
        ("si_signo", ctypes.c_int),
        ("si_errno", ctypes.c_int),
        ("si_code", ctypes.c_int),
        ("_pad", ctypes.c_int),
        ("call_addr", ctypes.c_void_p),
        ("syscall", ctypes.c_int),
        ("arch", ctypes.c_uint),
    ]


_SIGACTION_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.POINTER(_SigsysInfo), ctypes.c_void_p)


class _Sigaction(ctypes.Structure):
    # glibc's struct sigaction on x86_64/aarch64: handler, 1024-bit mask, flags, restorer.
    _fields_ = [
        ("sa_sigaction", _SIGACTION_HANDLER),
        ("sa_mask", ctypes.c_ulong * 16),
        ("sa_flags", ctypes.c_int),
        ("sa_restorer", ctypes.c_void_p),
    ]


SA_SIGINFO = 4


def _install_sigsys_reporter(result_fd: int) -> None:
    """Install a SIGSYS handler that reports the trapped syscall on ``result_fd`` and exits.

    The trapped call never ran; the handler must not return (the call's return register holds
    garbage), so it ends the process with ``EXIT_BLOCKED_SYSCALL``.
    """
    global _HANDLER_REF
    from sandbox.protocol import BlockedSyscall, encode_message

    names = syscall_names()

    def on_sigsys(_signum: int, info: Any, _context: int) -> None:
        number = int(info.contents.syscall)
        try:
            frame = encode_message(BlockedSyscall(syscall=names.get(number, f"syscall_{number}"), number=number))
            view = memoryview(frame)
            while view:
                view = view[os.write(result_fd, view) :]
        finally:
            os._exit(EXIT_BLOCKED_SYSCALL)

    handler = _SIGACTION_HANDLER(on_sigsys)
    action = _Sigaction()
    action.sa_sigaction = handler
    action.sa_flags = SA_SIGINFO
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.sigaction(signal.SIGSYS, ctypes.byref(action), None) != 0:
        code = ctypes.get_errno()
        raise SeccompError(f"sigaction(SIGSYS) failed: {os.strerror(code)}")
    _HANDLER_REF = (handler, action, names)
