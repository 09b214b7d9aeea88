"""Shared helpers for the search tests: token corpora as term-frequency matrices, tie-tolerant ranking checks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import scipy.sparse as sp

SHARED_DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
SCIFACT = SHARED_DATASETS / "scifact"


def term_matrix(token_lists: list[list[str]]) -> tuple[sp.csr_matrix, np.ndarray, dict[str, int]]:
    """(CSR chunks x terms counts, float32 lengths, term ids) the way the index stores them."""
    vocab = sorted({token for tokens in token_lists for token in tokens})
    term_ids = {term: position for position, term in enumerate(vocab)}
    rows, cols, counts = [], [], []
    for row, tokens in enumerate(token_lists):
        for term, count in Counter(tokens).items():
            rows.append(row)
            cols.append(term_ids[term])
            counts.append(count)
    matrix = sp.csr_matrix((counts, (rows, cols)), shape=(len(token_lists), len(vocab)), dtype=np.float32)
    lengths = np.array([len(tokens) for tokens in token_lists], dtype=np.float32)
    return matrix, lengths, term_ids


def assert_same_ranking(ids_a, scores_a, ids_b, scores_b, rtol=1e-5) -> None:
    """Two best-first rankings agree up to the order inside runs of equal (within rtol) scores.

    Membership of the last run may differ (a cut through a tie), everything above it must match.
    """
    assert len(ids_a) == len(ids_b), (len(ids_a), len(ids_b))
    np.testing.assert_allclose(scores_a, scores_b, rtol=rtol)
    runs_a, runs_b = _tie_runs(ids_a, scores_a, rtol), _tie_runs(ids_b, scores_b, rtol)
    for run_a, run_b in list(zip(runs_a, runs_b))[:-1]:
        assert run_a == run_b, f"rankings differ: {sorted(run_a)} != {sorted(run_b)}"


def _tie_runs(ids, scores, rtol) -> list[set[int]]:
    runs: list[set[int]] = []
    previous = None
    for item, score in zip(ids, scores):
        if previous is None or not np.isclose(score, previous, rtol=rtol):
            runs.append(set())
            previous = score
        runs[-1].add(int(item))
    return runs
