"""MCP tool handlers: argument schemas, output schemas, and a thin call into the runtime.

Contract: handlers hold no logic of their own. Arguments are validated by the SDK against the input
schemas below (ranges included); anything the schema cannot express is checked by the runtime.
Every reply is a `CallToolResult` built by `results` with structuredContent and one text block;
`isError` is true for every outcome but `ok`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlparse

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import Field
from typing_extensions import NotRequired, TypedDict

from sandbox import MAX_TIMEOUT_S, OUTCOMES, TIMING_KEYS, SandboxHit, api_signatures
from search import SEARCH_MODES

from .errors import Channel, SkillError, channel_for, hide_host_paths
from .execute import lookup_program
from .results import Reply, execution_reply, search_reply, simple_reply
from .runtime import Runtime
from .status import describe_status, format_status

__all__ = ["TOOL_DESCRIPTIONS", "register_tools"]

logger = logging.getLogger(__name__)

MAX_CODE_CHARS = 100_000
MAX_QUERY_CHARS = 2_000
PROGRESS_INTERVAL_S = 1.0  # a long execute_code reports progress this often

# Schema types built from the facts' owners (a Literal of a tuple lists its items).
Outcome = Literal[OUTCOMES]  # type: ignore[valid-type]
SearchMode = Literal[SEARCH_MODES]  # type: ignore[valid-type]
Timings = TypedDict("Timings", dict.fromkeys(TIMING_KEYS, float))  # type: ignore[misc]


class ErrorInfo(TypedDict):
    exception: str | None
    message: str | None
    line: int | None
    hint: str | None
    traceback: str | None


class ExecuteCodeResult(TypedDict):
    ok: bool
    outcome: Outcome
    stdout: str
    result: Any
    error: ErrorInfo | None
    truncated: bool
    output_tokens: int
    timings_ms: Timings


# A hit as search_code returns it: SandboxHit.to_dict(), whose fields are search.Hit's (one source of truth).
HitInfo = TypedDict("HitInfo", {hit_field.name: hit_field.type for hit_field in dataclasses.fields(SandboxHit)})


class SearchCodeResult(TypedDict):
    ok: bool
    outcome: Outcome
    query: str
    mode: str
    rerank: bool
    hits: list[HitInfo]
    total_hits: int
    error: ErrorInfo | None
    truncated: bool
    output_tokens: int
    timings_ms: Timings
    # Share of the served chunks with a vector (vectors may still be building); hybrid over 0.0 is BM25
    # alone. Left out only of a reply cut to its minimum when it is 1.0.
    coverage: NotRequired[float]


class WatchInfo(TypedDict):
    state: str  # starting | watching | restarting
    events_pending: int  # changes reported by the watcher, not merged yet
    last_event_at: str | None
    last_applied_at: str | None  # when the last delta became visible to calls
    restarts: int  # times the watcher process died and was replaced
    last_error: str | None
    delta_files: int  # files whose current text is served from the delta
    delta_chunks: int
    delta_hidden: int  # indexed files deleted or no longer indexed (.gitignore)
    compacting: bool  # a background build is folding the delta into a new version
    compactions: int


class IndexStatusEntry(TypedDict):
    name: str
    backend: str
    files: int
    chunks: int
    vector_coverage: float
    has_vectors: bool
    last_updated: str | None
    pending_changes: int | None
    watcher: str
    version: str | None
    format_version: NotRequired[int]
    stage: str
    watch: NotRequired[WatchInfo]  # a served root: its file watcher and delta


class IndexStatusResult(TypedDict):
    indexes: list[IndexStatusEntry]
    stage: str


class SkillInfo(TypedDict):
    name: str
    description: str


class SkillResult(TypedDict):
    ok: bool
    action: Literal["saved", "deleted", "refused"]
    name: str
    error: str | None
    skills: list[SkillInfo]


TOOL_DESCRIPTIONS = {
    "execute_code": """Run a short Python program against the indexed knowledge base and get back only what it prints
