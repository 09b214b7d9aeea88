"""Pure result processing: bound, redact, fit a reply to its token budget, render the text block.

Contract: a `Reply` has one text block and a structuredContent dict. The budget bounds
`count(text) + count(reply_json(structured))`, where `reply_json` is compact JSON
(`separators=(",", ":")`, `ensure_ascii=False`); `structured["output_tokens"]` equals that sum
exactly, for every outcome (errors and the last-resort minimal reply included).
Processing is linear in the input and bounded: every text (stdout, each string of `result`, each
error field, each hit field) is first capped at `cap_chars(budget)` (4x the budget at 4 characters a
token; stdout keeps its head and tail), redacted on the way (a secret crossing a cap is dropped
whole), its lone surrogates escaped, and `result` is cut to MAX_JSON_DEPTH levels; then fitting cuts
stdout to its head and tail with a marker, cuts long strings (hit snippets first; short fields such
as paths stay whole), then drops list items from the end with a marker item, and sets `truncated`.
Cuts use sandbox.cut_json, so every marker starts with CUT_MARK. The work costs milliseconds per
100 KB, so callers on an event loop run it in a worker thread (see runtime).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mcp_types import CallToolResult, TextContent

from sandbox import CUT_MARK, DEPTH_MARK, MAX_JSON_DEPTH, OUTCOMES, TIMING_KEYS, cut_json, json_extent

from .redact import redact_window

__all__ = [
    "Reply",
    "reply_off_loop",
    "TokenCounting",
    "cap_chars",
    "execution_reply",
    "reply_json",
    "reply_tokens",
    "retime",
    "search_reply",
    "simple_reply",
]

logger = logging.getLogger(__name__)

STR_FLOOR_CHARS = 48  # strings this short (paths, names, ids) survive the snippet-cutting phase
LAST_STR_FLOOR_CHARS = 16  # ... and these survive the last phase
TEXT_SNIPPET_LINES = 2  # snippet lines per hit in the human rendering of search results
RESULT_PREVIEW_CHARS = 300  # a longer result shows as a preview in the text block
RESULT_PREVIEW_HITS = 10
MAX_TIMING_MS = 999999.9  # widest timing value (16 min); wider ones are clamped
SEARCH_STEPS = 14  # most counts per fitting phase (and 2**-14, the finest share it tells apart)
SEARCH_PRECISION = 0.01  # a fit this close under the budget is good enough
CAP_BUDGETS = 4  # every text is capped at this many reply budgets before any other work
CAP_CHARS_PER_TOKEN = 4  # ... counted at this many characters a token (measuring tokens costs more)
# Exception-name lengths (tokens) the last-resort reply tries; None: no error object at all.
MINIMAL_NAME_TOKENS: tuple[int | None, ...] = (16, 8, 4, 2, 0, None)
ERROR_TEXT_FIELDS = ("exception", "message", "hint", "traceback")
SANDBOX_CUT_MIN_CHARS = 65536  # a `truncated` stdout at least this long is taken as cut by the sandbox
ENCODE_PIECE_CHARS = 8192  # ~1.5 ms of tokenizing (which holds the GIL) at a time
REPLY_MIN_DEADLINE_S = 2.0  # fitting gets at least this long, whatever is left of the call's deadline
# A string the sandbox already cut (sandbox.cut_json's marker): the text before it ends blind.
_CHILD_CUT = re.compile(re.escape(CUT_MARK) + r"\[\+\d+ chars\]\Z")


def cap_chars(budget_tokens: int) -> int:
    """Characters any one text may keep before fitting, for a reply budget of `budget_tokens`."""
    return CAP_BUDGETS * budget_tokens * CAP_CHARS_PER_TOKEN


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


async def reply_off_loop(build: Callable[..., Reply], deadline_s: float, **kwargs: Any) -> Reply:
    """`build(**kwargs)` (execution_reply or search_reply) in a worker thread, so the event loop keeps
    serving other calls while a big output is redacted and fitted (tens of ms per MB of output).
    Past `deadline_s` (at least REPLY_MIN_DEADLINE_S) the reply is built again without the
    program's data (stdout, result, hits), which takes no time."""
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(functools.partial(build, **kwargs)), max(deadline_s, REPLY_MIN_DEADLINE_S)
        )
    except TimeoutError:
        logger.warning("fitting a reply overran the call's deadline; replying without the program's output")
    lean = dict(kwargs)
    for key, empty in (("stdout", ""), ("result", None), ("hits", [])):
        if key in lean:
            lean[key] = empty
    if "truncated" in lean:
        lean["truncated"] = True
    error = kwargs.get("error")
    if error is not None:
        name = error.get("exception")
        lean["error"] = {"exception": name if isinstance(name, str) and len(name) <= 100 else None,
                         "message": "the reply took too long to prepare; its data was dropped",
                         "line": None, "hint": None, "traceback": None}
    return build(**lean)


