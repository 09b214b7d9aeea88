"""The fork server: a long-lived, single-threaded process that forks the sandbox children.

Contract (its client, in the server process, is ``forkserver_client.ForkServerClient``):

* The fork server lives as long as its socket to the server: EOF makes it kill its children
  and exit.
* ``serve(conn_fd)`` (fork-server process) reads ``Init``, loads the index and models once with
  every math library held to one thread, checks it is still single-threaded, answers ``Ready``
  and then runs a poll loop over the server socket, a SIGCHLD wake-up pipe and its children.
* Children are forked ahead of time, lock themselves down (``worker.py``) and report
  ``ChildReady``; a request is sent to a ready child, so it pays only for its own work.
  ``spare_children`` are kept idle, all alike: the query encoder and the cross-encoder are
  single-threaded onnxruntime sessions opened and warmed once here, before any fork, and shared
  copy-on-write by every child (a child that reranks owns only its activations).
  At most ``max_workers`` children hold a request; ``queue_size`` more wait (queue time is not
  part of the timeout); beyond that the answer is ``busy``. Each running child has a wall-clock
  deadline: SIGKILL of its process group, then it is reaped like every child (no zombies).
* Every request gets exactly one ``ExecutionResult``; deaths are mapped to outcomes
  (SIGSYS -> ``blocked_syscall``, memory -> ``memory_limit``, other signals -> ``crashed``);
  our own failures are ``internal_error`` with an incident id that the log on stderr repeats.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import dataclasses
import gc
import logging
import os
import platform
import select
import signal
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.config import PolicyConfig, SandboxConfig
from sandbox.errors import ForkServerError
from sandbox.protocol import (
    BlockedSyscall,
    Cancel,
    ChildReady,
    ExecRequest,
    ExecutionResult,
    FrameDecoder,
    Init,
    Message,
    ProtocolError,
    Ready,
    Stats,
    StatsRequest,
    read_message,
    write_message,
)

__all__ = ["serve"]

log = logging.getLogger(__name__)

IS_LINUX = platform.system() == "Linux"
NOT_LINUX_MESSAGE = (
    "execute_code needs Linux (seccomp, Landlock, rlimits); this platform is "
    f"{platform.system() or 'unknown'}. Run the knowledge-mcp Docker image instead."
)
# Thread pools of the math libraries stay at one thread in the fork server (fork after threads is UB).
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAYON_NUM_THREADS": "1",
}
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
# Modules the children use without importing anything after their lock-down (Landlock may hide
# the Python install from the unprivileged uid; imports after it would fail).
PRELOAD_MODULES = (
    "sandbox.api",
    "sandbox.policy",
    "sandbox.runner",
    "traceback",
    "uuid",
    "json",
    "encodings.idna",  # socket/connect error paths import it lazily
    "onnxruntime",
)
# Run once in the fork server and once in every spare before it reports ready (see worker.py).
WARMUP_SOURCE = "print('warm up')\nresult = {'warm': [1, 2.5, 'up']}\n"
READ_CHUNK_BYTES = 1 << 20
START_TIMEOUT_S = 300.0
CLOSE_TIMEOUT_S = 10.0
SPAWN_FAILURES_BEFORE_GIVING_UP = 3
REFILL_DELAY_S = 0.05  # a call still running after this long is not a quick one: fork spares anyway
MEMORY_KILL_FRACTION = 0.8  # a signal death after touching this much of the budget is memory_limit
PR_SET_DUMPABLE = 4
MADV_COLLAPSE = 25  # linux/mman.h (6.1+): synchronously back a range with transparent huge pages
HUGE_PAGE_BYTES = 2 << 20


# =============================================================================================
# fork-server process


@dataclass(slots=True)
class _Pending:
    request: ExecRequest
    enqueued_at: float


@dataclass(slots=True)
class _Child:
    pid: int
    sock: socket.socket
    memory_mb: int
    decoder: FrameDecoder = field(default_factory=FrameDecoder)
    is_ready: bool = False
    ready_error: str | None = None
    pending: _Pending | None = None  # the request this child serves (sent once it is ready)
    started_at: float | None = None
    deadline: float | None = None
    kill_reason: str | None = None  # "timeout" | "cancel" | "protocol" | "retire"
    result: ExecutionResult | None = None
    blocked: BlockedSyscall | None = None
    is_answered: bool = False  # the client already got this request's result
    is_sock_open: bool = True
    queued_ms: float = 0.0

    @property
    def request_id(self) -> str | None:
        return self.pending.request.request_id if self.pending else None


class ForkServer:
    """The poll loop of the fork-server process (see module contract)."""

    def __init__(self, conn: socket.socket, ctx: Any, config: SandboxConfig, rss_bytes: int) -> None:
        self._conn = conn
        self._conn_decoder = FrameDecoder()
        self._ctx = ctx
        self._config = config
        self._rss_bytes = rss_bytes
        self._children: dict[int, _Child] = {}
        self._by_fd: dict[int, _Child] = {}
        self._queue: collections.deque[_Pending] = collections.deque()
        self._spawn_failures = 0
        self._last_spawn_error: str | None = None
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._is_running = True

    # ------------------------------------------------------------------ loop
    def prefork(self) -> None:
        """Fork the first spare children (they warm up while the server hears ``Ready``)."""
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        self._refill()

    def serve(self) -> None:
        try:
            while self._is_running:
                poller = select.poll()
                poller.register(self._conn.fileno(), select.POLLIN)
                poller.register(self._wakeup_r, select.POLLIN)
                for child in self._children.values():
                    if child.is_sock_open:
                        poller.register(child.sock.fileno(), select.POLLIN)
                events = poller.poll(self._poll_timeout_ms())
                for fd, _event in events:
                    if fd == self._conn.fileno():
                        self._read_client()
                    elif fd == self._wakeup_r:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wakeup_r, 4096)
                    elif fd in self._by_fd:
                        self._read_child(self._by_fd[fd])
                self._reap()
                self._enforce_deadlines()
                self._dispatch()
                if self._refill_at() <= time.monotonic():
                    self._refill()
        finally:
            self._shutdown()

    def _poll_timeout_ms(self) -> int:
        deadlines = [c.deadline for c in self._children.values() if c.deadline is not None and c.kill_reason is None]
        refill_at = self._refill_at()
        if refill_at > 0.0:  # 0.0 means "refill now": the loop has just done it, nothing to wake up for
            deadlines.append(refill_at)
        if not deadlines:
            return 1000  # idle: sleep until a message, a SIGCHLD, or this re-check of reaping
        return max(0, min(1000, int((min(deadlines) - time.monotonic()) * 1000) + 1))

    def _refill_at(self) -> float:
        """When to fork the next spares: once the running calls have answered, or REFILL_DELAY_S after
        the oldest of them started. fork() of the loaded image blocks this loop for ~10 ms; done right
        after handing a quick call to a spare, it would delay that call's result by as much."""
        if not self._wants_spares():
            return 0.0  # nothing to fork: no wake-up either (a running call must not make this loop spin)
        started = [
            c.started_at for c in self._children.values()
            if c.started_at is not None and not c.is_answered and c.kill_reason is None
        ]
        return min(started) + REFILL_DELAY_S if started else 0.0

    def _wants_spares(self) -> bool:
        """True while fewer than spare_children idle children exist and the child limit allows more."""
        config = self._config
        return (
            self._spawn_failures < SPAWN_FAILURES_BEFORE_GIVING_UP
            and len(self._idle(config.memory_mb)) < config.spare_children
            and len(self._children) < config.max_workers + config.spare_children
        )

    # ------------------------------------------------------------------ the server side
    def _read_client(self) -> None:
        data = self._conn.recv(READ_CHUNK_BYTES)
        if not data:
            log.info("server closed the connection; fork server exits")
            self._is_running = False
            return
        try:
            messages = self._conn_decoder.feed(data)
        except ProtocolError:
            log.exception("malformed frame from the server; fork server exits")
            self._is_running = False
            return
        for message in messages:
            if isinstance(message, ExecRequest):
                self._accept(message)
            elif isinstance(message, Cancel):
                self._cancel(message.request_id)
            elif isinstance(message, StatsRequest):
                self._send_client(self._stats())
            else:
                log.error("unexpected %s message from the server; ignored", type(message).__name__)

    def _send_client(self, message: Message) -> None:
        try:
            write_message(self._conn.fileno(), message)
        except OSError:
            log.warning("cannot write to the server (gone?); fork server exits")
            self._is_running = False

    def _answer(self, result: ExecutionResult) -> None:
        self._send_client(result)

    def _accept(self, request: ExecRequest) -> None:
        if self._is_known(request.request_id):
            self._answer(
                ExecutionResult.failure(request.request_id, "internal_error", _incident("duplicate request id %s", request.request_id))
            )
            return
        if len(self._queue) >= self._config.queue_size and self._assigned() >= self._config.max_workers:
            self._answer(
                ExecutionResult.failure(
                    request.request_id,
                    "busy",
                    f"all {self._config.max_workers} sandbox workers are busy and {len(self._queue)} calls are waiting",
                    hint="retry in a few seconds",
                )
            )
            return
        self._queue.append(_Pending(request=request, enqueued_at=time.monotonic()))
        self._dispatch()  # so the next message of the same batch sees the true queue length

    def _cancel(self, request_id: str) -> None:
        for pending in list(self._queue):
            if pending.request.request_id == request_id:
                self._queue.remove(pending)
                self._answer(ExecutionResult.failure(request_id, "crashed", "the call was cancelled before it started"))
                return
        for child in self._children.values():
            if child.request_id == request_id and not child.is_answered:
                self._kill(child, "cancel")
                return

    def _is_known(self, request_id: str) -> bool:
        return any(p.request.request_id == request_id for p in self._queue) or any(
            c.request_id == request_id and not c.is_answered for c in self._children.values()
        )

    def _assigned(self) -> int:
        return sum(1 for c in self._children.values() if c.pending is not None)

    # ------------------------------------------------------------------ children
    def _spawn(self, memory_mb: int) -> _Child:
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # child: never returns
            from sandbox.worker import run_child

            run_child(child_sock.fileno(), dataclasses.replace(self._ctx, memory_mb=memory_mb))
        child_sock.close()
        child = _Child(pid=pid, sock=parent_sock, memory_mb=memory_mb)
        self._children[pid] = child
        self._by_fd[parent_sock.fileno()] = child
        return child

    def _idle(self, memory_mb: int) -> list[_Child]:
        return [
            c
            for c in self._children.values()
            if c.pending is None
            and c.memory_mb == memory_mb
            and c.kill_reason is None
            and c.is_sock_open
        ]

    def _refill(self) -> None:
        """Keep ``spare_children`` idle children (default budget) warming or ready; after repeated
        spawn failures none, until the next request retries (see _dispatch)."""
        while self._wants_spares():
            self._spawn(self._config.memory_mb)

    def _dispatch(self) -> None:
        if self._queue and self._spawn_failures >= SPAWN_FAILURES_BEFORE_GIVING_UP:
            message = _incident("sandbox children fail to start: %s", self._last_spawn_error)
            while self._queue:
                self._answer(ExecutionResult.failure(self._queue.popleft().request.request_id, "internal_error", message))
            self._spawn_failures = SPAWN_FAILURES_BEFORE_GIVING_UP - 1  # one more try on the next call
            return
        while self._queue and self._assigned() < self._config.max_workers:
            pending = self._queue.popleft()
            idle = self._idle(pending.request.memory_mb)
            idle.sort(key=lambda c: not c.is_ready)  # ready ones first
            child = idle[0] if idle else self._spawn(pending.request.memory_mb)
            child.pending = pending
            if child.is_ready:
                self._start(child)
        for child in list(self._children.values()):
            if child.pending is not None and child.is_ready and child.started_at is None and child.kill_reason is None:
                self._start(child)

    def _start(self, child: _Child) -> None:
        assert child.pending is not None
        now = time.monotonic()
        child.queued_ms = (now - child.pending.enqueued_at) * 1000
        child.started_at = now
        child.deadline = now + child.pending.request.timeout_s
        try:
            write_message(child.sock.fileno(), child.pending.request)
        except OSError:
            # The child died between ChildReady and now: give the request to another child.
            log.warning("child %d died before taking its request; retrying on another", child.pid)
            pending, child.pending = child.pending, None
            child.started_at = child.deadline = None
            self._kill(child, "retire")
            self._queue.appendleft(pending)

    def _read_child(self, child: _Child) -> None:
        try:
            data = child.sock.recv(READ_CHUNK_BYTES)
        except OSError:
            data = b""
        if not data:
            self._close_sock(child)
            return
        try:
            messages = child.decoder.feed(data)
        except ProtocolError as exc:
            log.error("child %d broke the protocol: %s", child.pid, exc)
            self._kill(child, "protocol")
            return
        for message in messages:
            self._on_child_message(child, message)

    def _on_child_message(self, child: _Child, message: Message) -> None:
        if isinstance(message, ChildReady) and not child.is_ready and child.started_at is None:
            if message.error:
                child.ready_error = message.error
                self._spawn_failures += 1
                self._last_spawn_error = message.error
                log.error("sandbox child %d could not lock down: %s", child.pid, message.error)
                return
            self._spawn_failures = 0
            child.is_ready = True
            if child.pending is not None:
                self._start(child)
        elif isinstance(message, ExecutionResult) and child.started_at is not None and child.result is None:
            child.result = message
            if child.kill_reason is None:
                self._answer(self._finish_result(child, message))
                child.is_answered = True
        elif isinstance(message, BlockedSyscall) and child.blocked is None:
            child.blocked = message
        else:
            log.error("child %d sent an unexpected %s; killed", child.pid, type(message).__name__)
            self._kill(child, "protocol")

    def _close_sock(self, child: _Child) -> None:
        if child.is_sock_open:
            self._by_fd.pop(child.sock.fileno(), None)
            child.sock.close()
            child.is_sock_open = False

    def _kill(self, child: _Child, reason: str) -> None:
        if child.kill_reason is None:
            child.kill_reason = reason
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            # Not yet (or no longer) a group leader: kill the process itself.
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for child in self._children.values():
            if child.deadline is not None and now >= child.deadline and child.kill_reason is None and not child.is_answered:
                self._kill(child, "timeout")

    def _reap(self) -> None:
        while self._children:
            try:
                pid, status, rusage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self._children.pop(pid, None)
            if child is None:
                continue
            self._drain(child)
            self._close_sock(child)
            self._finish(child, status, rusage)

    def _drain(self, child: _Child) -> None:
        """Read what a dead child left in its socket (its end is closed: this never blocks)."""
        if not child.is_sock_open:
            return
        child.sock.setblocking(False)
        while child.is_sock_open:
            try:
                data = child.sock.recv(READ_CHUNK_BYTES)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            try:
                messages = child.decoder.feed(data)
            except ProtocolError as exc:
                log.error("child %d broke the protocol: %s", child.pid, exc)
                child.kill_reason = child.kill_reason or "protocol"
                return
            for message in messages:
                self._on_child_message(child, message)

    def _finish(self, child: _Child, status: int, rusage: Any) -> None:
        if child.pending is None or child.started_at is None:
            if child.pending is not None:  # died while warming for a request: retry it elsewhere
                self._queue.appendleft(child.pending)
            if child.kill_reason is None and child.ready_error is None:
                self._spawn_failures += 1
                self._last_spawn_error = f"child exited during warm-up ({_describe_status(status)})"
                log.error("sandbox child %d died during warm-up: %s", child.pid, _describe_status(status))
            return
        if child.is_answered:
            return
        result = self._death_result(child, status, rusage)
        self._answer(result)
        child.is_answered = True

    def _finish_result(self, child: _Child, result: ExecutionResult) -> ExecutionResult:
        assert child.pending is not None and child.started_at is not None
        request_id = child.pending.request.request_id
        if result.outcome == "internal_error" and result.error and result.error.get("traceback"):
            log.error("%s in child %d:\n%s", result.error.get("message"), child.pid, result.error["traceback"])
            result = ExecutionResult.failure(request_id, "internal_error", str(result.error.get("message")))
        execute_ms = (time.monotonic() - child.started_at) * 1000
        return result.with_request_id(request_id).with_timings(queue=child.queued_ms, execute=execute_ms)

    def _death_result(self, child: _Child, status: int, rusage: Any) -> ExecutionResult:
        assert child.pending is not None and child.started_at is not None
        request = child.pending.request
        timings = {"queue": round(child.queued_ms, 3), "execute": round((time.monotonic() - child.started_at) * 1000, 3)}
        rid = request.request_id
        if child.kill_reason == "timeout":
            return ExecutionResult.failure(
                rid, "timeout", f"the program ran longer than its {request.timeout_s:g} s limit (wall clock) and was stopped",
                hint="do less work per call, or raise timeout_s (at most 120)", timings_ms=timings,
            )
        if child.kill_reason == "cancel":
            return ExecutionResult.failure(rid, "crashed", "the call was cancelled; its process was killed", timings_ms=timings)
        if child.kill_reason == "protocol":
            return ExecutionResult.failure(rid, "internal_error", _incident("child %d broke the protocol", child.pid), timings_ms=timings)
        if child.blocked is not None:
            return _blocked_result(rid, child.blocked.syscall, timings)
        if os.WIFSIGNALED(status):
            signum = os.WTERMSIG(status)
            if signum == signal.SIGSYS:
                return _blocked_result(rid, None, timings)
            if signum == signal.SIGXCPU:
                return ExecutionResult.failure(
                    rid, "timeout", "the program used up its CPU time limit and was stopped", timings_ms=timings
                )
            touched = rusage.ru_maxrss * 1024 - self._rss_bytes
            if signum in (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS) and touched >= MEMORY_KILL_FRACTION * request.memory_mb * 1024 * 1024:
                return _memory_result(rid, request.memory_mb, timings)
            name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else f"signal {signum}"
            return ExecutionResult.failure(
                rid, "crashed", f"the sandbox process was killed by {name}", exception=name, timings_ms=timings
            )
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
        return ExecutionResult.failure(
            rid, "crashed", f"the sandbox process exited (status {code}) before returning a result", timings_ms=timings
        )

    # ------------------------------------------------------------------ stats and shutdown
    def _stats(self) -> Stats:
        return Stats(
            pid=os.getpid(),
            running=self._assigned(),
            queued=len(self._queue),
            spares=sum(1 for c in self._children.values() if c.pending is None),
            child_pids=sorted(self._children),
            running_pids=sorted(pid for pid, c in self._children.items() if c.pending is not None),
            threads=_count_threads(),
            open_fds=len(os.listdir("/proc/self/fd")),
            rss_kb=_read_status_kb("VmRSS"),
        )

    def _shutdown(self) -> None:
        for child in list(self._children.values()):
            self._kill(child, child.kill_reason or "retire")
        for pid, child in list(self._children.items()):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self._close_sock(child)
        self._children.clear()
        signal.set_wakeup_fd(-1)
        for fd in (self._wakeup_r, self._wakeup_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def _blocked_result(request_id: str, syscall: str | None, timings: dict[str, float]) -> ExecutionResult:
    what = f"the system call {syscall!r}" if syscall else "a system call (unknown which)"
    return ExecutionResult.failure(
        request_id,
        "blocked_syscall",
        f"{what} is not allowed in the sandbox (seccomp); the process was stopped",
        exception=syscall or "unknown",
        hint="the sandbox has no network, processes, file writes or signals; use the search API",
        timings_ms=timings,
    )


def _memory_result(request_id: str, memory_mb: int, timings: dict[str, float]) -> ExecutionResult:
    return ExecutionResult.failure(
        request_id,
        "memory_limit",
        f"the program exceeded its memory budget of {memory_mb} MB and was stopped",
        exception="MemoryError",
        hint="work on fewer or smaller results at a time",
        timings_ms=timings,
    )


def _incident(message: str, *args: object) -> str:
    incident = uuid.uuid4().hex[:12]
    log.error("internal error %s: " + message, incident, *args)
    return f"internal error {incident}"


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.WEXITSTATUS(status)}"


