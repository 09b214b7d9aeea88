"""Hit shape and the top_k cut."""

import numpy as np
import pytest

from search import Hit, format_hits_text, merge_overlapping, top_k

CONTRACT_FIELDS = {"id", "doc_id", "path", "start_line", "end_line", "language", "title", "score", "text",
                   "kind", "symbol", "index"}


def _hit(score=1.5):
    return Hit("a.py:1-3", "a.py", "a.py", 1, 3, "python", "a.py", score, "def f():\n    return 1\n")


def test_hit_to_dict_has_exactly_the_contract_fields():
    """It serialises to the fields of the contract with plain values (kind, symbol and index default)."""
    data = _hit().to_dict()
    assert set(data) == CONTRACT_FIELDS
    assert data["score"] == 1.5 and data["start_line"] == 1
    assert (data["kind"], data["symbol"], data["index"]) == ("text", None, "default")


def test_hit_is_immutable_and_rescored_by_copy():
    """It cannot be mutated; with_score returns a new hit."""
    hit = _hit()
    with pytest.raises(AttributeError):
        hit.score = 3.0  # type: ignore[misc]
    assert hit.with_score(3).score == 3.0 and hit.score == 1.5


def test_top_k_breaks_ties_by_ascending_id():
    """It keeps the lowest ids among equal scores at the cut and orders them ascending."""
    scores = np.array([1.0, 3.0, 3.0, 2.0, 3.0, 3.0])
    ids, best = top_k(scores, 3)
    assert ids.tolist() == [1, 2, 4]
    assert best.tolist() == [3.0, 3.0, 3.0]


def test_top_k_uses_given_ids_for_order_and_ties():
    """It returns the caller's ids, ties ordered by those ids, not by position."""
    ids, best = top_k(np.array([2.0, 5.0, 2.0, 2.0]), 3, ids=np.array([40, 10, 30, 20]))
    assert ids.tolist() == [10, 20, 30]
    assert best.tolist() == [5.0, 2.0, 2.0]


def test_top_k_matches_full_sort_on_random_scores():
    """It equals a stable full sort on many random arrays with heavy ties."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        scores = rng.integers(0, 6, size=rng.integers(1, 60)).astype(np.float32)
        k = int(rng.integers(1, 70))
        expected = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]
        assert top_k(scores, k)[0].tolist() == expected


def test_top_k_rejects_k_below_one():
    """It refuses k < 1."""
    with pytest.raises(ValueError, match="k must be >= 1"):
        top_k(np.array([1.0]), 0)


def test_format_hits_text_shows_location_score_and_snippet():
    """It renders rank, path:start-end, language, score and the first lines."""
    text = format_hits_text([_hit()])
    assert "1. a.py:1-3  [python]  score=1.5000" in text
    assert "def f():" in text
    assert format_hits_text([]) == "no hits"


def _region(chunk: str, path: str, start: int, end: int, score: float) -> Hit:
    return Hit(id=chunk, doc_id=path, path=path, start_line=start, end_line=end, language="text", title=chunk,
               score=score, text=f"{start}-{end}")


def test_merge_overlapping_folds_worse_overlapping_hits_into_the_better_one():
    """It keeps rank order and the better hit's id, score and title, over the union of the lines."""
    hits = [_region("a", "x.py", 10, 20, 3.0), _region("b", "y.py", 1, 5, 2.5), _region("c", "x.py", 18, 30, 2.0),
            _region("d", "x.py", 31, 40, 1.5), _region("e", "x.py", 12, 14, 1.0)]
    merged = merge_overlapping(hits, lambda path, start, end: f"{path}:{start}-{end}")
    assert [(h.id, h.path, h.start_line, h.end_line, h.score, h.title) for h in merged] == [
        ("a", "x.py", 10, 30, 3.0, "a"), ("b", "y.py", 1, 5, 2.5, "b"), ("d", "x.py", 31, 40, 1.5, "d"),
    ]
    assert merged[0].text == "x.py:10-30"
    assert merged[1].text == "1-5"  # untouched hits keep their own text


def test_merge_overlapping_drops_an_overlap_that_would_grow_a_hit_past_two_windows():
    """It drops, rather than merges, an overlapping hit whose union would exceed MERGE_MAX_LINES."""
    hits = [_region("a", "x.py", 1, 40, 3.0), _region("b", "x.py", 36, 75, 2.0), _region("c", "x.py", 71, 110, 1.0)]
    merged = merge_overlapping(hits, lambda path, start, end: f"{path}:{start}-{end}")
    assert [(h.id, h.start_line, h.end_line) for h in merged] == [("a", 1, 75)]