# ---------------------------------------------------------------- bounding (before any counting)


def _redacted(text: str, keep: int | None) -> tuple[str, int]:
    """cut_json's text hook: `text` (or its first `keep` characters) redacted and surrogate-safe;
    returns the shown text and how many characters of `text` it stands for."""
    end = len(text) if keep is None else min(keep, len(text))
    if end == len(text) and (child_cut := _CHILD_CUT.search(text, max(0, end - 40))) is not None:
        # Cut in the child: nothing after the cut is known, so a partial word before it is dropped.
        shown, _, _ = redact_window(text[: child_cut.start()], end_is_cut=True)
        return shown + text[child_cut.start():], len(text)
    shown, _, kept_to = redact_window(text, 0, end)
    return shown, kept_to


def _bound_value(value: Any, cap: int) -> tuple[Any, bool]:
    """`value` capped at `cap` characters in all and MAX_JSON_DEPTH levels, redacted.

    Long strings give way first, all to one length (a hit list keeps every hit, with shorter
    snippets, as fitting would); items are dropped from the end only when that is not enough."""
    lengths: list[int] = []
    overhead = _string_lengths(value, 0, lengths)
    return cut_json(value, str_chars=_fair_share(lengths, cap - overhead), budget_chars=cap, text=_redacted)


def _string_lengths(value: Any, depth: int, lengths: list[int]) -> int:
    """Collect the lengths of the string values down to MAX_JSON_DEPTH (a tree: the value came from
    JSON); returns what the rest costs in cut_json's budget (keys, scalars, containers)."""
    if isinstance(value, str):
        lengths.append(len(value))
        return 0
    if depth >= MAX_JSON_DEPTH or not isinstance(value, (list, dict)):
        return 1 if not isinstance(value, (list, dict)) else len(DEPTH_MARK)
    overhead = 2
    if isinstance(value, dict):
        for key, item in value.items():
            overhead += len(key) if isinstance(key, str) else 0
            overhead += _string_lengths(item, depth + 1, lengths)
    else:
        for item in value:
            overhead += _string_lengths(item, depth + 1, lengths)
    return overhead


def _fair_share(lengths: list[int], room: int) -> int | None:
    """The largest L with sum(min(length, L)) <= room (None: everything fits whole)."""
    if sum(lengths) <= room:
        return None
    lengths.sort()
    for index, length in enumerate(lengths):
        left = len(lengths) - index
        if length * left > room:
            return max(room, 0) // left
        room -= length
    return None


def _bound_error(error: Mapping[str, Any], cap: int) -> tuple[dict[str, Any], bool]:
    """The five error fields, each text capped at `cap` characters and redacted; odd types coerced."""
    fields: dict[str, Any] = {}
    for key in ERROR_TEXT_FIELDS:
        value = error.get(key)
        fields[key] = None if value is None else value if isinstance(value, str) else str(value)[: cap + 1]
    line = error.get("line")
    fields["line"] = line if isinstance(line, int) and not isinstance(line, bool) else None
    bounded, was_cut = cut_json(fields, str_chars=cap, text=_redacted)
    return {key: bounded[key] for key in ("exception", "message", "line", "hint", "traceback")}, was_cut


def _bound_hits(hits: Sequence[Mapping[str, Any]], cap: int) -> list[dict[str, Any]]:
    out = []
    for hit in hits:
        bounded, _ = cut_json(dict(hit), str_chars=cap, text=_redacted)
        out.append(bounded)
    return out


# ---------------------------------------------------------------- cutting primitives


