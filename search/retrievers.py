"""The backend seam: first-stage retrieval (BM25, vectors, hybrid fusion) in-process or in Qdrant.

Contract: a retriever returns chunk rows of the opened index version with their scores, score
descending, ties by ascending row, filtered by ``allowed`` (bool mask over rows, or None) before
the cut to ``depth``. Everything above the seam is ours and shared by both backends: the query
tokenizer and encoder, filters, merging overlapping hits, the rerank policy. Scores mean the same
on both sides: BM25 (Lucene variant), cosine, and weighted RRF ``sum w / (rrf_k + rank)``.

- ``InProcessRetriever``: the mmap'd CSC postings (search/sparse.py) and faiss (search/dense.py);
  hybrid fuses the two rankings here with search/fusion.py.
- ``QdrantRetriever``: one collection per index version (index/qdrant.py). Hybrid with equal weights
  runs in Qdrant as one query (prefetch sparse + dense, RRF): Qdrant's RRF is ``1 / (rank + k' - 1)``
  with 1-based ranks, so ``k' = rrf_k + 1`` gives our scores (times the common weight). With unequal
  weights Qdrant's formula ``1 / (rank / w + k' - 1)`` ranks differently from ours ``w / (rrf_k +
  rank)``, so the two candidate lists come back in one batched round trip and are fused here: the
  same ranking as the in-process engine either way (the default weights are (1.0, 1.5)).
- ``EdgeRetriever``: the same queries on a qdrant-edge-py shard (the Qdrant engine in-process).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .fusion import fuse_rrf
from .hits import top_k

__all__ = ["EdgeRetriever", "InProcessRetriever", "QdrantRetriever"]

# Qdrant's RRF adds 1 / (rank + k - 1) (rank from 1); ours adds w / (rrf_k + rank): k = rrf_k + 1.
_QDRANT_K_OFFSET = 1


class InProcessRetriever:
    """Today's engine: BM25 postings and faiss in this process."""

    def __init__(self, sparse: Any, dense: Any | None) -> None:
        self._sparse = sparse
        self._dense = dense

    @property
    def has_dense(self) -> bool:
        return self._dense is not None

    def bm25(self, terms: Sequence[str], depth: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        scores = self._sparse.scores(terms)
        matched = scores > 0
        if allowed is not None:
            matched &= allowed
        candidate_ids = np.flatnonzero(matched)
        if len(candidate_ids) == 0:
            return candidate_ids, scores[candidate_ids]
        return top_k(scores[candidate_ids], depth, candidate_ids)

    def dense(self, vector: np.ndarray, depth: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        return self._dense.search(vector, depth, allowed)

    def close(self) -> None:
        """Nothing to release: the arrays are mmap'd."""

    def hybrid(self, terms: Sequence[str], vector: np.ndarray, depth: int, candidates: int,
               weights: tuple[float, float], rrf_k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        dense_ids, _ = self.dense(vector, candidates, allowed)
        sparse_ids, _ = self.bm25(terms, candidates, allowed)
        fused = fuse_rrf([sparse_ids.tolist(), dense_ids.tolist()], weights, rrf_k)[:depth]
        return (
            np.fromiter((chunk for chunk, _ in fused), dtype=np.int64, count=len(fused)),
            np.fromiter((score for _, score in fused), dtype=np.float64, count=len(fused)),
        )


class QdrantRetriever:
    """Queries one index version's Qdrant collection (see index/qdrant.py for the layout).

    ``bm25``/``dense``/``hybrid`` take our query terms and an allowed-rows mask (the CLI's search);
    the ``*_rows`` forms take term-id counts and allowed or excluded rows (the server's broker, which
    holds no vocabulary: the child maps terms to ids)."""

    def __init__(self, client: Any, collection: str, has_dense: bool, term_ids: Mapping[str, int],
                 where: str) -> None:
        self._client = client
        self._term_ids = term_ids
        self._collection = collection
        self._has_dense = has_dense
        self.where = where

    @property
    def has_dense(self) -> bool:
        return self._has_dense

    def bm25(self, terms: Sequence[str], depth: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if _is_empty(allowed):
            return _empty()
        return self.bm25_rows(self._counts(terms), depth, *_rows_of(allowed))

    def dense(self, vector: np.ndarray, depth: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if _is_empty(allowed):
            return _empty()
        return self.dense_rows(vector, depth, *_rows_of(allowed))

    def hybrid(self, terms: Sequence[str], vector: np.ndarray, depth: int, candidates: int,
               weights: tuple[float, float], rrf_k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if _is_empty(allowed):
            return _empty()
        return self.hybrid_rows(self._counts(terms), vector, depth, candidates, weights, rrf_k, *_rows_of(allowed))

    def bm25_rows(self, counts: Mapping[int, int], depth: int, allow: np.ndarray | None = None,
                  deny: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if not counts:
            return _empty()
        from index import sparse_query

        return self._query(query=sparse_query(dict(counts)), using="bm25", limit=depth,
                           query_filter=_filter(allow, deny))

    def dense_rows(self, vector: Sequence[float], depth: int, allow: np.ndarray | None = None,
                   deny: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self._query(query=np.asarray(vector, dtype=np.float32).tolist(), using="dense", limit=depth,
                           query_filter=_filter(allow, deny))

    def hybrid_rows(self, counts: Mapping[int, int], vector: Sequence[float], depth: int, candidates: int,
                    weights: tuple[float, float], rrf_k: int, allow: np.ndarray | None = None,
                    deny: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        from qdrant_client import models

        from index import sparse_query

        if allow is not None and not len(allow):
            return _empty()
        query_filter = _filter(allow, deny)
        dense = models.Prefetch(query=np.asarray(vector, dtype=np.float32).tolist(), using="dense",
                                limit=candidates, filter=query_filter)
        sparse = models.Prefetch(query=sparse_query(dict(counts)), using="bm25", limit=candidates,
                                 filter=query_filter) if counts else None
        sparse_weight, dense_weight = weights
        if sparse_weight == dense_weight:  # fused in Qdrant: one query
            fusion = models.RrfQuery(rrf=models.Rrf(k=rrf_k + _QDRANT_K_OFFSET))
            ids, scores = self._query(query=fusion, prefetch=[p for p in (sparse, dense) if p], limit=depth,
                                      query_filter=None)
            return ids, scores * dense_weight
        # Unequal weights: both candidate lists in one round trip, fused with our RRF.
        requests = [models.QueryRequest(query=p.query, using=p.using, limit=candidates, filter=query_filter)
                    for p in (sparse, dense) if p]
        responses = self._client.query_batch_points(self._collection, requests)
        rankings = [[int(point.id) for point in _ordered(response.points)] for response in responses]
        used = [sparse_weight, dense_weight] if sparse else [dense_weight]
        return _fused(rankings, used, rrf_k, depth)

    def _counts(self, terms: Sequence[str]) -> Counter[int]:
        """Known term ids with how often the query repeats them (as SparseScorer counts them)."""
        return Counter(self._term_ids[term] for term in terms if term in self._term_ids)

    def close(self) -> None:
        """Release the client (local mode: the storage lock, so another process may open it)."""
        self._client.close()

    def _query(self, *, limit: int, query_filter: Any, **arguments: Any) -> tuple[np.ndarray, np.ndarray]:
        points = self._client.query_points(
            self._collection, limit=limit, query_filter=query_filter, with_payload=False, with_vectors=False,
            **arguments,
        ).points
        ids = np.fromiter((int(point.id) for point in points), dtype=np.int64, count=len(points))
        scores = np.fromiter((point.score for point in points), dtype=np.float64, count=len(points))
        order = np.lexsort((ids, -scores))  # our tie rule: ascending row
        return ids[order], scores[order]


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)


def _is_empty(allowed: np.ndarray | None) -> bool:
    return allowed is not None and not allowed.any()


def _rows_of(allowed: np.ndarray | None) -> tuple[np.ndarray | None, None]:
    return (None, None) if allowed is None else (np.flatnonzero(allowed), None)


def _ordered(points: Sequence[Any]) -> list[Any]:
    """Score descending, ties by ascending row (our rule)."""
    return sorted(points, key=lambda point: (-point.score, int(point.id)))


def _fused(rankings: list[list[int]], weights: list[float], rrf_k: int, depth: int) -> tuple[np.ndarray, np.ndarray]:
    fused = fuse_rrf(rankings, weights, rrf_k)[:depth]
    return (
        np.fromiter((chunk for chunk, _ in fused), dtype=np.int64, count=len(fused)),
        np.fromiter((score for _, score in fused), dtype=np.float64, count=len(fused)),
    )


def _filter(allow: np.ndarray | None, deny: np.ndarray | None) -> Any:
    """Allowed or excluded rows as a Qdrant id condition (None: no filter)."""
    if allow is None and deny is None:
        return None
    from qdrant_client import models

    if allow is not None:
        return models.Filter(must=[models.HasIdCondition(has_id=np.asarray(allow).tolist())])
    return models.Filter(must_not=[models.HasIdCondition(has_id=np.asarray(deny).tolist())])


class EdgeRetriever(QdrantRetriever):
    """The same queries on a qdrant-edge-py shard (the Qdrant engine embedded in this process)."""

    def __init__(self, shard: Any, has_dense: bool, term_ids: Mapping[str, int], where: str) -> None:
        super().__init__(shard, "", has_dense, term_ids, where)

    def bm25_rows(self, counts: Mapping[int, int], depth: int, allow: np.ndarray | None = None,
                  deny: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        import qdrant_edge as edge

        if not counts:
            return _empty()
        return self._query(query=edge.Query.Nearest(_edge_sparse(counts), using="bm25"), limit=depth,
                           query_filter=_edge_filter(allow, deny))

    def dense_rows(self, vector: Sequence[float], depth: int, allow: np.ndarray | None = None,
                   deny: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        import qdrant_edge as edge

        query = edge.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist(), using="dense")
        return self._query(query=query, limit=depth, query_filter=_edge_filter(allow, deny))

    def hybrid_rows(self, counts: Mapping[int, int], vector: Sequence[float], depth: int, candidates: int,
                    weights: tuple[float, float], rrf_k: int, allow: np.ndarray | None = None,
                    deny: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        import qdrant_edge as edge

        if allow is not None and not len(allow):
            return _empty()
        query_filter = _edge_filter(allow, deny)
        queries = [edge.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist(), using="dense")]
        sparse_weight, dense_weight = weights
        used = [dense_weight]
        if counts:
            queries.insert(0, edge.Query.Nearest(_edge_sparse(counts), using="bm25"))
            used.insert(0, sparse_weight)
        if sparse_weight == dense_weight:  # fused in the engine: one query (see QdrantRetriever.hybrid)
            prefetches = [edge.Prefetch(limit=candidates, filter=query_filter, query=query) for query in queries]
            ids, scores = self._query(query=edge.Fusion.Rrf(k=rrf_k + _QDRANT_K_OFFSET), prefetches=prefetches,
                                      limit=depth, query_filter=None)
            return ids, scores * dense_weight
        rankings = [self._query(query=query, limit=candidates, query_filter=query_filter)[0].tolist()
                    for query in queries]
        return _fused(rankings, used, rrf_k, depth)

    def _query(self, *, limit: int, query_filter: Any, **arguments: Any) -> tuple[np.ndarray, np.ndarray]:
        import qdrant_edge as edge

        points = self._client.query(edge.QueryRequest(limit=limit, filter=query_filter, **arguments))
        ids = np.fromiter((int(point.id) for point in points), dtype=np.int64, count=len(points))
        scores = np.fromiter((point.score for point in points), dtype=np.float64, count=len(points))
        order = np.lexsort((ids, -scores))
        return ids[order], scores[order]


def _edge_sparse(counts: Mapping[int, int]) -> Any:
    import qdrant_edge as edge

    ids = sorted(counts)
    return edge.SparseVector(indices=ids, values=[float(counts[i]) for i in ids])


def _edge_filter(allow: np.ndarray | None, deny: np.ndarray | None) -> Any:
    if allow is None and deny is None:
        return None
    import qdrant_edge as edge

    if allow is not None:
        return edge.Filter(must=[edge.HasIdCondition(point_ids=set(np.asarray(allow).tolist()))])
    return edge.Filter(must_not=[edge.HasIdCondition(point_ids=set(np.asarray(deny).tolist()))])
