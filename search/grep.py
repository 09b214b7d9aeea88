"""grep over the indexed texts: RE2 (linear time in the text, whatever the pattern) on the stored bytes.

Contract: the pattern runs over each document's UTF-8 bytes straight from the index's memory-mapped
text blob (a zero-copy view per document); only a matching line is decoded. Lines are numbered as
``read()`` and the chunker number them (split on "\\n"). ``^`` and ``$`` match at line starts and ends
(RE2 multi-line mode), and no match crosses a line end (``never_nl``: not ``.``, ``\\s`` or ``[^x]``).
At most one match per line is reported, in document order (documents sorted by path). The scan
stops at ``k`` matches, and at ``deadline`` (``time.monotonic()``) with a GrepTimeoutError.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import re2

from .errors import QueryError, SearchError

__all__ = ["GREP_LINE_CHARS", "GREP_MAX_K", "GrepMatch", "GrepTimeoutError", "compile_grep_pattern", "grep_docs"]

GREP_MAX_K = 1000
GREP_LINE_CHARS = 300
MAX_PATTERN_CHARS = 2000
_RE2_MAX_MEM_BYTES = 64 << 20  # RE2 falls back to a slower (still linear) engine past its DFA budget
_DEADLINE_CHECK_DOCS = 64  # docs scanned between clock reads
_NEWLINE = 10
# RE2 refuses these Perl constructs; each message names what to write instead.
_UNSUPPORTED = (
    (re.compile(r"\\[1-9]"), "backreferences (\\1, \\2, ...) are not supported: RE2 guarantees linear time; "
                             "match the text literally or check the repeat in Python"),
    (re.compile(r"\(\?<?[=!]"), "lookahead and lookbehind ((?=...), (?!...), (?<=...), (?<!...)) are not "
                                "supported: RE2 guarantees linear time; match more and filter the lines in Python"),
    (re.compile(r"\(\?>|[*+?}][+]"), "atomic groups and possessive quantifiers are not supported (RE2 needs "
                                     "neither: it never backtracks); drop the '>' or the trailing '+'"),
)


class GrepTimeoutError(SearchError, TimeoutError):
    """The scan reached the call's deadline before finishing."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class GrepMatch:
    """One matching line: repo-relative path, 1-based line number, the line cut to 300 characters."""

    path: str
    line: int
    text: str

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "line": self.line, "text": self.text}


def compile_grep_pattern(pattern: str, ignore_case: bool = False) -> object:
    """The compiled RE2 regex (multi-line, UTF-8); QueryError saying why a pattern is refused."""
    if not isinstance(pattern, str):
        raise QueryError(f"pattern must be a string (an RE2 regular expression), got {type(pattern).__name__}")
    if not pattern:
        raise QueryError("pattern is empty; pass a regular expression such as 'def \\w+_cache' or a literal word")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise QueryError(f"pattern is {len(pattern)} characters; the limit is {MAX_PATTERN_CHARS}")
    options = re2.Options()
    options.log_errors = False  # the reason goes into our message, not onto stderr
    options.max_mem = _RE2_MAX_MEM_BYTES
    options.case_sensitive = not ignore_case
    options.never_nl = True  # a match never spans lines ("\\s" and "[^x]" stop at "\\n"), as in grep
    try:
        return re2.compile("(?m)" + pattern, options)
    except re2.error as exc:
        raise QueryError(_refusal(pattern, exc)) from None


def _refusal(pattern: str, exc: Exception) -> str:
    reason = exc.args[0] if exc.args else str(exc)
    reason = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
    for detector, why in _UNSUPPORTED:
        if detector.search(pattern):
            return f"pattern {pattern!r} is not valid RE2 syntax ({reason}): {why}"
    return (f"pattern {pattern!r} is not valid RE2 syntax ({reason}); escape special characters with '\\' "
            "(e.g. '\\(' for a literal parenthesis); syntax: https://github.com/google/re2/wiki/Syntax")


def grep_docs(
    regex: object,
    blob: np.ndarray,
    offsets: np.ndarray,
    paths: Sequence[str],
    doc_rows: Sequence[int] | np.ndarray,
    k: int,
    deadline: float | None = None,
) -> list[GrepMatch]:
    """Matching lines of documents ``doc_rows`` (in that order), at most ``k``.

    blob: uint8 (n_bytes,) of every document's UTF-8 text; offsets: int64 (n_docs + 1,), document i
    is ``blob[offsets[i]:offsets[i + 1]]``; paths: the path of each document.
    """
    view = memoryview(blob) if len(blob) else memoryview(b"")
    bounds = np.asarray(offsets, dtype=np.int64)
    rows = np.asarray(doc_rows, dtype=np.int64)
    starts, ends = bounds[rows].tolist(), bounds[rows + 1].tolist()
    matches: list[GrepMatch] = []
    for position, (row, start, end) in enumerate(zip(rows.tolist(), starts, ends)):
        if deadline is not None and position % _DEADLINE_CHECK_DOCS == 0 and time.monotonic() >= deadline:
            raise GrepTimeoutError(
                f"grep reached its time limit after {position} of {len(rows)} files ({len(matches)} matches so far); "
                "narrow it with path=, or raise timeout_s"
            )
        if start == end:
            continue
        _grep_one(regex, view[start:end], paths[row], k, matches)
        if len(matches) >= k:
            break
    return matches


def _grep_one(regex: object, doc: memoryview, path: str, k: int, matches: list[GrepMatch]) -> None:
    """Append the matching lines of one document (a zero-copy view) to ``matches``, up to k in all."""
    size = len(doc)
    ends_with_newline = doc[size - 1] == _NEWLINE
    newlines: np.ndarray | None = None
    pos = 0
    while pos <= size and len(matches) < k:
        found = regex.search(doc, pos)
        if found is None:
            return
        at = found.start()
        if at == size and ends_with_newline:  # past the last "\n" there is no line
            return
        if newlines is None:  # computed once per matching document, in numpy (no decode)
            newlines = np.flatnonzero(np.frombuffer(doc, dtype=np.uint8) == _NEWLINE)
        line_index = int(np.searchsorted(newlines, at))
        line_start = int(newlines[line_index - 1]) + 1 if line_index else 0
        line_end = int(newlines[line_index]) if line_index < len(newlines) else size
        # 4 bytes per character at most: decode only what the 300 characters can need.
        raw = doc[line_start : min(line_end, line_start + 4 * GREP_LINE_CHARS)].tobytes()
        text = raw.decode("utf-8", "replace").rstrip("\r")[:GREP_LINE_CHARS]
        matches.append(GrepMatch(path, line_index + 1, text))
        pos = line_end + 1
