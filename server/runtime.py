"""The serving runtime: background loading, the fork-server pool, the execute workflow, audit.

Contract: `Runtime.start()` returns at once and loads in the background (target choice, root
indexing, token counter, skills, fork server); `wait_ready()` waits for that (reporting progress)
and re-raises a load failure. `ForkServerPool` keeps one current fork server per index version: a
refresh starts a new one and makes it current between calls, and the old one is closed only when
its in-flight calls have finished. Every execution writes one audit line (stderr, and the audit
log file when configured). Nothing here touches stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from sandbox import (
    BusyError,
    ExecRequest,
    ExecutionResult,
    ForkServerClient,
    PolicyError,
    TokenCounter,
    compile_program,
)

from .config import ServerConfig
from .freshness import Target, build_root_index, check_index, choose_target, index_version, tree_fingerprint
from .results import Reply, TokenCounting, execution_reply, retime, search_reply
from .skills import SkillStore
from .state import SessionState, SessionStates, StateTooLargeError

__all__ = ["AuditLog", "ForkServerPool", "Runtime", "search_program", "served_dirs", "served_version"]

logger = logging.getLogger(__name__)
audit_logger = logging.getLogger("server.audit")

Progress = Callable[[float, str], Awaitable[None]]
READY_POLL_S = 1.0
SEARCH_MODES = ("hybrid", "bm25", "semantic")


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


class AuditLog:
    """One JSON line per execution: on stderr via logging, and appended to a file if configured."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(self, **fields: Any) -> None:
        line = json.dumps({"event": "execution", "ts": round(time.time(), 3), **fields}, separators=(",", ":"))
        audit_logger.info("%s", line)
        if self.path is None:
            return
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write(line + "\n")
        except OSError as exc:
            logger.warning("cannot append to the audit log %s: %s", self.path, exc.strerror)


class ForkServerPool:
    """The fork server of the index being served; `switch()` moves to a new index version between
    calls (the sandbox client starts the new fork server first and retires the old one once its
    in-flight calls have finished)."""

    def __init__(self, config: ServerConfig) -> None:
        self._config = config
        self._client: ForkServerClient | None = None
        self.version: str | None = None

    async def start(self, index_dir: Path) -> None:
        self._client = ForkServerClient(
            self._config.sandbox,
            index_dir=index_dir,
            indexes=self._config.indexes,
            search_config=self._config.search,
            log_level=self._config.log_level,
        )
        await self._client.start()
        self.version = await asyncio.to_thread(served_version, self._config, index_dir)

    async def switch(self, index_dir: Path) -> None:
        if self._client is None:
            raise RuntimeError("the fork server is not started")
        version = await asyncio.to_thread(served_version, self._config, index_dir)
        await self._client.reload(index_dir)
        self.version = version
        logger.info("now serving index version %s", version)

    async def execute(self, request: ExecRequest) -> ExecutionResult:
        """One result per request; cancelling the awaiting task kills the child."""
        if self._client is None:
            raise RuntimeError("the fork server is not started")
        return await self._client.execute(request)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()


def served_dirs(config: ServerConfig, index_dir: Path) -> list[Path]:
    """Every served index directory: the named ones, or the one target."""
    return [directory for _, directory in config.indexes] or [index_dir]


def served_version(config: ServerConfig, index_dir: Path) -> str | None:
    """The served version: one index's, or every named index's joined (any change switches all)."""
    if not config.indexes:
        return index_version(index_dir)
    versions = [(name, index_version(directory)) for name, directory in config.indexes]
    if any(version is None for _, version in versions):
        return None
    return ",".join(f"{name}={version}" for name, version in versions)


def search_program(query: str, k: int, mode: str, rerank: bool, path_glob: str | None, language: str | None) -> str:
    """The fixed, trusted program behind `search_code` (arguments embedded as Python literals)."""
    return (
        f"hits = search({query!r}, k={int(k)}, mode={mode!r}, rerank={bool(rerank)!r}, "
        f"path={path_glob!r}, language={language!r})\n"
        "result = [hit.to_dict() for hit in hits]\n"
    )


