"""Pure result processing: redact, fit a reply to its token budget, render the text block.

Contract: a `Reply` has one text block and a structuredContent dict. The budget bounds
`count(text) + count(reply_json(structured))`, where `reply_json` is compact JSON
(`separators=(",", ":")`, `ensure_ascii=False`); `structured["output_tokens"]` equals that sum
exactly. Fitting never cuts through JSON: it cuts stdout to its head and tail with a marker, cuts
long strings (hit snippets first; short fields such as paths stay whole), then drops list items
from the end with a marker item, and sets `truncated`. Secrets are redacted before counting.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mcp_types import CallToolResult, TextContent

from sandbox import OUTCOMES, TIMING_KEYS

from .redact import redact_text, redact_value

__all__ = [
    "Reply",
    "TokenCounting",
    "execution_reply",
    "reply_json",
    "reply_tokens",
    "retime",
    "search_reply",
    "simple_reply",
]

STR_FLOOR_CHARS = 48  # strings this short (paths, names, ids) survive the snippet-cutting phase
TEXT_SNIPPET_LINES = 2  # snippet lines per hit in the human rendering of search results
RESULT_PREVIEW_CHARS = 300  # a longer result shows as a preview in the text block
RESULT_PREVIEW_HITS = 10
MAX_TIMING_MS = 999999.9  # widest timing value (16 min); wider ones are clamped
SEARCH_STEPS = 14  # binary-search steps per phase (2**-14 precision of the kept share)


class TokenCounting(Protocol):
    """What fitting needs from `sandbox.TokenCounter`."""

    def count(self, text: str) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, tokens: Sequence[int]) -> str: ...


@dataclass(frozen=True, slots=True)
class Reply:
    """One tool reply: the text block, the structured content, and whether it is an error."""

    text: str
    structured: dict[str, Any]
    is_error: bool

    def to_call_tool_result(self) -> CallToolResult:
        return CallToolResult(
            content=[TextContent(type="text", text=self.text)],
            structured_content=self.structured,
            is_error=self.is_error,
        )


def reply_json(structured: Mapping[str, Any]) -> str:
    """The JSON of structuredContent as the budget counts it (compact, UTF-8)."""
    return json.dumps(structured, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def reply_tokens(text: str, structured: Mapping[str, Any], counter: TokenCounting) -> int:
    """Tokens of the text block plus tokens of the structuredContent JSON."""
    return counter.count(text) + counter.count(reply_json(structured))


# ---------------------------------------------------------------- cutting primitives


@dataclass(frozen=True, slots=True)
class _Cut:
    """How much to keep: stdout tokens, characters per long string, items per list (None = all)."""

    stdout_tokens: int | None = None
    str_chars: int | None = None
    list_items: int | None = None


def _cut_string(text: str, max_chars: int | None) -> tuple[str, bool]:
    """Cut a long string to `max_chars` (never below STR_FLOOR_CHARS; a negative value = to nothing)."""
    if max_chars is None:
        return text, False
    keep = max(max_chars, STR_FLOOR_CHARS) if max_chars >= 0 else 0
    if len(text) <= max(keep, 16 if max_chars < 0 else keep):
        return text, False
    return f"{text[:keep]}…[+{len(text) - keep} chars]", True


def _cut_snippet(text: str, max_chars: int | None) -> tuple[str, bool]:
    """Cut a hit's text to `max_chars` (no floor: snippets go before hits do)."""
    if max_chars is None or len(text) <= max(max_chars, 0):
        return text, False
    keep = max(max_chars, 0)
    return f"{text[:keep]}…[+{len(text) - keep} chars]", True


def _cut_json(value: Any, cut: _Cut) -> tuple[Any, bool]:
    """A copy of `value` with long strings and lists cut per `cut`; always valid JSON."""
    if isinstance(value, str):
        return _cut_string(value, cut.str_chars)
    if isinstance(value, list):
        items = value
        was_cut = False
        if cut.list_items is not None and len(items) > cut.list_items:
            items = items[: cut.list_items]
            was_cut = True
        out = []
        for item in items:
            new, item_cut = _cut_json(item, cut)
            out.append(new)
            was_cut |= item_cut
        if len(value) > len(items):
            out.append(f"…[{len(value) - len(items)} more items cut]")
        return out, was_cut
    if isinstance(value, dict):
        out_dict = {}
        was_cut = False
        for key, item in value.items():
            new, item_cut = _cut_json(item, cut)
            out_dict[key] = new
            was_cut |= item_cut
        return out_dict, was_cut
    return value, False


