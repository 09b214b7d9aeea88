"""Pure rank fusion: reciprocal rank fusion (RRF) over ranked id lists.

Cormack, Clarke & Buettcher (SIGIR 2009): score(d) = sum_i w_i / (k + rank_i(d)), rank 1-based;
a list that does not contain d contributes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["fuse_rrf"]


def fuse_rrf(
    rankings: Sequence[Sequence[int]], weights: Sequence[float] | None = None, k: int = 60
) -> list[tuple[int, float]]:
    """Fuse ranked lists of ids into one list of (id, score), score descending, ties → ascending id.

    rankings: each list best first, ids unique within a list; weights: one per list (default 1.0);
    k: the RRF constant (>= 0), larger flattens the advantage of the top ranks.
    """
    if weights is None:
        weights = [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"got {len(weights)} weights for {len(rankings)} rankings")
    if k < 0:
        raise ValueError(f"rrf k must be >= 0, got {k}")
    fused: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights):
        if weight == 0:
            continue
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + weight / (k + rank)
    return sorted(fused.items(), key=lambda pair: (-pair[1], pair[0]))
