"""Tests of the one JSON-cutting implementation (sandbox.cut_json / shrink_json): bounded, marked, valid."""

import json

import pytest

from sandbox import CUT_MARK, DEPTH_MARK, MAX_JSON_DEPTH, cut_json
from sandbox.jsonfit import safe_text, shrink_json


def _depth(value):
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    return 0


def _nested(levels):
    value = "leaf"
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, 200, 300, 900])
def test_cut_json_caps_depth_with_the_marker(levels):
    """A value nested deeper than MAX_JSON_DEPTH is cut there, marked, and serialises."""
    out, was_cut = cut_json(_nested(levels))
    assert _depth(out) <= MAX_JSON_DEPTH
    assert was_cut == (levels > MAX_JSON_DEPTH)
    assert (DEPTH_MARK in json.dumps(out, ensure_ascii=False)) == (levels > MAX_JSON_DEPTH)


def test_cut_json_deeper_than_the_recursion_limit():
    """Even a value deeper than Python's own recursion limit is cut without a RecursionError."""
    value = "x"
    for _ in range(5000):
        value = {"k": value}
    out, was_cut = cut_json(value)
    assert was_cut and _depth(out) == MAX_JSON_DEPTH


@pytest.mark.timeout(30)  # a hang guard: walking all 2**40 paths would never end (speed: bench_reply_bounds)
def test_cut_json_budget_bounds_a_shared_subtree_explosion():
    """A DAG of 2**40 paths is walked only up to the budget, with a marker."""
    value = []
    for _ in range(40):
        value = [value, value]
    out, was_cut = cut_json(value, budget_chars=10_000)
    assert was_cut and len(json.dumps(out)) < 200_000 and "more items" in json.dumps(out)


def test_cut_json_refuses_cycles_like_json():
    """A list holding itself raises ValueError, as json.dumps does."""
    value = []
    value.append(value)
    with pytest.raises(ValueError, match="Circular"):
        cut_json(value)


def test_cut_json_marks_every_cut():
    """Cut strings, lists and dicts each carry a marker starting with CUT_MARK."""
    out, was_cut = cut_json({"s": "x" * 1000, "l": list(range(100))}, str_chars=10, list_items=5)
    assert was_cut
    assert out["s"] == "x" * 10 + f"{CUT_MARK}[+990 chars]"
    assert out["l"][:5] == [0, 1, 2, 3, 4] and out["l"][5] == f"{CUT_MARK}[95 more items]"
    out, _ = cut_json({str(i): i for i in range(100)}, dict_items=3)
    assert list(out)[:3] == ["0", "1", "2"] and list(out)[3] == f"{CUT_MARK}[97 more keys]"


def test_safe_text_escapes_lone_surrogates():
    """Lone surrogates become backslash escapes; valid text is returned as is."""
    assert safe_text("ok é") == "ok é"
    assert safe_text("a\udcffb") == "a\\udcffb"
    out, _ = cut_json({"k\ud800": ["\udfff"]})
    json.dumps(out, ensure_ascii=False).encode("utf-8")  # valid UTF-8 all through


def test_shrink_json_fits_and_stays_valid_json():
    """shrink_json cuts until the text fits and always returns parseable JSON."""
    text, was_cut = shrink_json({"a": ["y" * 5000] * 50}, lambda t: len(t) <= 500)
    assert was_cut and len(text) <= 500 and CUT_MARK in text
    json.loads(text)
    text, was_cut = shrink_json([1, 2, 3], lambda t: True)
    assert (text, was_cut) == ("[1,2,3]", False)
    with pytest.raises(ValueError):
        shrink_json(float("nan"), lambda t: True)