def _count_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _read_status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------------------------
# fork-server start-up


def serve(conn_fd: int) -> int:
    """Main of the fork-server process: ``Init`` -> load -> ``Ready`` -> loop. Returns an exit code."""
    conn = socket.socket(fileno=conn_fd)
    started = time.perf_counter()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_DUMPABLE, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    for key, value in SINGLE_THREAD_ENV.items():  # before any math library is imported
        os.environ[key] = value
    message = read_message(conn.fileno())
    if not isinstance(message, Init):
        logging.basicConfig(stream=sys.stderr, level=logging.INFO)
        log.error("fork server expected an init message, got %r", message)
        return 2
    logging.basicConfig(
        stream=sys.stderr, level=message.log_level, format="%(asctime)s %(levelname)s fork-server %(name)s: %(message)s"
    )
    try:
        ctx, config = _load(message)
    except Exception as exc:  # reported to the server, which raises ForkServerError with the exit code
        log.exception("fork server start-up failed")
        write_message(
            conn.fileno(),
            Ready(
                pid=os.getpid(), load_ms=0.0, has_searcher=False, threads=_count_threads(),
                error=f"{type(exc).__name__}: {exc}", exit_code=int(getattr(exc, "exit_code", 1)),
            ),
        )
        return 1
    threads = _count_threads()
    # onnxruntime's import starts one idle helper thread (parked on a futex, holding no lock);
    # anything more means a math library left a pool running.
    expected = 2 if "onnxruntime" in sys.modules else 1
    if threads > expected:
        log.warning("fork server runs %d threads after loading (expected %d): a math library started a "
                    "thread pool; children must not use it", threads, expected)
    server = ForkServer(conn, ctx, config, rss_bytes=_read_status_kb("VmRSS") * 1024)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.prefork()
    load_ms = (time.perf_counter() - started) * 1000
    write_message(conn.fileno(), Ready(pid=os.getpid(), load_ms=round(load_ms, 1), has_searcher=ctx.searcher is not None, threads=threads))
    log.info("fork server ready in %.0f ms (pid %d)", load_ms, os.getpid())
    server.serve()
    return 0


