"""The execute workflow: validate a program, run it in a sandbox child, merge state, fit the reply, audit.

Contract: `Executor.execute` and `Executor.search` never raise for anything a program or its input
does: every exception is translated once, at this edge, by `errors.channel_for` into the reply's
outcome and error (internal errors get an id on the wire and their traceback on stderr only).
Cancelling the awaiting task kills the child; the cancellation is audited, then re-raised. Every
call writes exactly one audit line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
import uuid
from typing import Any

from sandbox import TIMING_KEYS, ExecRequest, ForkServerClient, compile_program

from .audit import AuditLog
from .config import ServerConfig
from .errors import Channel, ProgramEncodingError, channel_for
from .results import Reply, TokenCounting, execution_reply, reply_off_loop, retime, search_reply
from .skills import SkillStore, called_skills_hint
from .state import SessionState

__all__ = ["Executor", "LOOKUPS", "lookup_program", "search_program"]

logger = logging.getLogger(__name__)

def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


def search_program(query: str, k: int, mode: str, rerank: bool, path_glob: str | None, language: str | None,
                   index: str | list[str] | None = None) -> str:
    """The fixed, trusted program behind `search_code` (arguments embedded as Python literals; `index` only
    as a str or a list of str, so its repr is a literal)."""
    if not (index is None or isinstance(index, str) or (isinstance(index, list) and all(isinstance(n, str) for n in index))):
        raise ValueError("index must be a served index name, a list of names, or None")
    selection = "" if index is None else f", index={index!r}"
    return (
        f"hits = search({query!r}, k={int(k)}, mode={mode!r}, rerank={bool(rerank)!r}, "
        f"path={path_glob!r}, language={language!r}{selection})\n"
        "result = [hit.to_dict() for hit in hits]\n"
    )


LOOKUPS = ("definitions", "outline", "grep")


def lookup_program(lookup: str, target: str, *, path_glob: str | None, kind: str | None, language: str | None,
                   ignore_case: bool, k: int) -> str:
    """The fixed, trusted program behind `lookup_code` (arguments embedded as Python literals)."""
    if lookup == "definitions":
        call = (f"[h.to_dict() for h in definitions({target!r}, kind={kind!r}, path={path_glob!r}, "
                f"language={language!r}, k={int(k)})]")
    elif lookup == "outline":
        call = f"outline({target!r})"
    elif lookup == "grep":
        call = f"grep({target!r}, path={path_glob!r}, ignore_case={bool(ignore_case)!r}, k={int(k)})"
    else:
        raise ValueError(f"unknown lookup {lookup!r}; use one of {', '.join(LOOKUPS)}")
    return f"result = {call}\n"


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
        default_factory=lambda: dict.fromkeys(TIMING_KEYS, 0.0)
    )


class Executor:
    """Runs programs on the loaded fork server (one per served index; the client switches versions)."""

    def __init__(
        self, config: ServerConfig, client: ForkServerClient, skills: SkillStore, audit: AuditLog,
        counter: TokenCounting, broker: Any = None,
    ) -> None:
        self._config = config
        self._client = client
        self._broker = broker  # server.broker.QueryBroker when Qdrant-backed indexes are served
        self._skills = skills
        self._audit = audit
        self._counter = counter

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
                _check_encoding(code)
                program = compile_program(code, self._config.sandbox)
            finally:
                timings["validate"] = _ms(validate_started)
            skills, called = self._skills.for_program(program) if with_skills else ([], [])
            request = ExecRequest(
                request_id=run_.request_id,
                program=program.to_bytes(),
                timeout_s=float(timeout_s),
                memory_mb=self._config.sandbox.memory_mb,
                output_cap_bytes=self._config.sandbox.stdout_cap_bytes,
                state={} if state is None else state.snapshot(),
                skills=skills,
            )
            run_started = time.perf_counter()
            try:
                result = await self._client.execute(request)
            except asyncio.CancelledError:  # the client cancelled: the sandbox client kills the child
                self._audit.record(
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
            if called and run_.outcome in ("timeout", "memory_limit", "crashed") and run_.error:
                run_.error = {**run_.error, "hint": called_skills_hint(run_.error.get("hint"), called)}
            if result.outcome == "ok" and state is not None and (result.state_set or result.state_deleted):
                state.merge(result.state_set, result.state_deleted)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the one translation, at the edge
            translated = channel_for(exc, request_id=run_.request_id)
            if translated.channel is Channel.INTERNAL:
                logger.error("internal error %s in %s: %s", run_.request_id, tool, exc, exc_info=True)
            run_.outcome, run_.error = translated.outcome, translated.error
        if run_.process_started is None:
            run_.process_started = time.perf_counter()
        return run_

    def _finish(self, run_: _Run, reply: Reply, *, tool: str, session_id: str) -> Reply:
        run_.timings["process"] = _ms(run_.process_started or run_.started)
        run_.timings["total"] = _ms(run_.started)
        reply = retime(reply, run_.timings, self._counter)
        extra = {} if self._broker is None else {"backend_queries": self._broker.queries_of(run_.request_id)}
        self._audit.record(
            request_id=run_.request_id, tool=tool, session=session_id, code_sha256=run_.code_sha256,
            outcome=run_.outcome, timings_ms={key: round(value, 1) for key, value in run_.timings.items()},
            output_tokens=reply.structured["output_tokens"], truncated=reply.structured["truncated"], **extra,
        )
        return reply

    async def execute(
        self, code: str, *, timeout_s: float, max_output_tokens: int, state: SessionState | None, session_id: str
    ) -> Reply:
        """execute_code: run the program and fit its reply to the budget."""
        run_ = await self._run(
            code, timeout_s=timeout_s, state=state, session_id=session_id, tool="execute_code", with_skills=True
        )
        reply = await reply_off_loop(  # redacting and fitting a big output must not stall other sessions
            execution_reply, timeout_s - _ms(run_.started) / 1000.0,
            outcome=run_.outcome, stdout=run_.stdout, result=run_.result, error=run_.error,
            truncated=run_.truncated, timings_ms=None, counter=self._counter, max_output_tokens=max_output_tokens,
        )
        return self._finish(run_, reply, tool="execute_code", session_id=session_id)

    async def search(
        self, *, query: str, k: int, mode: str, rerank: bool, path_glob: str | None, language: str | None,
        max_output_tokens: int, session_id: str, coverage: float = 1.0, index: str | list[str] | None = None,
    ) -> Reply:
        """search_code: the fixed search program in a child, then a fitted list of hits; `coverage` is the
        served index's vector coverage (the reply says it: hybrid over coverage 0 is BM25 alone)."""
        code = search_program(query, k, mode, rerank, path_glob, language, index)
        run_ = await self._run(
            code, timeout_s=self._config.sandbox.timeout_s, state=None, session_id=session_id, tool="search_code",
            with_skills=False,
        )
        hits = run_.result if run_.outcome == "ok" and isinstance(run_.result, list) else []
        reply = await reply_off_loop(
            search_reply, self._config.sandbox.timeout_s - _ms(run_.started) / 1000.0,
            query=query, mode=mode, rerank=rerank, hits=hits, outcome=run_.outcome, error=run_.error,
            timings_ms=None, counter=self._counter, max_output_tokens=max_output_tokens, coverage=coverage,
        )
        return self._finish(run_, reply, tool="search_code", session_id=session_id)

    async def lookup(self, code: str, *, max_output_tokens: int, session_id: str) -> Reply:
        """lookup_code: one fixed definitions/outline/grep program in a child, replied as execute_code is."""
        run_ = await self._run(
            code, timeout_s=self._config.sandbox.timeout_s, state=None, session_id=session_id, tool="lookup_code",
            with_skills=False,
        )
        reply = execution_reply(
            outcome=run_.outcome, stdout=run_.stdout, result=run_.result, error=run_.error,
            truncated=run_.truncated, timings_ms=None, counter=self._counter, max_output_tokens=max_output_tokens,
        )
        return self._finish(run_, reply, tool="lookup_code", session_id=session_id)


def _check_encoding(code: str) -> None:
    """Raise ProgramEncodingError for program text that is not UTF-8 (a lone surrogate)."""
    try:
        code.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ProgramEncodingError(
            f"the program is not valid UTF-8: a lone surrogate at character {exc.start}"
        ) from None