def _json_extent(value: Any) -> tuple[int, int]:
    """(longest string, longest list) inside a JSON value."""
    if isinstance(value, str):
        return len(value), 0
    if isinstance(value, list):
        longest_str, longest_list = 0, len(value)
        for item in value:
            s, n = _json_extent(item)
            longest_str, longest_list = max(longest_str, s), max(longest_list, n)
        return longest_str, longest_list
    if isinstance(value, dict):
        longest_str, longest_list = 0, 0
        for item in value.values():
            s, n = _json_extent(item)
            longest_str, longest_list = max(longest_str, s), max(longest_list, n)
        return longest_str, longest_list
    return 0, 0


class _Stdout:
    """Stdout encoded once, so head/tail cuts of any size are cheap."""

    def __init__(self, text: str, counter: TokenCounting) -> None:
        self.text = text
        self.counter = counter
        self.tokens = counter.encode(text) if text else []
        self.lines = text.count("\n") + (1 if text and not text.endswith("\n") else 0)

    def cut(self, max_tokens: int | None) -> tuple[str, bool]:
        total = len(self.tokens)
        if max_tokens is None or total <= max_tokens:
            return self.text, False
        head_n = (max_tokens * 2) // 3
        tail_n = max_tokens - head_n
        head = self.counter.decode(self.tokens[:head_n]) if head_n else ""
        tail = self.counter.decode(self.tokens[total - tail_n :]) if tail_n else ""
        # Prefer whole lines when that keeps most of the allowance.
        if "\n" in head and head.rfind("\n") >= len(head) // 2:
            head = head[: head.rfind("\n") + 1]
        if "\n" in tail and tail.find("\n") <= len(tail) // 2:
            tail = tail[tail.find("\n") + 1 :]
        head, tail = head.replace("\ufffd", ""), tail.replace("\ufffd", "")
        cut_lines = max(self.lines - head.count("\n") - tail.count("\n"), 0)
        cut_chars = max(len(self.text) - len(head) - len(tail), 0)
        marker = f"…[stdout cut: {cut_lines} lines, {cut_chars} chars omitted of {self.lines} lines]…"
        sep_head = "" if not head or head.endswith("\n") else "\n"
        sep_tail = "\n" if tail else ""
        return f"{head}{sep_head}{marker}{sep_tail}{tail}", True


# ---------------------------------------------------------------- the fitting loop


Build = Callable[[_Cut], tuple[str, dict[str, Any], bool]]


def _fits(build: Build, cut: _Cut, counter: TokenCounting, budget: int) -> tuple[bool, tuple[str, dict[str, Any], bool]]:
    text, structured, was_cut = build(cut)
    return reply_tokens(text, structured, counter) <= budget, (text, structured, was_cut)


def _search(make_cut: Callable[[float], _Cut], build: Build, counter: TokenCounting, budget: int):
    """Largest share in [0, 1] whose cut fits; None when even share 0 does not fit."""
    ok, built = _fits(build, make_cut(0.0), counter, budget)
    if not ok:
        return None
    low, best = 0.0, built
    high = 1.0
    for _ in range(SEARCH_STEPS):
        mid = (low + high) / 2
        ok, candidate = _fits(build, make_cut(mid), counter, budget)
        if ok:
            low, best = mid, candidate
        else:
            high = mid
    return best


def _fit(build: Build, stdout_tokens: int, longest_str: int, longest_list: int, counter: TokenCounting, budget: int):
    """Try everything whole, then cut strings/stdout, then lists, then all strings to nothing."""
    ok, built = _fits(build, _Cut(), counter, budget)
    if ok:
        return built
    # Phase 1: snippets and stdout shrink together; lists stay whole.
    found = _search(
        lambda share: _Cut(stdout_tokens=math.floor(share * stdout_tokens), str_chars=math.floor(share * longest_str)),
        build, counter, budget,
    )
    if found is not None:
        return found
    # Phase 2: long lists shrink too (items dropped from the end), sharing the budget with stdout.
    found = _search(
        lambda share: _Cut(
            stdout_tokens=math.floor(share * stdout_tokens), str_chars=0, list_items=math.floor(share * longest_list)
        ),
        build, counter, budget,
    )
    if found is not None:
        return found
    # Phase 3: even short strings go.
    found = _search(lambda share: _Cut(stdout_tokens=0, str_chars=-1, list_items=0), build, counter, budget)
    return found


def _finalize(text: str, structured: dict[str, Any], counter: TokenCounting) -> tuple[str, dict[str, Any]]:
    """Set `output_tokens` to the exact token count of the reply that carries it."""
    for _ in range(8):
        structured["output_tokens"] = 0
        guess = reply_tokens(text, structured, counter)
        for _ in range(6):
            structured["output_tokens"] = guess
            actual = reply_tokens(text, structured, counter)
            if actual == guess:
                return text, structured
            guess = actual
        text += " "  # no fixed point (digit-boundary edge case): shift the count and retry
    raise RuntimeError("could not settle output_tokens")  # unreachable in practice


