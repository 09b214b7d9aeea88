"""Redact what looks like a secret from anything the server returns, in time linear in the text.

Contract: `redact_text` replaces only the secret part of a match with `[REDACTED:<kind>]`, keeping
the surrounding text (an assignment keeps its name and operator), and never touches plain hex
digests, git SHAs or UUIDs: no rule matches on entropy alone, each needs a known shape or a
secret-sounding name. Every pattern runs on RE2 (no backtracking: linear in the text whatever it
holds); each rule scans the text once and the secret spans it finds are merged, so the cost is
(number of rules) x (length). `redact_window` redacts a slice of a longer text and moves the slice's
ends so that a secret crossing a cut is dropped whole, never half-shown. `redact_value` applies
`redact_text` to every string (and dict key) of a small JSON value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import re2

__all__ = ["REDACT_MARGIN_CHARS", "redact_text", "redact_value", "redact_window"]

# Context read past each cut, so a secret crossing it is seen whole: longer than any bounded token
# shape (unbounded ones match as a prefix, a key block to the end of the window), and stretched to
# the cut line's own start and end (assignments are line-scoped) when those are within LINE_CHARS.
REDACT_MARGIN_CHARS = 1024
LINE_CHARS = 8192
SNAP_CHARS = 512  # at a blind cut (the text ends there), a partial word this long or shorter is dropped

_PRIVATE_KEY_END = r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
_SECRET_NAME = (
    r"[A-Za-z0-9_.-]*(?:password|passwd|passphrase|secret|api[_-]?key|apikey|private[_-]?key"
    r"|(?:access|auth|api|refresh|bearer|session|client)[_-]?token|credentials?)[A-Za-z0-9_.-]*"
)
# Unquoted values that are code or placeholders, not secrets (type annotations, references).
_NOT_SECRET_WORDS = frozenset({
    "str", "int", "bytes", "bool", "none", "null", "true", "false", "optional", "any", "string",
    "required", "self", "secret", "password", "redacted", "typing",
})
# Python re on purpose: one search over a short value, no nested repetition (linear).
_CODE_LIKE = re.compile(r"[()\[\]{}<>$]|^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_]")
_MARK = "[REDACTED:{}]"


def _quoted_value_is_plain(value: str) -> bool:
    return value.strip().lower() in _NOT_SECRET_WORDS


def _bare_value_is_plain(value: str) -> bool:
    return (
        value.lower().rstrip(":") in _NOT_SECRET_WORDS
        or value.isdigit()
        or _CODE_LIKE.search(value) is not None
    )


def _operator_end(matched: bytes) -> int:
    """Just past the `=` or `:` of an assignment match (a secret name holds neither)."""
    equals, colon = matched.find(b"="), matched.find(b":")
    if equals < 0 or 0 <= colon < equals:
        equals = colon
    return equals + 1


def _skip(matched: bytes, index: int, chars: bytes) -> int:
    while index < len(matched) and matched[index] in chars:
        index += 1
    return index


def _quoted_value(matched: bytes) -> tuple[int, int]:
    index = _skip(matched, _operator_end(matched), b"=>")  # ":=" and "=>"
    quote = _skip(matched, index, b" \t\n\r\f")
    end = len(matched) - 1 if len(matched) - 1 > quote and matched[-1] == matched[quote] else len(matched)
    return quote + 1, end


def _bare_value(matched: bytes) -> tuple[int, int]:
    return _skip(matched, _operator_end(matched), b" \t"), len(matched)


def _bearer_value(matched: bytes) -> tuple[int, int]:
    return _skip(matched, len(b"bearer"), b" \t\n\r\f"), len(matched)


def _url_password(matched: bytes) -> tuple[int, int]:
    return matched.find(b":", matched.find(b"://") + 3) + 1, len(matched) - 1


@dataclass(frozen=True, slots=True)
class _Rule:
    """One shape of secret: where the secret lies inside a match (None: all of it; found in Python
    because RE2 capture groups cost twice the match), and an optional test that says a matched
    value is not a secret after all."""

    kind: str
    pattern: Any  # re2._Regexp
    locate: Callable[[bytes], tuple[int, int]] | None = None
    is_plain: Callable[[str], bool] | None = None


# In priority order: when spans overlap, the first rule's kind names the merged span. Each pattern
# ends a bounded-length secret with \b or a fixed length, and an unbounded one matches any prefix
# of itself, so a secret cut by the end of a window is still found.
_RULES: tuple[_Rule, ...] = (
    # A key block up to its END line, or to the end of the text when the END line is cut off.
    _Rule("private-key", re2.compile(
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?s:.*?)(?:" + _PRIVATE_KEY_END + r"|$)"
    )),
    # AWS access key ids (long-term AKIA, temporary ASIA, and the other documented prefixes).
    _Rule("aws-access-key", re2.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b")),
    _Rule("github-token", re2.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b")),
    _Rule("slack-token", re2.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,250}")),
    _Rule("slack-webhook", re2.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]{20,}")),
    _Rule("stripe-key", re2.compile(r"\b[rs]k_live_[0-9A-Za-z]{16,}\b")),
    _Rule("google-api-key", re2.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    _Rule("jwt", re2.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    # "Authorization: Bearer <token>" and "Bearer <token>": keep the scheme, drop the credential.
    _Rule("token", re2.compile(r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]{16,}=*"), locate=_bearer_value),
    _Rule("password", re2.compile(r"\b[a-z][a-z0-9+.-]*://[^\s:/@]+:[^\s@/]{3,}@"), locate=_url_password),
    # name = "value" (JSON, YAML, code, env); an unclosed quote at the end of the text counts.
    _Rule("secret", re2.compile(
        r"""(?i)["']?\b""" + _SECRET_NAME + r"""["']?\s*(?::=|=>|[:=])\s*(?:"[^"\n]{4,}(?:"|$)|'[^'\n]{4,}(?:'|$))"""
    ), locate=_quoted_value, is_plain=_quoted_value_is_plain),
    # name = value, unquoted (env/ini/yaml style).
    _Rule("secret", re2.compile(
        r"(?i)\b" + _SECRET_NAME + r"""\s*(?:=|:)[ \t]*[^\s"'#,;]{4,}"""
    ), locate=_bare_value, is_plain=_bare_value_is_plain),
)
_KEY_BEGIN = re2.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
_KEY_END = re2.compile(_PRIVATE_KEY_END)
# One scan that says whether any rule can match at all: most texts (paths, titles, code) have no
# secret, and one RE2 call per text is far cheaper than one per rule.
_ANY = re2.compile("|".join(f"(?:{rule.pattern.pattern})" for rule in _RULES) + "|" + _PRIVATE_KEY_END)

