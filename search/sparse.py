"""BM25 over stored term frequencies: one pure numpy function per formula, variants chosen by name.

Weights are derived at load time from the index's CSR term frequencies, so k1, b and the variant
change without reindexing. The weight of term t in chunk d is precomputed once into a CSC matrix
(chunks x terms: each term's postings are contiguous); a query adds its terms' columns.

Variants (Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond", 2009):
- "lucene": Lucene >= 8 BM25Similarity. idf = log(1 + (N - df + 0.5) / (df + 0.5)),
  tf part = tf / (tf + k1 * (1 - b + b * dl / avgdl)) (no (k1 + 1) numerator: same ranking).
  Lucene's lossy one-byte length encoding is not reproduced; lengths are exact.
- "okapi": rank_bm25.BM25Okapi exactly. idf = log(N - df + 0.5) - log(df + 0.5); negative idfs are
  replaced by epsilon * (mean idf over the vocabulary); tf part = tf * (k1 + 1) / (tf + k1 * norm).
A query term repeated n times counts n times (as in both references); unknown terms add nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = [
    "BM25_LUCENE",
    "BM25_OKAPI",
    "CorpusStats",
    "SparseScorer",
    "bm25_weights",
    "idf_lucene",
    "idf_okapi",
    "length_norms",
    "tf_lucene",
    "tf_okapi",
]

BM25_LUCENE = "lucene"
BM25_OKAPI = "okapi"


def idf_lucene(doc_freqs: np.ndarray, n_docs: int) -> np.ndarray:
    """Lucene's idf, float64 (n_terms,): log(1 + (N - df + 0.5) / (df + 0.5)); always > 0."""
    doc_freqs = np.asarray(doc_freqs, dtype=np.float64)
    return np.log1p((n_docs - doc_freqs + 0.5) / (doc_freqs + 0.5))


def idf_okapi(doc_freqs: np.ndarray, n_docs: int, epsilon: float) -> np.ndarray:
    """rank_bm25.BM25Okapi's idf, float64 (n_terms,), with its floor for negative values.

    The mean is taken over every term (negative ones included) before flooring, as rank_bm25 does.
    """
    doc_freqs = np.asarray(doc_freqs, dtype=np.float64)
    idf = np.log(n_docs - doc_freqs + 0.5) - np.log(doc_freqs + 0.5)
    if len(idf):
        idf = np.where(idf < 0, epsilon * idf.mean(), idf)
    return idf


def length_norms(doc_lengths: np.ndarray, b: float, mean_length: float | None = None) -> np.ndarray:
    """Per-chunk length normalisation 1 - b + b * dl / avgdl, float64 (n_docs,); avgdl is the chunks'
    own mean unless `mean_length` gives another corpus's."""
    doc_lengths = np.asarray(doc_lengths, dtype=np.float64)
    if mean_length is None:
        mean_length = doc_lengths.mean() if len(doc_lengths) else 0.0
    if mean_length <= 0:
        return np.ones_like(doc_lengths)
    return 1.0 - b + b * doc_lengths / mean_length


def tf_lucene(tfs: np.ndarray, norms: np.ndarray, k1: float) -> np.ndarray:
    """Lucene's saturated tf: tf / (tf + k1 * norm) (elementwise, float64)."""
    return tfs / (tfs + k1 * norms)


def tf_okapi(tfs: np.ndarray, norms: np.ndarray, k1: float) -> np.ndarray:
    """Okapi's saturated tf: tf * (k1 + 1) / (tf + k1 * norm) (elementwise, float64)."""
    return tfs * (k1 + 1.0) / (tfs + k1 * norms)