and the value of `result`, cut to max_output_tokens. Prefer ONE program that searches, filters and
summarises over many search_code calls. Globals (plus saved skills by name):
""" + "\n".join(f"  {line}" for line in api_signatures() if not line.startswith("Hit:")) + """
Hit fields: """ + " ".join(HitInfo.__annotations__) + """ (h.path, h.to_dict()).
Example: hits = search("where are rlimits applied", k=20, path="sandbox/**")
         result = [f"{h.path}:{h.start_line}" for h in hits[:3]]
Sandboxed: no files, network, imports outside an allow-list, or names starting with "_".
Full docs: help(name) in a program, or the resource knowledge://api.""",
    "search_code": """Search the indexed code and documents; returns ranked hits (path, lines, language, title,
score, snippet) cut to max_output_tokens. mode: hybrid (BM25 + vectors, default), bm25, semantic;
rerank applies the cross-encoder; path_glob filters paths (e.g. "src/**/*.py"); language e.g. "python".
For anything beyond one lookup, execute_code with a program is far cheaper in tokens.""",
    "lookup_code": """Exact lookups over the indexed code (read-only); set exactly ONE of:
  definitions="Cache.evict"  where a symbol is defined (name, qualified name, or glob "*evict*"): hits
  outline="src/cache.py"     the symbols of one file in order: [{symbol, kind, start_line, end_line}]
  grep="def \\w+_cache"      lines matching an RE2 regex (no backreferences/lookaround): [{path, line, text}]
path_glob, language, kind and ignore_case narrow them; k caps the list (definitions <= 100, grep <= 1000).
The list is in `result`. In execute_code programs the same are definitions(), outline() and grep().""",
    "save_skill": """Save a reusable helper: `source` is exactly one function `def name(...)` (and maybe a
docstring; imports go inside it; the sandbox rules of execute_code). Later programs of every client of this
state dir call it by name; it survives restarts. Nothing may run at load (no decorators, literal defaults),
and no name it binds may be an API name (search, read, state, result, ...), builtin or module.""",
    "delete_skill": "Delete a saved skill by name.",
    "index_status": """What is served and how fresh it is, answered at once (during indexing too): per index its
name, backend, files, chunks, vector_coverage (share of chunks with a vector: semantic/hybrid see only
those), last_updated, pending_changes (files added/changed/deleted since), watcher (what keeps it fresh:
"watching" for a served root, "restarting" if its watcher died) and version; a served root adds `watch`
(events pending, last event, delta size, restarts, compaction).""",
}


def _session_key(ctx: Context) -> tuple[Any, str]:
    """A key that is the same for every request of one client connection.

    The SDK builds a new `ServerSession` per request; the client's initialize params object belongs
    to the connection, so it identifies the MCP session (stdio serves one connection per process).
    """
    try:
        session = ctx.session
    except ValueError:  # outside a request (in-process calls)
        return None, "none"
    key = session.client_params or session
    return key, f"{id(key):x}"


async def _ready(runtime: Runtime, ctx: Context) -> None:
    """Start loading on the first call when the client's roots decide the target; wait with progress."""
    if not runtime.is_started:
        runtime.start(client_roots=await _client_roots(ctx))

    async def progress(seconds: float, message: str) -> None:
        fraction = runtime.fraction  # known while the first build runs: progress of 1.0
        try:
            if fraction is None:
                await ctx.report_progress(seconds, None, message)
            else:
                await ctx.report_progress(fraction, 1.0, message)
        except Exception:  # noqa: BLE001 - progress is best effort
            logger.debug("progress notification failed", exc_info=True)

    await runtime.wait_ready(progress)


async def _client_roots(ctx: Context) -> list[Path]:
    """Local directories among the client's advertised MCP roots (empty when none)."""
    try:
        capabilities = ctx.client_capabilities
        if capabilities is None or capabilities.roots is None:
            return []
        listed = await ctx.session.list_roots()
    except Exception:  # noqa: BLE001 - a client without roots support: fall back to the cwd
        logger.debug("listing the client's roots failed", exc_info=True)
        return []
    roots = []
    for root in listed.roots:
        parsed = urlparse(str(root.uri))
        if parsed.scheme == "file":
            roots.append(Path(unquote(parsed.path)))
    return roots