Span = tuple[int, int, str]


def secret_spans(data: bytes, *, starts_mid_text: bool = False) -> list[Span]:
    """Sorted, non-overlapping (start, end, kind) byte spans of every secret in UTF-8 `data`.

    Works on bytes: RE2 matches UTF-8 natively, so no per-match character-offset bookkeeping.
    `starts_mid_text`: `data` is a slice that may begin inside a key block, so an END line with no
    BEGIN before it makes everything up to it a private key.
    """
    if _ANY.search(data) is None:
        return []
    found: list[tuple[int, int, int, str]] = []
    for priority, rule in enumerate(_RULES):
        for match in rule.pattern.finditer(data):
            start, end = match.span()
            if rule.locate is not None:
                inner_start, inner_end = rule.locate(data[start:end])
                start, end = start + inner_start, start + inner_end
            if rule.is_plain is not None and rule.is_plain(data[start:end].decode("utf-8", "replace")):
                continue
            found.append((start, end, priority, rule.kind))
    if starts_mid_text and (end_line := _KEY_END.search(data)) is not None:
        begin = _KEY_BEGIN.search(data)
        if begin is None or begin.start() > end_line.start():
            found.append((0, end_line.end(), 0, "private-key"))
    found.sort()
    merged: list[Span] = []
    for start, end, _, kind in found:
        if merged and start < merged[-1][1]:
            last_start, last_end, last_kind = merged[-1]
            merged[-1] = (last_start, max(last_end, end), last_kind)
        else:
            merged.append((start, end, kind))
    return merged


