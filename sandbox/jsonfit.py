"""Cut JSON values to a size, a nesting depth and a budget: the one implementation, with one marker.

Contract: `cut_json` returns a new value that `json.dumps` always accepts within Python's and the
mcp client's recursion limits: containers nested deeper than `max_depth` become `DEPTH_MARK`, long
strings end with `…[+N chars]`, long lists end with an item `…[N more items]`, dicts that run out
of room get a last key `…[N more keys]` (value null). Every cut is marked with text that starts with
`CUT_MARK`, so a reader always sees where data went. The walk is bounded: it visits at most
`budget_chars` characters' worth of the value and never recurses deeper than `max_depth`, whatever
the input's size or depth (cycles included). `shrink_json` (the child's result cap, `compact`) and
the server's reply fitting are both built on it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CUT_MARK",
    "DEPTH_MARK",
    "MAX_JSON_DEPTH",
    "cut_json",
    "json_extent",
    "safe_text",
    "shrink_json",
]

CUT_MARK = "…"  # every cut marker starts with it
MAX_JSON_DEPTH = 32  # deepest container nesting in any value we send (the mcp client refuses ~200)
DEPTH_MARK = f"{CUT_MARK}[nested deeper than {MAX_JSON_DEPTH} levels cut]"
KEY_CHARS = 200  # a longer dict key is cut (keys count against the budget like strings)

# (text, keep) -> (shown text, characters of `text` it stands for); keep None = the whole string.
TextHook = Callable[[str, "int | None"], tuple[str, int]]


def safe_text(text: str) -> str:
    """`text` as valid UTF-8 text: lone surrogates become `\\udcxx` escapes (backslashreplace)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _plain_text(text: str, keep: int | None) -> tuple[str, int]:
    text = safe_text(text)
    return (text, len(text)) if keep is None else (text[:keep], keep)


@dataclass
class _Walk:
    str_chars: int | None
    str_floor: int
    list_items: int | None
    dict_items: int | None
    max_depth: int
    budget: float  # characters left to visit (inf = no budget)
    text: TextHook
    default: Callable[[Any], Any] | None
    was_cut: bool = False

    def string(self, value: str, keep_at_most: int | None = None) -> str:
        limit = self.str_chars
        if keep_at_most is not None:
            limit = keep_at_most if limit is None else min(limit, keep_at_most)
        if self.budget != math.inf:
            room = max(int(self.budget), 0)
            limit = room if limit is None else min(limit, room)
        if limit is None or len(value) <= max(limit, self.str_floor):
            shown, _ = self.text(value, None)
            self.budget -= len(value)
            return shown
        self.was_cut = True
        shown, used = self.text(value, limit)
        self.budget -= limit
        return f"{shown}{CUT_MARK}[+{len(value) - used} chars]"

    def value(self, value: Any, depth: int, path: set[int]) -> Any:
        if isinstance(value, str):
            return self.string(value)
        if value is None or isinstance(value, (bool, int, float)):
            self.budget -= 1
            return value
        if isinstance(value, (list, tuple, dict)):
            if depth >= self.max_depth:
                self.was_cut = True
                self.budget -= len(DEPTH_MARK)
                return DEPTH_MARK
            marker = id(value)
            if marker in path:
                raise ValueError("Circular reference detected")
            path.add(marker)
            try:
                return self.dict(value, depth, path) if isinstance(value, dict) else self.list(value, depth, path)
            finally:
                path.discard(marker)
        if self.default is None:
            raise TypeError(f"object of type {type(value).__name__} is not JSON-serialisable")
        return self.value(self.default(value), depth, path)

    def list(self, value: list[Any] | tuple[Any, ...], depth: int, path: set[int]) -> list[Any]:
        out: list[Any] = []
        self.budget -= 2
        for index, item in enumerate(value):
            if (self.list_items is not None and index >= self.list_items) or self.budget <= 0:
                self.was_cut = True
                out.append(f"{CUT_MARK}[{len(value) - index} more items]")
                break
            out.append(self.value(item, depth + 1, path))
        return out

    def dict(self, value: dict[Any, Any], depth: int, path: set[int]) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        self.budget -= 2
        for index, (key, item) in enumerate(value.items()):
            if (self.dict_items is not None and index >= self.dict_items) or self.budget <= 0:
                self.was_cut = True
                out[f"{CUT_MARK}[{len(value) - index} more keys]"] = None
                break
            if isinstance(key, str):
                saved = self.str_chars, self.str_floor
                self.str_chars, self.str_floor = KEY_CHARS, 0  # keys: a fixed cap, never the fitting's
                key = self.string(key)
                self.str_chars, self.str_floor = saved
            out[key] = self.value(item, depth + 1, path)
        return out