# ---------------------------------------------------------------- execute_code


def execution_reply(
    *,
    outcome: str,
    stdout: str = "",
    result: Any = None,
    error: Mapping[str, Any] | None = None,
    truncated: bool = False,
    timings_ms: Mapping[str, float] | None = None,
    counter: TokenCounting,
    max_output_tokens: int,
) -> Reply:
    """The execute_code reply `{ok, outcome, stdout, result, error, truncated, output_tokens, timings_ms}`
    fitted to `max_output_tokens`; `isError` for every outcome but `ok`."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    stdout = redact_text(stdout or "")
    result = redact_value(result)
    error_dict = redact_value(_error_fields(error)) if error is not None else None
    timings = _timings(timings_ms)
    whole_stdout = _Stdout(stdout, counter)
    str_extent, list_extent = _json_extent([result, error_dict])
    budget = max_output_tokens

    def build(cut: _Cut) -> tuple[str, dict[str, Any], bool]:
        out, out_cut = whole_stdout.cut(cut.stdout_tokens)
        res, res_cut = _cut_json(result, cut)
        err, err_cut = _cut_json(error_dict, _Cut(str_chars=cut.str_chars)) if error_dict is not None else (None, False)
        if cut.str_chars is not None and cut.str_chars < 0 and err is not None:
            err = {key: (value[:40] if isinstance(value, str) else value) for key, value in err.items()}
            err_cut = True
        was_cut = out_cut or res_cut or err_cut
        structured = {
            "ok": outcome == "ok",
            "outcome": outcome,
            "stdout": out,
            "result": res,
            "error": err,
            "truncated": bool(truncated or was_cut),
            "output_tokens": budget,  # placeholder as wide as any final count
            "timings_ms": timings,
        }
        return _render_execution(structured), structured, was_cut

    built = _fit(build, len(whole_stdout.tokens), str_extent, list_extent, counter, budget)
    if built is None:
        built = _minimal_execution(outcome, timings, error_dict)
    text, structured, _ = built
    text, structured = _finalize(text, structured, counter)
    return Reply(text=text, structured=structured, is_error=outcome != "ok")


def _minimal_execution(outcome: str, timings: dict[str, float], error: dict[str, Any] | None):
    err = None
    if error is not None:
        err = {key: None for key in error}
        err["exception"] = (error.get("exception") or "")[:40] or None
    structured = {
        "ok": outcome == "ok",
        "outcome": outcome,
        "stdout": "",
        "result": None,
        "error": err,
        "truncated": True,
        "output_tokens": 0,
        "timings_ms": timings,
    }
    return f"{outcome} (reply cut to fit the budget)", structured, True


def _error_fields(error: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "exception": error.get("exception"),
        "message": error.get("message"),
        "line": error.get("line"),
        "hint": error.get("hint"),
        "traceback": error.get("traceback"),
    }


def _timings(timings_ms: Mapping[str, float] | None) -> dict[str, float]:
    """Timings rounded to 0.1 ms; None gives the widest values, so a reply fitted with them
    still fits once `retime` puts the real (never wider) numbers in."""
    if timings_ms is None:
        return {key: MAX_TIMING_MS for key in TIMING_KEYS}
    return {key: min(round(max(float(timings_ms.get(key, 0.0)), 0.0), 1), MAX_TIMING_MS) for key in TIMING_KEYS}


def retime(reply: Reply, timings_ms: Mapping[str, float], counter: TokenCounting) -> Reply:
    """`reply` with its real timings and the matching `output_tokens` (fit first with timings None)."""
    structured = dict(reply.structured)
    structured["timings_ms"] = _timings(timings_ms)
    text = _render_execution(structured) if "stdout" in structured else reply.text
    text, structured = _finalize(text, structured, counter)
    return Reply(text=text, structured=structured, is_error=reply.is_error)


def _compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _is_hit(value: Any) -> bool:
    return isinstance(value, dict) and {"path", "start_line", "end_line"} <= set(value)


def _preview_result(result: Any) -> str:
    """The result in the text block: whole when short, else hit lines or a cut preview (the full
    value is in structuredContent, so the text block never repeats a long JSON)."""
    whole = _compact_json(result)
    if len(whole) <= RESULT_PREVIEW_CHARS:
        return whole
    if isinstance(result, list) and result and all(_is_hit(item) for item in result):
        lines = [f"{len(result)} hits:"]
        for hit in result[:RESULT_PREVIEW_HITS]:
            title = f"  {hit.get('title')}" if hit.get("title") else ""
            lines.append(f"  {hit['path']}:{hit['start_line']}-{hit['end_line']}{title}")
        if len(result) > RESULT_PREVIEW_HITS:
            lines.append(f"  … {len(result) - RESULT_PREVIEW_HITS} more")
        return "\n".join(lines)
    return f"{whole[:RESULT_PREVIEW_CHARS]}… ({len(whole)} chars; the whole value is in structuredContent.result)"


def _render_execution(structured: Mapping[str, Any]) -> str:
    """Human rendering: one status line, stdout, `result = ...`, the error; no second copy of the JSON."""
    timings = structured["timings_ms"]
    head = f"{structured['outcome']} · {timings['total']:.1f} ms"
    if structured["truncated"]:
        head += " · truncated"
    parts = [head]
    if structured["stdout"]:
        parts.append(structured["stdout"].rstrip("\n"))
    if structured["result"] is not None:
        parts.append("result = " + _preview_result(structured["result"]))
    error = structured["error"]
    if error:
        where = f" (line {error['line']})" if error.get("line") else ""
        parts.append(f"{error.get('exception') or 'Error'}: {error.get('message') or ''}{where}".rstrip())
        if error.get("hint"):
            parts.append(f"hint: {error['hint']}")
    return "\n".join(parts)


# ---------------------------------------------------------------- search_code


def search_reply(
    *,
    query: str,
    mode: str,
    rerank: bool,
    hits: Sequence[Mapping[str, Any]],
    outcome: str = "ok",
    error: Mapping[str, Any] | None = None,
    timings_ms: Mapping[str, float] | None = None,
    counter: TokenCounting,
    max_output_tokens: int,
) -> Reply:
    """The search_code reply `{ok, outcome, query, mode, rerank, hits, error, truncated, output_tokens,
    timings_ms}`: hits keep every field; snippets are cut first, then hits dropped from the end."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    clean_hits = [redact_value(dict(hit)) for hit in hits]
    error_dict = redact_value(_error_fields(error)) if error is not None else None
    timings = _timings(timings_ms)
    longest_text = max((len(hit.get("text") or "") for hit in clean_hits), default=0)

    def build(cut: _Cut) -> tuple[str, dict[str, Any], bool]:
        kept = clean_hits if cut.list_items is None else clean_hits[: cut.list_items]
        was_cut = len(kept) < len(clean_hits)
        out_hits = []
        for hit in kept:
            text, text_cut = _cut_snippet(hit.get("text") or "", cut.str_chars)
            out_hits.append({**hit, "text": text})
            was_cut |= text_cut
        structured = {
            "ok": outcome == "ok",
            "outcome": outcome,
            "query": query,
            "mode": mode,
            "rerank": rerank,
            "hits": out_hits,
            "total_hits": len(clean_hits),
            "error": error_dict,
            "truncated": was_cut,
            "output_tokens": max_output_tokens,
            "timings_ms": timings,
        }
        return _render_search(structured), structured, was_cut

    built = _fit(build, 0, longest_text, len(clean_hits), counter, max_output_tokens)
    if built is None:  # not even an empty hit list fits: drop the echoed query too
        query = query[:40]
        built = build(_Cut(str_chars=0, list_items=0))
    text, structured, _ = built
    text, structured = _finalize(text, structured, counter)
    return Reply(text=text, structured=structured, is_error=outcome != "ok")