def _utf8(text: str) -> bytes:
    """`text` as UTF-8, lone surrogates as `\\udcxx` escapes (what the reply will show)."""
    return text.encode("utf-8", "backslashreplace")


def _apply(data: bytes, spans: list[Span], start: int, end: int) -> str:
    pieces: list[bytes] = []
    position = start
    for span_start, span_end, kind in spans:
        if span_start < start or span_end > end:
            continue
        pieces.append(data[position:span_start])
        pieces.append(_MARK.format(kind).encode())
        position = span_end
    pieces.append(data[position:end])
    return b"".join(pieces).decode("utf-8")


def redact_text(text: str) -> str:
    """`text` with every secret-looking span replaced by `[REDACTED:<kind>]` (lone surrogates escaped)."""
    if not text:
        return text
    data = _utf8(text)
    return _apply(data, secret_spans(data), 0, len(data))


def redact_window(text: str, start: int = 0, end: int | None = None, *, end_is_cut: bool = False) -> tuple[str, int, int]:
    """(redacted text[start2:end2], start2, end2), with start <= start2 <= end2 <= end.

    Only a margin around the slice is read (REDACT_MARGIN_CHARS, out to the line's ends within
    LINE_CHARS), so the cost is linear in the slice. A secret
    crossing `start` or `end` moves that end past it (the secret is dropped whole). `end_is_cut`
    says the text itself was cut at its end (by the sandbox): a partial word there is dropped, since
    nothing after it shows whether it was a secret. Lone surrogates come back escaped (and then
    count as their escapes' length in start2 and end2).
    """
    end = len(text) if end is None else min(end, len(text))
    start = max(0, min(start, end))
    low, high = max(0, start - REDACT_MARGIN_CHARS), min(len(text), end + REDACT_MARGIN_CHARS)
    if low > 0 and (line_start := text.rfind("\n", max(0, low - LINE_CHARS), low)) >= 0:
        low = line_start + 1
    if high < len(text) and (line_end := text.find("\n", high, high + LINE_CHARS)) >= 0:
        high = line_end
    window = text[low:high]
    first, last = start - low, end - low
    if end_is_cut and high == len(text) and last == len(window) and last > first and not window[last - 1].isspace():
        floor = max(first, last - SNAP_CHARS)
        blank = max(window.rfind(" ", floor, last), window.rfind("\n", floor, last))
        if blank >= 0:
            last = blank + 1
        elif last - first <= SNAP_CHARS:
            last = first
    before, inside = _utf8(window[:first]), _utf8(window[first:last])
    data = before + inside + _utf8(window[last:])
    byte_first, byte_last = len(before), len(before) + len(inside)
    spans = secret_spans(data, starts_mid_text=low > 0)
    for span_start, span_end, _ in spans:
        if span_start < byte_first < span_end:
            byte_first = span_end
        if span_start < byte_last < span_end:
            byte_last = span_start
    byte_last = max(byte_first, byte_last)
    shown = _apply(data, spans, byte_first, byte_last)
    start2 = low + first + len(data[len(before):byte_first].decode("utf-8"))
    return shown, start2, start2 + len(data[byte_first:byte_last].decode("utf-8"))


def redact_value(value: Any) -> Any:
    """A copy of a JSON value with `redact_text` applied to every string and dict key."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, (list, tuple)):
        return [redact_value(item) for item in value]
    if isinstance(value, dict):
        return {redact_text(str(key)): redact_value(item) for key, item in value.items()}
    return value