async def _unready_reply(runtime: Runtime, ctx: Context, tool: str, **arguments: Any) -> CallToolResult | None:
    """Wait for warm-up; None once ready, else the reply saying why the server could not load."""
    try:
        await _ready(runtime, ctx)
    except Exception as exc:  # noqa: BLE001 - a load failure is this call's answer, not a crash
        return _load_failure(runtime, tool, exc, arguments)
    return None


def _load_failure(runtime: Runtime, tool: str, exc: BaseException, arguments: dict[str, Any]) -> CallToolResult:
    """The reply when the index or fork server could not load (the message says what to do), in the
    shape of `tool`'s output schema like every other reply of that tool."""
    request_id = uuid.uuid4().hex[:16]
    translated = channel_for(exc, request_id=request_id, host_paths=runtime.host_paths())
    if translated.channel is Channel.INTERNAL:
        logger.error("internal error %s: the server could not load: %s", request_id, exc)
    message = translated.error["message"]
    text = f"{translated.outcome}: the server could not load: {message}"
    if tool in ("save_skill", "delete_skill"):
        structured = {"ok": False, "action": "refused", "name": arguments.get("name", ""),
                      "error": f"the server could not load: {message}", "skills": []}
        return simple_reply(structured, text, is_error=True).to_call_tool_result()
    error = {**translated.error, "message": f"the server could not load: {message}"}
    budget = int(arguments.get("max_output_tokens") or 2000)
    counter = runtime.counter
    if counter is None:  # not even the token counter loaded: a fixed reply, well inside any budget
        structured = {"ok": False, "outcome": translated.outcome, "stdout": "", "result": None, "error": error,
                      "truncated": False, "output_tokens": 0, "timings_ms": dict.fromkeys(TIMING_KEYS, 0.0)}
        if tool == "search_code":
            structured.update(query=arguments.get("query", ""), mode=arguments.get("mode", "hybrid"),
                              rerank=bool(arguments.get("rerank", True)), hits=[], total_hits=0,
                              coverage=runtime.coverage)
            del structured["stdout"], structured["result"]
        return simple_reply(structured, text, is_error=True).to_call_tool_result()
    if tool == "search_code":
        reply = search_reply(query=arguments.get("query", ""), mode=arguments.get("mode", "hybrid"),
                             rerank=bool(arguments.get("rerank", True)), hits=[], outcome=translated.outcome,
                             error=error, timings_ms=dict.fromkeys(TIMING_KEYS, 0.0), counter=counter,
                             max_output_tokens=budget, coverage=runtime.coverage)
    else:
        reply = execution_reply(outcome=translated.outcome, error=error, timings_ms=dict.fromkeys(TIMING_KEYS, 0.0),
                                counter=counter, max_output_tokens=budget)
    return reply.to_call_tool_result()


async def _with_progress(ctx: Context, work: Awaitable[Reply], timeout_s: float) -> Reply:
    """Await `work`; past each PROGRESS_INTERVAL_S, notify progress as seconds elapsed of `timeout_s`
    (the SDK sends it only when the client's request carried a progress token). Cancelling the
    caller cancels `work` (which kills its child)."""
    task = asyncio.ensure_future(work)
    started = time.monotonic()
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=PROGRESS_INTERVAL_S)
            if done:
                return task.result()
            elapsed = time.monotonic() - started
            try:
                await ctx.report_progress(round(min(elapsed, timeout_s), 1), float(timeout_s),
                                          f"running: {elapsed:.0f} s of at most {timeout_s:g} s")
            except Exception:  # noqa: BLE001 - progress is best effort
                logger.debug("progress notification failed", exc_info=True)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


async def status_document(runtime: Runtime) -> dict[str, Any]:
    """index_status's reply (also in knowledge://index): answered at once, during loading too."""
    stage = runtime.status
    if runtime.load_error is not None:
        stage = "failed: " + hide_host_paths(" ".join(str(runtime.load_error).split()), runtime.host_paths())
    watcher = runtime.watcher_state()
    watch = runtime.watch_status()
    if watch is not None:
        watch.pop("process_pid", None)  # a host detail, of no use to a client
    return await asyncio.to_thread(describe_status, runtime.target or runtime.configured_target(), stage,
                                   watcher, watch, runtime.coverage if watch is not None else None)


