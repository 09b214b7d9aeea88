"""Retrieval quality: nDCG@10, Recall@100, MRR@10 for bm25, semantic, hybrid and hybrid+rerank.

    .venv/bin/python benchmarks/quality.py scifact   # ../shared/datasets/scifact (test split, 300 queries)
    .venv/bin/python benchmarks/quality.py code      # benchmarks/code_queries.jsonl over this repository

Parameters are chosen by 5-fold cross-validation over the queries (best mean nDCG@10 on four folds,
scored on the fifth); the reported numbers are the held-out ones. SciFact ranks documents by their
best chunk (as batch search does); the code set ranks chunks, a chunk being relevant when it overlaps
the lines of the answer's definition (its symbol, resolved by anchors.py). Indexes and cross-encoder
logits are cached under benchmarks/.cache/.
Fusion is evaluated by re-fusing the component rankings with search.fuse_rrf (exactly what
Searcher.hybrid does); the chosen configuration is then re-run end to end through the public API and
both numbers are printed, so any drift between the two shows.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import common
from anchors import AnchorError, SymbolSpan, read_jsonl, resolve_records
from metrics import documents_by_best_chunk, kfold_select, mean_metrics, per_query_metrics, read_qrels, read_queries

from index import IndexStoreError, open_index  # noqa: E402  (common puts the repository on sys.path)
from search import (  # noqa: E402
    CrossEncoder, Hit, SearchConfig, Searcher, fuse_rrf, passage_text, resolve_rerank_model, search_documents,
)

CANDIDATES = 100  # per-retriever depth (SearchConfig.candidates) and the evaluated list length
BM25_GRID = [
    (variant, k1, b)
    for variant in ("lucene", "okapi")
    for k1 in (0.6, 0.9, 1.2, 1.5, 2.0)
    for b in (0.3, 0.4, 0.5, 0.6, 0.75, 0.9)
]
RRF_K_GRID = (5, 10, 20, 40, 60, 100)
DENSE_WEIGHT_GRID = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)  # bm25 weight fixed at 1
RERANK_DEPTHS = (10, 20, 30)
RERANK_MAX_TOKENS = (128, 256)
FOLDS = 5
CODE_QUERIES = common.REPO / "benchmarks" / "code_queries.jsonl"


@dataclass
class Dataset:
    name: str
    index_dir: Path
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    by_document: bool  # rank documents by best chunk (jsonl corpora) or rank chunks (code)
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- datasets
def load_scifact() -> Dataset:
    index_dir = common.CACHE / "scifact-index"
    try:  # the corpus never changes: build once per index format
        open_index(index_dir)
    except IndexStoreError:
        common.build_cached_index("scifact-index", [common.SCIFACT / "corpus.jsonl"])
    return Dataset(
        "scifact",
        index_dir,
        read_queries(common.SCIFACT / "queries.jsonl"),
        read_qrels(common.SCIFACT / "qrels.tsv"),
        by_document=True,
    )


def load_code() -> Dataset:
    """The code query set over a fresh index of this repository (tests and benchmarks excluded).

    Each answer is a ``symbol`` (anchors.py) resolved in the indexed text of its file; its relevant
    chunks are those overlapping the definition's lines. Any answer that does not resolve stops the
    run with every failing question id (a stale anchor must never score a silent 0).
    """
    index_dir = common.build_cached_index(
        "code-index", [common.REPO], excludes=("tests/**", "benchmarks/**", "*.lock")
    )
    data = open_index(index_dir)
    records = read_jsonl(CODE_QUERIES)

    def indexed_text(path: str) -> str | None:
        doc = data.doc_index.get(path)
        return None if doc is None else data.doc_text(doc)

    try:
        spans = resolve_records(records, indexed_text, CODE_QUERIES.name)
        qrels = {qid: {chunk: 1 for chunk in overlapping_chunks(data, qid, span)} for qid, span in spans.items()}
    except AnchorError as exc:
        raise SystemExit(f"[quality] {exc}") from exc
    queries = {record["id"]: record["text"] for record in records}
    return Dataset("code", index_dir, queries, qrels, by_document=False)


def overlapping_chunks(data, qid: str, span: SymbolSpan) -> list[str]:
    """Ids of the chunks of span.path whose lines overlap the definition's (AnchorError if none)."""
    doc = data.doc_index[span.path]
    relevant = [
        data.chunk_ids[chunk]
        for chunk in np.flatnonzero(np.asarray(data.chunk_doc) == doc)
        if data.chunk_lines[chunk][0] <= span.end_line and data.chunk_lines[chunk][1] >= span.start_line
    ]
    if not relevant:
        raise AnchorError(f"{qid}: no chunk overlaps {span.path}:{span.start_line}-{span.end_line} ({span.symbol})")
    return relevant


