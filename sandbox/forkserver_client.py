"""The server's asyncio client of the fork server (``forkserver.py``).

Contract: ``ForkServerClient`` spawns ``python -m sandbox.forkserver_main FD`` with a minimal
environment (``fork_server_environment``: nothing of the server's, so no secret reaches it), stdin
from /dev/null and stdout = stderr (fd 1 of the server is the MCP wire), and talks to it over one
socketpair (``protocol.py`` frames). Every ``execute`` gets exactly one ``ExecutionResult``.
When the fork server dies, a replacement starts in the background at once (at most
``RESTART_ATTEMPTS`` tries, with backoff); calls wait for it under the same lock as ``start()``, so
there is never a second one. ``close()`` cancels a pending restart and kills what it was starting.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sandbox.config import SandboxConfig
from sandbox.errors import ForkServerError
from sandbox.forkserver_common import (
    CLOSE_TIMEOUT_S,
    IS_LINUX,
    NOT_LINUX_MESSAGE,
    OFFLINE_ENV,
    SINGLE_THREAD_ENV,
    START_TIMEOUT_S,
    incident,
)
from sandbox.protocol import (
    HEADER,
    MAX_BLOB_BYTES,
    MAX_JSON_BYTES,
    ApplyDeltas,
    Cancel,
    ExecRequest,
    ExecutionResult,
    Init,
    Message,
    ProtocolError,
    Ready,
    ResultEnvelope,
    Stats,
    StatsRequest,
    decode_body,
    decode_frame,
    encode_exec,
    encode_message,
)

__all__ = ["BrokerHandler", "ForkServerClient", "fork_server_environment"]

log = logging.getLogger(__name__)

RESTART_ATTEMPTS = 3  # background tries after a death; then the next call tries (and reports failure)
RESTART_BACKOFF_S = 1.0  # before the second try, doubled before each later one
# A fork server that dies this soon after Ready counts as a failed start: RESTART_ATTEMPTS such deaths
# in a row stop background restarts (a crash loop must not burn the CPU while nobody calls).
RESTART_STABLE_S = 60.0


class BrokerHandler(Protocol):
    """The server's query broker as the client sees it (server/broker.py)."""

    def call_started(self, request_id: str, sock: socket.socket, timeout_s: float) -> None:
        """Serve ``sock`` (the child's broker socket) for call ``request_id`` until its deadline."""

    def call_ended(self, request_id: str) -> None:
        """The call answered (or died): stop serving it and close its socket."""


@dataclass(eq=False)
class _Connection:
    """One running fork-server process and its socket (replaced whole on restart or reload)."""

    process: subprocess.Popen[bytes]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    ready: Ready
    index_dir: str | None
    pending: dict[str, asyncio.Future[ExecutionResult]] = field(default_factory=dict)
    stats_waiters: collections.deque[asyncio.Future[Stats]] = field(default_factory=collections.deque)
    reader_task: asyncio.Task[None] | None = None
    is_alive: bool = True
    ready_at: float = field(default_factory=time.monotonic)
    broker_conn: socket.socket | None = None  # receives each call's broker socket (SCM_RIGHTS)
    timeouts: dict[str, float] = field(default_factory=dict)  # the deadline of each call in flight

    async def send(self, message: Message) -> None:
        await self.send_bytes(encode_message(message))

    async def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


