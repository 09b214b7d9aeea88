"""The fork server's poll loop: fork spare children, hand each request to one, answer once.

Contract (its client, in the server process, is ``forkserver_client.ForkServerClient``; its
start-up is ``forkserver_startup.serve``; deaths map to results in ``forkserver_outcomes``):

* The fork server lives as long as its socket to the server: EOF makes it kill its children
  and exit.
* ``ForkServer.serve()`` runs a poll loop over the server socket, a SIGCHLD wake-up pipe and its
  children. It is single-threaded: the loop is the only code running after start-up.
* Children are forked ahead of time, lock themselves down (``worker.py``) and report
  ``ChildReady``; a request is sent to a ready child, so it pays only for its own work.
  ``spare_children`` are kept idle, all alike: the query encoder and the cross-encoder are
  single-threaded onnxruntime sessions opened and warmed once at start-up, before any fork, and
  shared copy-on-write by every child (a child that reranks owns only its activations).
  At most ``max_workers`` children hold a request; ``queue_size`` more wait (queue time is not
  part of the timeout); beyond that the answer is ``busy``. Each running child has a wall-clock
  deadline: SIGKILL of its process group, then it is reaped like every child (no zombies).
* Every request gets exactly one ``ExecutionResult``; deaths are mapped to outcomes
  (``forkserver_outcomes.death_result``); our own failures are ``internal_error`` with an
  incident id that the log on stderr repeats.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import logging
import os
import select
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.config import SandboxConfig
from sandbox.forkserver_common import incident
from sandbox.forkserver_inbox import Inbox, MemfdBody
from sandbox.forkserver_outcomes import ChildDeath, death_result, describe_status
from sandbox.protocol import (
    ApplyDeltas,
    BlockedSyscall,
    Cancel,
    ChildReady,
    ExecStart,
    ExecutionResult,
    Message,
    ProtocolError,
    ResultEnvelope,
    ResultStart,
    Stats,
    StatsRequest,
    write_message,
)

__all__ = ["ForkServer", "count_threads", "read_status_kb"]

log = logging.getLogger(__name__)

SPAWN_FAILURES_BEFORE_GIVING_UP = 3
REFILL_DELAY_S = 0.05  # a call still running after this long is not a quick one: fork spares anyway


@dataclass(slots=True)
class _Pending:
    request: ExecStart
    body: MemfdBody  # the encoded ExecRequest, never read by the fork server
    enqueued_at: float


@dataclass(slots=True)
class _Child:
    pid: int
    sock: socket.socket
    memory_mb: int
    inbox: Inbox
    is_ready: bool = False
    ready_error: str | None = None
    pending: _Pending | None = None  # the request this child serves (sent once it is ready)
    started_at: float | None = None
    deadline: float | None = None
    kill_reason: str | None = None  # "timeout" | "cancel" | "protocol" | "retire"
    has_result: bool = False
    blocked: BlockedSyscall | None = None
    is_answered: bool = False  # the client already got this request's result
    is_sock_open: bool = True
    queued_ms: float = 0.0
    broker: socket.socket | None = None  # our end of its broker socket, never read; sent to the server at start

    @property
    def request_id(self) -> str | None:
        return self.pending.request.request_id if self.pending else None


class ForkServer:
    """The poll loop of the fork-server process (see module contract)."""

    def __init__(self, conn: socket.socket, ctx: Any, config: SandboxConfig, rss_bytes: int,
                 broker_conn: socket.socket | None = None) -> None:
        self._conn = conn
        # Qdrant-backed indexes: each child gets a socketpair at fork; our end goes to the server's broker
        # (SCM_RIGHTS on this socket) when the child starts a call. We never read it: no broker byte enters
        # this process, and this loop stays single-threaded and never blocks on it.
        self._broker_conn = broker_conn
        if broker_conn is not None:
            broker_conn.setblocking(False)
        self._conn_inbox = Inbox(conn)
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
        try:
            messages = self._conn_inbox.pump()
        except (ProtocolError, OSError):
            log.exception("malformed frame from the server (or a broken socket); fork server exits")
            self._is_running = False
            return
        if self._conn_inbox.is_eof:
            log.info("server closed the connection; fork server exits")
            self._is_running = False
        for message, body in messages:
            if isinstance(message, ExecStart) and body is not None:
                self._accept(message, body)
            elif isinstance(message, Cancel):
                self._cancel(message.request_id)
            elif isinstance(message, StatsRequest):
                self._send_client(self._stats())
            elif isinstance(message, ApplyDeltas):
                self._apply_deltas()
            else:
                log.error("unexpected %s message from the server; ignored", type(message).__name__)

    def _apply_deltas(self) -> None:
        """Merge the served indexes' current deltas (a few files: milliseconds), then replace the idle
        spares, which hold the previous view; running calls finish on theirs."""
        searcher = getattr(self._ctx, "searcher", None)
        if searcher is None or not hasattr(searcher, "apply_deltas"):
            return
        started = time.monotonic()
        try:
            applied = searcher.apply_deltas()
        except Exception:  # noqa: BLE001 - keep serving the previous view
            log.exception("cannot merge an index delta; still serving the previous view")
            return
        gc.freeze()  # what the delta added stays out of the children's collections (copy-on-write)
        for child in list(self._children.values()):
            if child.pending is None and child.kill_reason is None:
                self._kill(child, "retire")
        self._refill()
        log.info("index deltas merged in %.0f ms: %s", (time.monotonic() - started) * 1000, applied or "none")

    def _send_client(self, message: Message) -> None:
        try:
            write_message(self._conn.fileno(), message)
        except OSError:
            log.warning("cannot write to the server (gone?); fork server exits")
            self._is_running = False

    def _answer(self, result: ExecutionResult) -> None:
        self._send_client(result)

    def _accept(self, request: ExecStart, body: MemfdBody) -> None:
        if self._is_known(request.request_id):
            body.close()
            self._answer(
                ExecutionResult.failure(request.request_id, "internal_error", incident("duplicate request id %s", request.request_id))
            )
            return
        if len(self._queue) >= self._config.queue_size and self._assigned() >= self._config.max_workers:
            body.close()
            self._answer(
                ExecutionResult.failure(
                    request.request_id,
                    "busy",
                    f"all {self._config.max_workers} sandbox workers are busy and {len(self._queue)} calls are waiting",
                    hint="retry in a few seconds",
                )
            )
            return
        self._queue.append(_Pending(request=request, body=body, enqueued_at=time.monotonic()))
        self._dispatch()  # so the next message of the same batch sees the true queue length

    def _cancel(self, request_id: str) -> None:
        for pending in list(self._queue):
            if pending.request.request_id == request_id:
                self._queue.remove(pending)
                pending.body.close()
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
        broker_ours = broker_theirs = None
        if self._broker_conn is not None:
            broker_ours, broker_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # child: never returns
            from sandbox.worker import run_child

            run_child(child_sock.fileno(), dataclasses.replace(self._ctx, memory_mb=memory_mb),
                      broker_fd=broker_theirs.fileno() if broker_theirs is not None else None)
        child_sock.close()
        if broker_theirs is not None:
            broker_theirs.close()
        child = _Child(pid=pid, sock=parent_sock, memory_mb=memory_mb, inbox=Inbox(parent_sock), broker=broker_ours)
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
            message = incident("sandbox children fail to start: %s", self._last_spawn_error)
            while self._queue:
                pending = self._queue.popleft()
                pending.body.close()
                self._answer(ExecutionResult.failure(pending.request.request_id, "internal_error", message))
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
            child.pending.body.send_to(child.sock.fileno())
        except OSError:
            # The child died between ChildReady and now: give the request to another child.
            log.warning("child %d died before taking its request; retrying on another", child.pid)
            pending, child.pending = child.pending, None
            child.started_at = child.deadline = None
            self._kill(child, "retire")
            self._queue.appendleft(pending)
            return
        child.pending.body.close()  # the child has the request; its bytes are freed with the memfd
        self._hand_over_broker(child)

    def _hand_over_broker(self, child: _Child) -> None:
        """Send the child's broker socket to the server, tagged with its call's id, and drop our copy.
        A failure leaves the child with a closed channel (its queries fail clearly), never a stalled loop."""
        sock, child.broker = child.broker, None
        if sock is None:
            return
        try:
            if self._broker_conn is not None and child.pending is not None:
                tag = child.pending.request.request_id.encode("utf-8")
                socket.send_fds(self._broker_conn, [tag], [sock.fileno()])
        except OSError as exc:
            log.warning("could not hand call %s's broker socket to the server: %s", child.request_id, exc)
        finally:
            sock.close()

    def _read_child(self, child: _Child) -> None:
        try:
            messages = child.inbox.pump()
        except ProtocolError as exc:
            log.error("child %d broke the protocol: %s", child.pid, exc)
            self._kill(child, "protocol")
            return
        except OSError:
            messages, child.inbox.is_eof = [], True
        for message, body in messages:
            self._on_child_message(child, message, body)
        if child.inbox.is_eof:
            self._close_sock(child)

    def _on_child_message(self, child: _Child, message: Message, body: MemfdBody | None = None) -> None:
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
        elif isinstance(message, ResultStart) and body is not None and child.started_at is not None and not child.has_result:
            child.has_result = True
            try:
                if child.kill_reason is None:
                    self._answer_body(child, body)
                    child.is_answered = True
            finally:
                body.close()
        elif isinstance(message, BlockedSyscall) and child.blocked is None:
            child.blocked = message
        else:
            if body is not None:
                body.close()
            log.error("child %d sent an unexpected %s; killed", child.pid, type(message).__name__)
            self._kill(child, "protocol")

    def _close_sock(self, child: _Child) -> None:
        if child.broker is not None:
            child.broker.close()
            child.broker = None
        if child.is_sock_open:
            self._by_fd.pop(child.sock.fileno(), None)
            child.inbox.close()
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
        try:
            messages = child.inbox.pump()
        except ProtocolError as exc:
            log.error("child %d broke the protocol: %s", child.pid, exc)
            child.kill_reason = child.kill_reason or "protocol"
            return
        except OSError:
            return
        for message, body in messages:
            self._on_child_message(child, message, body)

    def _finish(self, child: _Child, status: int, rusage: Any) -> None:
        if child.pending is None or child.started_at is None:
            if child.pending is not None:  # died while warming for a request: retry it elsewhere
                self._queue.appendleft(child.pending)
            if child.kill_reason is None and child.ready_error is None:
                self._spawn_failures += 1
                self._last_spawn_error = f"child exited during warm-up ({describe_status(status)})"
                log.error("sandbox child %d died during warm-up: %s", child.pid, describe_status(status))
            return
        if child.is_answered:
            return
        result = self._death_result(child, status, rusage)
        self._answer(result)
        child.is_answered = True

    def _answer_body(self, child: _Child, body: MemfdBody) -> None:
        """Send the server a child's result body as it is, with this call's id and our timings."""
        assert child.pending is not None and child.started_at is not None
        execute_ms = (time.monotonic() - child.started_at) * 1000
        envelope = ResultEnvelope(
            request_id=child.pending.request.request_id, body_bytes=body.size,
            timings_ms={"queue": round(child.queued_ms, 3), "execute": round(execute_ms, 3)},
        )
        try:
            write_message(self._conn.fileno(), envelope)
            body.send_to(self._conn.fileno())
        except OSError:
            log.warning("cannot write to the server (gone?); fork server exits")
            self._is_running = False

    def _death_result(self, child: _Child, status: int, rusage: Any) -> ExecutionResult:
        assert child.pending is not None and child.started_at is not None
        request = child.pending.request
        timings = {"queue": round(child.queued_ms, 3), "execute": round((time.monotonic() - child.started_at) * 1000, 3)}
        death = ChildDeath(
            pid=child.pid, status=status, maxrss_kb=rusage.ru_maxrss, kill_reason=child.kill_reason,
            blocked_syscall=child.blocked.syscall if child.blocked is not None else None,
            is_blocked_reported=child.blocked is not None,
        )
        return death_result(
            request.request_id, death, timeout_s=request.timeout_s, memory_mb=request.memory_mb,
            baseline_rss_bytes=self._rss_bytes, timings=timings,
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
            threads=count_threads(),
            open_fds=len(os.listdir("/proc/self/fd")),
            rss_kb=read_status_kb("VmRSS"),
        )

    def _shutdown(self) -> None:
        while self._queue:
            self._queue.popleft().body.close()
        self._conn_inbox.close()
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


def count_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def read_status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


