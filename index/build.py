"""build_index: walk → chunk → tokenize → embed (only new chunk texts) → write a version → switch.

Contract: the whole build runs under OUT/.lock; the new version becomes current only once complete
(format.py), so an exception or Ctrl-C anywhere leaves the previous version current and intact.
Vectors are reused from the current version for every chunk whose indexed text (sha256) and
encoder (the ONNX export's sha256) are unchanged, so a rebuild of unchanged sources embeds nothing
and an incremental build equals a fresh one. Every version carries the encoder that made its
vectors (export.py), reused from the current version when the weights have not changed. An empty
corpus writes nothing (SourceError).
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from .chunk import Chunk, Symbol, chunk_file
from .config import IndexConfig
from .embed import Embedder, ModelLocation, ModelTokenCounter, load_embedder, open_token_counter, resolve_embed_model
from .errors import IndexLockedError, IndexStoreError, SourceError
from .export import RECIPE, EncoderFiles, prepare_encoder
from .format import (
    CHUNK_HEADER_FILE,
    ENCODER_FILE,
    ENCODER_TOKENIZER_FILE,
    SPOOL_PREFIX,
    BlobWriter,
    IndexContents,
    PreviousVersion,
    TextBlob,
    build_lock,
    check_output_dir,
    new_version_name,
    open_previous,
    prune_versions,
    switch_current,
    write_version,
)
from .tokenize import term_frequencies
from .walk import SourceDoc, source_root, walk_sources

__all__ = ["BuildReport", "build_index", "write_index"]

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]
PROGRESS_STEP = 0.01  # report every 1% of a stage
KEY_BYTES = 16  # sha256 prefix of a chunk's indexed text: the vector reuse key
EMBED_BATCH = 4096  # texts tokenized and embedded per call: bounds the texts in memory at once
ANN_M = 32
ANN_EF_CONSTRUCTION = 80
ANN_EF_SEARCH = 64
ANN_RECALL_QUERIES = 200
ANN_RECALL_K = 10


@dataclass(frozen=True, slots=True)
class BuildReport:
    """What one build did. `skipped` counts skipped files by reason (walk.SKIP_REASONS)."""

    out: Path
    version: str
    root: Path
    files_indexed: int
    files_skipped: int
    skipped: dict[str, int]
    chunks: int
    chunks_embedded: int
    chunks_reused: int
    has_vectors: bool
    ann_recall_at_10: float | None
    seconds: float
    embed_seconds: float
    chunks_pending: int = 0  # --vectors later: chunks left without a vector for `index embed`

    @property
    def files_seen(self) -> int:
        """Files (and records) looked at: indexed + skipped."""
        return self.files_indexed + self.files_skipped

    def summary(self) -> str:
        """A few human lines for the CLI."""
        skipped = ", ".join(f"{reason} {count}" for reason, count in sorted(self.skipped.items())) or "none"
        vectors = (
            f"vectors: {self.chunks_reused} reused, {self.chunks_pending} left for `index embed`"
            if self.chunks_pending
            else f"vectors: {self.chunks_embedded} embedded, {self.chunks_reused} reused"
            + (f" in {self.embed_seconds:.1f}s" if self.chunks_embedded else "")
            if self.has_vectors
            else "vectors: none (--no-vectors: BM25 only)"
        )
        lines = [
            f"index built at {self.out} (version {self.version}) in {self.seconds:.1f}s",
            f"root: {self.root}",
            f"files: {self.files_indexed} indexed, {self.files_skipped} skipped ({skipped})",
            f"chunks: {self.chunks}; {vectors}",
        ]
        if self.ann_recall_at_10 is not None:
            lines.append(f"approximate vector index: recall@10 {self.ann_recall_at_10:.3f} against exact search")
        return "\n".join(lines)


def build_index(
    sources: Sequence[Path | str], out: Path | str, config: IndexConfig | None = None,
    on_progress: Progress | None = None,
) -> BuildReport:
    """Build or incrementally update the index at `out` from `sources` (see module docstring).

    on_progress(stage, fraction): called from this thread as the build goes ("chunking" over files,
    "embedding" over the chunks to embed; fraction in [0, 1]), at most every PROGRESS_STEP.

    Raises SourceError (exit 2), IndexLockedError (exit 2), ModelMissingError (exit 4).
    """
    started = time.perf_counter()
    config = IndexConfig() if config is None else config
    sources = [Path(s) for s in sources]
    root = source_root(sources)
    out = Path(out).expanduser().absolute()
    config = _exclude_output(config, out, root)
    check_output_dir(out, config.force)
    with _removed_if_failed(out), build_lock(out, config.lock_wait_seconds), contextlib.ExitStack() as stack:
        location = resolve_embed_model(config.embed_model)
        counter = open_token_counter(location)
        max_tokens = min(config.chunk_max_tokens, location.max_tokens)
        skipped: Counter[str] = Counter()
        spool = stack.enter_context(_spool_folder(out))
        docs, walked, positions = _spool_docs(sources, config, skipped, spool)
        if not docs:
            raise SourceError(_empty_corpus_message(sources, skipped))
        corpus = _chunk_corpus(docs, walked, positions, counter, config, max_tokens, spool, on_progress)
        if not corpus.chunk_ids:
            raise SourceError(f"the documents under {root} produced no text to index (all blank)")
        walked.path.unlink()  # every text is in the sorted blobs now
        keys, vocab, tf, doc_lengths = corpus.keys, corpus.vocab, corpus.tf, corpus.doc_lengths
        chunks_per_doc = corpus.chunks_per_doc
        vectors, embedded, reused, embed_seconds, encoder = None, 0, 0, 0.0, None
        vector_mask = None
        if config.with_vectors and config.vectors_later:
            # Keyword index now; `index embed` fills the vectors the current version cannot lend.
            current = None if config.force else _current_version(out)
            encoder = _current_encoder(current, location, config)
            previous = _previous_vectors(current, encoder) if encoder is not None else None
            if previous is not None:
                vectors, vector_mask, reused = _reused_vectors(keys, previous, location.dim)
            if not reused:
                vectors, vector_mask, encoder = None, None, None
        elif config.with_vectors:
            current = None if config.force else _current_version(out)
            encoder = _encoder(current, location, config)
            previous = _previous_vectors(current, encoder)
            vectors, embedded, reused, embed_seconds = _vectors(corpus.indexed_text, keys, previous, location, encoder,
                                                                config, on_progress)
        # No approximate index over a partly filled matrix (`index embed` builds it when all are there).
        is_complete = vector_mask is None or bool(vector_mask.all())
        ann, ann_info = _approximate_index(vectors, config) if is_complete else (None, None)
        contents = IndexContents(
            docs=[{"doc_id": d.doc_id, "path": d.path, "language": d.language, "title": d.title} for d in docs],
            doc_texts=corpus.doc_texts,
            chunk_ids=corpus.chunk_ids,
            chunk_titles=corpus.chunk_titles,
            chunk_doc=corpus.chunk_doc,
            chunk_lines=corpus.chunk_lines,
            chunk_texts=corpus.chunk_texts,
            chunk_keys=keys,
            vocab=vocab,
            tf=tf,
            doc_lengths=doc_lengths,
            vectors=vectors,
            ann=ann,
            encoder=_encoder_artefacts(encoder),
            chunk_kinds=corpus.chunk_kinds,
            chunk_symbols=corpus.chunk_symbols,
            symbols=corpus.symbols,
            vector_mask=vector_mask,
            chunk_headers=corpus.chunk_headers,
        )
        manifest = _manifest(sources, root, docs, chunks_per_doc, location, encoder, config, max_tokens, vectors,
                             ann_info, skipped, tf)
        if config.with_vectors and config.vectors_later and (vector_mask is None or not vector_mask.all()):
            manifest["vectors_later"] = {"embed_model": config.embed_model, "precision": config.embed_precision}
        version = new_version_name()
        write_version(out, version, contents, manifest)
        switch_current(out, version)
        prune_versions(out, config.keep_versions)
    report = BuildReport(
        out=out,
        version=version,
        root=root,
        files_indexed=len(docs),
        files_skipped=sum(skipped.values()),
        skipped=dict(sorted(skipped.items())),
        chunks=len(corpus.chunk_ids),
        chunks_embedded=embedded,
        chunks_reused=reused,
        has_vectors=vectors is not None,
        chunks_pending=len(corpus.chunk_ids) - reused if config.with_vectors and config.vectors_later else 0,
        ann_recall_at_10=ann_info["recall_at_10"] if ann_info else None,
        seconds=round(time.perf_counter() - started, 3),
        embed_seconds=round(embed_seconds, 3),
    )
    log.debug("%s", report.summary())
    return report


def write_index(
    out: Path | str, contents: IndexContents, manifest: dict[str, Any] | None = None, config: IndexConfig | None = None
) -> Path:
    """Write prepared `contents` (a generated corpus: benchmarks, tests) as the new current version at
    `out`, the way a build writes one: under the build lock, with the approximate vector index above
    ``config.approx_threshold`` chunks and, beside vectors, the encoder of ``config.embed_model``
    (so queries can be embedded). `manifest` adds keys. Returns the version directory."""
    config = IndexConfig() if config is None else config
    out = Path(out).expanduser().absolute()
    check_output_dir(out, config.force)
    with build_lock(out, config.lock_wait_seconds):
        location = resolve_embed_model(config.embed_model)
        encoder = prepare_encoder(location, config.embed_precision, config.model_cache_dir) if contents.vectors is not None else None
        ann, ann_info = _approximate_index(contents.vectors, config) if contents.ann is None else (contents.ann, None)
        contents = dataclasses.replace(
            contents, ann=ann,
            encoder=_encoder_artefacts(encoder),
        )
        complete = {
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "root": "generated",
            "sources": [], "files": {}, "skipped": {}, "ann": ann_info,
            "models": {"embed": _embed_entry(location, encoder) if encoder else None},
            **(manifest or {}),
        }
        version = new_version_name()
        path = write_version(out, version, contents, complete)
        switch_current(out, version)
        prune_versions(out, config.keep_versions)
    return path


# ---------------------------------------------------------------- stages


@contextlib.contextmanager
def _removed_if_failed(out: Path) -> Iterator[None]:
    """A first build that fails leaves no `out` behind (no empty folder holding a stray `.lock`)."""
    existed = out.exists()
    try:
        yield
    except IndexLockedError:
        raise  # another build created `out` meanwhile and holds it
    except BaseException:
        if not existed:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _exclude_output(config: IndexConfig, out: Path, root: Path) -> IndexConfig:
    """An output directory inside the source tree is never indexed (it would index itself)."""
    resolved = out.resolve()
    if resolved == root or root not in resolved.parents:
        return config
    rel = resolved.relative_to(root).as_posix()
    return dataclasses.replace(config, excludes=(*config.excludes, f"/{rel}/"))


@contextlib.contextmanager
def _spool_folder(out: Path) -> Iterator[Path]:
    """OUT/.build-<pid>/: the blobs a build streams its texts into (hard-linked into the version),
    removed when the build ends, however it ends (a killed build's folder goes with the next one)."""
    for stale in out.glob(SPOOL_PREFIX + "*"):
        shutil.rmtree(stale, ignore_errors=True)  # under the build lock: no other build owns it
    folder = out / f"{SPOOL_PREFIX}{os.getpid()}"
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _spool_docs(
    sources: list[Path], config: IndexConfig, skipped: Counter[str], spool: Path
) -> tuple[list[SourceDoc], TextBlob, list[int]]:
    """The documents sorted by path, without their text (each text goes to a blob as it is read, in
    walk order), the blob, and each sorted document's position in it."""
    writer = BlobWriter(spool / "walk.bin")
    found: dict[str, tuple[SourceDoc, int]] = {}
    for doc in walk_sources(sources, config, lambda path, reason: skipped.update([reason])):
        if doc.doc_id in found:
            raise SourceError(
                f"two sources give the document {doc.doc_id!r}; a path or record id may be indexed only once"
            )
        found[doc.doc_id] = (dataclasses.replace(doc, text=""), len(found))
        writer.add(doc.text)
    walked = writer.close()
    ordered = sorted(found.values(), key=lambda pair: pair[0].path)
    return [doc for doc, _ in ordered], walked, [position for _, position in ordered]


@dataclass
class _Corpus:
    """The chunked corpus of a build: texts in blob files, per-chunk facts in arrays, small strings
    (ids, titles) in lists. Row i of every column is chunk i, in document (path) order."""

    doc_texts: TextBlob
    chunk_texts: TextBlob
    chunk_headers: TextBlob
    chunk_ids: list[str]
    chunk_titles: list[str]
    chunk_kinds: list[str]
    chunk_doc: np.ndarray
    chunk_lines: np.ndarray
    chunk_symbols: np.ndarray
    keys: np.ndarray
    symbols: list[dict[str, Any]]
    chunks_per_doc: list[int]
    vocab: list[str]
    tf: sparse.csr_matrix
    doc_lengths: np.ndarray

    def indexed_text(self, i: int) -> str:
        """What chunk i's BM25 terms and vector come from: its header line, then its text."""
        header, text = self.chunk_headers[i], self.chunk_texts[i]
        return f"{header}\n{text}" if header else text


def _chunk_corpus(
    docs: list[SourceDoc], walked: TextBlob, positions: list[int], counter: ModelTokenCounter, config: IndexConfig,
    max_tokens: int, spool: Path, on_progress: Progress | None = None,
) -> _Corpus:
    """Chunk every document in path order and count BM25 terms in the same pass (term_frequencies
    consumes the chunks as they are made), writing texts to blobs: one document's text and chunks
    are in memory at a time."""
    doc_writer, text_writer, header_writer = (BlobWriter(spool / name) for name in
                                              ("doc_text.bin", "chunk_text.bin", CHUNK_HEADER_FILE))
    ids: list[str] = []
    titles: list[str] = []
    kinds: list[str] = []
    chunk_doc = array("i")
    lines = array("i")
    chunk_symbols = array("i")
    keys = bytearray()
    symbols: list[dict[str, Any]] = []
    per_doc: list[int] = []
    step = max(1, int(len(docs) * PROGRESS_STEP))

    def indexed_texts() -> Iterator[str]:
        for row, (doc, position) in enumerate(zip(docs, positions)):
            if on_progress is not None and row % step == 0:
                on_progress("chunking", row / len(docs))
            text = walked[position]
            doc_writer.add(text)
            doc_chunks, found = chunk_file(dataclasses.replace(doc, text=text), counter, config, max_tokens)
            chunk_symbols.extend(_doc_symbols(row, len(ids), doc_chunks, found, symbols))
            per_doc.append(len(doc_chunks))
            for chunk in doc_chunks:
                ids.append(chunk.chunk_id)
                titles.append(chunk.title)
                kinds.append(chunk.kind)
                chunk_doc.append(row)
                lines.extend((chunk.start_line, chunk.end_line))
                text_writer.add(chunk.text)
                header_writer.add(chunk.header)
                indexed = chunk.indexed_text
                keys.extend(hashlib.sha256(indexed.encode("utf-8")).digest()[:KEY_BYTES])
                yield indexed

    vocab, tf, doc_lengths = term_frequencies(indexed_texts())
    return _Corpus(
        doc_texts=doc_writer.close(), chunk_texts=text_writer.close(), chunk_headers=header_writer.close(),
        chunk_ids=ids, chunk_titles=titles, chunk_kinds=kinds,
        chunk_doc=np.frombuffer(chunk_doc, dtype=np.int32).copy(),
        chunk_lines=np.frombuffer(lines, dtype=np.int32).reshape(-1, 2).copy(),
        chunk_symbols=np.frombuffer(chunk_symbols, dtype=np.int32).copy(),
        keys=np.frombuffer(bytes(keys), dtype=np.uint8).reshape(-1, KEY_BYTES).copy(),
        symbols=symbols, chunks_per_doc=per_doc, vocab=vocab, tf=tf, doc_lengths=doc_lengths,
    )


# What to do about the commonest reason a source gave nothing (the reasons of walk.SKIP_REASONS).
_EMPTY_CORPUS_ADVICE = {
    "gitignored": "its files are listed in .gitignore: pass --no-gitignore to index them anyway",
    "excluded": "its files match --exclude: drop or narrow those globs",
    "too_large": "its files are over the 1 MB limit for one file",
    "binary": "its files are binary: only UTF-8 text is indexed",
    "not_utf8": "its files are not UTF-8 text: convert them",
    "secret_name": "its files are named like secrets (.env, keys, credentials): they are never indexed",
    "secret_content": "its files hold what looks like secrets: they are never indexed",
    "lock_file": "its files are lock files, which are never indexed",
    "empty": "its files are empty",
}


def _empty_corpus_message(sources: list[Path], skipped: Counter[str]) -> str:
    where = ", ".join(str(s) for s in sources)
    if not skipped:
        return (f"nothing to index in {where}: it holds no files (folders such as .git, node_modules, .venv "
                "and caches are always skipped); name a directory or file holding UTF-8 text; nothing was written")
    reasons = ", ".join(f"{r} {n}" for r, n in skipped.most_common())
    main_reason = skipped.most_common(1)[0][0]
    advice = _EMPTY_CORPUS_ADVICE.get(main_reason, "name a directory or file holding UTF-8 text")
    return f"nothing to index in {where}: {advice} (skipped: {reasons}); nothing was written"


def _doc_symbols(
    doc_row: int, first_chunk: int, doc_chunks: list[Chunk], found: list[Symbol], rows: list[dict[str, Any]]
) -> list[int]:
    """Append one document's symbol rows (format.IndexContents.symbols) to `rows`; returns each of its
    chunks' symbol row (-1: none).

    A symbol's own chunk is the chunk titled for it (chunk.symbol), else the chunk holding its first
    line (a method of a class small enough to be one chunk), else the nearest chunk after it."""
    chunk_symbols = [-1] * len(doc_chunks)
    if not found or not doc_chunks:
        return chunk_symbols
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
        chunk_symbols[position] = row
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
    return chunk_symbols


def _chunk_at(doc_chunks: list[Chunk], starts: list[int], line: int) -> int:
    """Position of the first chunk holding `line`, else of the first after it, else the last.
    `starts`: the chunks' start lines, ascending (overlapping windows reach back a few chunks)."""
    position = bisect.bisect_right(starts, line)  # chunks [0, position) start at or before `line`
    holding = None
    for back in range(position - 1, max(-1, position - 8), -1):
        if doc_chunks[back].end_line >= line:
            holding = back
    return holding if holding is not None else min(position, len(doc_chunks) - 1)


def _current_version(out: Path) -> PreviousVersion | None:
    """The current version at `out` (this format or an older reusable one), or None."""
    return open_previous(out)


def _encoder(current: PreviousVersion | None, location: ModelLocation, config: IndexConfig) -> EncoderFiles:
    """The current version's encoder if it was exported from the same weights, precision and recipe
    (and is intact); else the exported encoder from the model cache (export.py)."""
    return _current_encoder(current, location, config) or prepare_encoder(
        location, config.embed_precision, config.model_cache_dir)


def _current_encoder(
    current: PreviousVersion | None, location: ModelLocation, config: IndexConfig
) -> EncoderFiles | None:
    """The current version's encoder if it was exported from the same weights, precision and recipe
    and is intact; else None."""
    entry = ((current.manifest.get("models") or {}).get("embed") or {}).get("encoder") if current else None
    if entry and (entry.get("source_sha256"), entry.get("precision"), entry.get("recipe")) == (
        location.sha256, config.embed_precision, RECIPE
    ):
        try:
            current.verify((ENCODER_FILE, ENCODER_TOKENIZER_FILE))
        except IndexStoreError as exc:
            log.warning("not reusing the encoder: %s", exc)
        else:
            return EncoderFiles(
                model=current.version_dir / ENCODER_FILE, tokenizer=current.version_dir / ENCODER_TOKENIZER_FILE,
                sha256=entry["sha256"], source_sha256=location.sha256, precision=entry["precision"],
                pooling=entry["pooling"], recipe=RECIPE, min_cosine=float(entry.get("min_cosine_to_fp32", 0.0)),
            )
    return None


def _previous_vectors(
    current: PreviousVersion | None, encoder: EncoderFiles
) -> tuple[dict[bytes, int], np.ndarray] | None:
    """Vectors of the current version keyed by chunk key (rows its mask says hold one), if they were
    made by the same encoder."""
    if current is None or current.vectors is None:
        return None
    entry = ((current.manifest.get("models") or {}).get("embed") or {}).get("encoder") or {}
    if entry.get("sha256") != encoder.sha256:
        return None
    checked = [name for name in ("vectors.npy", "chunk_keys.npy", "vector_mask.npy") if name in current.manifest["artefacts"]]
    try:  # reused vectors must be exactly what was written: check their checksums first
        current.verify(checked)
    except IndexStoreError as exc:
        log.warning("not reusing vectors: %s", exc)
        return None
    keys = np.asarray(current.chunk_keys)
    present = np.flatnonzero(np.asarray(current.vector_mask)).tolist()
    return {keys[i].tobytes(): i for i in present}, current.vectors


def _reused_vectors(
    keys: np.ndarray, previous: tuple[dict[bytes, int], np.ndarray], dim: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """--vectors later: (vectors float32 (n, dim), mask bool (n,), rows reused) from the current
    version's vectors by chunk key; the other rows stay zero and unmasked."""
    old_rows, old_vectors = previous
    vectors = np.zeros((len(keys), dim), dtype=np.float32)
    mask = np.zeros(len(keys), dtype=bool)
    for i in range(len(keys)):
        row = old_rows.get(keys[i].tobytes())
        if row is not None:
            vectors[i] = old_vectors[row]
            mask[i] = True
    return vectors, mask, int(mask.sum())


def _vectors(
    indexed_text: Callable[[int], str],
    keys: np.ndarray,
    previous: tuple[dict[bytes, int], np.ndarray] | None,
    location: ModelLocation,
    encoder: EncoderFiles,
    config: IndexConfig,
    on_progress: Progress | None = None,
) -> tuple[np.ndarray, int, int, float]:
    """float32 (n, dim) unit vectors: reused where the key is known, the rest embedded once per text,
    EMBED_BATCH texts read from the blobs at a time (embedding one text never depends on another's)."""
    n = len(keys)
    vectors = np.zeros((n, location.dim), dtype=np.float32)
    old_rows, old_vectors = previous if previous is not None else ({}, None)
    todo: dict[bytes, list[int]] = {}
    reused = 0
    for i in range(n):
        key = keys[i].tobytes()
        if key in old_rows:
            vectors[i] = old_vectors[old_rows[key]]
            reused += 1
        else:
            todo.setdefault(key, []).append(i)
    seconds = 0.0
    if todo:
        rows = [positions[0] for positions in todo.values()]
        embedder = _embedder(encoder.model, encoder.sha256, encoder.tokenizer, encoder.pooling, location, config.threads)
        report = _fraction_reporter(on_progress, "embedding", len(rows))
        bar = _embed_bar(len(rows), config.show_progress)
        started = time.perf_counter()
        try:
            for start in range(0, len(rows), EMBED_BATCH):
                batch = rows[start:start + EMBED_BATCH]
                fresh = embedder.encode([indexed_text(i) for i in batch], on_rows=_both(report, bar.update))
                for vector, row in zip(fresh, batch):
                    vectors[todo[keys[row].tobytes()]] = vector
        finally:
            bar.close()
        seconds = time.perf_counter() - started
        log.info("embedded %d chunks in %.1fs (%.1f chunks/s)", len(rows), seconds, len(rows) / max(seconds, 1e-9))
    return vectors, n - reused, reused, seconds


def _both(first: Callable[[int], None] | None, second: Callable[[int], None]) -> Callable[[int], None]:
    return second if first is None else (lambda rows: (first(rows), second(rows)))


def _embed_bar(total: int, show: bool) -> Any:
    """One tqdm bar on stderr for the whole embedding stage (or a silent stand-in)."""
    if show:
        from tqdm import tqdm

        return tqdm(total=total, desc="embedding", unit="chunk", file=sys.stderr)
    return _SilentBar()


class _SilentBar:
    def update(self, n: int) -> None:
        return None

    def close(self) -> None:
        return None


def _fraction_reporter(on_progress: Progress | None, stage: str, total: int) -> Callable[[int], None] | None:
    """A counter of finished rows that calls on_progress(stage, done/total) every PROGRESS_STEP."""
    if on_progress is None or total == 0:
        return None
    step = max(1, int(total * PROGRESS_STEP))
    done = [0, 0]  # rows finished, rows at the last report (threads add under the GIL)

    def add(rows: int) -> None:
        done[0] += rows
        if done[0] - done[1] >= step:
            done[1] = done[0]
            on_progress(stage, min(done[0] / total, 1.0))

    return add


@lru_cache(maxsize=2)
def _embedder(model: Path, sha256: str, tokenizer: Path, pooling: str, location: ModelLocation, threads: int) -> Embedder:
    """Loaded once per process and encoder (a server refreshing its index rebuilds often)."""
    data = model.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise IndexStoreError(f"the encoder {model} changed while it was being loaded; run the build again")
    return load_embedder(data, tokenizer, pooling, location.dim, location.max_tokens, threads)


def _approximate_index(vectors: np.ndarray | None, config: IndexConfig) -> tuple[Any, dict[str, Any] | None]:
    """Above approx_threshold chunks: HNSW (inner product) plus its recall@10 against exact search."""
    if vectors is None or len(vectors) <= config.approx_threshold:
        return None, None
    import faiss

    faiss.omp_set_num_threads(config.threads)
    index = faiss.IndexHNSWFlat(vectors.shape[1], ANN_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ANN_EF_CONSTRUCTION
    index.add(vectors)
    index.hnsw.efSearch = ANN_EF_SEARCH
    rng = np.random.default_rng(0)
    sample = rng.choice(len(vectors), size=min(ANN_RECALL_QUERIES, len(vectors)), replace=False)
    queries = np.ascontiguousarray(vectors[sample])
    k = min(ANN_RECALL_K, len(vectors))
    exact = np.argpartition(-(queries @ vectors.T), k - 1, axis=1)[:, :k]
    _, approx = index.search(queries, k)
    recall = float(np.mean([len(set(e) & set(a)) / k for e, a in zip(exact.tolist(), approx.tolist())]))
    faiss.omp_set_num_threads(1)
    info = {
        "kind": "hnsw_flat_ip",
        "m": ANN_M,
        "ef_construction": ANN_EF_CONSTRUCTION,
        "ef_search": ANN_EF_SEARCH,
        "recall_at_10": round(recall, 4),
        "recall_queries": len(sample),
    }
    log.info("approximate vector index: recall@10 %.3f on %d stored vectors", recall, len(sample))
    return index, info


def _encoder_artefacts(encoder: EncoderFiles | None) -> dict[str, Path] | None:
    """The encoder files a version carries, by artefact name (format.py links or copies them)."""
    return {ENCODER_FILE: encoder.model, ENCODER_TOKENIZER_FILE: encoder.tokenizer} if encoder else None


def _embed_entry(location: ModelLocation, encoder: EncoderFiles | None) -> dict[str, Any]:
    """The manifest's models.embed: the source model and the encoder that made the vectors."""
    return {"id": location.model_id, "dim": location.dim, "sha256": location.sha256, "max_tokens": location.max_tokens,
            "encoder": encoder.manifest_entry() if encoder else None}


def _manifest(
    sources: list[Path],
    root: Path,
    docs: list[SourceDoc],
    chunks_per_doc: list[int],
    location: ModelLocation,
    encoder: EncoderFiles | None,
    config: IndexConfig,
    max_tokens: int,
    vectors: np.ndarray | None,
    ann_info: dict[str, Any] | None,
    skipped: Counter[str],
    tf: sparse.csr_matrix,
) -> dict[str, Any]:
    return {
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "root": str(root),
        "sources": [str(Path(s).expanduser().resolve()) for s in sources],
        "files": {
            d.path: {"sha256": d.sha256, "mtime": d.mtime, "size": d.size, "chunks": n}
            for d, n in zip(docs, chunks_per_doc)
        },
        "skipped": dict(sorted(skipped.items())),
        "models": {"embed": _embed_entry(location, encoder) if vectors is not None else None},
        "chunking": {
            "max_tokens": max_tokens,
            "window_lines": config.window_lines,
            "overlap_lines": config.chunk_overlap_lines,
            "overlap_tokens": config.chunk_overlap_tokens,
            "token_counter": {"id": location.model_id, "sha256": location.sha256},
        },
        "walk": {"max_file_bytes": config.max_file_bytes, "excludes": list(config.excludes)},
        "bm25": {"vocab_size": int(tf.shape[1]), "total_terms": int(tf.sum())},
        "ann": ann_info,
    }
