"""The sandbox child: lock itself down, wait for one request, run it, send the result, exit.

Contract (runs only in a process just forked by the fork server; never returns):

1. descriptors: every fd but ``sock_fd`` (and ``broker_fd``, its own socket to the query broker) is closed; 0 and 1 become /dev/null (fd 1 of the fork
   server is the server's stderr, never the MCP stream, but the child needs neither); fd 2 stays
   for lock-down and warm-up logs and becomes /dev/null before the child reports ready (so
   silencing costs the request nothing and user code never reaches the server's log);
2. ``setsid`` (own session and process group, so the fork server can SIGKILL the group);
3. ``PR_SET_NO_NEW_PRIVS``, ``PR_SET_DUMPABLE`` 0; as root: capability bounding set emptied,
   ``setgroups([])``, gid/uid set to the unprivileged ids (which clears every capability);
   then ``PR_SET_PDEATHSIG`` SIGKILL, so no child outlives a killed fork server;
4. rlimits (``limits.py``: address space relative to the inherited VmSize);
5. Landlock (``landlock.py``: read-only Python install, packages, index, models);
6. nothing of the search engine: its single-threaded ONNX sessions were created and warmed in the
   fork server, so the child shares them (reranking starts its Python threads within the call);
7. seccomp (``seccomp.py``), installed last, on every thread;
7b. one run of the fork server's fixed warm-up program (``ctx.warmup_program``): the copy-on-write
   page copies every run causes happen here, off the request's path;
8. ``ChildReady`` on ``sock_fd``; one ``ExecRequest``; one ``ResultStart`` + ``ExecutionResult`` body;
   ``os._exit``.

A failure in steps 1-7 is reported as ``ChildReady(error=...)`` and the child exits: user code
never runs with a layer missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import time
import traceback
import uuid
from dataclasses import dataclass
from typing import Any, NoReturn

from sandbox.limits import apply_rlimits, plan_rlimits, read_vmsize_bytes
from sandbox.protocol import (
    ChildReady,
    ExecRequest,
    ExecutionResult,
    ProtocolError,
    encode_result,
    read_message,
    write_message,
)
from sandbox.seccomp import install as install_seccomp

__all__ = ["ChildContext", "run_child", "run_warmup"]

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
EXIT_LOCKDOWN_FAILED = 71
EXIT_INTERNAL = 70


@dataclass(frozen=True, slots=True)
class ChildContext:
    """What the fork server hands every child (inherited through fork, never serialised).

    searcher: a ``search.Searcher`` opened in the fork server, or None (no knowledge base).
    token_counter: the ``TokenCounter`` of the sandbox API. ruleset: the Landlock ruleset built by
    the fork server (read-only roots; its fd is inherited). drop_uid/drop_gid: ids to become when running as root. memory_mb: address space above
    the inherited size. max_wall_s: the longest deadline (sizes RLIMIT_CPU). state_max_bytes:
    the session-state cap passed to ``run_program``. cap_last_cap: highest capability number.
    warmup_program: ``CompiledProgram.to_bytes()`` of a fixed trusted program run once before ready.
    """

    searcher: Any
    token_counter: Any
    ruleset: Any  # sandbox.landlock.LandlockRuleset
    drop_uid: int
    drop_gid: int
    memory_mb: int
    max_wall_s: float
    state_max_bytes: int
    cap_last_cap: int = 40
    warmup_program: bytes | None = None
    broker_link: Any = None  # search.BrokerLink shared by the Qdrant-backed searchers; each child attaches its fd


def run_child(sock_fd: int, ctx: ChildContext, broker_fd: int | None = None) -> NoReturn:
    """Entry point of a freshly forked child (see module contract). Never returns.

    ``broker_fd``: this child's own stream socket to the server's query broker (Qdrant-backed indexes);
    the child can only read and write it (seccomp refuses sendmsg, so no descriptor travels on it).
    """
    status = EXIT_INTERNAL
    try:
        started = time.perf_counter()
        try:
            _lock_down(sock_fd, ctx, broker_fd)
        except Exception as exc:  # any failure means: do not run user code
            write_message(sock_fd, ChildReady(pid=os.getpid(), warm_ms=0.0, error=f"{type(exc).__name__}: {exc}"))
            status = EXIT_LOCKDOWN_FAILED
            return _exit(status)
        _silence_stderr()
        warm_ms = (time.perf_counter() - started) * 1000
        write_message(sock_fd, ChildReady(pid=os.getpid(), warm_ms=round(warm_ms, 3)))
        message = read_message(sock_fd)
        if message is None:  # the fork server retired this spare
            status = 0
            return _exit(status)
        if not isinstance(message, ExecRequest):
            raise TypeError(f"expected an exec request, got {type(message).__name__}")
        try:
            result = _execute(message, ctx)
        except BaseException as exc:  # noqa: BLE001 - reported as internal_error, details to the log
            result = _internal_error(message.request_id, exc)
        _send_result(sock_fd, result)
        status = 0
    except BaseException as exc:  # noqa: BLE001 - the child must always end in os._exit
        status = EXIT_INTERNAL
        with contextlib.suppress(BaseException):
            os.write(2, f"sandbox child {os.getpid()} failed: {exc!r}\n".encode())
    finally:
        _exit(status)
    return _exit(status)  # pragma: no cover - _exit never returns


def _send_result(sock_fd: int, result: ExecutionResult) -> None:
    """Send the result as a body the fork server passes on unread (an internal error's traceback too:
    the server logs and strips it, so nothing a call produced ever becomes the fork server's data)."""
    try:
        frames = encode_result(result)
    except (ValueError, RecursionError, ProtocolError) as exc:  # not UTF-8, too deep, too big: never crash
        frames = encode_result(ExecutionResult.failure(
            result.request_id, "runtime_error", f"the program's output could not be sent: {type(exc).__name__}",
            hint="return plain JSON data (nested at most 32 levels) and printable text", timings_ms=result.timings_ms,
        ))
    view = memoryview(frames)
    while view:
        view = view[os.write(sock_fd, view):]


def _exit(status: int) -> NoReturn:
    os._exit(status)


# ---------------------------------------------------------------------------------------------
# lock-down


def _lock_down(sock_fd: int, ctx: ChildContext, broker_fd: int | None = None) -> None:
    _reset_signals()
    # Every other descriptor goes, the other spares' broker sockets included: a child reaches only its own.
    _close_descriptors(keep_fds=(sock_fd, ctx.ruleset.fd) + ((broker_fd,) if broker_fd is not None else ()))
    fork_server_pid = os.getppid()
    os.setsid()
    libc = ctypes.CDLL(None, use_errno=True)
    _prctl(libc, PR_SET_NO_NEW_PRIVS, 1)
    _prctl(libc, PR_SET_DUMPABLE, 0)
    if os.geteuid() == 0:
        _drop_root(libc, ctx)
    # Die with the fork server: a SIGKILLed fork server must not leave a program running unsupervised.
    # Set after the uid drop, which clears the parent-death signal.
    _prctl(libc, PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != fork_server_pid:
        raise OSError("the fork server exited while this child was starting")
    plan = plan_rlimits(memory_mb=ctx.memory_mb, max_wall_s=ctx.max_wall_s, inherited_vmsize_bytes=read_vmsize_bytes())
    apply_rlimits(plan)
    ctx.ruleset.enforce()
    install_seccomp(os.getpid(), sock_fd)
    if broker_fd is not None and ctx.broker_link is not None:
        ctx.broker_link.attach(broker_fd)
    run_warmup(ctx)


def run_warmup(ctx: ChildContext) -> None:
    """Run ``ctx.warmup_program`` once through the request path (its result is dropped).

    In the fork server it does the path's one-time initialisation before any fork; in a spare child
    it takes the page copies a run causes before the request arrives.
    """
    if ctx.warmup_program is None:
        return
    request = ExecRequest(
        request_id="warmup", program=ctx.warmup_program, timeout_s=1.0, memory_mb=ctx.memory_mb, output_cap_bytes=1024
    )
    result = _execute(request, ctx)
    if result.outcome != "ok":
        log.warning("the sandbox warm-up program failed (%s); calls still run", result.outcome)


def _reset_signals() -> None:
    # The fork server's SIGCHLD wake-up pipe and handlers mean nothing here.
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def _close_descriptors(keep_fds: tuple[int, ...]) -> None:
    low = 3
    for fd in sorted(keep_fds):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    if devnull > 2:
        os.close(devnull)


def _silence_stderr() -> None:
    # User code must not write to the server's log stream either. fd 0 is /dev/null opened
    # read-write before Landlock (which forbids opening it now).
    os.dup2(0, 2)
    logging.disable(logging.CRITICAL)


def _prctl(libc: ctypes.CDLL, option: int, arg2: int) -> None:
    if libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl({option}) failed: {os.strerror(code)}")


def _drop_root(libc: ctypes.CDLL, ctx: ChildContext) -> None:
    """Become ``drop_uid``/``drop_gid`` with no groups and no capabilities (bounding set too)."""
    for cap in range(ctx.cap_last_cap + 1):
        libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    libc.prctl(PR_CAP_AMBIENT, ctypes.c_ulong(PR_CAP_AMBIENT_CLEAR_ALL), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    os.setgroups([])
    os.setresgid(ctx.drop_gid, ctx.drop_gid, ctx.drop_gid)
    os.setresuid(ctx.drop_uid, ctx.drop_uid, ctx.drop_uid)  # clears permitted/effective capabilities
    if os.getresuid() != (ctx.drop_uid,) * 3 or os.getresgid() != (ctx.drop_gid,) * 3 or os.getgroups():
        raise OSError("could not drop root privileges")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise OSError("root privileges could be regained after the drop")


# ---------------------------------------------------------------------------------------------
# running one request


def _execute(request: ExecRequest, ctx: ChildContext) -> ExecutionResult:
    """Run the request's program through the Python layer's ``run_program``."""
    # Imported here: these modules are preloaded by the fork server, so no file is read now.
    from sandbox.api import build_api
    from sandbox.policy import CompiledProgram
    from sandbox.runner import run_program

    started = time.perf_counter()
    try:
        program = CompiledProgram.from_bytes(request.program)
        # An entry without a program only lists a skill for list_skills(): the program does not call it.
        skills = [CompiledProgram.from_bytes(skill["program"]) for skill in request.skills if skill["program"]]
        skills_info = [{"name": s["name"], "description": s.get("description", "")} for s in request.skills]
        api = build_api(ctx.searcher, ctx.token_counter, skills_info=skills_info, timeout_s=request.timeout_s)
        run = run_program(
            program,
            api,
            state=request.state,
            skills=skills,
            stdout_cap_bytes=request.output_cap_bytes,
            state_max_bytes=ctx.state_max_bytes,
        )
        payload = run.to_dict()
        if payload["outcome"] == "memory_limit":  # the contract: the message states the limit
            payload["error"] = {**(payload.get("error") or {}), "message": _memory_message(ctx.memory_mb)}
        result = ExecutionResult(
            request_id=request.request_id,
            outcome=payload["outcome"],
            stdout=payload.get("stdout", ""),
            result=payload.get("result"),
            error=payload.get("error"),
            truncated=bool(payload.get("truncated", False)),
            state_set=payload.get("state_set") or {},
            state_deleted=list(payload.get("state_deleted") or []),
        )
    except MemoryError:
        result = ExecutionResult.failure(
            request.request_id,
            "memory_limit",
            _memory_message(ctx.memory_mb),
            exception="MemoryError",
            hint="work on fewer or smaller results at a time",
        )
    except Exception as exc:  # our fault: reported with an id, details only in the fork server's log
        result = _internal_error(request.request_id, exc)
    return result.with_timings(execute=(time.perf_counter() - started) * 1000)


def _memory_message(memory_mb: int) -> str:
    return f"the program exceeded its memory budget of {memory_mb} MB (above the sandbox's base size)"


def _internal_error(request_id: str, exc: BaseException) -> ExecutionResult:
    """``internal_error`` with an incident id; the traceback travels to the fork server's log only."""
    incident = uuid.uuid4().hex[:12]
    result = ExecutionResult.failure(request_id, "internal_error", f"internal error {incident}")
    assert result.error is not None
    result.error["traceback"] = "".join(traceback.format_exception(exc))  # logged and stripped by the server
    return result
