"""IndexSet: several named indexes served at once, each a Searcher, queried one by one or fused.

Contract: ``index`` arguments take None (every index), a name, or a list of names; an unknown name
is a QueryError (a ValueError) listing the served ones. One index answers with its own scores; several
answer with one list fused by reciprocal rank fusion over the per-index rankings (scores: fused RRF,
since BM25 scores and cosines from different indexes are not comparable), then the cross-encoder
reranks the fused candidates when asked. Every hit carries the name of its index. ``read(path)`` of a
path that several selected indexes hold is an AmbiguousPathError (a LookupError) naming them.
The indexes share one cross-encoder; each keeps its own query encoder (the one that embedded it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from index import open_delta, open_index

from .coderank import rerank_code
from .config import SEARCH_MODES, SearchConfig, check_index_name
from .errors import AmbiguousPathError, PathNotFoundError, QueryError
from .fusion import fuse_rrf
from .grep import GrepMatch
from .hits import Hit
from .overlay import Overlay
from .remote import BrokerLink
from .rerank import CrossEncoder, resolve_rerank_model
from .searcher import Searcher

__all__ = ["IndexSet", "IndexSelection"]

IndexSelection = str | Sequence[str] | None
class IndexSet:
    """Named Searchers behind the one API programs use (see module docstring)."""

    def __init__(self, searchers: Mapping[str, Searcher | Overlay], directories: Mapping[str, Path] | None = None
                 ) -> None:
        # Empty: a fork server started without an index (benchmarks, tests of the Python layers);
        # every query then says no index is served.
        self._searchers = dict(searchers)
        # Each index's directory and base Searcher: apply_deltas() merges a newer delta over the base.
        self._directories = dict(directories or {})
        self._bases = {name: searcher.base if isinstance(searcher, Overlay) else searcher
                       for name, searcher in self._searchers.items()}
        self.config: SearchConfig = (
            next(iter(self._searchers.values())).config if self._searchers else SearchConfig()
        )

    @classmethod
    def open(
        cls,
        indexes: Iterable[tuple[str, str | Path]],
        config: SearchConfig | None = None,
        load_models: bool = True,
        broker: BrokerLink | None = None,
    ) -> IndexSet:
        """Open every (name, dir) pair; the cross-encoder is opened once and shared. ``broker``: Qdrant-backed
        indexes query through it (the fork server's children) instead of connecting themselves."""
        config = SearchConfig() if config is None else config
        pairs = [(check_index_name(name), Path(directory)) for name, directory in indexes]
        names = [name for name, _ in pairs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise QueryError(f"index name(s) {', '.join(duplicates)} given twice; give each index its own name")
        for _, directory in pairs:  # a missing or broken index fails before any model is loaded
            open_index(directory)
        cross_encoder = None
        if load_models and pairs:
            cross_encoder = CrossEncoder.open(
                resolve_rerank_model(config.rerank_model),
                threads=config.threads,
                max_tokens=config.rerank_max_tokens,
                query_max_tokens=config.rerank_query_max_tokens,
                batch_size=config.rerank_batch_size,
            )
        searchers = {
            name: Searcher.open(directory, config, load_models, name=name, cross_encoder=cross_encoder, broker=broker)
            for name, directory in pairs
        }
        opened = cls(searchers, dict(pairs))
        opened.apply_deltas()
        return opened

    def apply_deltas(self) -> dict[str, str]:
        """Merge each index's current delta (index/delta.py: files changed since its version) over its
        base Searcher, or drop a delta that is gone. Returns {name: delta version} of the deltas now
        merged. A delta that cannot be read leaves that index as it was (IndexStoreError raised after
        the others are applied)."""
        applied: dict[str, str] = {}
        failure: Exception | None = None
        for name, directory in self._directories.items():
            base = self._bases[name]
            try:
                delta = open_delta(directory)
            except Exception as exc:  # noqa: BLE001 - keep serving what was served
                failure = failure or exc
                continue
            if delta is None:
                self._searchers[name] = base
                continue
            current = self._searchers[name]
            if isinstance(current, Overlay) and current.delta_version == delta.version:
                applied[name] = delta.version
                continue
            self._searchers[name] = Overlay(base, delta.data, delta.hidden, delta.version)
            applied[name] = delta.version
        if failure is not None:
            raise failure
        return applied

    @classmethod
    def single(cls, searcher: Searcher) -> IndexSet:
        """One searcher, served under its own name."""
        return cls({searcher.index_name: searcher})

    # ----------------------------------------------------------------- what is served
    @property
    def names(self) -> tuple[str, ...]:
        """The served names, in the order given."""
        return tuple(self._searchers)

    def searcher(self, name: str) -> Searcher:
        """The Searcher of one served index (QueryError for an unknown name)."""
        return self.select(name)[0]

    def select(self, index: IndexSelection) -> list[Searcher]:
        """The searchers an ``index`` argument names, in served order, each once."""
        if not self._searchers:
            raise QueryError("no index is served: start the server with --index DIR or --root DIR")
        if index is None:
            return list(self._searchers.values())
        wanted = [index] if isinstance(index, str) else index
        if isinstance(wanted, (bytes, Mapping)) or not isinstance(wanted, Sequence) or not wanted:
            raise QueryError(
                f"index must be None (every index), a name or a non-empty list of names; got {index!r}"
            )
        unknown = [name for name in wanted if name not in self._searchers]
        if unknown:
            raise QueryError(
                f"unknown index {', '.join(repr(name) for name in unknown)}; "
                f"served indexes: {', '.join(self._searchers)}"
            )
        return [searcher for name, searcher in self._searchers.items() if name in wanted]

    def _first(self) -> Searcher:
        """The searcher whose shared cross-encoder reranks (every served index shares one)."""
        return self.select(None)[0]

    @property
    def has_vectors(self) -> bool:
        """True when every served index holds vectors."""
        return all(searcher.has_vectors for searcher in self._searchers.values())

    @property
    def has_models(self) -> bool:
        return all(searcher.has_models for searcher in self._searchers.values())

    def warm_before_fork(self) -> None:
        for searcher in self._searchers.values():
            searcher.warm_before_fork()

    # ----------------------------------------------------------------- queries
    def search(
        self,
        query: str,
        k: int = 10,
        mode: str = "hybrid",
        rerank: bool = True,
        path: str | None = None,
        language: str | None = None,
        index: IndexSelection = None,
    ) -> list[Hit]:
        """``Searcher.search`` over the selected indexes (fused when several)."""
        searchers = self.select(index)
        if len(searchers) == 1:
            return searchers[0].search(query, k=k, mode=mode, rerank=rerank, path=path, language=language)
        if mode not in SEARCH_MODES:
            raise QueryError(f"unknown mode {mode!r}; use one of {', '.join(SEARCH_MODES)}")
        if not isinstance(rerank, bool):
            raise QueryError(f"rerank must be True or False, got {rerank!r}")
        depth = max(k, self.config.rerank_depth) if rerank else k
        pool = max(depth, self.config.code_rerank_depth) if rerank else depth
        fused = self._fuse(
            [searcher.search(query, k=pool, mode=mode, rerank=False, path=path, language=language)
             for searcher in searchers],
            pool,
        )
        if not rerank:
            return fused[:k]
        return searchers[0].rerank_prose(query, rerank_code(query, fused, self.config)[:depth], k)

    def bm25(self, query: str, k: int = 10, path: str | None = None, language: str | None = None,
             index: IndexSelection = None) -> list[Hit]:
        return self._each("bm25", query, k, path, language, index)

    def semantic(self, query: str, k: int = 10, path: str | None = None, language: str | None = None,
                 index: IndexSelection = None) -> list[Hit]:
        return self._each("semantic", query, k, path, language, index)

    def hybrid(self, query: str, k: int = 10, path: str | None = None, language: str | None = None,
               index: IndexSelection = None) -> list[Hit]:
        return self._each("hybrid", query, k, path, language, index)

    def rerank(self, query: str, hits: Iterable[Hit | Mapping[str, object]], k: int | None = None) -> list[Hit]:
        """Cross-encoder rerank (the model is shared, so any index's searcher does it)."""
        return self._first().rerank(query, hits, k)

    def read(self, path: str, start_line: int = 1, end_line: int | None = None,
             index: IndexSelection = None) -> str:
        """``Searcher.read`` in the one selected index that holds ``path``."""
        searchers = self.select(index)
        if len(searchers) == 1:
            return searchers[0].read(path, start_line, end_line)
        return self._holder(searchers, path).read(path, start_line, end_line)

    def files(self, pattern: str = "**/*", index: IndexSelection = None) -> list[str]:
        """Sorted paths matching a glob in the selected indexes (a path several hold appears once)."""
        return sorted({path for searcher in self.select(index) for path in searcher.files(pattern)})

    def rerank_prose(self, query: str, hits: Iterable[Hit], k: int | None = None) -> list[Hit]:
        return self._first().rerank_prose(query, hits, k)

    def definitions(self, name: str, kind: str | None = None, path: str | None = None, language: str | None = None,
                    k: int = 20, index: IndexSelection = None) -> list[Hit]:
        """``Searcher.definitions`` over the selected indexes: every index's matches, best tier first
        (scores 4 - tier; ties keep served order), at most k."""
        searchers = self.select(index)
        if len(searchers) == 1:
            return searchers[0].definitions(name, kind=kind, path=path, language=language, k=k)
        found = [hit for searcher in searchers
                 for hit in searcher.definitions(name, kind=kind, path=path, language=language, k=k)]
        return sorted(found, key=lambda hit: -hit.score)[:k]

    def outline(self, path: str, index: IndexSelection = None) -> list[dict[str, object]]:
        """``Searcher.outline`` of ``path`` in the one selected index that holds it (as read())."""
        searchers = self.select(index)
        if len(searchers) == 1:
            return searchers[0].outline(path)
        return self._holder(searchers, path).outline(path)

    def grep(self, pattern: str, path: str | None = None, ignore_case: bool = False, k: int = 100,
             deadline: float | None = None, index: IndexSelection = None) -> list[GrepMatch]:
        """``Searcher.grep`` over the selected indexes in served order, at most k matches in all;
        PathNotFoundError only when ``path`` matches a file in none of them."""
        searchers = self.select(index)
        if len(searchers) == 1:
            return searchers[0].grep(pattern, path=path, ignore_case=ignore_case, k=k, deadline=deadline)
        matches: list[GrepMatch] = []
        missing = 0
        for searcher in searchers:
            if len(matches) >= k:
                break
            try:
                matches += searcher.grep(pattern, path=path, ignore_case=ignore_case, k=k - len(matches),
                                         deadline=deadline)
            except PathNotFoundError:
                missing += 1
        if path is not None and missing == len(searchers):
            raise PathNotFoundError(path)
        return matches

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def _holder(searchers: list[Searcher], path: str) -> Searcher:
        """The one searcher holding ``path``: PathNotFoundError for none, AmbiguousPathError for several."""
        if not isinstance(path, str):
            raise QueryError(f"path must be a string, got {type(path).__name__}")
        holders = [searcher for searcher in searchers if searcher.holds(path)]
        if not holders:
            raise PathNotFoundError(path)
        if len(holders) > 1:
            raise AmbiguousPathError(path, [searcher.index_name for searcher in holders])
        return holders[0]

    def _each(self, method: str, query: str, k: int, path: str | None, language: str | None,
              index: IndexSelection) -> list[Hit]:
        searchers = self.select(index)
        rankings = [getattr(searcher, method)(query, k=k, path=path, language=language) for searcher in searchers]
        return rankings[0] if len(rankings) == 1 else self._fuse(rankings, k)

    def _fuse(self, rankings: list[list[Hit]], k: int) -> list[Hit]:
        """RRF over per-index rankings (every index weighs the same); ties keep served order."""
        keyed: list[Hit] = []
        lists = []
        for ranking in rankings:
            lists.append(list(range(len(keyed), len(keyed) + len(ranking))))
            keyed.extend(ranking)
        fused = fuse_rrf(lists, None, self.config.rrf_k)[:k]
        return [keyed[position].with_score(score) for position, score in fused]