def register_tools(server: Any, runtime: Runtime) -> None:
    """Add the tools to an `MCPServer`."""

    async def execute_code(
        code: Annotated[str, Field(min_length=1, max_length=MAX_CODE_CHARS, description="Python program to run")],
        ctx: Context,
        timeout_s: Annotated[float, Field(gt=0, le=MAX_TIMEOUT_S, description="wall-clock limit in seconds")] = 30,
        max_output_tokens: Annotated[int, Field(ge=100, le=20000, description="reply budget in tokens")] = 2000,
    ) -> Annotated[CallToolResult, ExecuteCodeResult]:
        if (unready := await _unready_reply(runtime, ctx, "execute_code", max_output_tokens=max_output_tokens)) is not None:
            return unready
        session, session_id = _session_key(ctx)
        state = runtime.states.for_session(session) if session is not None else None
        reply = await _with_progress(ctx, runtime.execute(
            code, timeout_s=timeout_s, max_output_tokens=max_output_tokens, state=state, session_id=session_id
        ), timeout_s)
        return reply.to_call_tool_result()

    async def search_code(
        query: Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS, description="what to look for")],
        ctx: Context,
        k: Annotated[int, Field(ge=1, le=100, description="number of hits")] = 10,
        mode: Annotated[SearchMode, Field(description="retrieval mode")] = "hybrid",
        rerank: Annotated[bool, Field(description="rerank with the cross-encoder")] = True,
        path_glob: Annotated[str | None, Field(max_length=500, description="only paths matching this glob")] = None,
        language: Annotated[str | None, Field(max_length=50, description="only this language, e.g. python")] = None,
        max_output_tokens: Annotated[int, Field(ge=100, le=20000, description="reply budget in tokens")] = 2000,
        index: Annotated[
            Annotated[str, Field(max_length=64)] | Annotated[list[Annotated[str, Field(max_length=64)]], Field(
                min_length=1, max_length=64)] | None,
            Field(description="served index name, or a list of names; default: every served index, fused"),
        ] = None,
    ) -> Annotated[CallToolResult, SearchCodeResult]:
        if (unready := await _unready_reply(runtime, ctx, "search_code", query=query, mode=mode, rerank=rerank,
                                            max_output_tokens=max_output_tokens)) is not None:
            return unready
        _, session_id = _session_key(ctx)
        reply = await runtime.search(
            query=query, k=k, mode=mode, rerank=rerank, path_glob=path_glob, language=language,
            max_output_tokens=max_output_tokens, session_id=session_id, index=index,
        )
        return reply.to_call_tool_result()

    async def lookup_code(
        ctx: Context,
        definitions: Annotated[str | None, Field(max_length=500, description="symbol name, qualified name or glob")] = None,
        outline: Annotated[str | None, Field(max_length=1000, description="an indexed file's path")] = None,
        grep: Annotated[str | None, Field(max_length=2000, description="RE2 regular expression, matched per line")] = None,
        path_glob: Annotated[str | None, Field(max_length=500, description="only paths matching this glob")] = None,
        kind: Annotated[str | None, Field(max_length=20, description="definitions only: class, function, method, ...")] = None,
        language: Annotated[str | None, Field(max_length=50, description="definitions only: e.g. go, python")] = None,
        ignore_case: Annotated[bool, Field(description="grep only: case-insensitive")] = False,
        k: Annotated[int, Field(ge=1, le=1000, description="most results (definitions: at most 100)")] = 20,
        max_output_tokens: Annotated[int, Field(ge=100, le=20000, description="reply budget in tokens")] = 2000,
    ) -> Annotated[CallToolResult, ExecuteCodeResult]:
        chosen = [(name, value) for name, value in (("definitions", definitions), ("outline", outline), ("grep", grep))
                  if value is not None]
        if len(chosen) != 1:
            return _refused_lookup(
                f"set exactly one of definitions, outline or grep (got {', '.join(n for n, _ in chosen) or 'none'})"
            )
        lookup, target = chosen[0]
        if lookup == "definitions" and k > 100:
            return _refused_lookup(f"k must be at most 100 for definitions, got {k}")
        if (unready := await _unready_reply(runtime, ctx, "lookup_code", max_output_tokens=max_output_tokens)) is not None:
            return unready
        _, session_id = _session_key(ctx)
        code = lookup_program(lookup, target, path_glob=path_glob, kind=kind, language=language,
                              ignore_case=ignore_case, k=k)
        reply = await runtime.lookup(code, max_output_tokens=max_output_tokens, session_id=session_id)
        return reply.to_call_tool_result()

    async def save_skill(
        name: Annotated[str, Field(min_length=1, max_length=64, description="skill and function name")],
        source: Annotated[str, Field(min_length=1, max_length=MAX_CODE_CHARS, description="one `def name(...)`")],
        description: Annotated[str, Field(min_length=1, max_length=1000, description="what it returns")],
        ctx: Context,
    ) -> Annotated[CallToolResult, SkillResult]:
        if (unready := await _unready_reply(runtime, ctx, "save_skill", name=name)) is not None:
            return unready
        try:
            runtime.skills.save(name, source, description)
        except SkillError as exc:
            return _skill_reply(runtime, "refused", name, hide_host_paths(str(exc), runtime.host_paths()))
        logger.info("skill %s saved", name)
        return _skill_reply(runtime, "saved", name, None)

    async def delete_skill(
        name: Annotated[str, Field(min_length=1, max_length=64, description="skill to delete")],
        ctx: Context,
    ) -> Annotated[CallToolResult, SkillResult]:
        if (unready := await _unready_reply(runtime, ctx, "delete_skill", name=name)) is not None:
            return unready
        try:
            runtime.skills.delete(name)
        except SkillError as exc:
            return _skill_reply(runtime, "refused", name, hide_host_paths(str(exc), runtime.host_paths()))
        logger.info("skill %s deleted", name)
        return _skill_reply(runtime, "deleted", name, None)

    async def index_status(ctx: Context) -> Annotated[CallToolResult, IndexStatusResult]:
        if not runtime.is_started:
            runtime.start(client_roots=await _client_roots(ctx))
        status = await status_document(runtime)
        return simple_reply(status, format_status(status), is_error=False).to_call_tool_result()

    read_only = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
    server.add_tool(
        execute_code, name="execute_code", title="Run a program over the knowledge base",
        description=TOOL_DESCRIPTIONS["execute_code"],
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False,
                                    open_world_hint=False),
    )
    server.add_tool(index_status, name="index_status", title="Index status",
                    description=TOOL_DESCRIPTIONS["index_status"], annotations=read_only)
    server.add_tool(search_code, name="search_code", title="Search code and docs",
                    description=TOOL_DESCRIPTIONS["search_code"], annotations=read_only)
    server.add_tool(lookup_code, name="lookup_code", title="Find definitions, outline a file, grep",
                    description=TOOL_DESCRIPTIONS["lookup_code"], annotations=read_only)
    server.add_tool(
        save_skill, name="save_skill", title="Save a skill", description=TOOL_DESCRIPTIONS["save_skill"],
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                                    open_world_hint=False),
    )
    server.add_tool(
        delete_skill, name="delete_skill", title="Delete a skill", description=TOOL_DESCRIPTIONS["delete_skill"],
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                                    open_world_hint=False),
    )


def _refused_lookup(message: str) -> CallToolResult:
    """A lookup_code call whose arguments do not say what to look up (nothing is run)."""
    structured = {
        "ok": False, "outcome": "validation_error", "stdout": "", "result": None,
        "error": {"exception": "ValueError", "message": message, "line": None,
                  "hint": "e.g. lookup_code(definitions='LruCache') or lookup_code(grep='TODO', path_glob='src/**')",
                  "traceback": None},
        "truncated": False, "output_tokens": 0,
        "timings_ms": dict.fromkeys(TIMING_KEYS, 0.0),
    }
    return simple_reply(structured, f"validation_error: {message}", is_error=True).to_call_tool_result()


def _skill_reply(runtime: Runtime, action: str, name: str, error: str | None) -> CallToolResult:
    skills = runtime.skills.infos()
    structured = {"ok": error is None, "action": action, "name": name, "error": error, "skills": skills}
    if error is None:
        text = f"skill {name} {action}; skills: {', '.join(s['name'] for s in skills) or 'none'}"
    else:
        text = f"refused: {error}"
    return simple_reply(structured, text, is_error=error is not None).to_call_tool_result()
