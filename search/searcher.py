"""Searcher: the shell that composes BM25, vectors, fusion, filters and rerank over one index.

Contract: ``Searcher.open`` maps the index, derives BM25 weights and (with ``load_models``) opens
the query encoder the index carries and the cross-encoder, each one single-threaded onnxruntime
session: no inference thread pool is started, so the fork server may open it, ``warm_before_fork()``
and fork, and every child runs the same sessions (reranking spreads pairs over ``config.threads``
Python threads of the call). Every ranked list is score descending, ties → ascending chunk position.
Filters (path glob, language) apply before any cut to k, in every mode.

Honest hybrid (issue 12): ``vector_coverage`` is the share of chunks with a vector. Without vectors
(``--no-vectors``, or still being built in the background) ``semantic`` raises QueryError saying so and
``hybrid`` ranks with BM25 alone; with some, ``semantic`` ranks only chunks that hold a vector and
``hybrid`` fuses BM25 over every chunk with vectors over those. Callers report the coverage
(search_code's ``coverage``), so a downgrade is never silent.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from index import (
    IndexFormatError,
    QdrantLocation,
    QdrantUnavailableError,
    connect_qdrant,
    open_index,
    open_index_embedder,
    read_backend,
    resolve_embed_model,
    tokenize,
)

from .coderank import rerank_code
from .config import SEARCH_MODES, SearchConfig
from .dense import DenseIndex
from .errors import PathNotFoundError, QueryError
from .filters import chunk_mask, compile_glob, doc_mask
from .fusion import fuse_rrf
from .grep import GREP_MAX_K, GrepMatch, compile_grep_pattern, grep_docs
from .hits import DEFAULT_INDEX_NAME, Hit, merge_overlapping
from .rerank import PROSE_LANGUAGES, CrossEncoder, resolve_rerank_model
from .remote import BrokeredRetriever, BrokerLink
from .retrievers import EdgeRetriever, InProcessRetriever, QdrantRetriever
from .sparse import SparseScorer
from .symbols import SymbolLookup, check_symbol_name, outline_rows, symbol_filter

__all__ = ["Searcher"]

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 10_000
_CACHE_ENTRIES = 64


class _LruCache(OrderedDict):
    """A tiny bounded mapping: filters and query vectors repeat within one agent program."""

    def __init__(self, max_entries: int) -> None:
        super().__init__()
        self.max_entries = max_entries

    def remember(self, key: object, value: object) -> object:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.max_entries:
            self.popitem(last=False)
        return value


class Searcher:
    """Queries over one opened index version (see module docstring)."""

    def __init__(
        self,
        data: object,
        config: SearchConfig,
        sparse: SparseScorer | None,
        dense: DenseIndex | None,
        embedder: object | None,
        cross_encoder: CrossEncoder | None,
        name: str = DEFAULT_INDEX_NAME,
        retriever: InProcessRetriever | QdrantRetriever | EdgeRetriever | BrokeredRetriever | None = None,
    ) -> None:
        self.data = data
        self.config = config
        # The backend seam (search/retrievers.py): first-stage rankings in-process or in Qdrant.
        self._retriever = retriever if retriever is not None else InProcessRetriever(sparse, dense)
        self._embedder = embedder
        self._cross_encoder = cross_encoder
        self._masks = _LruCache(_CACHE_ENTRIES)
        self._query_vectors = _LruCache(_CACHE_ENTRIES)
        self._symbol_lookup: SymbolLookup | None = None
        self.index_name = name  # the name hits carry (see search.IndexSet)
        # Docs a delta replaces or deletes (search/overlay.py): bool per doc, and per chunk the live ones.
        self._hidden: np.ndarray | None = None
        self._live: np.ndarray | None = None

    def with_hidden(self, paths: Iterable[str]) -> Searcher:
        """A copy of this searcher (sharing the index, postings and models) that treats the documents
        at ``paths`` as absent: no hit, grep line, definition, file or read() comes from them. Used by
        search/overlay.py to put a delta's newer text in their place."""
        rows = [self.data.doc_index[path] for path in paths if path in self.data.doc_index]
        clone = copy.copy(self)
        clone._masks = _LruCache(_CACHE_ENTRIES)
        if rows:
            hidden = np.zeros(len(self.data.docs), dtype=bool)
            hidden[rows] = True
            clone._hidden = hidden
            clone._live = ~hidden[np.asarray(self.data.chunk_doc)]
        return clone

    @property
    def live_chunks(self) -> int:
        """Chunks not hidden by with_hidden()."""
        return int(self.data.n_chunks if self._live is None else np.count_nonzero(self._live))

    @property
    def live_vectors(self) -> int:
        """Chunks not hidden that hold a vector."""
        if not self._retriever.has_dense:
            return 0
        present = np.asarray(self.data.vector_mask, dtype=bool)
        return int(np.count_nonzero(present if self._live is None else present & self._live))

    # ----------------------------------------------------------------- construction
    @classmethod
    def open(
        cls, index_dir: str | Path, config: SearchConfig | None = None, load_models: bool = True, *,
        name: str = DEFAULT_INDEX_NAME, cross_encoder: CrossEncoder | None = None, qdrant_api_key: str | None = None,
        broker: BrokerLink | None = None,
    ) -> Searcher:
        """Open the current version of the index at index_dir.

        load_models=False skips the embedder and the cross-encoder: only bm25, read and files work.
        ``name`` is the served index's name that every hit carries; ``cross_encoder`` shares one already
        opened (several indexes, one reranker). An index built with ``--backend qdrant`` ranks in its
        Qdrant collection (``qdrant_api_key`` for a server that needs one), or, given a ``broker`` (the
        fork server: no network, no key), through the server's query broker (search/remote.py). Raises
        index.IndexNotFoundError / IndexFormatError (exit 3), a ModelMissingError (exit 4),
        index.QdrantUnavailableError (exit 3).
        """
        return cls.from_index(
            open_index(Path(index_dir)), config, load_models=load_models, name=name, cross_encoder=cross_encoder,
            qdrant_api_key=qdrant_api_key, broker=broker,
        )

    @classmethod
    def from_index(
        cls, data: object, config: SearchConfig | None = None, load_models: bool = True, *,
        name: str = DEFAULT_INDEX_NAME, cross_encoder: CrossEncoder | None = None, qdrant_api_key: str | None = None,
        broker: BrokerLink | None = None,
    ) -> Searcher:
        """Build a Searcher over an already opened ``index.IndexData``."""
        config = SearchConfig() if config is None else config
        backend = read_backend(data.path)
        retriever = sparse = dense = None
        if backend is not None and broker is not None:
            _check_qdrant_copy(data, backend, config)
            retriever = BrokeredRetriever(broker, name, data.version_dir.name, data.vectors is not None, data.term_ids,
                                          data.n_chunks)
        elif backend is not None:
            retriever = _open_qdrant_retriever(data, backend, config, qdrant_api_key)
        else:
            sparse = SparseScorer.from_index(data, config.bm25_variant, config.k1, config.b, config.okapi_epsilon)
            dense = DenseIndex.from_index(data)
        embedder = None
        if load_models:
            if data.vectors is not None:
                _check_embed_model(data, config)
                embedder = open_index_embedder(data, threads=1)
        if load_models and cross_encoder is None:
            cross_encoder = CrossEncoder.open(
                resolve_rerank_model(config.rerank_model),
                threads=config.threads,
                max_tokens=config.rerank_max_tokens,
                query_max_tokens=config.rerank_query_max_tokens,
                batch_size=config.rerank_batch_size,
            )
        return cls(data, config, sparse, dense, embedder, cross_encoder if load_models else None, name, retriever)

    def close(self) -> None:
        """Release the backend's connection (a Qdrant client, an edge shard); in-process: nothing."""
        self._retriever.close()

    def warm_before_fork(self) -> None:
        """In the fork server, single-threaded: embed one query and score one pair, so every child
        inherits sessions whose lazy initialisation is done instead of each paying for it."""
        if getattr(self.data, "symbols", None) is not None:
            self._symbols()
        if self._embedder is not None:
            self._embedder.encode(["warm up"])
        if self._cross_encoder is not None:
            self._cross_encoder.warm()

    @property
    def has_vectors(self) -> bool:
        """True when the index holds vectors (built without --no-vectors)."""
        return self._retriever.has_dense

    @property
    def vector_coverage(self) -> float:
        """Fraction of chunks with a vector (0.0 without vectors, 1.0 when complete): semantic ranks only
        those chunks and hybrid fuses BM25 over every chunk with vectors over those (see _rank_hybrid)."""
        return float(self.data.vector_coverage) if self._retriever.has_dense else 0.0

    @property
    def has_models(self) -> bool:
        """True when the cross-encoder was loaded (and the embedder, if the index has vectors)."""
        return self._cross_encoder is not None

    # ----------------------------------------------------------------- public queries
    def bm25(self, query: str, k: int = 10, path: str | None = None, language: str | None = None) -> list[Hit]:
        """BM25 hits (scores: BM25); only chunks sharing a term with the query."""
        query, k = _check_query(query), _check_k(k)
        return self._hits(*self._rank_bm25(query, k, self._mask(path, language)))

    def semantic(self, query: str, k: int = 10, path: str | None = None, language: str | None = None) -> list[Hit]:
        """Nearest chunks by embedding (scores: cosine similarity)."""
        query, k = _check_query(query), _check_k(k)
        return self._hits(*self._rank_dense(query, k, self._mask(path, language)))

    def hybrid(self, query: str, k: int = 10, path: str | None = None, language: str | None = None) -> list[Hit]:
        """BM25 and vector rankings fused by weighted RRF (scores: fused RRF)."""
        query, k = _check_query(query), _check_k(k)
        return self._hits(*self._rank_hybrid(query, k, self._mask(path, language)))

    def search(
        self,
        query: str,
        k: int = 10,
        mode: str = "hybrid",
        rerank: bool = True,
        path: str | None = None,
        language: str | None = None,
    ) -> list[Hit]:
        """First-stage search in ``mode``, then (if rerank) the second stage: code hits among the top
        code_rerank_depth reordered by definition names (search/coderank.py), then the cross-encoder
        over the prose among the top max(k, rerank_depth), cut to k (see ``rerank_prose``). Hits whose lines overlap a
        better hit of the same file are folded into it (`merge_overlapping`), so k hits are k distinct
        regions."""
        query, k = _check_query(query), _check_k(k)
        if mode not in SEARCH_MODES:
            raise QueryError(f"unknown mode {mode!r}; use one of {', '.join(SEARCH_MODES)}")
        if not isinstance(rerank, bool):
            raise QueryError(f"rerank must be True or False, got {rerank!r}")
        if rerank:
            self._require_cross_encoder()
        depth = max(k, self.config.rerank_depth) if rerank else k
        pool = max(depth, self.config.code_rerank_depth) if rerank else depth
        mask = self._mask(path, language)
        rank = {"bm25": self._rank_bm25, "semantic": self._rank_dense, "hybrid": self._rank_hybrid}[mode]
        # Merge before the cross-encoder (it then scores each region once); four times the depth
        # leaves room for what merging folds away (first-stage depth is cheap).
        hits = merge_overlapping(self._hits(*rank(query, 4 * pool, mask)), self._read_lines)[:pool]
        if not rerank:
            return hits[:k]
        return self.rerank_prose(query, rerank_code(query, hits, self.config)[:depth], k)

    def rerank_prose(self, query: str, hits: Iterable[Hit], k: int | None = None) -> list[Hit]:
        """The cross-encoder reorders the prose hits (PROSE_LANGUAGES) among the places prose holds;
        code hits keep their first-stage places. The MS MARCO model, trained on web prose, lowers
        code rankings at every depth tried (benchmarks/RESULTS.md, "Ranking for code"), so a code
        answer is exactly where rerank=False puts it, while an all-prose list (SciFact) is reranked
        as before. Scores: logits when every hit is prose; in a mixed list each hit takes the
        first-stage score of its place, so the list stays score-descending."""
        hits = [_as_hit(hit) for hit in hits]
        self._require_cross_encoder()
        prose = [place for place, hit in enumerate(hits) if hit.language in PROSE_LANGUAGES]
        if len(prose) == len(hits):
            return self._cross_encoder.rerank(query, hits, k)
        if not prose:
            return hits[:k]
        reranked = self._cross_encoder.rerank(query, [hits[place] for place in prose])
        placed = list(hits)
        for place, hit in zip(prose, reranked):
            placed[place] = hit.with_score(hits[place].score)
        return placed[:k]

    def rerank(self, query: str, hits: Iterable[Hit | Mapping[str, object]], k: int | None = None) -> list[Hit]:
        """New hits scored by the cross-encoder logit, best first, cut to k (None = all)."""
        query = _check_query(query)
        if k is not None:
            k = _check_k(k)
        self._require_cross_encoder()
        return self._cross_encoder.rerank(query, [_as_hit(hit) for hit in hits], k)

    def read(self, path: str, start_line: int = 1, end_line: int | None = None) -> str:
        """Lines start_line..end_line (1-based, inclusive; None = to the end) of an indexed file.

        Raises PathNotFoundError (a LookupError) for an unknown path and QueryError (a ValueError)
        for a bad range. end_line past the end is clamped.
        """
        if not isinstance(path, str):
            raise QueryError(f"path must be a string, got {type(path).__name__}")
        doc = self._doc_row(path)
        if doc is None:
            raise PathNotFoundError(path)
        start_line = _check_line("start_line", start_line)
        if end_line is not None:
            end_line = _check_line("end_line", end_line)
            if end_line < start_line:
                raise QueryError(f"end_line {end_line} is before start_line {start_line}")
        lines = _split_lines(self.data.doc_text(doc))
        if start_line > max(len(lines), 1):
            raise QueryError(f"start_line {start_line} is past the end of {path} ({len(lines)} lines)")
        return "".join(lines[start_line - 1 : end_line])

    def holds(self, path: str) -> bool:
        """True when ``path`` is an indexed file (as read() would find it)."""
        return self._doc_row(path) is not None

    def _doc_row(self, path: str) -> int | None:
        doc = self.data.doc_index.get(path)
        doc = self.data.doc_index.get(path.removeprefix("./")) if doc is None else doc
        return None if doc is None or (self._hidden is not None and self._hidden[doc]) else doc

    def _read_lines(self, path: str, start_line: int, end_line: int) -> str:
        return self.read(path, start_line, end_line).rstrip("\n")

    def files(self, pattern: str = "**/*") -> list[str]:
        """Sorted indexed paths matching a glob (rule in search/filters.py)."""
        matcher = compile_glob(pattern)
        hidden = self._hidden
        return sorted(doc["path"] for row, doc in enumerate(self.data.docs)
                      if (hidden is None or not hidden[row]) and matcher.match(doc["path"]))

    def grep(self, pattern: str, path: str | None = None, ignore_case: bool = False, k: int = 100,
             deadline: float | None = None) -> list[GrepMatch]:
        """Lines matching an RE2 ``pattern`` in files matching the ``path`` glob, in path then line order
        (rules in search/grep.py). QueryError for a refused pattern or k outside [1, 1000];
        PathNotFoundError when ``path`` matches no indexed file; GrepTimeoutError at ``deadline``."""
        regex = compile_grep_pattern(pattern, ignore_case)
        k = _check_k(k)
        if k > GREP_MAX_K:
            raise QueryError(f"k must be at most {GREP_MAX_K} for grep, got {k}")
        paths = [doc["path"] for doc in self.data.docs]
        if path is None:
            rows = np.arange(len(paths), dtype=np.int64)
        else:
            rows = np.flatnonzero(doc_mask(paths, (), path, None))
        if self._hidden is not None:
            rows = rows[~self._hidden[rows]]
        if path is not None and len(rows) == 0:
            raise PathNotFoundError(path)
        blob, offsets = self.data.doc_bytes()
        return grep_docs(regex, blob, offsets, paths, rows, k, deadline)

    def definitions(self, name: str, kind: str | None = None, path: str | None = None, language: str | None = None,
                    k: int = 20) -> list[Hit]:
        """One hit per definition named ``name``: exact, then case-insensitive, then glob matches on names
        and qualified names (tiers in search/symbols.py); scores 4 - tier. A hit is the definition's own
        chunk (id, lines, text: a small method may share its class's chunk) with ``symbol`` and ``kind``
        of the definition found, not of the chunk."""
        name, k = check_symbol_name(name), _check_k(k)
        lookup = self._symbols()
        allowed = symbol_filter(self.data, self.data.kinds, kind, path, language)
        table = self.data.symbols
        if self._hidden is not None:
            live = ~self._hidden[np.asarray(table.doc)]
            allowed = live if allowed is None else allowed & live
        found = lookup.find(name, allowed, k)
        rows = [row for row, _ in found]
        chunks = np.asarray([int(table.chunk[row]) for row in rows], dtype=np.int64)
        hits = self._hits(chunks, np.asarray([float(4 - tier) for _, tier in found], dtype=np.float64))
        return [
            dataclasses.replace(hit, symbol=lookup.qualified[row], kind=table.kind_name(row))
            for hit, row in zip(hits, rows)
        ]

    def outline(self, path: str) -> list[dict[str, object]]:
        """``{symbol, kind, start_line, end_line}`` of the symbols of one indexed file, in file order."""
        if not isinstance(path, str) or path.strip().removeprefix("./") not in self.data.doc_index:
            return outline_rows(self.data, path)  # its error: not a string, or not an indexed path
        if self._doc_row(path.strip()) is None:
            raise PathNotFoundError(path)  # hidden: a delta replaced or deleted it
        self._symbols()
        return outline_rows(self.data, path)

    def _symbols(self) -> SymbolLookup:
        if getattr(self.data, "symbols", None) is None:
            raise QueryError("this index has no symbol table (built before index format 3); rebuild it with "
                             "`knowledge-mcp index build` to use definitions() and outline()")
        if self._symbol_lookup is None:
            self._symbol_lookup = SymbolLookup.from_index(self.data)
        return self._symbol_lookup

    # ----------------------------------------------------------------- ranked chunk ids
    def _rank_bm25(self, query: str, depth: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        return self._retriever.bm25(tokenize(query), depth, mask)

    def _rank_dense(self, query: str, depth: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        self._require_dense()
        return self._retriever.dense(self._query_vector(query), depth, self._with_vectors(mask))

    def _with_vectors(self, mask: np.ndarray | None) -> np.ndarray | None:
        """`mask` narrowed to the chunks that hold a vector (a row without one is all zeros: it must
        never rank as a semantic match)."""
        if self.vector_coverage >= 1.0:
            return mask
        present = np.asarray(self.data.vector_mask, dtype=bool)
        return present if mask is None else mask & present

    def _require_dense(self) -> None:
        if not self._retriever.has_dense:
            raise QueryError(
                "this index has no vectors yet: they are still being built in the background "
                "(index_status shows vector_coverage rising), or it was built with --no-vectors; semantic "
                "search is unavailable until then. Use mode='hybrid' or 'bm25' (or bm25()); hybrid ranks with "
                "BM25 alone while vector coverage is 0"
            )
        if self._embedder is None:
            raise QueryError(
                "semantic and hybrid search need the embedding model, which this searcher did not load "
                "(load_models=False); use mode='bm25'"
            )

    def _rank_hybrid(self, query: str, depth: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        # Honest hybrid (issue 12): without vectors (coverage 0, e.g. while they are built in the
        # background) it is BM25 alone; with some, BM25 over every chunk fused with vectors over those
        # that have one. `vector_coverage` says which, and search_code reports it.
        if not self._retriever.has_dense:
            return self._rank_bm25(query, depth, mask)
        self._require_dense()
        terms, vector, candidates = tokenize(query), self._query_vector(query), max(depth, self.config.candidates)
        if self.vector_coverage >= 1.0:
            return self._retriever.hybrid(terms, vector, depth, candidates, self.config.fusion_weights,
                                          self.config.rrf_k, mask)
        sparse_ids, _ = self._retriever.bm25(terms, candidates, mask)
        dense_ids, _ = self._retriever.dense(vector, candidates, self._with_vectors(mask))
        fused = fuse_rrf([sparse_ids.tolist(), dense_ids.tolist()], self.config.fusion_weights,
                         self.config.rrf_k)[:depth]
        return (np.fromiter((chunk for chunk, _ in fused), dtype=np.int64, count=len(fused)),
                np.fromiter((score for _, score in fused), dtype=np.float64, count=len(fused)))

    # ----------------------------------------------------------------- helpers
    def _query_vector(self, query: str) -> np.ndarray:
        vector = self._query_vectors.get(query)
        if vector is None:
            vector = self._query_vectors.remember(
                query, self._embedder.encode([query])[0]
            )
        return vector

    def _mask(self, path: str | None, language: str | None) -> np.ndarray | None:
        key = (path, language)
        if key not in self._masks:
            mask = chunk_mask(self.data, path, language)
            if self._live is not None:
                mask = self._live if mask is None else mask & self._live
            return self._masks.remember(key, mask)
        return self._masks[key]

    def _require_cross_encoder(self) -> None:
        if self._cross_encoder is None:
            raise QueryError(
                "reranking needs the cross-encoder, which this searcher did not load (load_models=False); "
                "pass rerank=False"
            )

    def _hits(self, chunk_ids: np.ndarray, scores: np.ndarray) -> list[Hit]:
        data = self.data
        chunk_ids = np.asarray(chunk_ids, dtype=np.int64)
        # One fancy index per array: element access on np.memmap costs microseconds each.
        doc_rows = np.asarray(data.chunk_doc)[chunk_ids].tolist()
        line_pairs = np.asarray(data.chunk_lines)[chunk_ids].tolist()
        kinds = [data.kinds[code] for code in np.asarray(data.chunk_kind)[chunk_ids].tolist()]
        symbols = [data.symbols.qualified_name(row) if row >= 0 else None
                   for row in np.asarray(data.chunk_symbol)[chunk_ids].tolist()]
        hits = []
        for chunk, doc_row, (start_line, end_line), score, kind, symbol in zip(
                chunk_ids.tolist(), doc_rows, line_pairs, scores.tolist(), kinds, symbols):
            doc = data.docs[doc_row]
            hits.append(
                Hit(
                    id=data.chunk_ids[chunk],
                    doc_id=str(doc["doc_id"]),
                    path=doc["path"],
                    start_line=start_line,
                    end_line=end_line,
                    language=doc["language"],
                    title=data.chunk_titles[chunk],
                    score=float(score),
                    text=data.chunk_text(chunk),
                    kind=kind,
                    symbol=symbol,
                    index=self.index_name,
                )
            )
        return hits


def _open_qdrant_retriever(data: object, backend: Mapping[str, object], config: SearchConfig,
                           api_key: str | None) -> QdrantRetriever | EdgeRetriever:
    """The retriever of an index built with --backend qdrant: this version's collection, checked."""
    version = data.version_dir.name
    collection = _check_qdrant_copy(data, backend, config)
    location = QdrantLocation(collection=str(backend["collection"]), url=backend.get("url"), path=backend.get("path"),
                              edge=backend.get("engine") == "edge")
    if location.edge:
        return _open_edge_retriever(data, Path(str(location.path)) / str(collection), location)
    client = connect_qdrant(location, api_key)
    if not client.collection_exists(collection):
        client.close()
        raise QdrantUnavailableError(
            f"Qdrant at {location.where} has no collection {collection!r} (version {version} of {data.path}); "
            f"rebuild with `knowledge-mcp index build ... --out {data.path} --backend qdrant`"
        )
    return QdrantRetriever(client, collection, data.vectors is not None, data.term_ids, location.where)


def _check_qdrant_copy(data: object, backend: Mapping[str, object], config: SearchConfig) -> str:
    """The served version's collection; IndexFormatError / QueryError when the copy cannot serve it."""
    version = data.version_dir.name
    collection = (backend.get("versions") or {}).get(version)
    if collection is None:
        raise IndexFormatError(
            data.path, f"no Qdrant collection for version {version}", "one written by `index build --backend qdrant`",
            what="Qdrant copy",
        )
    built = backend.get("bm25") or {}
    if config.bm25_variant != "lucene" or (built.get("k1"), built.get("b")) != (config.k1, config.b):
        raise QueryError(
            f"this index's Qdrant copy holds Lucene BM25 with k1={built.get('k1')}, b={built.get('b')}; "
            f"the search config asks for {config.bm25_variant} k1={config.k1}, b={config.b} (rebuild to change them)"
        )
    return str(collection)


def _open_edge_retriever(data: object, shard_dir: Path, location: QdrantLocation) -> EdgeRetriever:
    if not shard_dir.is_dir():
        raise QdrantUnavailableError(
            f"no qdrant-edge shard {shard_dir.name!r} under {location.path} (version {data.version_dir.name} of "
            f"{data.path}); rebuild with `knowledge-mcp index build ... --out {data.path} --backend qdrant`"
        )
    import qdrant_edge

    shard = qdrant_edge.EdgeShard.load(str(shard_dir))
    return EdgeRetriever(shard, data.vectors is not None, data.term_ids, f"edge shard {shard_dir}")


def _check_embed_model(data: object, config: SearchConfig) -> None:
    """A configured embedding model must be the one that embedded the index (the index carries
    that model's encoder, which embeds the queries); None accepts the index's own."""
    if config.embed_model is None:
        return
    location = resolve_embed_model(config.embed_model)
    built_with = (data.manifest.get("models") or {}).get("embed") or {}
    if built_with.get("sha256") not in (None, location.sha256) or built_with.get("dim") not in (None, location.dim):
        raise IndexFormatError(
            data.path,
            built_with.get("id"),
            location.model_id,
            what="embedding model (queries must be embedded by the model that embedded the chunks)",
        )


def _split_lines(text: str) -> list[str]:
    """Lines with their "\n" ends, numbered as the chunker numbers them (split on "\n" only)."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    return lines + [parts[-1]] if parts[-1] else lines


def _check_query(query: object) -> str:
    if not isinstance(query, str):
        raise QueryError(f"query must be a string, got {type(query).__name__}")
    if not query.strip():
        raise QueryError("query is empty; pass some words to search for")
    if len(query) > MAX_QUERY_CHARS:
        raise QueryError(f"query is {len(query)} characters; the limit is {MAX_QUERY_CHARS}")
    return query


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise QueryError(f"k must be an integer >= 1, got {k!r}")
    return int(k)


def _check_line(name: str, line: object) -> int:
    if isinstance(line, bool) or not isinstance(line, (int, np.integer)) or line < 1:
        raise QueryError(f"{name} must be an integer >= 1 (lines are 1-based), got {line!r}")
    return int(line)


_HIT_FIELDS = frozenset(Hit.__dataclass_fields__)
_REQUIRED_HIT_FIELDS = frozenset(
    name for name, spec in Hit.__dataclass_fields__.items() if spec.default is dataclasses.MISSING
)


def _as_hit(hit: Hit | Mapping[str, object]) -> Hit:
    if isinstance(hit, Hit):
        return hit
    if isinstance(hit, Mapping) and _REQUIRED_HIT_FIELDS <= set(hit):
        return Hit(**{name: hit[name] for name in _HIT_FIELDS if name in hit})
    raise QueryError(
        "rerank() takes hits returned by search(), bm25(), semantic() or hybrid() "
        f"(or dicts with the fields {', '.join(sorted(_REQUIRED_HIT_FIELDS))}), got {type(hit).__name__}"
    )