# help() of every API name, run in a child, so knowledge://api is exactly the text programs see.
API_REFERENCE_PROGRAM = """
parts = [help()]
for name in ("search", "bm25", "semantic", "rerank", "read", "files", "index", "compact", "count_tokens", "help",
             "state", "list_skills", "Hit"):
    try:
        parts.append(help(name))
    except (ValueError, TypeError):
        pass
result = "\\n\\n".join(parts)
"""


class Runtime:
    """Everything the tools need, loaded once per server process."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.pool = ForkServerPool(config)
        self.states = SessionStates(config.sandbox.state_max_bytes)
        self.skills = SkillStore(config.skills_dir, config.sandbox)
        self.audit = AuditLog(config.audit_log)
        self.counter: TokenCounting | None = None
        self.target: Target | None = None
        self.status = "not started"
        self.ready = asyncio.Event()
        self.load_error: BaseException | None = None
        self._load_task: asyncio.Task[None] | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._fingerprint: frozenset[tuple[str, int, int]] | None = None
        self._version: str | None = None
        self._api_reference: str | None = None

    # -------------------------------------------------------------- loading

    @property
    def needs_client_roots(self) -> bool:
        """True when no index or root is configured: the first client's roots decide."""
        return self.config.index_dir is None and self.config.root is None

    @property
    def is_started(self) -> bool:
        return self._load_task is not None

    def start(self, client_roots: Sequence[Path] = (), cwd: Path | None = None) -> None:
        """Begin loading in the background (idempotent)."""
        if self._load_task is None:
            self._load_task = asyncio.get_running_loop().create_task(self._load(list(client_roots), cwd))

    async def _load(self, client_roots: list[Path], cwd: Path | None) -> None:
        started = time.perf_counter()
        try:
            self.status = "loading the token counter"
            self.counter = await asyncio.to_thread(TokenCounter.open, self.config.token_encoding)
            self.status = "loading skills"
            await asyncio.to_thread(self.skills.load)
            self.status = "choosing the index"
            self.target = await asyncio.to_thread(choose_target, self.config, client_roots, cwd)
            if self.target.root is not None:
                self.status = f"indexing {self.target.root}"
                self._fingerprint = await asyncio.to_thread(tree_fingerprint, self.target.root, self.config)
                await asyncio.to_thread(build_root_index, self.target.root, self.target.index_dir, self.config)
            for index_dir in served_dirs(self.config, self.target.index_dir):
                await asyncio.to_thread(check_index, index_dir)
            self.status = "starting the fork server"
            await self.pool.start(self.target.index_dir)
            self._version = self.pool.version
            self.status = "ready"
            logger.info("ready in %.0f ms, serving %s", _ms(started), self.target.index_dir)
            self._refresh_task = asyncio.get_running_loop().create_task(self._refresh_loop())
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - reported to every waiting call
            self.load_error = exc
            self.status = f"failed: {exc}"
            logger.error("loading failed: %s", " ".join(str(exc).split()))
            logger.debug("traceback of the loading failure", exc_info=True)
        finally:
            self.ready.set()

    async def wait_ready(self, progress: Progress | None = None) -> None:
        """Wait for loading; report progress every second; re-raise a loading failure."""
        started = time.perf_counter()
        while not self.ready.is_set():
            try:
                await asyncio.wait_for(self.ready.wait(), READY_POLL_S)
            except asyncio.TimeoutError:
                if progress is not None:
                    await progress(round(_ms(started) / 1000.0, 1), f"warming up: {self.status}")
        if self.load_error is not None:
            raise self.load_error

    # -------------------------------------------------------------- freshness

    async def _refresh_loop(self) -> None:
        """Debounced check: re-index a changed root (or pick up a rebuilt index), then switch."""
        target = self.target
        assert target is not None
        interval = max(self.config.refresh_debounce_s, 0.2)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep serving the old version
                logger.warning("refresh failed, still serving the previous version: %s", " ".join(str(exc).split()))

    async def refresh_once(self) -> bool:
        """One freshness check; True when a new index version is now being served."""
        target = self.target
        if target is None:
            return False
        if target.root is not None:
            fingerprint = await asyncio.to_thread(tree_fingerprint, target.root, self.config)
            if fingerprint == self._fingerprint:
                return False
            # Debounce: wait until the tree stops changing before re-indexing.
            await asyncio.sleep(self.config.refresh_debounce_s)
            settled = await asyncio.to_thread(tree_fingerprint, target.root, self.config)
            if settled != fingerprint:
                return False
            logger.info("sources changed under %s: re-indexing", target.root)
            await asyncio.to_thread(build_root_index, target.root, target.index_dir, self.config)
            self._fingerprint = settled
        version = await asyncio.to_thread(served_version, self.config, target.index_dir)
        if version is None or version == self._version:
            return False
        await self.pool.switch(target.index_dir)
        self._version = self.pool.version
        return True

    async def close(self) -> None:
        for task in (self._refresh_task, self._load_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        await self.pool.close()

    async def api_reference(self) -> str:
        """The sandbox's help() for the whole API (computed once, in a child)."""
        if self._api_reference is None:
            run_ = await self._run(
                API_REFERENCE_PROGRAM, timeout_s=self.config.timeout_s, state=None, session_id="resource",
                tool="knowledge://api", with_skills=False,
            )
            if run_.outcome != "ok" or not isinstance(run_.result, str):
                raise RuntimeError(f"could not render the API reference ({run_.outcome})")
            self._api_reference = run_.result
        return self._api_reference

    # -------------------------------------------------------------- the execute workflow

    def _counter(self) -> TokenCounting:
        assert self.counter is not None, "wait_ready() first"
        return self.counter

    async def _run(
        self, code: str, *, timeout_s: float, state: SessionState | None, session_id: str, tool: str,
        with_skills: bool,
    ) -> _Run:
        """Validate, run in a child, merge state; never raises for anything the program does."""
        run_ = _Run(
            request_id=uuid.uuid4().hex[:16],
            code_sha256=hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest(),
            started=time.perf_counter(),
        )
        timings = run_.timings
        try:
            validate_started = time.perf_counter()
            try:
                problem = _encoding_problem(code)
                if problem:
                    raise _Refusal(problem)
                program = compile_program(code, self.config.sandbox)
            finally:
                timings["validate"] = _ms(validate_started)
            loaded = self.skills.skills() if with_skills else []
            skills = [
                {"name": skill.name, "description": skill.description, "program": skill.program.to_bytes()}
                for skill in loaded
            ]
            request = ExecRequest(
                request_id=run_.request_id,
                program=program.to_bytes(),
                timeout_s=float(timeout_s),
                memory_mb=self.config.sandbox.memory_mb,
                output_cap_bytes=self.config.sandbox.stdout_cap_bytes,
                state={} if state is None else state.snapshot(),
                skills=skills,
            )
            run_started = time.perf_counter()
            try:
                result = await self.pool.execute(request)
            except asyncio.CancelledError:  # the client cancelled: the sandbox client kills the child
                self.audit.record(
                    request_id=run_.request_id, tool=tool, session=session_id, code_sha256=run_.code_sha256,
                    outcome="cancelled", timings_ms={"total": round(_ms(run_.started), 1)},
                )
                raise
            wall_ms = _ms(run_started)
            timings["queue"] = float(result.timings_ms.get("queue", 0.0))
            timings["execute"] = float(result.timings_ms.get("execute", max(wall_ms - timings["queue"], 0.0)))
            run_.process_started = time.perf_counter()
            run_.outcome, run_.stdout, run_.result = result.outcome, result.stdout, result.result
            run_.error, run_.truncated = result.error, result.truncated
            if result.outcome == "ok" and state is not None and (result.state_set or result.state_deleted):
                try:
                    state.merge(result.state_set, result.state_deleted)
                except StateTooLargeError as exc:
                    run_.outcome = "runtime_error"
                    run_.error = _error("StateTooLargeError", str(exc), "store ids and line numbers in state, not texts")
        except PolicyError as exc:
            run_.outcome = "validation_error"
            run_.error = {**_error("PolicyError", exc.describe(), exc.hint), "line": exc.line}
        except _Refusal as exc:
            run_.outcome, run_.error = "validation_error", _error("ValueError", str(exc), "send the program as UTF-8 text")
        except BusyError as exc:
            run_.outcome = "busy"
            run_.error = _error(
                "BusyError", str(exc) or "every worker is busy and the queue is full",
                "retry in a moment, or combine several searches into one program",
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - our fault: an id on the wire, details on stderr
            logger.error("internal error %s in %s: %s", run_.request_id, tool, exc, exc_info=True)
            run_.outcome = "internal_error"
            run_.error = _error(
                "InternalError", f"internal error {run_.request_id}; the server log has the details",
                "retry; if it persists, report the id",
            )
        if run_.process_started is None:
            run_.process_started = time.perf_counter()
        return run_

    def _finish(self, run_: _Run, reply: Reply, *, tool: str, session_id: str) -> Reply:
        run_.timings["process"] = _ms(run_.process_started or run_.started)
        run_.timings["total"] = _ms(run_.started)
        reply = retime(reply, run_.timings, self._counter())
        self.audit.record(
            request_id=run_.request_id, tool=tool, session=session_id, code_sha256=run_.code_sha256,
            outcome=run_.outcome, timings_ms={key: round(value, 1) for key, value in run_.timings.items()},
            output_tokens=reply.structured["output_tokens"], truncated=reply.structured["truncated"],
        )
        return reply

    async def execute(
        self, code: str, *, timeout_s: float, max_output_tokens: int, state: SessionState | None, session_id: str
    ) -> Reply:
        """execute_code: run the program and fit its reply to the budget."""
        run_ = await self._run(
            code, timeout_s=timeout_s, state=state, session_id=session_id, tool="execute_code", with_skills=True
        )
        reply = execution_reply(
            outcome=run_.outcome, stdout=run_.stdout, result=run_.result, error=run_.error,
            truncated=run_.truncated, timings_ms=None, counter=self._counter(), max_output_tokens=max_output_tokens,
        )
        return self._finish(run_, reply, tool="execute_code", session_id=session_id)

    async def search(
        self, *, query: str, k: int, mode: str, rerank: bool, path_glob: str | None, language: str | None,
        max_output_tokens: int, session_id: str,
    ) -> Reply:
        """search_code: the fixed search program in a child, then a fitted list of hits."""
        code = search_program(query, k, mode, rerank, path_glob, language)
        run_ = await self._run(
            code, timeout_s=self.config.timeout_s, state=None, session_id=session_id, tool="search_code",
            with_skills=False,
        )
        hits = run_.result if run_.outcome == "ok" and isinstance(run_.result, list) else []
        reply = search_reply(
            query=query, mode=mode, rerank=rerank, hits=hits, outcome=run_.outcome, error=run_.error,
            timings_ms=None, counter=self._counter(), max_output_tokens=max_output_tokens,
        )
        return self._finish(run_, reply, tool="search_code", session_id=session_id)


@dataclasses.dataclass
class _Run:
    """What one call produced, before fitting."""

    request_id: str
    code_sha256: str
    started: float
    process_started: float | None = None
    outcome: str = "internal_error"
    stdout: str = ""
    result: Any = None
    error: dict[str, Any] | None = None
    truncated: bool = False
    timings: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"queue": 0.0, "validate": 0.0, "execute": 0.0, "process": 0.0, "total": 0.0}
    )


def _error(exception: str, message: str, hint: str | None) -> dict[str, Any]:
    return {"exception": exception, "message": message, "line": None, "hint": hint, "traceback": None}


class _Refusal(ValueError):
    """Program text refused before compiling (not UTF-8)."""


def _encoding_problem(code: str) -> str | None:
    try:
        code.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"the program is not valid UTF-8: a lone surrogate at character {exc.start}"
    return None
