"""BM25 scoring: brute force on a small corpus, and equality with rank_bm25 on real text (this repository, SciFact)."""

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from index import tokenize
from search import SparseScorer, bm25_weights

from .helpers import SCIFACT, term_matrix

DOCS = [
    "the quick brown fox jumps over the lazy dog",
    "never jump over the lazy dog quickly",
    "a quick brown dog outpaces a quick fox",
    "lazy afternoons are for lazy dogs and lazy cats",
    "the fox and the hound",
    "hybrid search fuses bm25 with dense vectors",
    "bm25 is a bag of words ranking function",
    "dense retrieval uses embeddings of text",
    "reciprocal rank fusion combines rankings",
    "cross encoders rerank the top candidates",
    "the reranker reads query and passage together",
    "faiss does inner product search over vectors",
    "tokenize splits snake_case and camelCase identifiers",
    "the index stores term frequencies in a sparse matrix",
    "weights are derived at load time from term frequencies",
    "a glob filter selects paths before the cut to k",
    "language filters keep only python files",
    "the quick fix was a one line change",
    "dogs chase foxes and foxes chase rabbits",
    "the the the the",
]
QUERIES = ["quick fox", "lazy dog dog", "bm25 dense hybrid", "term frequencies sparse", "the", "zebra", "fox fox fox"]


def _brute_force(token_lists, query, variant, k1, b, epsilon=0.25):
    """Textbook BM25 with plain Python loops."""
    n_docs = len(token_lists)
    avgdl = sum(len(tokens) for tokens in token_lists) / n_docs
    doc_freq = Counter(term for tokens in token_lists for term in set(tokens))
    if variant == "lucene":
        idf = {t: math.log(1 + (n_docs - df + 0.5) / (df + 0.5)) for t, df in doc_freq.items()}
    else:
        idf = {t: math.log(n_docs - df + 0.5) - math.log(df + 0.5) for t, df in doc_freq.items()}
        floor = epsilon * sum(idf.values()) / len(idf)
        idf = {t: (floor if value < 0 else value) for t, value in idf.items()}
    scores = []
    for tokens in token_lists:
        counts = Counter(tokens)
        norm = 1 - b + b * len(tokens) / avgdl
        total = 0.0
        for term in query:
            tf = counts.get(term, 0)
            numerator = tf if variant == "lucene" else tf * (k1 + 1)
            total += idf.get(term, 0.0) * numerator / (tf + k1 * norm)
        scores.append(total)
    return np.array(scores)


@pytest.mark.parametrize("variant", ["lucene", "okapi"])
@pytest.mark.parametrize(("k1", "b"), [(0.9, 0.4), (1.5, 0.75), (1.2, 0.0), (0.5, 1.0)])
def test_sparse_scores_match_brute_force(variant, k1, b):
    """It gives the textbook BM25 score of every document for every query and parameter set."""
    token_lists = [doc.split() for doc in DOCS]
    matrix, lengths, term_ids = term_matrix(token_lists)
    scorer = SparseScorer(bm25_weights(matrix, lengths, variant=variant, k1=k1, b=b), term_ids)
    for query in QUERIES:
        expected = _brute_force(token_lists, query.split(), variant, k1, b)
        np.testing.assert_allclose(scorer.scores(query.split()), expected, rtol=1e-5, atol=1e-6)


def test_sparse_okapi_floors_negative_idf_like_rank_bm25():
    """It replaces the negative idf of a term in most documents by epsilon * mean idf."""
    common = [doc.split() + ["common"] for doc in DOCS]  # in every doc: raw idf log(0.5 / 20.5) < 0
    matrix, lengths, term_ids = term_matrix(common)
    scorer = SparseScorer(bm25_weights(matrix, lengths, variant="okapi", k1=1.5, b=0.75), term_ids)
    reference = BM25Okapi(common)
    np.testing.assert_allclose(scorer.scores(["common"]), reference.get_scores(["common"]), rtol=1e-5)
    assert scorer.scores(["common"]).min() > 0


def test_sparse_unknown_terms_score_zero():
    """It ignores query terms that are not in the vocabulary."""
    matrix, lengths, term_ids = term_matrix([doc.split() for doc in DOCS])
    scorer = SparseScorer(bm25_weights(matrix, lengths), term_ids)
    assert not scorer.scores(["zebra", "unicorn"]).any()


def test_bm25_weights_rejects_unknown_variant():
    """It names the valid variants."""
    matrix, lengths, _ = term_matrix([["a"]])
    with pytest.raises(ValueError, match="unknown BM25 variant 'bm42'"):
        bm25_weights(matrix, lengths, variant="bm42")


def _assert_okapi_equals_rank_bm25(token_lists: list[list[str]], queries: list[str]) -> None:
    """Our okapi scores equal rank_bm25.BM25Okapi's for every query, given the same tokens."""
    matrix, lengths, term_ids = term_matrix(token_lists)
    scorer = SparseScorer(bm25_weights(matrix, lengths, variant="okapi", k1=1.5, b=0.75, epsilon=0.25), term_ids)
    reference = BM25Okapi(token_lists, k1=1.5, b=0.75, epsilon=0.25)
    for query in queries:
        tokens = tokenize(query)
        assert np.allclose(scorer.scores(tokens), reference.get_scores(tokens), rtol=1e-5, atol=1e-6), query


@pytest.mark.skipif(not SCIFACT.is_dir(), reason="shared/datasets/scifact is not beside the repository")
def test_sparse_okapi_equals_rank_bm25_on_scifact():
    """It scores the first 500 SciFact docs exactly like rank_bm25.BM25Okapi given the same tokens."""
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as lines:
        docs = [json.loads(line) for _, line in zip(range(500), lines)]
    with (SCIFACT / "queries.jsonl").open(encoding="utf-8") as lines:
        queries = [json.loads(line)["text"] for line in lines][:100]
    token_lists = [tokenize(f"{doc['title']} {doc['text']}") for doc in docs]
    _assert_okapi_equals_rank_bm25(token_lists, queries)


def test_sparse_okapi_equals_rank_bm25_on_this_repository():
    """It scores this repository's own source and docs exactly like rank_bm25.BM25Okapi given the same
    tokens (a real corpus that is there wherever the tests run, unlike shared/datasets)."""
    root = Path(__file__).resolve().parents[2]
    paths = sorted(p for folder in ("index", "search", "sandbox", "server", "docs") for p in (root / folder).rglob("*")
                   if p.suffix in {".py", ".md"})
    assert len(paths) > 30
    token_lists = [tokenize(p.read_text(encoding="utf-8")) for p in paths]
    queries = [json.loads(line)["text"] for line in (root / "benchmarks" / "code_queries.jsonl").read_text().splitlines()
               if line.strip()]
    assert len(queries) >= 30
    _assert_okapi_equals_rank_bm25(token_lists, queries)