@dataclass(frozen=True, slots=True)
class _Cut:
    """How much to keep: stdout tokens, characters per long string, items per list (None = all).

    str_chars < 0 means the last phase: every string longer than LAST_STR_FLOOR_CHARS goes."""

    stdout_tokens: int | None = None
    str_chars: int | None = None
    list_items: int | None = None


def _as_is(text: str, keep: int | None) -> tuple[str, int]:
    """cut_json's text hook for values already bounded and redacted (their text is safe as it is)."""
    return (text, len(text)) if keep is None else (text[:keep], keep)


def _cut_value(value: Any, cut: _Cut, *, floor: int = STR_FLOOR_CHARS) -> tuple[Any, bool]:
    """`value` with long strings and lists cut per `cut` (sandbox.cut_json); always valid JSON."""
    if cut.str_chars is None:
        return cut_json(value, list_items=cut.list_items, text=_as_is)
    if cut.str_chars < 0:
        return cut_json(value, str_chars=0, str_floor=LAST_STR_FLOOR_CHARS, list_items=cut.list_items, text=_as_is)
    return cut_json(
        value, str_chars=max(cut.str_chars, floor), str_floor=floor, list_items=cut.list_items, text=_as_is
    )


def _encode_in_pieces(text: str, counter: TokenCounting) -> list[int]:
    """Tokens of `text`, encoded ENCODE_PIECE_CHARS at a time: the tokenizer holds the GIL for a whole
    call, and the event loop must get it back every few milliseconds. Tokens next to a seam may
    differ from one whole encoding; these only choose where stdout is cut (the reply is counted whole)."""
    tokens: list[int] = []
    for start in range(0, len(text), ENCODE_PIECE_CHARS):
        tokens.extend(counter.encode(text[start : start + ENCODE_PIECE_CHARS]))
    return tokens


