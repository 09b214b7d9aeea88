"""Index build speed and index load time.

1. Embedding throughput (chunks/s) on a small real set: the chunks of the first 300 SciFact records,
   embedded side by side in one run by (a) our encoder, the INT8 ONNX export on 2 threads (what a
   build uses), (b) the same export at fp32, and (c) sentence-transformers' own fp32 encode() on
   PyTorch with 2 threads (the stock path); with the cosine of (a) and (b) to (c).
   Goal: >= 40 chunks/s on 2 cores.
2. open_index p50 of a generated 100k-chunk index (benchmarks/synthetic.py, written by
   index.write_index, no embedding pass). Goal: well under 1 s.
"""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest

import common
from index import IndexConfig, chunk_document, open_embedder, open_index, open_token_counter, resolve_embed_model
from index.walk import walk_sources
from synthetic import write_synthetic_index

EMBED_CHUNKS = 300
BIG_CHUNKS = 100_000
THREADS = 2


@pytest.fixture(scope="module")
def scifact_chunk_texts(tmp_path_factory) -> list[str]:
    corpus = common.SCIFACT / "corpus.jsonl"
    if not corpus.is_file():
        pytest.skip("shared/datasets/scifact is not beside the repository")
    head = tmp_path_factory.mktemp("scifact") / "head.jsonl"
    with corpus.open(encoding="utf-8") as lines:
        head.write_text("".join(itertools.islice(lines, EMBED_CHUNKS)), encoding="utf-8")
    location = resolve_embed_model(None)
    counter = open_token_counter(location)
    config = IndexConfig()
    texts = [
        chunk.indexed_text
        for doc in walk_sources([head], config)
        for chunk in chunk_document(doc, counter, config, location.max_tokens)
    ]
    return texts[:EMBED_CHUNKS]


def _rate(encode, texts) -> tuple[float, np.ndarray]:
    encode(texts[:8])  # warm-up
    best, vectors = 0.0, None
    for _ in range(2):
        started = time.perf_counter()
        vectors = encode(texts)
        best = max(best, len(texts) / (time.perf_counter() - started))
    return best, vectors


def test_embed_chunks_per_second(benchmark, scifact_chunk_texts):
    """INT8 ONNX (ours) vs fp32 ONNX vs sentence-transformers on PyTorch, same texts, one run."""
    import torch
    from sentence_transformers import SentenceTransformer

    texts = scifact_chunk_texts
    location = resolve_embed_model(None)
    cache = common.CACHE / "models"
    ours = open_embedder(location, threads=THREADS, precision="int8", cache_dir=cache)
    fp32 = open_embedder(location, threads=THREADS, precision="fp32", cache_dir=cache)
    torch.set_num_threads(THREADS)
    stock = SentenceTransformer(str(location.path), device="cpu", local_files_only=True)
    stock_rate, stock_vectors = _rate(
        lambda t: stock.encode(t, batch_size=32, normalize_embeddings=True, show_progress_bar=False), texts
    )
    fp32_rate, fp32_vectors = _rate(fp32.encode, texts)
    ours.encode(texts[:8])
    benchmark.pedantic(lambda: ours.encode(texts), rounds=2, warmup_rounds=0)
    ours_rate = len(texts) / benchmark.stats.stats.median
    ours_vectors = ours.encode(texts)
    int8_cos = np.sum(ours_vectors * stock_vectors, axis=1)
    tokens = open_token_counter(location).count_batch(texts)
    common.emit(
        "index_embed",
        {"model": location.model_id, "threads": THREADS, "chunks": len(texts)},
        common.with_goals({
            "chunks_per_s": round(ours_rate, 1),
            "onnx_fp32_chunks_per_s": round(fp32_rate, 1),
            "stock_st_chunks_per_s": round(stock_rate, 1),
            "speedup_over_stock": round(ours_rate / stock_rate, 2),
            "int8_cosine_to_stock_mean": round(float(int8_cos.mean()), 4),
            "int8_cosine_to_stock_min": round(float(int8_cos.min()), 4),
            "fp32_onnx_max_abs_diff": float(np.max(np.abs(fp32_vectors - stock_vectors))),
            "mean_tokens": round(float(np.mean(tokens)), 1),
        }, {"chunks_per_s": (round(ours_rate, 1), ">=", 40)}),
    )


@pytest.fixture(scope="module")
def big_index_dir():
    return write_synthetic_index(BIG_CHUNKS)


def test_open_index_100k_chunks(benchmark, big_index_dir):
    """open_index of 100k chunks: JSON lists parsed, arrays memory-mapped, sizes checked."""
    data = benchmark.pedantic(lambda: open_index(big_index_dir), rounds=10, warmup_rounds=1)
    assert data.n_chunks == BIG_CHUNKS
    stats = benchmark.stats.stats
    common.emit(
        "index_open",
        {"chunks": BIG_CHUNKS, "vocab": len(data.vocab), "dim": int(data.vectors.shape[1])},
        common.with_goals({"p50_s": round(stats.median, 4), "max_s": round(stats.max, 4),
                           "bytes_on_disk": sum(p.stat().st_size for p in data.version_dir.iterdir())},
                          {"p50_s": (round(stats.median, 4), "<=", 1.0)}),
    )
    print(json.dumps({"chunk_text_sample": data.chunk_text(BIG_CHUNKS - 1)[:40]}))