def _render_search(structured: Mapping[str, Any]) -> str:
    hits = structured["hits"]
    label = f"{structured['mode']}{' + rerank' if structured['rerank'] else ''}"
    if structured["error"]:
        error = structured["error"]
        return f"{structured['outcome']}: {error.get('exception') or 'Error'}: {error.get('message') or ''}"
    head = f"{len(hits)} of {structured['total_hits']} hits ({label})"
    if structured["truncated"]:
        head += " · snippets cut to fit the budget"
    lines = [head]
    for rank, hit in enumerate(hits, start=1):
        title = f"  {hit['title']}" if hit.get("title") else ""
        lines.append(f"{rank}. {hit['path']}:{hit['start_line']}-{hit['end_line']}  {float(hit['score']):.3f}{title}")
        snippet = [line.strip() for line in (hit.get("text") or "").splitlines() if line.strip()]
        lines.extend(f"   {line[:120]}" for line in snippet[:TEXT_SNIPPET_LINES])
    return "\n".join(lines)


# ---------------------------------------------------------------- small replies (skills, refusals)


def simple_reply(structured: dict[str, Any], text: str, *, is_error: bool, counter: TokenCounting | None = None) -> Reply:
    """A small reply (skill tools); redacted, and with `output_tokens` when a counter is given."""
    structured = redact_value(structured)
    text = redact_text(text)
    if counter is not None:
        text, structured = _finalize(text, structured, counter)
    return Reply(text=text, structured=structured, is_error=is_error)