class _Stdout:
    """Stdout capped, redacted and encoded once, so head/tail cuts of any size are cheap.

    Only the first 2/3 and the last 1/3 of `cap` characters are ever read past a line count."""

    def __init__(self, text: str, cap: int, counter: TokenCounting, *, cut_by_sandbox: bool = False) -> None:
        self.counter = counter
        self.total_chars = len(text)
        self.lines = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
        if len(text) <= cap:
            self.head, _, _ = redact_window(text, end_is_cut=cut_by_sandbox)
            self.tail, self.precut = "", False
        else:
            head_end = (cap * 2) // 3
            self.head, _, kept_to = redact_window(text, 0, head_end)
            self.tail, kept_from, _ = redact_window(text, len(text) - (cap - head_end), end_is_cut=cut_by_sandbox)
            self.precut = True
        self.head_tokens = _encode_in_pieces(self.head, counter)
        self.tail_tokens = _encode_in_pieces(self.tail, counter)

    @property
    def token_count(self) -> int:
        return len(self.head_tokens) + len(self.tail_tokens)

    def cut(self, max_tokens: int | None) -> tuple[str, bool]:
        if not self.precut and (max_tokens is None or len(self.head_tokens) <= max_tokens):
            return self.head, False
        head_src, tail_src = (self.head_tokens, self.tail_tokens) if self.precut else (self.head_tokens,) * 2
        total = self.token_count if self.precut else len(self.head_tokens)
        budget = total if max_tokens is None else min(max_tokens, total)
        head_n = min((budget * 2) // 3, len(head_src))
        tail_n = min(budget - head_n, len(tail_src))
        head_n = min(budget - tail_n, len(head_src))
        head = self.counter.decode(head_src[:head_n]) if head_n else ""
        tail = self.counter.decode(tail_src[len(tail_src) - tail_n :]) if tail_n else ""
        # Prefer whole lines when that keeps most of the allowance.
        if "\n" in head and head.rfind("\n") >= len(head) // 2:
            head = head[: head.rfind("\n") + 1]
        if "\n" in tail and tail.find("\n") <= len(tail) // 2:
            tail = tail[tail.find("\n") + 1 :]
        head, tail = head.replace("\ufffd", ""), tail.replace("\ufffd", "")
        cut_lines = max(self.lines - head.count("\n") - tail.count("\n"), 0)
        cut_chars = max(self.total_chars - len(head) - len(tail), 0)
        marker = f"{CUT_MARK}[stdout cut: {cut_lines} lines, {cut_chars} chars omitted of {self.lines} lines]{CUT_MARK}"
        sep_head = "" if not head or head.endswith("\n") else "\n"
        sep_tail = "\n" if tail else ""
        return f"{head}{sep_head}{marker}{sep_tail}{tail}", True


# ---------------------------------------------------------------- the fitting loop


Build = Callable[[_Cut], tuple[str, dict[str, Any], bool]]


def _measure(build: Build, cut: _Cut, counter: TokenCounting) -> tuple[int, tuple[str, dict[str, Any], bool]]:
    text, structured, was_cut = build(cut)
    return reply_tokens(text, structured, counter), (text, structured, was_cut)


def _search(
    make_cut: Callable[[float], _Cut], build: Build, counter: TokenCounting, budget: int, whole_tokens: int | None
):
    """A share in [0, 1] whose cut fits, within SEARCH_PRECISION of the budget or of the largest such
    share; None when even share 0 does not fit. Guesses by interpolating the token count between the
    shares known to fit and not to fit (it is close to linear), so a few counts suffice."""
    low_tokens, best = _measure(build, make_cut(0.0), counter)
    if low_tokens > budget:
        return None
    low, high, high_tokens = 0.0, 1.0, whole_tokens
    for _ in range(SEARCH_STEPS):
        if high - low < 2.0 ** -SEARCH_STEPS or budget - low_tokens <= max(2, budget * SEARCH_PRECISION):
            break
        if high_tokens is None or high_tokens <= low_tokens:
            guess = (low + high) / 2
        else:  # aim just under the budget; never closer than 5% of the bracket to either end
            guess = low + (high - low) * (budget - low_tokens) / (high_tokens - low_tokens) * 0.99
            guess = min(max(guess, low + (high - low) * 0.05), high - (high - low) * 0.05)
        tokens, candidate = _measure(build, make_cut(guess), counter)
        if tokens <= budget:
            low, low_tokens, best = guess, tokens, candidate
        else:
            high, high_tokens = guess, tokens
    return best


def _fit(build: Build, stdout_tokens: int, longest_str: int, longest_list: int, counter: TokenCounting, budget: int):
    """Try everything whole, then cut strings/stdout, then lists, then all strings to nothing."""
    whole_tokens = None
    if stdout_tokens <= 2 * budget:  # else it cannot fit (stdout shows in the text and the JSON): skip the count
        whole_tokens, built = _measure(build, _Cut(), counter)
        if whole_tokens <= budget:
            return built
    # Phase 1: snippets and stdout shrink together; lists stay whole.
    found = _search(
        lambda share: _Cut(stdout_tokens=math.floor(share * stdout_tokens), str_chars=math.floor(share * longest_str)),
        build, counter, budget, whole_tokens,
    )
    if found is not None:
        return found
    # Phase 2: long lists shrink too (items dropped from the end), sharing the budget with stdout.
    found = _search(
        lambda share: _Cut(
            stdout_tokens=math.floor(share * stdout_tokens), str_chars=0, list_items=math.floor(share * longest_list)
        ),
        build, counter, budget, None,
    )
    if found is not None:
        return found
    # Phase 3: even short strings go.
    tokens, built = _measure(build, _Cut(stdout_tokens=0, str_chars=-1, list_items=0), counter)
    return built if tokens <= budget else None


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
    fitted to `max_output_tokens`; `isError` for every outcome but `ok`. `truncated` says the
    sandbox already cut stdout or the result."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    budget = max_output_tokens
    cap = cap_chars(budget)
    # `truncated` does not say which of stdout and result the sandbox cut: a long stdout was (its cap
    # is 1 MB), so a partial word at its end may be the head of a secret and goes.
    stdout = stdout or ""
    whole_stdout = _Stdout(stdout, cap, counter, cut_by_sandbox=truncated and len(stdout) >= SANDBOX_CUT_MIN_CHARS)
    result, result_capped = _bound_value(result, cap)
    error_dict, error_capped = _bound_error(error, cap) if error is not None else (None, False)
    truncated = truncated or whole_stdout.precut or result_capped or error_capped
    timings = _timings(timings_ms)
    str_extent, list_extent = json_extent([result, error_dict])

    def build(cut: _Cut) -> tuple[str, dict[str, Any], bool]:
        out, out_cut = whole_stdout.cut(cut.stdout_tokens)
        res, res_cut = _cut_value(result, cut)
        err, err_cut = _cut_value(error_dict, _Cut(str_chars=cut.str_chars)) if error_dict is not None else (None, False)
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

    built = _fit(build, whole_stdout.token_count, str_extent, list_extent, counter, budget)
    if built is None:
        built = _minimal_execution(outcome, timings, error_dict, counter, budget)
    text, structured, _ = built
    text, structured = _finalize(text, structured, counter)
    return Reply(text=text, structured=structured, is_error=outcome != "ok")


def _short_name(name: Any, tokens: int | None, counter: TokenCounting) -> str | None:
    """`name` cut to at most `tokens` tokens (whole characters only), or None."""
    if not isinstance(name, str) or not name or not tokens or tokens <= 0:
        return None
    encoded = counter.encode(name[: tokens * 8])
    if len(encoded) <= tokens and len(name) <= tokens * 8:
        return name
    return counter.decode(encoded[:tokens]).replace("\ufffd", "") or None


def _minimal_error(error: Mapping[str, Any] | None, tokens: int | None, counter: TokenCounting) -> dict[str, Any] | None:
    if error is None or tokens is None:
        return None
    return {"exception": _short_name(error.get("exception"), tokens, counter), "message": None, "line": None,
            "hint": None, "traceback": None}


def _minimal_execution(
    outcome: str, timings: dict[str, float], error: Mapping[str, Any] | None, counter: TokenCounting, budget: int
) -> tuple[str, dict[str, Any], bool]:
    """The last-resort reply: no data, the exception name cut by tokens until the whole fits."""
    for name_tokens in MINIMAL_NAME_TOKENS:
        structured = {
            "ok": outcome == "ok",
            "outcome": outcome,
            "stdout": "",
            "result": None,
            "error": _minimal_error(error, name_tokens, counter),
            "truncated": True,
            "output_tokens": budget,
            "timings_ms": timings,
        }
        text = _render_execution(structured)
        if reply_tokens(text, structured, counter) <= budget:
            break
    return text, structured, True


def _timings(timings_ms: Mapping[str, float] | None) -> dict[str, float]:
    """Timings rounded to 0.1 ms; None gives the widest values, so a reply fitted with them
    still fits once `retime` puts the real (never wider) numbers in."""
    if timings_ms is None:
        return {key: MAX_TIMING_MS for key in TIMING_KEYS}
    return {key: min(round(max(float(timings_ms.get(key, 0.0)), 0.0), 1), MAX_TIMING_MS) for key in TIMING_KEYS}


def retime(reply: Reply, timings_ms: Mapping[str, float], counter: TokenCounting) -> Reply:
    """`reply` with its real timings and the matching `output_tokens` (fit first with timings None).

    Only the timings change: the text keeps every cut it was fitted with (its status line is
    re-rendered, never the rest), and real timings are never wider than the placeholders."""
    structured = dict(reply.structured)
    text = reply.text
    old_head = _head(structured) if "stdout" in structured else None
    structured["timings_ms"] = _timings(timings_ms)
    if old_head is not None and text.startswith(old_head):
        text = _head(structured) + text[len(old_head):]
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


def _head(structured: Mapping[str, Any]) -> str:
    """The status line of an execute_code text block (the only part that shows timings)."""
    head = f"{structured['outcome']} · {structured['timings_ms']['total']:.1f} ms"
    return head + " · truncated" if structured["truncated"] else head


def _render_execution(structured: Mapping[str, Any]) -> str:
    """Human rendering: one status line, stdout, `result = ...`, the error; no second copy of the JSON."""
    parts = [_head(structured)]
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
    coverage: float = 1.0,
) -> Reply:
    """The search_code reply `{ok, outcome, query, mode, rerank, hits, error, truncated, output_tokens,
    timings_ms, coverage}`: hits keep every field; snippets are cut first, then hits dropped from the
    end. `coverage`: the fraction of the served chunks with a vector (hybrid ranks by BM25 alone at 0;
    the text says so below 1.0; a reply cut to its minimum leaves it out only when it is 1.0)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    cap = cap_chars(max_output_tokens)
    clean_hits = _bound_hits(hits, cap)
    error_dict, _ = _bound_error(error, cap) if error is not None else (None, False)
    timings = _timings(timings_ms)
    longest_text = max((len(hit.get("text") or "") for hit in clean_hits), default=0)

    def build(cut: _Cut, query: str = query) -> tuple[str, dict[str, Any], bool]:
        kept = clean_hits if cut.list_items is None else clean_hits[: cut.list_items]
        was_cut = len(kept) < len(clean_hits)
        out_hits = []
        for hit in kept:
            text, text_cut = _cut_snippet(hit.get("text") or "", cut.str_chars)
            out_hits.append({**hit, "text": text})
            was_cut |= text_cut
        err, err_cut = _cut_value(error_dict, _Cut(str_chars=cut.str_chars)) if error_dict is not None else (None, False)
        was_cut |= err_cut
        structured = {
            "ok": outcome == "ok",
            "outcome": outcome,
            "query": query,
            "mode": mode,
            "rerank": rerank,
            "hits": out_hits,
            "total_hits": len(clean_hits),
            "error": err,
            "truncated": was_cut,
            "output_tokens": max_output_tokens,
            "timings_ms": timings,
            "coverage": float(coverage),
        }
        return _render_search(structured), structured, was_cut

    built = _fit(build, 0, longest_text, len(clean_hits), counter, max_output_tokens)
    if built is None:  # not even an empty hit list fits: cut the echoed query and the error by tokens
        for name_tokens in MINIMAL_NAME_TOKENS:
            text, structured, _ = build(_Cut(str_chars=-1, list_items=0), _short_name(query, name_tokens, counter) or "")
            structured["error"] = _minimal_error(error_dict, name_tokens, counter)
            structured["truncated"] = True
            if structured["coverage"] >= 1.0:  # the minimal reply says coverage only when it warns
                del structured["coverage"]
            text = _render_search(structured)
            if reply_tokens(text, structured, counter) <= max_output_tokens:
                break
        built = text, structured, True
    text, structured, _ = built
    text, structured = _finalize(text, structured, counter)
    return Reply(text=text, structured=structured, is_error=outcome != "ok")


def _cut_snippet(text: str, max_chars: int | None) -> tuple[str, bool]:
    """Cut a hit's text to `max_chars` (no floor: snippets go before hits do)."""
    if max_chars is None:
        return text, False
    return cut_json(text, str_chars=max(max_chars, 0), text=_as_is)


