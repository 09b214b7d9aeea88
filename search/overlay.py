"""A delta merged over its base index (issue 12, fresh on every save): the Searcher of one served
index when files changed since its current version.

Contract: ``Overlay(base, delta)`` answers every query a Searcher answers. The base hides every path
the delta replaces, deletes or no longer indexes (``Searcher.with_hidden``); the delta (index/delta.py:
the changed files, chunked alone) is scored with the base's BM25 statistics (N, df, avgdl), so its
BM25 scores compare with the base's and the two lists merge by score. The delta has no vectors:
``semantic`` ranks the base's live chunks, ``hybrid`` fuses the merged BM25 list with them (weighted
RRF, as a Searcher does), and ``vector_coverage`` counts the delta's chunks as lacking a vector.
grep and files merge in path order; definitions by tier; read/outline come from whichever holds the
path. Hits carry the same index name. Built in the fork server between calls, before spares fork.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .config import SEARCH_MODES
from .errors import PathNotFoundError, QueryError
from .fusion import fuse_rrf
from .grep import GrepMatch
from .hits import Hit, merge_overlapping
from .searcher import Searcher
from .sparse import SparseScorer, bm25_weights

__all__ = ["Overlay"]


class Overlay:
    """One served index: its base version with a delta merged over it (see module contract)."""

    def __init__(self, base: Searcher, delta_data: Any | None, hidden: Iterable[str], version: str = "") -> None:
        if getattr(base.data, "symbols", None) is not None:
            base._symbols()  # decoded once on the base: every later overlay's copy shares it
        self.base = base.with_hidden(hidden)
        self.config = base.config
        self.index_name = base.index_name
        self.delta_version = version
        self.delta: Searcher | None = None
        if delta_data is not None and delta_data.n_chunks:
            config = base.config
            reference = None
            base_sparse = getattr(base._retriever, "_sparse", None)  # in-process postings (None: Qdrant)
            if isinstance(base_sparse, SparseScorer):
                reference = base_sparse.corpus_stats(delta_data.vocab, base.data.doc_lengths)
            weights = bm25_weights(delta_data.tf, delta_data.doc_lengths, variant=config.bm25_variant, k1=config.k1,
                                   b=config.b, epsilon=config.okapi_epsilon, reference=reference)
            self.delta = Searcher(delta_data, config, SparseScorer(weights, delta_data.term_ids), None, None,
                                  base._cross_encoder, base.index_name)
            if getattr(delta_data, "symbols", None) is not None:
                self.delta._symbols()  # before the fork: children inherit the lookup
        live, with_vector = self.base.live_chunks, self.base.live_vectors
        total = live + (self.delta.data.n_chunks if self.delta is not None else 0)
        self.vector_coverage = with_vector / total if total else 0.0

    # ----------------------------------------------------------------- what a Searcher tells
    @property
    def has_vectors(self) -> bool:
        return self.base.has_vectors

    @property
    def has_models(self) -> bool:
        return self.base.has_models

    def warm_before_fork(self) -> None:
        self.base.warm_before_fork()
        if self.delta is not None:
            self.delta.warm_before_fork()

    def close(self) -> None:
        self.base.close()

    # ----------------------------------------------------------------- ranked queries
    def bm25(self, query: str, k: int = 10, path: str | None = None, language: str | None = None) -> list[Hit]:
        return self._merged(lambda s: s.bm25(query, k=k, path=path, language=language), k)

    def semantic(self, query: str, k: int = 10, path: str | None = None, language: str | None = None) -> list[Hit]:
        return self.base.semantic(query, k=k, path=path, language=language)

    def hybrid(self, query: str, k: int = 10, path: str | None = None, language: str | None = None) -> list[Hit]:
        if not self.base.has_vectors:
            return self.bm25(query, k=k, path=path, language=language)
        candidates = max(k, self.config.candidates)
        sparse = self.bm25(query, k=candidates, path=path, language=language)
        dense = self.base.semantic(query, k=candidates, path=path, language=language)
        by_id = {hit.id: hit for hit in (*dense, *sparse)}
        fused = fuse_rrf([[hit.id for hit in sparse], [hit.id for hit in dense]], self.config.fusion_weights,
                         self.config.rrf_k)[:k]
        return [by_id[chunk_id].with_score(score) for chunk_id, score in fused]

    def search(self, query: str, k: int = 10, mode: str = "hybrid", rerank: bool = True, path: str | None = None,
               language: str | None = None) -> list[Hit]:
        """As Searcher.search: first stage in `mode` over base and delta, overlaps folded, prose reranked."""
        if mode not in SEARCH_MODES:
            raise QueryError(f"unknown mode {mode!r}; use one of {', '.join(SEARCH_MODES)}")
        if not isinstance(rerank, bool):
            raise QueryError(f"rerank must be True or False, got {rerank!r}")
        depth = max(k, self.config.rerank_depth) if rerank else k
        rank = {"bm25": self.bm25, "semantic": self.semantic, "hybrid": self.hybrid}[mode]
        hits = merge_overlapping(rank(query, k=4 * depth, path=path, language=language), self._read_lines)[:depth]
        return self.base.rerank_prose(query, hits, k) if rerank else hits[:k]

    def rerank(self, query: str, hits: Iterable[Hit | Mapping[str, object]], k: int | None = None) -> list[Hit]:
        return self.base.rerank(query, hits, k)

    def rerank_prose(self, query: str, hits: Iterable[Hit], k: int | None = None) -> list[Hit]:
        return self.base.rerank_prose(query, hits, k)

    def definitions(self, name: str, kind: str | None = None, path: str | None = None, language: str | None = None,
                    k: int = 20) -> list[Hit]:
        return self._merged(lambda s: s.definitions(name, kind=kind, path=path, language=language, k=k), k)

    # ----------------------------------------------------------------- files
    def holds(self, path: str) -> bool:
        return self._holder(path) is not None

    def read(self, path: str, start_line: int = 1, end_line: int | None = None) -> str:
        holder = self._holder(path) if isinstance(path, str) else self.base
        return (holder or self.base).read(path, start_line, end_line)

    def outline(self, path: str) -> list[dict[str, object]]:
        holder = self._holder(path.strip()) if isinstance(path, str) else self.base
        return (holder or self.base).outline(path)

    def files(self, pattern: str = "**/*") -> list[str]:
        found = set(self.base.files(pattern))
        if self.delta is not None:
            found.update(self.delta.files(pattern))
        return sorted(found)

    def grep(self, pattern: str, path: str | None = None, ignore_case: bool = False, k: int = 100,
             deadline: float | None = None) -> list[GrepMatch]:
        """Both sides in path then line order, merged and cut to k."""
        def run(searcher: Searcher) -> list[GrepMatch]:
            return searcher.grep(pattern, path=path, ignore_case=ignore_case, k=k, deadline=deadline)

        return sorted(self._both(run), key=lambda match: (match.path, match.line))[:k]

    # ----------------------------------------------------------------- helpers
    def _holder(self, path: str) -> Searcher | None:
        if self.delta is not None and self.delta.holds(path):
            return self.delta
        return self.base if self.base.holds(path) else None

    def _read_lines(self, path: str, start_line: int, end_line: int) -> str:
        return self.read(path, start_line, end_line).rstrip("\n")

    def _both(self, run: Callable[[Searcher], list[Any]]) -> list[Any]:
        """`run` on the base and the delta. A filter one side cannot satisfy (a path glob or language
        only the other holds) empties that side; an error both sides raise is the caller's."""
        if self.delta is None:
            return run(self.base)
        results, errors = [], []
        for searcher in (self.base, self.delta):
            try:
                results.extend(run(searcher))
            except (PathNotFoundError, QueryError) as exc:
                errors.append(exc)
        if len(errors) == 2:
            raise errors[0]
        return results

    def _merged(self, run: Callable[[Searcher], list[Hit]], k: int) -> list[Hit]:
        """Score-descending merge of both sides (stable: the base first on ties), cut to k."""
        return sorted(self._both(run), key=lambda hit: -hit.score)[:k]
