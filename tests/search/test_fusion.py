"""Reciprocal rank fusion against hand computation."""

import pytest

from search import fuse_rrf


def test_fuse_rrf_matches_hand_computation():
    """It scores each id by sum of w / (k + rank) over the lists that contain it."""
    fused = dict(fuse_rrf([[7, 3, 5], [3, 9]], weights=[1.0, 2.0], k=10))
    assert fused[7] == pytest.approx(1 / 11)
    assert fused[3] == pytest.approx(1 / 12 + 2 / 11)
    assert fused[5] == pytest.approx(1 / 13)
    assert fused[9] == pytest.approx(2 / 12)
    assert set(fused) == {3, 5, 7, 9}


def test_fuse_rrf_orders_by_score_then_ascending_id():
    """It returns best first and breaks ties by ascending id."""
    fused = fuse_rrf([[4, 2], [2, 4]], k=60)
    assert [item for item, _ in fused] == [2, 4]
    assert fused[0][1] == pytest.approx(fused[1][1])
    assert [item for item, _ in fuse_rrf([[1, 2, 3], [3]], k=0)] == [3, 1, 2]


def test_fuse_rrf_ignores_zero_weight_lists():
    """It leaves out ids that only a zero-weighted list ranks."""
    assert fuse_rrf([[1], [2]], weights=[1.0, 0.0], k=60) == [(1, pytest.approx(1 / 61))]


def test_fuse_rrf_rejects_mismatched_weights():
    """It refuses a weight count that differs from the number of rankings."""
    with pytest.raises(ValueError, match="2 weights for 1 rankings"):
        fuse_rrf([[1]], weights=[1.0, 1.0])
