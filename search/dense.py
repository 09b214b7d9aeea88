"""Vector search over the index's L2-normalised float32 vectors (inner product = cosine).

Exact search uses a faiss IndexFlatIP (a copy of the vectors); above the index's approx threshold
the stored ANN index (``ann.faiss``) is read instead. Filters apply before the cut to k: a small
allowed set is scored exactly with numpy over the mmap'd rows; a large one goes through faiss with an
ID selector (exact) or by over-fetching and masking (ANN), widening until k allowed hits are found.
Contract: single-query searches run on the calling thread (faiss uses no OpenMP team for nq = 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .hits import top_k

__all__ = ["DenseIndex"]

# Allowed sets up to this many chunks are scored exactly by numpy (cheaper than a filtered scan).
EXACT_SUBSET_MAX_CHUNKS = 20_000
OVERFETCH_FACTOR = 4


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)


class DenseIndex:
    """faiss inner-product search over one index version's vectors."""

    def __init__(self, vectors: np.ndarray, faiss_index: object, is_exact: bool) -> None:
        self._vectors = vectors
        self._index = faiss_index
        self.is_exact = is_exact
        self.n_chunks, self.dim = vectors.shape

    @classmethod
    def from_index(cls, data: object) -> DenseIndex | None:
        """Open the vectors of an ``index.IndexData``; None when it was built without vectors."""
        import faiss

        vectors = data.vectors
        if vectors is None:
            return None
        ann_path: Path | None = getattr(data, "ann_path", None)
        if ann_path is not None and Path(ann_path).is_file():
            ann = faiss.read_index(str(ann_path))
            if ann.ntotal != len(vectors) or ann.d != vectors.shape[1]:
                raise ValueError(
                    f"{ann_path}: ANN index holds {ann.ntotal} x {ann.d} vectors, expected {vectors.shape}"
                )
            return cls(vectors, ann, is_exact=False)
        flat = faiss.IndexFlatIP(vectors.shape[1])
        if len(vectors):
            flat.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return cls(vectors, flat, is_exact=True)

    def search(
        self, vector: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest chunks to a unit vector: (chunk_ids int64, scores float32), best first.

        vector: float32 (dim,); allowed: bool (n_chunks,) mask or None. Ties → ascending id.
        """
        vector = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self.dim:
            raise ValueError(f"query vector has {vector.shape[0]} dims, the index has {self.dim}")
        if allowed is not None:
            allowed_ids = np.flatnonzero(allowed)
            if len(allowed_ids) <= EXACT_SUBSET_MAX_CHUNKS or len(allowed_ids) <= k:
                return self._search_subset(vector, k, allowed_ids)
            if len(allowed_ids) == self.n_chunks:
                allowed = None
        if self.n_chunks == 0:
            return _empty()
        if allowed is None:
            return self._search_faiss(vector, min(k, self.n_chunks))
        if self.is_exact:
            return self._search_flat_selected(vector, k, allowed)
        return self._search_ann_overfetch(vector, k, allowed)

    def _search_subset(self, vector: np.ndarray, k: int, allowed_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(allowed_ids) == 0:
            return _empty()
        scores = np.asarray(self._vectors[allowed_ids], dtype=np.float32) @ vector
        return top_k(scores, k, allowed_ids)

    def _search_faiss(self, vector: np.ndarray, k: int, params: object = None) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = self._index.search(vector[None, :], k, params=params)
        found = ids[0] >= 0
        return top_k(scores[0][found], k, ids[0][found])

    def _search_flat_selected(self, vector: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        bitmap = np.packbits(allowed, bitorder="little")  # must outlive the search call
        selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))
        return self._search_faiss(vector, min(k, int(allowed.sum())), faiss.SearchParameters(sel=selector))

    def _search_ann_overfetch(self, vector: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fetch = min(self.n_chunks, k * OVERFETCH_FACTOR)
        while True:
            ids, scores = self._search_faiss(vector, fetch)
            keep = allowed[ids]
            if keep.sum() >= k or fetch >= self.n_chunks:
                return ids[keep][:k], scores[keep][:k]
            fetch = min(self.n_chunks, fetch * OVERFETCH_FACTOR)