def _load(init: Init) -> tuple[Any, SandboxConfig]:
    from sandbox import seccomp
    from sandbox.landlock import build_read_only_ruleset
    from sandbox.policy import compile_program
    from sandbox.worker import ChildContext, run_warmup

    if not IS_LINUX:
        raise ForkServerError(NOT_LINUX_MESSAGE)
    sandbox_config = _sandbox_config_from_dict(init.sandbox)
    seccomp.load_library()
    _stop_tqdm_monitor(before_load=True)
    searcher = None
    search_config = None
    index_dirs = [directory for _, directory in _served_indexes(init)]
    if index_dirs:
        import search

        search_config = search.SearchConfig(**_search_config_args(init.search or {}))
        searcher = search.IndexSet.open(_served_indexes(init), search_config)
    _hold_math_libraries_to_one_thread()
    if searcher is not None:
        # Embed one query and score one pair now, single-threaded: children inherit the finished
        # lazy initialisation of both sessions instead of each paying for it.
        searcher.warm_before_fork()
    _stop_tqdm_monitor(before_load=False)
    token_counter = _open_token_counter(sandbox_config)
    _preload()
    ctx = ChildContext(
        searcher=searcher,
        token_counter=token_counter,
        ruleset=build_read_only_ruleset(_readable_paths(index_dirs, search_config)),
        drop_uid=sandbox_config.drop_uid,
        drop_gid=sandbox_config.drop_gid,
        memory_mb=sandbox_config.memory_mb,
        max_wall_s=max(sandbox_config.timeout_s, 120.0),
        state_max_bytes=sandbox_config.state_max_bytes,
        cap_last_cap=_cap_last_cap(),
        warmup_program=compile_program(WARMUP_SOURCE, sandbox_config).to_bytes(),
    )
    run_warmup(ctx)  # one-time initialisation of the request path, shared by every child
    # Move everything loaded so far out of the collector's sight: a collection in a child would
    # otherwise write to every object's header and copy most of the heap (memory and time per call).
    gc.freeze()
    _collapse_to_huge_pages()
    return ctx, sandbox_config


