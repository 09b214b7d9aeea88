"""Cross-encoder rerank latency: top 20 real SciFact chunks per query, p50 and pairs/s.

Measured for the shipped truncation (SearchConfig.rerank_max_tokens) and for 1 and 2 intra-op
threads, each session created in this process as a forked child would (warm() before timing).
Goal: rerank of the top 20 p50 <= 0.6 s on 2 cores.
"""

from __future__ import annotations

import numpy as np
import pytest

import common
from index import open_index
from search import CrossEncoder, SearchConfig, Searcher, resolve_rerank_model

DEPTH = 20
QUERIES = 15


@pytest.fixture(scope="module")
def candidates(scifact_index_dir, scifact_queries):
    searcher = Searcher.from_index(open_index(scifact_index_dir), SearchConfig(), load_models=False)
    return [(query, searcher.bm25(query, k=DEPTH)) for query in scifact_queries[:QUERIES]]


@pytest.mark.parametrize("max_tokens", sorted({SearchConfig().rerank_max_tokens, 128, 256}))
@pytest.mark.parametrize("threads", [1, 2])
def test_rerank_top20_latency(benchmark, candidates, threads, max_tokens):
    """One rerank(query, top 20 hits) call; rounds cycle through the queries."""
    encoder = CrossEncoder.open(resolve_rerank_model(None), threads=threads, max_tokens=max_tokens)
    encoder.warm()
    cycle = iter(range(10**9))

    def rerank_one():
        query, hits = candidates[next(cycle) % len(candidates)]
        return encoder.rerank(query, hits)

    benchmark.pedantic(rerank_one, rounds=2 * len(candidates), warmup_rounds=2)
    stats = benchmark.stats.stats
    common.emit(
        "search_rerank_top20",
        {"threads": threads, "max_tokens": max_tokens, "depth": DEPTH, "queries": len(candidates)},
        {
            "p50_s": round(stats.median, 4),
            "p95_s": round(float(np.percentile(stats.data, 95)), 4),
            "pairs_per_s": round(DEPTH / stats.median, 1),
        },
    )