def _render_search(structured: Mapping[str, Any]) -> str:
    hits = structured["hits"]
    label = f"{structured['mode']}{' + rerank' if structured['rerank'] else ''}"
    if structured["error"]:
        error = structured["error"]
        return f"{structured['outcome']}: {error.get('exception') or 'Error'}: {error.get('message') or ''}"
    head = f"{len(hits)} of {structured['total_hits']} hits ({label})"
    if structured["truncated"]:
        head += " · snippets cut to fit the budget"
    coverage = structured.get("coverage", 1.0)
    if structured["mode"] != "bm25" and coverage < 1.0:
        head += f" · vector coverage {coverage:.0%} (BM25 alone{' for the rest' if coverage else ''})"
    lines = [head]
    for rank, hit in enumerate(hits, start=1):
        title = f"  {hit['title']}" if hit.get("title") else ""
        lines.append(f"{rank}. {hit['path']}:{hit['start_line']}-{hit['end_line']}  {float(hit['score']):.3f}{title}")
        snippet = [line.strip() for line in (hit.get("text") or "").splitlines() if line.strip()]
        lines.extend(f"   {line[:120]}" for line in snippet[:TEXT_SNIPPET_LINES])
    return "\n".join(lines)


# ---------------------------------------------------------------- small replies (skills, refusals)


def simple_reply(structured: dict[str, Any], text: str, *, is_error: bool, counter: TokenCounting | None = None) -> Reply:
    """A small reply (skill tools, load failures); redacted, surrogate-safe, and with `output_tokens`
    when a counter is given."""
    structured, _ = cut_json(structured, text=_redacted)
    text, _ = _redacted(text, None)
    if counter is not None:
        text, structured = _finalize(text, structured, counter)
    return Reply(text=text, structured=structured, is_error=is_error)