class ForkServerClient:
    """The server's handle on the fork server (asyncio; one per server process).

    ``start()`` spawns it and waits for ``Ready``; ``execute(request)`` sends one request and
    awaits its one result; ``cancel(request_id)`` kills that call; ``restart()`` / ``close()``;
    ``reload(index_dir)`` starts a fork server on the new index and retires the old one once its
    calls finish. If the fork server dies, calls in flight get ``internal_error`` and a new one
    starts in the background at once; if that fails ``RESTART_ATTEMPTS`` times, the next call
    starts one (and answers ``internal_error`` when it cannot).
    """

    def __init__(
        self,
        sandbox_config: SandboxConfig,
        *,
        index_dir: str | os.PathLike[str] | None = None,
        indexes: Sequence[tuple[str, str | os.PathLike[str]]] = (),
        search_config: Any = None,
        log_level: str = "INFO",
        python: str = sys.executable,
        start_timeout_s: float = START_TIMEOUT_S,
        broker: BrokerHandler | None = None,
    ) -> None:
        self._config = sandbox_config
        # Qdrant-backed indexes: every call's child gets its own socket to this handler (server/broker.py).
        self._broker = broker
        # Several named indexes: served together, index_dir is then the first of them.
        self._indexes = [[str(name), str(directory)] for name, directory in indexes]
        if self._indexes and index_dir is None:
            index_dir = self._indexes[0][1]
        self._index_dir = str(index_dir) if index_dir is not None else None
        self._search_config = search_config
        self._log_level = log_level
        self._python = python
        self._start_timeout_s = start_timeout_s
        self._conn: _Connection | None = None
        self._lock: asyncio.Lock | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._restart_task: asyncio.Task[None] | None = None
        self._quick_deaths = 0  # consecutive deaths within RESTART_STABLE_S of Ready

    # ------------------------------------------------------------------ lifecycle
    @property
    def pid(self) -> int | None:
        """The fork server's pid while it runs."""
        return self._conn.process.pid if self._conn and self._conn.is_alive else None

    @property
    def is_running(self) -> bool:
        return self._conn is not None and self._conn.is_alive

    async def start(self) -> Ready:
        """Spawn the fork server (if not running) and wait until it has loaded everything."""
        async with self._get_lock():
            if self._conn is None or not self._conn.is_alive:
                self._conn = await self._spawn(self._index_dir)
            return self._conn.ready

    async def restart(self) -> Ready:
        await self.close()
        return await self.start()

    async def reload(self, index_dir: str | os.PathLike[str]) -> Ready:
        """Serve ``index_dir`` from now on; calls in flight finish on the old fork server."""
        async with self._get_lock():
            new = await self._spawn(str(index_dir))
            old, self._conn, self._index_dir = self._conn, new, str(index_dir)
        if old is not None:
            task = asyncio.create_task(self._retire(old))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        return new.ready

    async def close(self) -> None:
        """Stop the fork server (it kills its children) and wait for it; cancel a pending restart."""
        await self._cancel_restart()
        async with self._get_lock():
            conn, self._conn = self._conn, None
        await self._cancel_restart()  # one scheduled by a death noticed while we waited for the lock
        if conn is not None:
            await self._stop(conn)
        for task in list(self._retiring):
            with contextlib.suppress(Exception):
                await task

    async def __aenter__(self) -> ForkServerClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ calls
    async def execute(self, request: ExecRequest) -> ExecutionResult:
        """Run ``request`` in a sandbox child; always returns exactly one result."""
        if not IS_LINUX:
            return ExecutionResult.failure(request.request_id, "internal_error", NOT_LINUX_MESSAGE)
        try:
            conn = await self._ensure_running()
        except ForkServerError as exc:
            message = incident("fork server start failed: %s", exc)
            return ExecutionResult.failure(
                request.request_id, "internal_error", f"{message}: the sandbox could not be started",
                hint="retry in a moment; if it persists, the server log has the cause",
            )
        if request.request_id in conn.pending:
            raise ValueError(f"request id {request.request_id!r} is already in flight")
        future: asyncio.Future[ExecutionResult] = asyncio.get_running_loop().create_future()
        conn.pending[request.request_id] = future
        conn.timeouts[request.request_id] = request.timeout_s
        try:
            await conn.send_bytes(encode_exec(request))  # envelope + body: the fork server never reads the body
        except (ConnectionError, OSError):
            pass  # the reader sees the EOF and fails the future
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            conn.pending.pop(request.request_id, None)
            with contextlib.suppress(ConnectionError, OSError):
                await conn.send(Cancel(request_id=request.request_id))
            raise
        finally:
            # The call is over: its broker socket closes, so nothing written to it later is read.
            conn.timeouts.pop(request.request_id, None)
            if self._broker is not None:
                self._broker.call_ended(request.request_id)

    async def cancel(self, request_id: str) -> None:
        """Kill the call ``request_id`` (its ``execute`` still returns one result)."""
        conn = self._conn
        if conn is not None and conn.is_alive:
            with contextlib.suppress(ConnectionError, OSError):
                await conn.send(Cancel(request_id=request_id))

    async def apply_deltas(self) -> None:
        """Make the fork server merge its indexes' current deltas (index/delta.py) before any later
        call starts: frames are handled in order, and idle spares are replaced."""
        conn = await self._ensure_running()
        await conn.send(ApplyDeltas())

    async def stats(self) -> Stats:
        conn = await self._ensure_running()
        future: asyncio.Future[Stats] = asyncio.get_running_loop().create_future()
        conn.stats_waiters.append(future)
        await conn.send(StatsRequest())
        return await future

    # ------------------------------------------------------------------ internals
    def _get_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _ensure_running(self) -> _Connection:
        conn = self._conn
        if conn is not None and conn.is_alive:
            return conn
        await self.start()
        assert self._conn is not None
        return self._conn

    async def _spawn(self, index_dir: str | None) -> _Connection:
        if not IS_LINUX:
            raise ForkServerError(NOT_LINUX_MESSAGE)
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        broker_ours = broker_theirs = None
        if self._broker is not None:  # a datagram-like channel: one call id + one descriptor per message
            broker_ours, broker_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        passed = [child_sock] + ([broker_theirs] if broker_theirs is not None else [])
        try:
            process = subprocess.Popen(
                [self._python, "-m", "sandbox.forkserver_main", *(str(sock.fileno()) for sock in passed)],
                stdin=subprocess.DEVNULL,
                stdout=sys.stderr.fileno() if _has_fileno(sys.stderr) else 2,  # never the MCP wire
                pass_fds=tuple(sock.fileno() for sock in passed),
                env=fork_server_environment(),
                cwd="/",
                close_fds=True,
            )
        except OSError as exc:
            parent_sock.close()
            if broker_ours is not None:
                broker_ours.close()
            raise ForkServerError(f"cannot start the fork server ({self._python}): {exc}") from exc
        finally:
            for sock in passed:
                sock.close()
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_unix_connection(sock=parent_sock)
            conn = await self._handshake(process, reader, writer, index_dir)
            if broker_ours is not None:
                conn.broker_conn = broker_ours
                broker_ours.setblocking(False)
                asyncio.get_running_loop().add_reader(broker_ours.fileno(), self._receive_broker_socket, conn)
            return conn
        except BaseException:  # failed, or cancelled (close() during a restart): never leave it running
            if broker_ours is not None:
                broker_ours.close()
            if writer is not None:
                writer.close()
            if process.poll() is None:
                process.kill()
                process.wait()  # SIGKILL: prompt; waiting here keeps a cancelled task from leaking it
            raise

    async def _handshake(self, process: subprocess.Popen[bytes], reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter, index_dir: str | None) -> _Connection:
        """Send Init and wait for Ready (up to the start timeout); ``_spawn`` cleans up on failure."""
        init = Init(
            index_dir=index_dir,
            sandbox=dataclasses.asdict(self._config),
            search=dataclasses.asdict(self._search_config) if self._search_config is not None else None,
            log_level=self._log_level,
            indexes=self._indexes or None,
        )
        try:
            writer.write(encode_message(init))
            await writer.drain()
            ready = await asyncio.wait_for(_read_frame(reader), self._start_timeout_s)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, ProtocolError) as exc:
            process.kill()
            code = await asyncio.to_thread(process.wait)
            raise ForkServerError(f"the fork server did not start (exit status {code}; see its log above): {exc!r}") from exc
        if not isinstance(ready, Ready) or ready.error:
            code = await asyncio.to_thread(process.wait)
            detail = ready.error if isinstance(ready, Ready) else f"unexpected {type(ready).__name__}"
            error = ForkServerError(f"the fork server could not load: {detail}")
            error.exit_code = ready.exit_code if isinstance(ready, Ready) and ready.exit_code else 1
            raise error
        conn = _Connection(process=process, reader=reader, writer=writer, ready=ready, index_dir=index_dir)
        conn.reader_task = asyncio.create_task(self._read_loop(conn))
        return conn

    async def _read_loop(self, conn: _Connection) -> None:
        try:
            while True:
                message = await _read_frame(conn.reader)
                if isinstance(message, ExecutionResult):
                    future = conn.pending.pop(message.request_id, None)
                    if future is not None and not future.done():
                        future.set_result(message)
                elif isinstance(message, Stats) and conn.stats_waiters:
                    waiter = conn.stats_waiters.popleft()
                    if not waiter.done():
                        waiter.set_result(message)
                else:
                    log.error("unexpected %s from the fork server; ignored", type(message).__name__)
        except (asyncio.IncompleteReadError, ConnectionError, ProtocolError) as exc:
            if conn.is_alive:
                self._on_death(conn, exc)
        except asyncio.CancelledError:
            raise

    def _receive_broker_socket(self, conn: _Connection) -> None:
        """A child started call ID: hand its broker socket to the broker, or close it when that call is
        not (or no longer) in flight here."""
        assert conn.broker_conn is not None
        while True:
            try:
                tag, fds, _flags, _addr = socket.recv_fds(conn.broker_conn, 256, 4)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("the fork server's broker channel failed: %s", exc)
                self._stop_broker_channel(conn)
                return
            if not tag and not fds:  # EOF: the fork server is gone
                self._stop_broker_channel(conn)
                return
            socks = [socket.socket(fileno=fd) for fd in fds]
            request_id = tag.decode("utf-8", "replace")
            timeout_s = conn.timeouts.get(request_id)
            if len(socks) != 1 or timeout_s is None or request_id not in conn.pending or self._broker is None:
                for sock in socks:
                    sock.close()
                continue
            self._broker.call_started(request_id, socks[0], timeout_s)

    def _stop_broker_channel(self, conn: _Connection) -> None:
        sock, conn.broker_conn = conn.broker_conn, None
        if sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()

    def _on_death(self, conn: _Connection, exc: BaseException) -> None:
        conn.is_alive = False
        self._stop_broker_channel(conn)
        code = conn.process.poll()
        if conn.pending:
            message = incident("the fork server (pid %d) stopped unexpectedly (%s, status %s)", conn.process.pid, exc, code)
            for request_id, future in conn.pending.items():
                if not future.done():
                    future.set_result(
                        ExecutionResult.failure(
                            request_id, "internal_error", f"{message}: the sandbox restarted and this call was lost",
                            hint="retry the call",
                        )
                    )
        else:
            log.warning("the fork server (pid %d) stopped (status %s)", conn.process.pid, code)
        conn.pending.clear()
        for waiter in conn.stats_waiters:
            if not waiter.done():
                waiter.set_exception(ForkServerError("the fork server stopped"))
        conn.stats_waiters.clear()
        conn.writer.close()
        asyncio.get_running_loop().run_in_executor(None, conn.process.wait)  # reap it
        if conn is self._conn:  # not a retiring one: its successor is already current
            self._schedule_restart(conn)

    # ------------------------------------------------------------------ background restart
    def _schedule_restart(self, dead: _Connection) -> None:
        """Start a replacement for ``dead`` in the background, unless it keeps dying young."""
        is_quick = time.monotonic() - dead.ready_at < RESTART_STABLE_S
        self._quick_deaths = self._quick_deaths + 1 if is_quick else 0
        if self._quick_deaths >= RESTART_ATTEMPTS:
            log.error("the fork server died %d times within %.0f s of starting; the next call starts it",
                      self._quick_deaths, RESTART_STABLE_S)
            return
        if self._restart_task is None or self._restart_task.done():
            log.info("starting a new fork server in the background")
            self._restart_task = asyncio.create_task(self._restart_in_background())

    async def _restart_in_background(self) -> None:
        delay_s = RESTART_BACKOFF_S
        for attempt in range(1, RESTART_ATTEMPTS + 1):
            async with self._get_lock():
                if self._conn is not None and self._conn.is_alive:
                    return  # a call (or start()) got there first
                try:
                    self._conn = await self._spawn(self._index_dir)
                except Exception as exc:  # noqa: BLE001 - a background task has nobody to raise to
                    log.warning("restarting the fork server failed (attempt %d of %d): %s", attempt, RESTART_ATTEMPTS, exc)
                else:
                    log.info("the fork server restarted (pid %d)", self._conn.process.pid)
                    return
            if attempt < RESTART_ATTEMPTS:
                await asyncio.sleep(delay_s)
                delay_s *= 2
        log.error("the fork server could not be restarted after %d attempts; the next call tries again", RESTART_ATTEMPTS)

    async def _cancel_restart(self) -> None:
        task, self._restart_task = self._restart_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _retire(self, conn: _Connection) -> None:
        while conn.is_alive and conn.pending:
            await asyncio.wait(list(conn.pending.values()))
        await self._stop(conn)

    async def _stop(self, conn: _Connection) -> None:
        conn.is_alive = False
        self._stop_broker_channel(conn)
        conn.writer.close()
        with contextlib.suppress(Exception):
            await conn.writer.wait_closed()
        try:
            await asyncio.wait_for(asyncio.to_thread(conn.process.wait), CLOSE_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.warning("fork server %d did not exit; killing it", conn.process.pid)
            conn.process.kill()
            await asyncio.to_thread(conn.process.wait)
        if conn.reader_task is not None:
            conn.reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await conn.reader_task
        for request_id, future in conn.pending.items():
            if not future.done():
                future.set_result(ExecutionResult.failure(request_id, "internal_error", "the sandbox was shut down"))
        conn.pending.clear()


def fork_server_environment() -> dict[str, str]:
    """The fork server's whole environment: nothing of the server's (secrets stay there)."""
    package_root = str(Path(__file__).resolve().parent.parent)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONPATH": package_root,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "MALLOC_ARENA_MAX": "2",  # bounds per-thread arenas, which count against RLIMIT_AS
        # malloc asks for transparent huge pages (THP "madvise" mode): fork() then copies one entry
        # per 2 MB of model weights instead of 512, halving its cost (glibc >= 2.35; ignored before).
        "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
        **SINGLE_THREAD_ENV,
        **OFFLINE_ENV,
    }
    return env


