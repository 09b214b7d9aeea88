"""BM25 speed on SciFact, one thread: our load-time-weighted CSC scorer vs rank_bm25, side by side.

Both score the same chunks with the same tokens (rank_bm25 gets each chunk's terms from the index's
term-frequency matrix) and return the top 10. Goals: >= 3,000 queries/s and >= 50x rank_bm25.
"""

from __future__ import annotations

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

import common
from index import open_index, tokenize
from search import SearchConfig, Searcher

RANK_BM25_QUERIES = 60  # rank_bm25 runs ~50 q/s here; a subset keeps the run short


@pytest.fixture(scope="module")
def data(scifact_index_dir):
    return open_index(scifact_index_dir)


def test_bm25_ours_queries_per_second(benchmark, data, scifact_queries, results):
    """Searcher.bm25 (tokenize + score + top 10 + Hit objects) over all 300 queries."""
    searcher = Searcher.from_index(data, SearchConfig(bm25_variant="okapi", k1=1.5, b=0.75), load_models=False)

    def run_all():
        for query in scifact_queries:
            searcher.bm25(query, k=10)

    benchmark.pedantic(run_all, rounds=10, warmup_rounds=2)
    results["ours_qps"] = len(scifact_queries) / benchmark.stats.stats.median


def test_bm25_rank_bm25_queries_per_second(benchmark, data, scifact_queries, results):
    """rank_bm25.BM25Okapi (k1=1.5, b=0.75) get_scores + top 10 on the same chunks and tokens."""
    tf = data.tf.tocsr()
    vocab = data.vocab
    corpus = [
        [vocab[t] for t, count in zip(tf.indices[tf.indptr[i] : tf.indptr[i + 1]], tf.data[tf.indptr[i] : tf.indptr[i + 1]]) for _ in range(int(count))]
        for i in range(tf.shape[0])
    ]
    reference = BM25Okapi(corpus, k1=1.5, b=0.75)
    queries = [tokenize(q) for q in scifact_queries[:RANK_BM25_QUERIES]]

    def run_all():
        for tokens in queries:
            np.argsort(-reference.get_scores(tokens))[:10]

    benchmark.pedantic(run_all, rounds=3, warmup_rounds=1)
    results["rank_bm25_qps"] = len(queries) / benchmark.stats.stats.median
    common.emit(
        "search_sparse_bm25_scifact",
        {"variant": "okapi", "k1": 1.5, "b": 0.75, "k": 10, "chunks": data.n_chunks, "threads": 1},
        common.with_goals({
            "ours_queries_per_s": round(results["ours_qps"], 1),
            "rank_bm25_queries_per_s": round(results["rank_bm25_qps"], 2),
            "speedup": round(results["ours_qps"] / results["rank_bm25_qps"], 1),
        }, {
            "ours_queries_per_s": (round(results["ours_qps"], 1), ">=", 3000),
            "speedup": (round(results["ours_qps"] / results["rank_bm25_qps"], 1), ">=", 50),
        }),
    )
