"""The benchmarks' scoring (benchmarks/metrics.py) and goal reporting (benchmarks/common.py), on hand-computed cases."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    """benchmarks/ is not a package: load a module of it by path."""
    key = f"benchmark_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


metrics = _load("metrics")
common = _load("common")

QRELS = {"q1": {"d1": 1, "d2": 1}, "q2": {"d5": 2}, "q3": {"d7": 1}}
RANKING = {
    "q1": ["d3", "d1", "d2"],  # relevant at ranks 2 and 3
    "q3": [f"x{i}" for i in range(10)] + ["d7"],  # relevant at rank 11: inside @100, outside @10
}  # q2 has no run


def test_metrics_per_query_scores_hand_computed_values():
    """It scores nDCG@10, Recall@100 and MRR@10 per query in sorted qid order; a query without a run scores 0."""
    scores = metrics.per_query_metrics(QRELS, RANKING)
    ideal = 1 + 1 / math.log2(3)
    assert scores["ndcg@10"] == pytest.approx([(1 / math.log2(3) + 1 / math.log2(4)) / ideal, 0.0, 0.0], abs=1e-4)
    assert scores["mrr@10"] == pytest.approx([0.5, 0.0, 0.0])
    assert scores["recall@100"] == pytest.approx([1.0, 0.0, 1.0])


def test_metrics_score_our_order_not_docid_order():
    """It keeps the ranking's order for tied documents (pytrec_eval would otherwise break ties by docid)."""
    qrels = {"q": {"a": 1}}
    assert metrics.per_query_metrics(qrels, {"q": ["b", "a"]})["mrr@10"][0] == pytest.approx(0.5)
    assert metrics.per_query_metrics(qrels, {"q": ["a", "b"]})["mrr@10"][0] == pytest.approx(1.0)


def test_metrics_mean_rounds_to_four_decimals():
    """It averages each metric over the queries, rounded to 4 decimals."""
    assert metrics.mean_metrics({"ndcg@10": np.array([1.0, 0.0, 0.123456])}) == {"ndcg@10": round(1.123456 / 3, 4)}


def test_metrics_kfold_select_scores_each_fold_with_the_config_best_elsewhere():
    """It picks, per fold, the config with the best mean on the other folds and reports held-out scores."""
    n = 10
    good = {metric: np.ones(n) for metric in metrics.METRICS}
    bad = {metric: np.zeros(n) for metric in metrics.METRICS}
    held_out, chosen = metrics.kfold_select({"bad": bad, "good": good}, n_folds=5)
    assert chosen == ["good"] * 5
    assert held_out == {metric: 1.0 for metric in metrics.METRICS}
    # One config: chosen for every fold, so the held-out scores are its own mean.
    mixed = {metric: np.array([1.0] * 5 + [0.0] * 5) for metric in metrics.METRICS}
    held_out, chosen = metrics.kfold_select({"mixed": mixed}, n_folds=2)
    assert chosen == ["mixed", "mixed"] and held_out["ndcg@10"] == 0.5


def test_metrics_documents_by_best_chunk_keeps_first_occurrence_order():
    """It lists each document once, in the order of its best (first) chunk, at most `limit`."""
    assert metrics.documents_by_best_chunk(["a", "b", "a", "c", "b", "d"], 3) == ["a", "b", "c"]
    assert metrics.documents_by_best_chunk([], 3) == []


@pytest.mark.parametrize(("q", "expected"), [(0.0, 1.0), (0.5, 3.0), (0.95, 5.0), (1.0, 5.0), (0.25, 2.0)])
def test_metrics_percentile_is_nearest_rank(q, expected):
    """It returns the sorted value at index round(q * (n - 1)), whatever the input order."""
    assert metrics.percentile([5.0, 1.0, 4.0, 2.0, 3.0], q) == expected


def test_metrics_percentile_of_nothing_is_zero_and_bad_q_is_refused():
    """It returns 0.0 for no values and refuses a quantile outside [0, 1]."""
    assert metrics.percentile([], 0.5) == 0.0
    with pytest.raises(ValueError, match="q must be in"):
        metrics.percentile([1.0], 95)


def test_metrics_reads_beir_qrels_and_queries(tmp_path):
    """It reads BEIR qrels.tsv (with its header) and queries.jsonl (`_id` or `id`)."""
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n1\td1\t1\n1\td2\t2\n2\td3\t1\n")
    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"_id": "1", "text": "first"}) + "\n" + json.dumps({"id": 2, "text": "second"}) + "\n")
    assert metrics.read_qrels(qrels) == {"1": {"d1": 1, "d2": 2}, "2": {"d3": 1}}
    assert metrics.read_queries(queries) == {"1": "first", "2": "second"}


def test_common_with_goals_reports_each_goal_and_their_conjunction():
    """It adds one {value, goal, goal_met} per stated goal and goal_met for all of them."""
    reported = common.with_goals({"p50_ms": 12.0, "qps": 2500}, {"p50_ms": (12.0, "<=", 15), "qps": (2500, ">=", 3000)})
    assert reported["goals"] == {
        "p50_ms": {"value": 12.0, "goal": "<= 15", "goal_met": True},
        "qps": {"value": 2500, "goal": ">= 3000", "goal_met": False},
    }
    assert reported["goal_met"] is False and reported["p50_ms"] == 12.0
    assert common.with_goals({}, {"drift": (0.1, "<", 0.1)})["goal_met"] is False
    assert common.with_goals({}, {"zombies": (0, "==", 0)})["goal_met"] is True