def _has_fileno(stream: Any) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


async def _read_frame(reader: asyncio.StreamReader) -> Message:
    """One message; a ``ResultEnvelope`` comes back as the child's result, with its id and timings."""
    header = await reader.readexactly(HEADER.size)
    json_len, blob_len = HEADER.unpack(header)
    if json_len > MAX_JSON_BYTES or blob_len > MAX_BLOB_BYTES:
        raise ProtocolError(f"frame of {json_len}+{blob_len} bytes exceeds the limits")
    payload = await reader.readexactly(json_len)
    blob = await reader.readexactly(blob_len) if blob_len else b""
    message = decode_frame(payload, blob)
    if isinstance(message, ResultEnvelope):
        result = decode_body(await reader.readexactly(message.body_bytes))
        if not isinstance(result, ExecutionResult):
            raise ProtocolError(f"a result envelope holds a {type(result).__name__}")
        return _strip_traceback(result.with_request_id(message.request_id).with_timings(**message.timings_ms))
    return message


def _strip_traceback(result: ExecutionResult) -> ExecutionResult:
    """A child's internal error carries our traceback: it goes to the log, never to the caller."""
    if result.outcome != "internal_error" or not result.error or not result.error.get("traceback"):
        return result
    log.error("%s in the sandbox (call %s):\n%s", result.error.get("message"), result.request_id, result.error["traceback"])
    failure = ExecutionResult.failure(result.request_id, "internal_error", str(result.error.get("message")))
    return failure.with_timings(**result.timings_ms)