# ----------------------------------------------------------------------------- rankings
class Evaluator:
    """Component rankings (cached) and their fusion/rerank, scored per query."""

    def __init__(self, dataset: Dataset, threads: int) -> None:
        self.dataset = dataset
        self.data = open_index(dataset.index_dir)
        self.qids = sorted(dataset.qrels)
        self.position = {chunk_id: i for i, chunk_id in enumerate(self.data.chunk_ids)}
        self.searcher = Searcher.from_index(self.data, SearchConfig(threads=threads), load_models=True)
        self.threads = threads
        self._hit_at: dict[int, Hit] = {}
        self._dense = {qid: self._positions(self.searcher.semantic(dataset.queries[qid], k=CANDIDATES)) for qid in self.qids}
        self._bm25: dict[tuple, dict[str, list[int]]] = {}
        # Keyed by the text the cross-encoder reads (sha256 of passage_text): logits survive rebuilds of
        # unchanged chunks and never outlive a change of what the model is shown.
        self._logit_path = common.CACHE / f"logits-{dataset.name}-by-passage.json"
        self._logits = json.loads(self._logit_path.read_text()) if self._logit_path.exists() else {}
        self._encoders: dict[int, CrossEncoder] = {}
        self._unsaved = 0
        self.rerank_seconds: dict[int, list[float]] = {}

    def _positions(self, hits: list[Hit]) -> list[int]:
        for hit in hits:
            self._hit_at.setdefault(self.position[hit.id], hit)
        return [self.position[hit.id] for hit in hits]

    def units(self, positions: list[int]) -> list[str]:
        """What is scored: document ids by best chunk (jsonl) or chunk ids (code)."""
        if self.dataset.by_document:
            doc_ids = [self.data.docs[int(self.data.chunk_doc[p])]["doc_id"] for p in positions]
            return documents_by_best_chunk(doc_ids, CANDIDATES)
        return [self.data.chunk_ids[p] for p in positions][:CANDIDATES]

    def score(self, rankings: dict[str, list[int]]) -> dict[str, np.ndarray]:
        return per_query_metrics(self.dataset.qrels, {qid: self.units(rankings[qid]) for qid in self.qids})

    def bm25(self, variant: str, k1: float, b: float) -> dict[str, list[int]]:
        key = (variant, k1, b)
        if key not in self._bm25:
            config = SearchConfig(bm25_variant=variant, k1=k1, b=b)
            searcher = Searcher.from_index(self.data, config, load_models=False)
            self._bm25[key] = {
                qid: self._positions(searcher.bm25(self.dataset.queries[qid], k=CANDIDATES)) for qid in self.qids
            }
        return self._bm25[key]

    def dense(self) -> dict[str, list[int]]:
        return self._dense

    def hybrid(self, bm25_key: tuple, rrf_k: int, dense_weight: float) -> dict[str, list[int]]:
        sparse = self.bm25(*bm25_key)
        return {
            qid: [chunk for chunk, _ in fuse_rrf([sparse[qid], self._dense[qid]], (1.0, dense_weight), rrf_k)[:CANDIDATES]]
            for qid in self.qids
        }

    def rerank(self, first_stage: dict[str, list[int]], depth: int, max_tokens: int) -> dict[str, list[int]]:
        """Top depth chunks reordered by logit, the rest of the first stage after them."""
        reranked = {}
        for qid in self.qids:
            head = first_stage[qid][:depth]
            logits = self.logits(qid, head, max_tokens)
            order = sorted(range(len(head)), key=lambda i: (-logits[i], i))
            reranked[qid] = [head[i] for i in order] + first_stage[qid][depth:]
        return reranked

    def logits(self, qid: str, positions: list[int], max_tokens: int) -> list[float]:
        encoder = self._encoders.get(max_tokens)
        if encoder is None:
            encoder = self._encoders[max_tokens] = CrossEncoder.open(
                resolve_rerank_model(None), threads=self.threads, max_tokens=max_tokens
            )
        query = self.dataset.queries[qid]
        keys = [f"{max_tokens}\t{qid}\t{self._passage_key(p)}" for p in positions]
        missing = [p for p, key in zip(positions, keys) if key not in self._logits]
        if missing:
            started = time.perf_counter()
            for position in missing:
                logit = encoder.rerank(query, [self._hit_at[position]])[0].score
                self._logits[f"{max_tokens}\t{qid}\t{self._passage_key(position)}"] = logit
            self._unsaved += 1
            if self._unsaved >= 25:  # an interrupted run keeps most of its (slow) logits
                self.save_logits()
            self.rerank_seconds.setdefault(max_tokens, []).append((time.perf_counter() - started) / len(missing))
        return [self._logits[key] for key in keys]

    def _passage_key(self, position: int) -> str:
        return hashlib.sha256(passage_text(self._hit_at[position]).encode("utf-8")).hexdigest()[:32]

    def save_logits(self) -> None:
        self._unsaved = 0
        self._logit_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._logit_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._logits))
        tmp.replace(self._logit_path)