def cut_json(
    value: Any,
    *,
    str_chars: int | None = None,
    str_floor: int = 0,
    list_items: int | None = None,
    dict_items: int | None = None,
    max_depth: int = MAX_JSON_DEPTH,
    budget_chars: int | None = None,
    text: TextHook | None = None,
    default: Callable[[Any], Any] | None = None,
) -> tuple[Any, bool]:
    """(a cut copy of `value`, whether anything was cut).

    Strings longer than max(str_chars, str_floor) keep their first `str_chars` characters; lists keep
    `list_items` items and dicts `dict_items` keys; containers deeper than `max_depth` become DEPTH_MARK; once `budget_chars`
    characters (strings, plus one per scalar and two per container) have been kept, strings are cut
    and lists and dicts end with a marker. Tuples become lists. `text(s, keep)` renders each kept
    string (default: lone surrogates escaped, first `keep` characters); `default(obj)` converts
    objects JSON does not know (else TypeError). A cycle raises ValueError, as `json.dumps` does.
    """
    walk = _Walk(
        str_chars=str_chars, str_floor=str_floor, list_items=list_items, dict_items=dict_items, max_depth=max_depth,
        budget=math.inf if budget_chars is None else float(budget_chars), text=text or _plain_text, default=default,
    )
    out = walk.value(value, 0, set())
    return out, walk.was_cut


def json_extent(value: Any) -> tuple[int, int]:
    """(longest string, longest list) inside a JSON value (one no deeper than MAX_JSON_DEPTH)."""
    if isinstance(value, str):
        return len(value), 0
    if isinstance(value, (list, dict)):
        items = value.values() if isinstance(value, dict) else value
        longest_str, longest_list = 0, len(value) if isinstance(value, list) else 0
        for item in items:
            s, n = json_extent(item)
            longest_str, longest_list = max(longest_str, s), max(longest_list, n)
        return longest_str, longest_list
    return 0, 0


def shrink_json(
    value: Any, fits: Callable[[str], bool], *, default: Callable[[Any], Any] | None = None, budget_chars: int | None = None
) -> tuple[str, bool]:
    """Compact JSON of `value` cut until `fits(text)`: (text, was_cut).

    The value is first bounded (depth MAX_JSON_DEPTH, `budget_chars` if given), then long strings
    and lists are cut with ever smaller limits; always returns valid JSON. Raises TypeError or
    ValueError for values JSON cannot express (NaN, unknown objects, cycles).
    """
    plain, was_cut = cut_json(value, budget_chars=budget_chars, default=default)
    text = _dumps(plain)
    if fits(text):
        return text, was_cut
    max_chars, max_items = 2000, 200
    while max_chars > 8 or max_items > 1:
        max_chars, max_items = max(8, max_chars // 2), max(1, max_items // 2)
        cut, _ = cut_json(plain, str_chars=max_chars, list_items=max_items, dict_items=max_items)
        text = _dumps(cut)
        if fits(text):
            return text, True
    return _dumps(f"{CUT_MARK}[value too large to show]"), True


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
