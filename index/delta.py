"""Per-file deltas of a served index (issue 12, fresh on every save): the current text of the files
changed since the index's current version, written beside it as a small index of the same format,
which search merges over the base until the next full build (the compaction) makes it empty.

Contract: `DeltaWriter(index_dir, config).write(docs, hidden)` writes `INDEX_DIR/delta/` (its own
`CURRENT` + `versions/`, switched atomically like a build) holding `docs` (each chunked once per
content: a save re-chunks only the saved file, the others come from a cache keyed by sha256) and a
manifest whose `delta.hidden` lists every base path search must hide: changed, deleted or no longer
indexed (a .gitignore edit). `delta.base_version` names the base version it was computed against.
`open_delta(index_dir) -> Delta | None`: the current delta (None when there is none or it is empty),
`clear_delta(index_dir)` drops it. The delta has no vectors: vectors of changed chunks follow with
the compaction, which re-embeds only chunks whose text changed (build.py reuses the rest by key).
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import hashlib

from .build import _chunk_at
from .chunk import Chunk, Symbol, chunk_file
from .config import IndexConfig
from .embed import open_token_counter, resolve_embed_model
from .errors import IndexStoreError
from .format import (
    IndexContents,
    IndexData,
    build_lock,
    new_version_name,
    open_index,
    prune_versions,
    switch_current,
    write_version,
)
from .tokenize import term_frequencies
from .walk import SourceDoc

__all__ = ["DELTA_DIR", "Delta", "DeltaWriter", "clear_delta", "open_delta"]

DELTA_DIR = "delta"
KEY_BYTES = 16  # as build.py: sha256 prefix of a chunk's indexed text
_CACHE_FILES = 20_000  # chunked files kept in memory (a branch switch touches a few thousand)


@dataclass(frozen=True)
class Delta:
    """An opened delta: its index data (None when it holds no file: deletions only), the base paths to
    hide, and the base version it was computed against."""

    data: IndexData | None
    hidden: frozenset[str]
    base_version: str | None
    version: str


class DeltaWriter:
    """Writes the delta of one index directory (see module contract); keeps chunked files cached."""

    def __init__(self, index_dir: Path, config: IndexConfig) -> None:
        self.index_dir = Path(index_dir)
        self._config = config
        self._counter: Any = None
        self._max_tokens = 0
        self._cache: dict[tuple[str, str], tuple[list[Chunk], list[Symbol]]] = {}
        self.chunked = 0  # files chunked by this writer (a cached file is not chunked again)
        self.chunks = 0  # chunks of the delta last written

    def write(self, docs: list[SourceDoc], hidden: set[str] | frozenset[str], base_version: str | None,
              root: Path) -> Path | None:
        """Write the delta holding `docs` and hiding `hidden` (base paths) and switch to it; with
        neither, drop the delta instead (None)."""
        out = self.index_dir / DELTA_DIR
        if not docs and not hidden:
            clear_delta(self.index_dir)
            self.chunks = 0
            return None
        docs = sorted(docs, key=lambda d: d.path)
        chunks: list[Chunk] = []
        per_doc: list[int] = []
        file_symbols: list[list[Symbol]] = []
        for doc in docs:
            doc_chunks, doc_symbols = self._chunk(doc)
            chunks.extend(doc_chunks)
            per_doc.append(len(doc_chunks))
            file_symbols.append(doc_symbols)
        contents = _contents(docs, chunks, per_doc, file_symbols)
        self.chunks = len(chunks)
        manifest = {
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "root": str(root),
            "sources": [str(root)],
            "files": {d.path: {"sha256": d.sha256, "mtime": d.mtime, "size": d.size, "chunks": n}
                      for d, n in zip(docs, per_doc)},
            "skipped": {},
            "models": {"embed": None},
            "ann": None,
            "delta": {"base_version": base_version, "hidden": sorted(set(hidden) | {d.path for d in docs})},
        }
        with build_lock(out, self._config.lock_wait_seconds):
            version = new_version_name()
            path = write_version(out, version, contents, manifest)
            switch_current(out, version)
            prune_versions(out, 2)
        return path

    def _chunk(self, doc: SourceDoc) -> tuple[list[Chunk], list[Symbol]]:
        key = (doc.path, doc.sha256)
        found = self._cache.get(key)
        if found is None:
            if self._counter is None:
                location = resolve_embed_model(self._config.embed_model)
                self._counter = open_token_counter(location)
                self._max_tokens = min(self._config.chunk_max_tokens, location.max_tokens)
            found = chunk_file(doc, self._counter, self._config, self._max_tokens)
            self.chunked += 1
            if len(self._cache) >= _CACHE_FILES:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = found
        return found


def _contents(docs: list[SourceDoc], chunks: list[Chunk], per_doc: list[int],
              file_symbols: list[list[Symbol]]) -> IndexContents:
    symbols, chunk_symbols = _symbol_table(chunks, per_doc, file_symbols)
    if chunks:
        vocab, tf, doc_lengths = term_frequencies(chunk.indexed_text for chunk in chunks)
    else:  # deletions only
        from scipy import sparse

        vocab, tf, doc_lengths = [], sparse.csr_matrix((0, 0), dtype=np.float32), np.zeros(0, dtype=np.float32)
    return IndexContents(
        docs=[{"doc_id": d.doc_id, "path": d.path, "language": d.language, "title": d.title} for d in docs],
        doc_texts=[d.text for d in docs],
        chunk_ids=[c.chunk_id for c in chunks],
        chunk_titles=[c.title for c in chunks],
        chunk_doc=_chunk_doc_rows(chunks, docs),
        chunk_lines=np.array([[c.start_line, c.end_line] for c in chunks], dtype=np.int32).reshape(-1, 2),
        chunk_texts=[c.text for c in chunks],
        chunk_keys=_chunk_keys(chunks),
        vocab=vocab,
        tf=tf,
        doc_lengths=doc_lengths,
        chunk_kinds=[c.kind for c in chunks],
        chunk_symbols=chunk_symbols,
        symbols=symbols,
        chunk_headers=[c.header for c in chunks],
    )


def open_delta(index_dir: Path) -> Delta | None:
    """The current delta of `index_dir`, or None (none written, or cleared). IndexStoreError when it
    exists but cannot be read."""
    out = Path(index_dir) / DELTA_DIR
    if not (out / "CURRENT").is_file():
        return None
    data = open_index(out)
    info = data.manifest.get("delta") or {}
    hidden = frozenset(info.get("hidden") or ())
    if not hidden and not data.docs:
        return None
    return Delta(data=data if data.docs else None, hidden=hidden, base_version=info.get("base_version"),
                 version=data.version_dir.name)


def clear_delta(index_dir: Path) -> None:
    """Drop the delta (after a compaction folded it into the base): CURRENT first, then the files
    (a fork server that mapped them keeps its mapping)."""
    out = Path(index_dir) / DELTA_DIR
    try:
        (out / "CURRENT").unlink(missing_ok=True)
    except OSError as exc:
        raise IndexStoreError(f"cannot clear the delta at {out}: {exc}") from exc
    shutil.rmtree(out / "versions", ignore_errors=True)


def delta_counts(delta: Delta | None) -> Counter[str]:
    """{files, chunks, hidden} of a delta (for status)."""
    if delta is None:
        return Counter()
    return Counter(files=len(delta.data.docs) if delta.data else 0,
                   chunks=delta.data.n_chunks if delta.data else 0, hidden=len(delta.hidden))


# The build's helpers for a chunk list held in memory (build.py streams; a delta is a few files).
def _symbol_table(
    chunks: list[Chunk], chunks_per_doc: list[int], file_symbols: list[list[Symbol]]
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """The index's symbol rows (format.IndexContents.symbols) and each chunk's symbol row (-1: none).

    A symbol's own chunk is the chunk titled for it (chunk.symbol), else the chunk holding its first
    line (a method of a class small enough to be one chunk), else the nearest chunk after it."""
    rows: list[dict[str, Any]] = []
    chunk_symbols = np.full(len(chunks), -1, dtype=np.int32)
    first_chunk = 0
    for doc_row, (count, found) in enumerate(zip(chunks_per_doc, file_symbols)):
        doc_chunks = chunks[first_chunk : first_chunk + count]
        if found and doc_chunks:
            ordered = sorted(found, key=lambda s: (s.start_line, -s.end_line, s.qualified_name))
            starts = [c.start_line for c in doc_chunks]
            base = len(rows)
            by_name: dict[str, list[int]] = {}
            for offset, symbol in enumerate(ordered):
                by_name.setdefault(symbol.qualified_name, []).append(base + offset)
            own: dict[int, int] = {}  # symbol row -> chunk row
            for position, chunk in enumerate(doc_chunks):
                candidates = by_name.get(chunk.symbol or "", [])
                if not candidates:
                    continue
                row = next((r for r in candidates if ordered[r - base].start_line <= chunk.end_line
                            and ordered[r - base].end_line >= chunk.start_line), candidates[0])
                chunk_symbols[first_chunk + position] = row
                own.setdefault(row, first_chunk + position)
            for offset, symbol in enumerate(ordered):
                row = base + offset
                parents = by_name.get(symbol.parent or "", [])
                parent = max((r for r in parents if r < row), default=-1)
                rows.append({
                    "name": symbol.name, "qualified_name": symbol.qualified_name, "kind": symbol.kind,
                    "doc": doc_row, "start_line": symbol.start_line, "end_line": symbol.end_line,
                    "parent": parent, "chunk": own.get(row, first_chunk + _chunk_at(doc_chunks, starts, symbol.start_line)),
                })
        first_chunk += count
    return rows, chunk_symbols


def _chunk_doc_rows(chunks: list[Chunk], docs: list[SourceDoc]) -> np.ndarray:
    rows = {d.doc_id: i for i, d in enumerate(docs)}
    return np.array([rows[c.doc_id] for c in chunks], dtype=np.int32)


def _chunk_keys(chunks: list[Chunk]) -> np.ndarray:
    keys = np.zeros((len(chunks), KEY_BYTES), dtype=np.uint8)
    for i, chunk in enumerate(chunks):
        keys[i] = np.frombuffer(hashlib.sha256(chunk.indexed_text.encode("utf-8")).digest()[:KEY_BYTES], np.uint8)
    return keys