# ----------------------------------------------------------------------------- the run
def run(dataset: Dataset, threads: int, skip_rerank: bool) -> dict:
    for note in dataset.notes:
        print(f"[quality] UNRESOLVED {note}", file=sys.stderr)
    evaluator = Evaluator(dataset, threads)
    report: dict[str, object] = {"queries": len(evaluator.qids), "unresolved_qrels": dataset.notes}

    started = time.perf_counter()
    bm25_scores = {key: evaluator.score(evaluator.bm25(*key)) for key in BM25_GRID}
    bm25_cv, bm25_chosen = kfold_select({str(k): v for k, v in bm25_scores.items()}, FOLDS)
    default_bm25 = (SearchConfig().bm25_variant, SearchConfig().k1, SearchConfig().b)
    report["bm25"] = {
        "heldout": bm25_cv,
        "chosen_per_fold": bm25_chosen,
        "default_params_all_queries": mean_metrics(bm25_scores[default_bm25]),
        "rank_bm25_like_okapi_1.5_0.75_all_queries": mean_metrics(bm25_scores[("okapi", 1.5, 0.75)]),
    }
    print(f"[quality] bm25 grid: {time.perf_counter() - started:.1f} s", file=sys.stderr)

    report["semantic"] = {"all_queries": mean_metrics(evaluator.score(evaluator.dense()))}

    started = time.perf_counter()
    hybrid_scores = {}
    for bm25_key, rrf_k, weight in itertools.product(BM25_GRID, RRF_K_GRID, DENSE_WEIGHT_GRID):
        hybrid_scores[(bm25_key, rrf_k, weight)] = evaluator.score(evaluator.hybrid(bm25_key, rrf_k, weight))
    hybrid_cv, hybrid_chosen = kfold_select({str(k): v for k, v in hybrid_scores.items()}, FOLDS)
    default_hybrid = (default_bm25, SearchConfig().rrf_k, SearchConfig().fusion_weights[1])
    report["hybrid"] = {
        "heldout": hybrid_cv,
        "chosen_per_fold": hybrid_chosen,
        "default_params_all_queries": mean_metrics(hybrid_scores[default_hybrid]),
    }
    print(f"[quality] hybrid grid: {time.perf_counter() - started:.1f} s", file=sys.stderr)

    if not skip_rerank:
        # The first stage is the shipped default hybrid; (depth, max_tokens) is chosen per fold on the
        # other folds. (Reranking every fold's own hybrid choice costs ~6x the pairs on 2 cores.)
        started = time.perf_counter()
        grid = list(itertools.product(RERANK_DEPTHS, RERANK_MAX_TOKENS))
        first_stage = evaluator.hybrid(*default_hybrid)
        by_setting = {str(setting): evaluator.score(evaluator.rerank(first_stage, *setting)) for setting in grid}
        evaluator.save_logits()
        rerank_cv, rerank_chosen = kfold_select(by_setting, FOLDS)
        seconds_per_pair = {t: round(float(np.median(v)), 4) for t, v in evaluator.rerank_seconds.items()}
        report["hybrid+rerank"] = {
            "heldout": rerank_cv,
            "chosen_per_fold": rerank_chosen,
            "first_stage": str(default_hybrid),
            "all_queries_by_(depth, max_tokens)": {name: mean_metrics(scores) for name, scores in by_setting.items()},
            "median_seconds_per_pair_by_max_tokens": seconds_per_pair,
        }
        print(f"[quality] rerank grid: {time.perf_counter() - started:.1f} s", file=sys.stderr)

    report["end_to_end_defaults"] = end_to_end(evaluator, skip_rerank)
    return report


