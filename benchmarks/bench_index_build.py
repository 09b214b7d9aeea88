"""Index build speed and index load time.

1. Embedding throughput (chunks/s) on a small real set: the chunks of the first 300 SciFact records,
   embedded with the packaged model and 2 threads, our length-sorted batching vs sentence-transformers'
   own encode() of the same texts. Goal: >= 40 chunks/s on 2 cores.
2. open_index p50 of a generated 100k-chunk index (generated text, seeded random unit vectors, written
   through index.format's writer, not the embedder). Goal: well under 1 s.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time

import numpy as np
import pytest
from scipy import sparse

import common
from index import IndexConfig, chunk_document, open_embedder, open_index, open_token_counter, resolve_embed_model
from index.format import IndexContents, new_version_name, switch_current, write_version
from index.walk import walk_sources

EMBED_CHUNKS = 300
BIG_CHUNKS = 100_000
BIG_CHUNKS_PER_DOC = 50
BIG_VOCAB = 50_000
BIG_TERMS_PER_CHUNK = 60
DIM = 384


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


@pytest.fixture(scope="module")
def embedder():
    return open_embedder(resolve_embed_model(None), threads=2)


def test_embed_chunks_per_second(benchmark, embedder, scifact_chunk_texts):
    """Embedder.encode (length-sorted batches of 16) vs SentenceTransformer.encode, same texts."""
    texts = scifact_chunk_texts
    embedder.encode(texts[:16])  # warm-up
    benchmark.pedantic(lambda: embedder.encode(texts, batch_size=16), rounds=2, warmup_rounds=0)
    ours = len(texts) / benchmark.stats.stats.median
    model = embedder._model  # the same loaded weights, driven the stock way
    started = time.perf_counter()
    model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    stock = len(texts) / (time.perf_counter() - started)
    tokens = open_token_counter(embedder.location).count_batch(texts)
    common.emit(
        "index_embed",
        {"model": embedder.location.model_id, "threads": 2, "chunks": len(texts), "batch_size": 16},
        {
            "chunks_per_s": round(ours, 1),
            "stock_st_chunks_per_s": round(stock, 1),
            "mean_tokens": round(float(np.mean(tokens)), 1),
        },
    )


def _generate_big_index(out) -> None:
    """A 100k-chunk index with generated text and seeded random unit vectors (no embedder)."""
    rng = np.random.default_rng(42)
    words = [f"term{i}" for i in range(BIG_VOCAB)]
    n_docs = BIG_CHUNKS // BIG_CHUNKS_PER_DOC
    docs = [{"doc_id": f"src/mod_{i:05d}.py", "path": f"src/mod_{i:05d}.py", "language": "python", "title": ""}
            for i in range(n_docs)]
    chunk_texts, chunk_ids, lines = [], [], []
    for c in range(BIG_CHUNKS):
        chosen = rng.integers(0, BIG_VOCAB, size=BIG_TERMS_PER_CHUNK)
        chunk_texts.append(" ".join(words[j] for j in chosen))
        start = (c % BIG_CHUNKS_PER_DOC) * 3 + 1
        chunk_ids.append(f"{docs[c // BIG_CHUNKS_PER_DOC]['path']}:{start}-{start + 2}")
        lines.append((start, start + 2))
    doc_texts = ["\n".join(chunk_texts[d * BIG_CHUNKS_PER_DOC : (d + 1) * BIG_CHUNKS_PER_DOC]) for d in range(n_docs)]
    tf = sparse.random(BIG_CHUNKS, BIG_VOCAB, density=BIG_TERMS_PER_CHUNK / BIG_VOCAB, format="csr",
                       dtype=np.float32, rng=rng)
    tf.data[:] = 1.0
    vectors = rng.standard_normal((BIG_CHUNKS, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    keys = np.frombuffer(b"".join(hashlib.sha256(t.encode()).digest()[:16] for t in chunk_texts), np.uint8)
    contents = IndexContents(
        docs=docs,
        doc_texts=doc_texts,
        chunk_ids=chunk_ids,
        chunk_titles=[""] * BIG_CHUNKS,
        chunk_doc=np.repeat(np.arange(n_docs, dtype=np.int32), BIG_CHUNKS_PER_DOC),
        chunk_lines=np.array(lines, dtype=np.int32),
        chunk_texts=chunk_texts,
        chunk_keys=keys.reshape(BIG_CHUNKS, 16),
        vocab=sorted(words),
        tf=tf,
        doc_lengths=np.full(BIG_CHUNKS, BIG_TERMS_PER_CHUNK, dtype=np.float32),
        vectors=vectors,
    )
    manifest = {"built_at": "generated", "root": "generated", "sources": [], "files": {},
                "models": {"embed": {"id": "random", "dim": DIM, "sha256": "0" * 64}}, "ann": None}
    name = new_version_name()
    write_version(out, name, contents, manifest)
    switch_current(out, name)


@pytest.fixture(scope="module")
def big_index_dir():
    out = common.CACHE / "index-100k"
    try:
        if open_index(out).n_chunks == BIG_CHUNKS:
            return out
    except Exception:  # absent or from an older format: generate it again
        pass
    _generate_big_index(out)
    return out


def test_open_index_100k_chunks(benchmark, big_index_dir):
    """open_index of 100k chunks: JSON lists parsed, arrays memory-mapped, sizes checked."""
    data = benchmark.pedantic(lambda: open_index(big_index_dir), rounds=10, warmup_rounds=1)
    assert data.n_chunks == BIG_CHUNKS
    stats = benchmark.stats.stats
    common.emit(
        "index_open",
        {"chunks": BIG_CHUNKS, "vocab": BIG_VOCAB, "dim": DIM},
        {"p50_s": round(stats.median, 4), "max_s": round(stats.max, 4),
         "bytes_on_disk": sum(p.stat().st_size for p in data.version_dir.iterdir())},
    )
    print(json.dumps({"chunk_text_sample": data.chunk_text(BIG_CHUNKS - 1)[:40]}))