def _collapse_to_huge_pages() -> None:
    """Back the loaded heap with 2 MB pages (MADV_COLLAPSE, Linux >= 6.1; a no-op elsewhere).

    fork() copies one page-table entry per page of private memory: with the model weights and the
    Python heap on huge pages it copies 512 times fewer, and a spare child costs ~3 ms instead of
    ~8-12 ms of this single-threaded loop. A child's later write still copies only 4 KB (the
    kernel splits a shared huge page on copy-on-write), so its private memory does not grow.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    started, collapsed = time.perf_counter(), 0
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        is_anonymous = len(fields) < 6 or fields[5] == "[heap]"
        if not is_anonymous or not fields[1].startswith("rw") or fields[1][3] != "p":
            continue
        low, high = (int(address, 16) for address in fields[0].split("-"))
        low = (low + HUGE_PAGE_BYTES - 1) & ~(HUGE_PAGE_BYTES - 1)
        high &= ~(HUGE_PAGE_BYTES - 1)
        if high > low and libc.madvise(low, high - low, MADV_COLLAPSE) == 0:
            collapsed += high - low
    log.debug("collapsed %d MB to huge pages in %.0f ms", collapsed >> 20, (time.perf_counter() - started) * 1000)


def _sandbox_config_from_dict(values: dict[str, Any]) -> SandboxConfig:
    values = dict(values)
    values["policy"] = PolicyConfig(**values.get("policy", {}))
    return SandboxConfig(**values)


def _search_config_args(values: dict[str, Any]) -> dict[str, Any]:
    # JSON turned tuples into lists; the dataclass wants its tuples back.
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _hold_math_libraries_to_one_thread() -> None:
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
        with contextlib.suppress(RuntimeError):  # only settable before the first parallel op
            torch.set_num_interop_threads(1)
    faiss = sys.modules.get("faiss")
    if faiss is not None:
        faiss.omp_set_num_threads(1)


def _stop_tqdm_monitor(*, before_load: bool) -> None:
    """tqdm starts a monitor thread on its first progress bar (model loading shows one): forbid it
    before loading, and stop one that slipped through, so the fork server stays single-threaded."""
    try:
        import tqdm
    except ImportError:
        return
    if before_load:
        tqdm.tqdm.monitor_interval = 0
        return
    monitor = getattr(tqdm.tqdm, "monitor", None)
    if monitor is not None:
        monitor.exit()
        monitor.join(timeout=5)


def _open_token_counter(config: SandboxConfig) -> Any:
    try:
        from sandbox.tokens import TokenCounter
    except ImportError:
        return None
    return TokenCounter.open(config.token_encoding)


def _preload() -> None:
    import importlib

    for name in PRELOAD_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:  # children would import it after their lock-down (or fail to)
            log.warning("preload of %s failed: %s", name, exc)
    try:
        from sandbox.api import preload_sandbox
    except ImportError:
        return
    preload_sandbox()


def _served_indexes(init: Init) -> list[tuple[str, str]]:
    """(name, dir) of every index to serve: the named ones, or index_dir as 'default'."""
    if init.indexes:
        return [(str(name), str(directory)) for name, directory in init.indexes]
    return [] if init.index_dir is None else [("default", init.index_dir)]


def _readable_paths(index_dirs: list[str], search_config: Any) -> tuple[str, ...]:
    """Landlock read-only roots: the Python install, our packages, the index and model folders."""
    import importlib.util
    import site

    roots: list[str] = [sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages()]
    for package in ("sandbox", "search", "index"):  # located, not imported
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            roots += list(spec.submodule_search_locations)
    roots += index_dirs
    for spec in (getattr(search_config, "rerank_model", None), getattr(search_config, "embed_model", None)):
        if spec and Path(spec).is_dir():
            roots.append(spec)
    roots.append("/dev/urandom")
    unique: list[str] = []
    for root in roots:
        resolved = os.path.realpath(root)
        if resolved not in unique and os.path.exists(resolved):
            unique.append(resolved)
    return tuple(unique)


def _cap_last_cap() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 63