def end_to_end(evaluator: Evaluator, skip_rerank: bool) -> dict:
    """The shipped defaults through the public API (search_documents / Searcher.search)."""
    dataset, searcher, results = evaluator.dataset, evaluator.searcher, {}
    modes = [("bm25", False), ("semantic", False), ("hybrid", False)] + ([] if skip_rerank else [("hybrid", True)])
    for mode, rerank in modes:
        ranking = {}
        for qid in evaluator.qids:
            query = dataset.queries[qid]
            if dataset.by_document:
                ranking[qid] = [doc for doc, _ in search_documents(searcher, query, k=CANDIDATES, mode=mode, rerank=rerank)]
            else:
                ranking[qid] = [hit.id for hit in searcher.search(query, k=CANDIDATES if not rerank else searcher.config.rerank_depth, mode=mode, rerank=rerank)]
                if rerank:  # keep the first stage below the reranked head, as the grid does
                    tail = [hit.id for hit in searcher.search(query, k=CANDIDATES, mode=mode, rerank=False)]
                    ranking[qid] += [chunk for chunk in tail if chunk not in set(ranking[qid])]
        results[f"{mode}{'+rerank' if rerank else ''}"] = mean_metrics(per_query_metrics(dataset.qrels, ranking))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=("scifact", "code"))
    parser.add_argument("--threads", type=int, default=1, help="cross-encoder / embedder threads")
    parser.add_argument("--skip-rerank", action="store_true", help="bm25, semantic and hybrid only")
    args = parser.parse_args(argv)
    dataset = load_scifact() if args.dataset == "scifact" else load_code()
    report = run(dataset, args.threads, args.skip_rerank)
    out = common.CACHE / f"quality-{args.dataset}.json"
    out.write_text(json.dumps(report, indent=2))
    if args.dataset == "scifact":  # the stated goals (the code set has none)
        goals = {"bm25_ndcg@10": (report["bm25"]["heldout"]["ndcg@10"], ">=", 0.67)}
        if "hybrid+rerank" in report:
            goals["hybrid+rerank_ndcg@10"] = (report["hybrid+rerank"]["heldout"]["ndcg@10"], ">=", 0.72)
        report = common.with_goals(report, goals)
    common.emit(f"quality_{args.dataset}", {"folds": FOLDS, "candidates": CANDIDATES, "defaults": repr(SearchConfig())}, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
