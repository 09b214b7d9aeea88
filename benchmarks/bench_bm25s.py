"""BM25 query speed side by side with bm25s (issue 12), end to end from the query string, one thread.

Both engines index the same chunks (each chunk's indexed text: header line + text, read back from
our index) and answer the same query strings, each with its own tokenizer: ours (`Searcher.bm25`:
code-aware tokenize + score + top 10 + Hit objects with their text, and the same without Hits:
`tokenize` + `SparseScorer.scores` + `top_k`) and bm25s's (its `Tokenizer` with English stop words and
PyStemmer's English stemmer, then `retrieve(k=10)`; ids and scores only). Same k1 and b (ours:
the shipped Lucene variant). Rounds are interleaved (ours, bm25s, bm25s, ours, ...) so load drifts
hit both alike; the medians over rounds are compared. Goal: ours >= 1.2x bm25s on SciFact and on the
large tree.

Run (nice'd, alone): `nice -n 10 python benchmarks/bench_bm25s.py [--corpus scifact|large|both] [--rounds 7]`.
The large tree's keyword index is built once into benchmarks/.cache/large-tree-bm25 (`--vectors later`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import common  # noqa: E402

GOAL_SPEEDUP = 1.2
K = 10
QUESTION_FILES = ("code_queries.jsonl", "polyglot_queries.jsonl", "token_questions.jsonl")


def _indexed_texts(data) -> list[str]:
    """Every chunk's indexed text (what our BM25 counted): header line + text."""
    version = data.version_dir
    offsets = np.load(version / "chunk_header_offsets.npy")
    blob = (version / "chunk_header.bin").read_bytes()
    texts = []
    for i in range(data.n_chunks):
        header = blob[offsets[i]:offsets[i + 1]].decode("utf-8")
        text = data.chunk_text(i)
        texts.append(f"{header}\n{text}" if header else text)
    return texts


def _scifact() -> tuple[Path, list[str]]:
    index_dir = common.CACHE / "scifact-bm25"
    if not (index_dir / "CURRENT").is_file() or not _has_headers(index_dir):
        common.build_cached_index("scifact-bm25", [common.SCIFACT / "corpus.jsonl"], with_vectors=False, force=True)
    with (common.SCIFACT / "queries.jsonl").open(encoding="utf-8") as lines:
        queries = [json.loads(line)["text"] for line in lines if line.strip()]
    return index_dir, queries


def _large() -> tuple[Path, list[str]]:
    from large_tree import ensure_tree

    index_dir = common.CACHE / "large-tree-bm25"
    if not (index_dir / "CURRENT").is_file() or not _has_headers(index_dir):
        common.build_cached_index("large-tree-bm25", [ensure_tree()], vectors_later=True, force=True)
    queries = []
    for name in QUESTION_FILES:
        for line in (common.REPO / "benchmarks" / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                queries.extend(record[key] for key in ("text", "question", "query", "paraphrase") if record.get(key))
    return index_dir, queries


def _has_headers(index_dir: Path) -> bool:
    from index import read_manifest

    return "chunk_header.bin" in read_manifest(index_dir)["artefacts"]


def measure(index_dir: Path, queries: list[str], rounds: int) -> dict[str, object]:
    import bm25s
    import Stemmer

    from index import open_index, tokenize
    from search import SearchConfig, Searcher, SparseScorer, top_k

    data = open_index(index_dir)
    config = SearchConfig()
    searcher = Searcher.from_index(data, config, load_models=False)
    scorer = SparseScorer.from_index(data, config.bm25_variant, config.k1, config.b)  # what Searcher.bm25 scores with

    started = time.perf_counter()
    tokenizer = bm25s.tokenization.Tokenizer(stopwords="en", stemmer=Stemmer.Stemmer("english"))
    corpus_ids = tokenizer.tokenize(_indexed_texts(data), return_as="ids", show_progress=False)
    retriever = bm25s.BM25(k1=config.k1, b=config.b, method="lucene")
    retriever.index(corpus_ids, show_progress=False)
    bm25s_index_s = time.perf_counter() - started

    def ours_hits() -> None:
        for query in queries:
            searcher.bm25(query, k=K)

    def ours_ranked() -> None:
        for query in queries:
            scores = scorer.scores(tokenize(query))
            ids = np.flatnonzero(scores > 0)
            top_k(scores[ids], K, ids)

    def theirs() -> None:
        for query in queries:
            ids = tokenizer.tokenize([query], update_vocab=False, return_as="ids", show_progress=False)
            if ids[0]:
                retriever.retrieve(ids, k=K, show_progress=False, n_threads=0)

    engines = {"ours_hits": ours_hits, "ours_ranked": ours_ranked, "bm25s": theirs}
    for run in engines.values():  # warm-up: caches, page faults
        run()
    seconds: dict[str, list[float]] = {name: [] for name in engines}
    names = list(engines)
    for number in range(rounds):
        for name in names if number % 2 == 0 else reversed(names):
            began = time.perf_counter()
            engines[name]()
            seconds[name].append(time.perf_counter() - began)
    qps = {name: round(len(queries) / statistics.median(values), 1) for name, values in seconds.items()}
    tokenize_ms = _tokenize_ms(queries, tokenize, tokenizer)
    return {"chunks": data.n_chunks, "queries": len(queries), "rounds": rounds, "queries_per_s": qps,
            "speedup_hits": round(qps["ours_hits"] / qps["bm25s"], 2),
            "speedup_ranked": round(qps["ours_ranked"] / qps["bm25s"], 2),
            "tokenize_ms_per_query": tokenize_ms, "bm25s_index_s": round(bm25s_index_s, 1),
            "k1": config.k1, "b": config.b}


def _tokenize_ms(queries: list[str], ours, tokenizer) -> dict[str, float]:
    timings = {}
    for name, run in (("ours", lambda q: ours(q)),
                      ("bm25s", lambda q: tokenizer.tokenize([q], update_vocab=False, return_as="ids",
                                                             show_progress=False))):
        began = time.perf_counter()
        for _ in range(3):
            for query in queries:
                run(query)
        timings[name] = round((time.perf_counter() - began) * 1000 / (3 * len(queries)), 4)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=("scifact", "large", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    corpora = ("scifact", "large") if args.corpus == "both" else (args.corpus,)
    for name in corpora:
        index_dir, queries = _scifact() if name == "scifact" else _large()
        print(f"[bench] {name}: {len(queries)} queries over {index_dir}", file=sys.stderr)
        metrics = measure(index_dir, queries, args.rounds)
        common.emit(f"bm25_vs_bm25s_{name}", {"k": K, "threads": 1}, common.with_goals(metrics, {
            "speedup_hits": (metrics["speedup_hits"], ">=", GOAL_SPEEDUP),
        }))


if __name__ == "__main__":
    main()