def bm25_weights(
    term_freqs: sp.csr_matrix,
    doc_lengths: np.ndarray,
    variant: str = BM25_LUCENE,
    k1: float = 0.9,
    b: float = 0.4,
    epsilon: float = 0.25,
    reference: CorpusStats | None = None,
) -> sp.csc_matrix:
    """BM25 weight of every (chunk, term) pair: float32 CSC (n_chunks x n_terms).

    term_freqs: CSR (n_chunks x n_terms) raw counts; doc_lengths: tokens per chunk (n_chunks,).
    Terms that occur in no chunk do not enter the okapi mean idf (rank_bm25 never sees them).
    `reference`: these chunks are scored as members of a larger corpus (a delta over its base index:
    search/overlay.py): its chunks and document frequencies add to N and df, and its mean length is
    avgdl, so the scores compare with the base's own.
    """
    if variant not in (BM25_LUCENE, BM25_OKAPI):
        raise ValueError(f"unknown BM25 variant {variant!r}; choose {BM25_LUCENE!r} or {BM25_OKAPI!r}")
    term_freqs = sp.csc_matrix(term_freqs, dtype=np.float64)
    term_freqs.eliminate_zeros()
    n_docs = term_freqs.shape[0]
    doc_freqs = np.diff(term_freqs.indptr)
    present = doc_freqs > 0
    mean_length = None
    if reference is not None:
        n_docs += reference.n_docs
        doc_freqs = doc_freqs + np.asarray(reference.doc_freqs, dtype=np.int64)
        mean_length = reference.mean_length
    idf = np.zeros(term_freqs.shape[1], dtype=np.float64)
    if variant == BM25_LUCENE:
        idf[present] = idf_lucene(doc_freqs[present], n_docs)
        tf_part = tf_lucene
    else:
        idf[present] = idf_okapi(doc_freqs[present], n_docs, epsilon)
        tf_part = tf_okapi
    norms = length_norms(doc_lengths, b, mean_length)
    term_of_entry = np.repeat(np.arange(term_freqs.shape[1]), np.diff(term_freqs.indptr))
    data = idf[term_of_entry] * tf_part(term_freqs.data, norms[term_freqs.indices], k1)
    return sp.csc_matrix(
        (data.astype(np.float32), term_freqs.indices.astype(np.int32), term_freqs.indptr),
        shape=term_freqs.shape,
    )


@dataclass(frozen=True, slots=True)
class CorpusStats:
    """A corpus that other chunks are scored against (bm25_weights' `reference`): its number of
    chunks, its document frequency of each of their terms (aligned with their vocabulary), and its
    mean chunk length."""

    n_docs: int
    doc_freqs: np.ndarray
    mean_length: float


@dataclass(frozen=True, slots=True)
class _Postings:
    indptr: np.ndarray  # int64 (n_terms + 1,)
    chunk_ids: np.ndarray  # int32 (nnz,) ascending within a term
    weights: np.ndarray  # float32 (nnz,)


class SparseScorer:
    """BM25 scores of every chunk for a tokenized query, from a precomputed weight matrix."""

    def __init__(self, weights: sp.csc_matrix, term_ids: dict[str, int]) -> None:
        weights = sp.csc_matrix(weights)
        self._postings = _Postings(
            indptr=np.asarray(weights.indptr, dtype=np.int64),
            chunk_ids=np.asarray(weights.indices, dtype=np.int32),
            weights=np.asarray(weights.data, dtype=np.float32),
        )
        self._term_ids = term_ids
        self.n_chunks = weights.shape[0]

    @classmethod
    def from_index(cls, data: object, variant: str, k1: float, b: float, epsilon: float = 0.25) -> SparseScorer:
        """Build from an ``index.IndexData`` (its ``tf``, ``doc_lengths`` and ``term_ids``)."""
        weights = bm25_weights(data.tf, data.doc_lengths, variant=variant, k1=k1, b=b, epsilon=epsilon)
        return cls(weights, data.term_ids)

    def corpus_stats(self, terms: Sequence[str], doc_lengths: np.ndarray) -> CorpusStats:
        """This scorer's corpus as the reference of other chunks whose vocabulary is `terms`
        (doc_lengths: this corpus's chunk lengths, for avgdl)."""
        doc_freqs = np.diff(self._postings.indptr)
        ids = np.fromiter((self._term_ids.get(term, -1) for term in terms), dtype=np.int64, count=len(terms))
        aligned = np.where(ids >= 0, doc_freqs[np.maximum(ids, 0)] if len(doc_freqs) else 0, 0)
        lengths = np.asarray(doc_lengths, dtype=np.float64)
        return CorpusStats(n_docs=self.n_chunks, doc_freqs=aligned,
                           mean_length=float(lengths.mean()) if len(lengths) else 0.0)

    def term_ids(self, query_terms: Sequence[str]) -> Counter[int]:
        """Known term ids of a tokenized query with their multiplicity."""
        return Counter(self._term_ids[t] for t in query_terms if t in self._term_ids)

    def scores(self, query_terms: Sequence[str]) -> np.ndarray:
        """float32 (n_chunks,) BM25 score of every chunk; 0 where no query term occurs."""
        postings = self._postings
        scores = np.zeros(self.n_chunks, dtype=np.float32)
        for term_id, count in self.term_ids(query_terms).items():
            start, stop = postings.indptr[term_id], postings.indptr[term_id + 1]
            weights = postings.weights[start:stop]
            # np.add.at: one unbuffered pass (twice as fast as fancy-index += here); each chunk gets the
            # same float32 additions in the same order either way, so the scores are identical.
            np.add.at(scores, postings.chunk_ids[start:stop], weights if count == 1 else weights * np.float32(count))
        return scores
