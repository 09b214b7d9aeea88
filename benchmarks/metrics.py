"""Retrieval metrics (nDCG@10, Recall@100, MRR@10) via pytrec_eval, plus k-fold parameter selection.

Runs are ranked lists; they are scored in *our* order (each list gets strictly decreasing scores),
so trec_eval's tie-breaking by docid never reorders them.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytrec_eval

METRICS = ("ndcg@10", "recall@100", "mrr@10")
_TREC_NAMES = {"ndcg@10": "ndcg_cut_10", "recall@100": "recall_100", "mrr@10": "recip_rank"}

Qrels = dict[str, dict[str, int]]
Ranking = dict[str, list[str]]


def read_qrels(path: Path) -> Qrels:
    """BEIR qrels.tsv (header ``query-id corpus-id score``) → {qid: {docid: relevance}}."""
    qrels: Qrels = {}
    with path.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    return qrels


def read_queries(path: Path) -> dict[str, str]:
    """BEIR queries.jsonl → {qid: text}."""
    with path.open(encoding="utf-8") as handle:
        return {str(q.get("id", q.get("_id"))): q["text"] for q in map(json.loads, handle) if q}


def per_query_metrics(qrels: Qrels, ranking: Ranking) -> dict[str, np.ndarray]:
    """{metric: float64 (n_queries,)} in sorted qid order of qrels; a query without a run scores 0."""
    qids = sorted(qrels)
    run = {qid: {doc: float(len(docs) - rank) for rank, doc in enumerate(docs)} for qid, docs in ranking.items() if docs}
    run_at_10 = {qid: {doc: score for doc, score in docs.items() if score > len(docs) - 10} for qid, docs in run.items()}
    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    cut = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(run_at_10)
    results = {}
    for metric in METRICS:
        source = cut if metric == "mrr@10" else full
        results[metric] = np.array([source.get(qid, {}).get(_TREC_NAMES[metric], 0.0) for qid in qids])
    return results


def mean_metrics(per_query: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Mean of each metric, rounded to 4 decimals."""
    return {metric: round(float(values.mean()), 4) for metric, values in per_query.items()}


def kfold_select(
    scores_by_config: Mapping[str, Mapping[str, np.ndarray]], n_folds: int = 5, seed: int = 13, select_on: str = "ndcg@10"
) -> tuple[dict[str, float], list[str]]:
    """Held-out metrics of k-fold selection: per fold, pick the config with the best mean select_on
    on the other folds and score the fold with it. Returns (mean held-out metrics, chosen config per fold).

    scores_by_config: {config name: per_query_metrics(...)} all over the same queries in the same order.
    """
    names = list(scores_by_config)
    n_queries = len(next(iter(scores_by_config.values()))[select_on])
    folds = np.array_split(np.random.default_rng(seed).permutation(n_queries), n_folds)
    held_out = {metric: np.zeros(n_queries) for metric in METRICS}
    chosen = []
    for fold in folds:
        train = np.setdiff1d(np.arange(n_queries), fold)
        best = max(names, key=lambda name: (scores_by_config[name][select_on][train].mean(), -names.index(name)))
        chosen.append(best)
        for metric in METRICS:
            held_out[metric][fold] = scores_by_config[best][metric][fold]
    return mean_metrics(held_out), chosen


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (q in [0, 1]) by nearest rank: the sorted value at index round(q * (n - 1)); 0.0
    for no values. The one percentile of the benchmarks (p95, p99 of latencies)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    ordered = sorted(values)
    return float(ordered[round(q * (len(ordered) - 1))]) if ordered else 0.0


def documents_by_best_chunk(doc_ids: Sequence[str], limit: int) -> list[str]:
    """Each doc id once, in order of its first (best) chunk, at most limit."""
    seen: dict[str, None] = {}
    for doc_id in doc_ids:
        seen.setdefault(doc_id, None)
        if len(seen) == limit:
            break
    return list(seen)
