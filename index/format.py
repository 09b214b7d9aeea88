"""On-disk index layout: versioned directories, the CURRENT pointer, the build lock, mmap open.

Contract (see docs/ARCHITECTURE.md, "On-disk layout"):
- A build writes `versions/<name>.partial/`, fsyncs it, renames it to `versions/<name>/`, then
  replaces `CURRENT` with os.replace. A crash or Ctrl-C at any point leaves the old CURRENT, and
  the old version's files are never touched; the newest `keep_versions` versions are kept, so a
  reader that opened the previous version keeps working.
- `build_lock(out)` holds an exclusive fcntl lock on `OUT/.lock` for the whole build.
- No pickle: arrays are .npy (opened with mmap_mode="r"), texts are UTF-8 blobs with int64 offsets,
  lists are JSON. The manifest records the sha256 and size of every artefact; `open_index` checks
  sizes (cheap), `IndexData.verify()` checks hashes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from .errors import IndexCorruptError, IndexFormatError, IndexLockedError, IndexNotFoundError, SourceError
from .symbols import KIND_CODES, KINDS, SymbolTable, blob_text, encode_blob
from .tokenize import TOKENIZER_SETTINGS

__all__ = [
    "CHUNK_HEADER_FILE",
    "CHUNK_HEADER_OFFSETS_FILE",
    "ENCODER_FILE",
    "ENCODER_TOKENIZER_FILE",
    "FORMAT_VERSION",
    "IndexContents",
    "IndexData",
    "BlobWriter",
    "PreviousVersion",
    "TextBlob",
    "build_lock",
    "current_version_dir",
    "derive_version",
    "open_index",
    "open_previous",
    "prune_versions",
    "read_manifest",
    "switch_current",
    "write_version",
]

log = logging.getLogger(__name__)

# 2: every version with vectors carries its ONNX encoder (embed.onnx). 3: chunk kinds and symbols, the
# symbol table and the vector mask (a chunk may have no vector yet); a build reuses format 2's vectors.
FORMAT_VERSION = 3
REUSABLE_FORMATS = (2, 3)  # versions whose vectors a build may reuse by chunk key
CURRENT_FILE = "CURRENT"
LOCK_FILE = ".lock"
VERSIONS_DIR = "versions"
MANIFEST_FILE = "manifest.json"
PARTIAL_SUFFIX = ".partial"
SPOOL_PREFIX = ".build-"  # OUT/.build-<pid>/: blobs a build streams its texts into (build.py)
CHECKPOINT_DIR = ".embed"  # OUT/.embed/: `index embed`'s durable batches (backfill.py)
ANN_FILE = "ann.faiss"
VECTORS_FILE = "vectors.npy"
VECTOR_MASK_FILE = "vector_mask.npy"
ENCODER_FILE = "embed.onnx"
ENCODER_TOKENIZER_FILE = "embed_tokenizer.json"
# Each chunk's header line (what BM25 and the embedder see above its text): `index embed` rebuilds the
# embedded text from it, so an index built with `--vectors later` gets the vectors a full build would.
CHUNK_HEADER_FILE = "chunk_header.bin"
CHUNK_HEADER_OFFSETS_FILE = "chunk_header_offsets.npy"
_LOCK_POLL_SECONDS = 0.1
_HASH_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class TextBlob:
    """Texts already written as a UTF-8 blob file (what BlobWriter makes): text i is
    bytes[offsets[i]:offsets[i + 1]]. A build hands these to write_version instead of lists of str,
    so no list ever holds every text; the file is hard-linked into the version."""

    path: Path
    offsets: np.ndarray  # int64 (n + 1,)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return blob_text(self._bytes(), self.offsets, i)

    def __iter__(self) -> Iterator[str]:
        blob = self._bytes()
        for i in range(len(self)):
            yield blob[int(self.offsets[i]):int(self.offsets[i + 1])].tobytes().decode("utf-8")

    def _bytes(self) -> np.ndarray:
        return _blob(self.path)


class BlobWriter:
    """Appends texts to a blob file as they come (one text's bytes in memory at a time)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._handle = open(path, "wb")
        self._offsets = array("q", [0])

    def add(self, text: str) -> None:
        data = text.encode("utf-8")
        self._handle.write(data)
        self._offsets.append(self._offsets[-1] + len(data))

    def close(self) -> TextBlob:
        """Flush and fsync the file (it becomes an artefact by a hard link); the blob's view of it."""
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        return TextBlob(self._path, np.frombuffer(self._offsets, dtype=np.int64).copy())


@dataclass(frozen=True, slots=True)
class IndexContents:
    """Everything one version holds, in memory, ready to be written (chunks in index order).

    docs: [{doc_id, path, language, title}] sorted by path; chunk_doc: int32 (n,) into docs;
    chunk_lines: int32 (n, 2) 1-based inclusive; tf: CSR float32 (n, len(vocab)), vocab sorted;
    chunk_keys: uint8 (n, 16) sha256 prefix of each chunk's indexed text (vector reuse key);
    vectors: float32 (n, dim) L2-normalised or None; ann: a faiss index or None;
    encoder: {artefact name: file} of the encoder that made the vectors (hard-linked when possible).
    chunk_kinds: KINDS name per chunk (None: all "text"); chunk_symbols: int (n,) row of each chunk's
    symbol in `symbols`, -1 for none (None: all -1); symbols: dicts {name, qualified_name, kind, doc,
    start_line, end_line, parent, chunk} sorted by (doc, start_line, -end_line), where doc, parent
    and chunk are rows (-1: no parent); vector_mask: bool (n,) which rows of `vectors` hold a vector
    (None: all when vectors is given, else none); chunk_headers: each chunk's header line (None: not
    stored; `index embed` needs them).
    """

    docs: list[dict[str, str]]
    doc_texts: Sequence[str]  # a list, or a TextBlob already on disk
    chunk_ids: list[str]
    chunk_titles: list[str]
    chunk_doc: np.ndarray
    chunk_lines: np.ndarray
    chunk_texts: Sequence[str]  # a list, or a TextBlob already on disk
    chunk_keys: np.ndarray
    vocab: list[str]
    tf: sparse.csr_matrix
    doc_lengths: np.ndarray
    vectors: np.ndarray | None = None
    ann: Any = None
    encoder: dict[str, Path] | None = None
    chunk_kinds: Sequence[str] | None = None
    chunk_symbols: np.ndarray | None = None
    symbols: Sequence[dict[str, Any]] | None = None
    vector_mask: np.ndarray | None = None
    chunk_headers: Sequence[str] | None = None


@dataclass(frozen=True)
class IndexData:
    """One opened index version; arrays are read-only memory maps (see module docstring)."""

    path: Path
    version_dir: Path
    manifest: dict[str, Any]
    docs: list[dict[str, str]]
    doc_index: dict[str, int]
    chunk_ids: list[str]
    chunk_titles: list[str]
    chunk_doc: np.ndarray
    chunk_lines: np.ndarray
    chunk_keys: np.ndarray
    vocab: list[str]
    term_ids: dict[str, int]
    tf: sparse.csr_matrix
    doc_lengths: np.ndarray
    vectors: np.ndarray | None
    ann_path: Path | None
    kinds: tuple[str, ...]  # decodes chunk_kind codes
    chunk_kind: np.ndarray  # uint8 (n,) codes into kinds
    chunk_symbol: np.ndarray  # int32 (n,) row in symbols, -1 for none
    vector_mask: np.ndarray  # bool (n,): rows of vectors that hold a vector (all False without vectors)
    symbols: SymbolTable
    _chunk_blob: np.ndarray = field(repr=False)
    _chunk_offsets: np.ndarray = field(repr=False)
    _doc_blob: np.ndarray = field(repr=False)
    _doc_offsets: np.ndarray = field(repr=False)

    @property
    def n_chunks(self) -> int:
        """Number of chunks (rows of tf, vectors, chunk_lines)."""
        return len(self.chunk_ids)

    @property
    def has_vectors(self) -> bool:
        """True unless the index was built with --no-vectors (some rows may still lack one: vector_mask)."""
        return self.vectors is not None

    @property
    def vector_coverage(self) -> float:
        """Fraction of chunks that have a vector (0.0 without vectors)."""
        n = self.n_chunks
        return float(np.count_nonzero(self.vector_mask)) / n if n else 0.0

    def kind_of(self, i: int) -> str:
        """Chunk i's kind (KINDS: function, method, class, ..., module, section, key, text)."""
        return self.kinds[int(self.chunk_kind[i])]

    def symbol_of(self, i: int) -> str | None:
        """Chunk i's symbol: the qualified name of the definition it holds, or None."""
        row = int(self.chunk_symbol[i])
        return self.symbols.qualified_name(row) if row >= 0 else None

    def chunk_text(self, i: int) -> str:
        """Text of chunk i (without its header line)."""
        return blob_text(self._chunk_blob, self._chunk_offsets, i)

    def doc_text(self, i: int) -> str:
        """Full text of doc i ("\\n" line endings), the source of read()."""
        return blob_text(self._doc_blob, self._doc_offsets, i)

    def doc_bytes(self) -> tuple[np.ndarray, np.ndarray]:
        """Every doc's UTF-8 text without decoding: (blob uint8 (n_bytes,), offsets int64 (n_docs + 1,)),
        doc i is blob[offsets[i]:offsets[i + 1]]; both read-only memory maps (for grep's zero-copy scan)."""
        return self._doc_blob, self._doc_offsets

    def verify(self, names: Sequence[str] | None = None) -> None:
        """Recompute the sha256 of every artefact (or of `names`); IndexCorruptError names the first
        that differs. Reads every byte: for `index info --verify` and before reusing vectors."""
        _verify(self.path, self.version_dir, self.manifest, names)


@dataclass(frozen=True)
class PreviousVersion:
    """What a build reuses from the current version, of this format or an older one (REUSABLE_FORMATS):
    its manifest, chunk keys and the vectors the mask says exist."""

    path: Path
    version_dir: Path
    manifest: dict[str, Any]
    chunk_keys: np.ndarray
    vectors: np.ndarray | None
    vector_mask: np.ndarray | None

    def verify(self, names: Sequence[str] | None = None) -> None:
        """IndexData.verify for the artefacts a build reuses."""
        _verify(self.path, self.version_dir, self.manifest, names)


def _verify(path: Path, version_dir: Path, manifest: dict[str, Any], names: Sequence[str] | None) -> None:
    artefacts = manifest["artefacts"]
    for name in sorted(artefacts if names is None else names):
        if name not in artefacts:
            raise IndexCorruptError(path, name, "not listed in the manifest")
        actual = _file_sha256(version_dir / name)
        if actual != artefacts[name]["sha256"]:
            raise IndexCorruptError(path, name, "checksum mismatch (the file changed after the build)")


# ---------------------------------------------------------------- writing


@contextlib.contextmanager
def build_lock(out: Path, wait_seconds: float) -> Iterator[None]:
    """Hold OUT/.lock exclusively; wait up to `wait_seconds` for another build, then IndexLockedError."""
    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / LOCK_FILE, "a+b")
    try:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                if time.monotonic() >= deadline:
                    raise IndexLockedError(out) from None
                time.sleep(_LOCK_POLL_SECONDS)
        yield
    finally:
        handle.close()  # closing the descriptor releases the lock


def check_output_dir(out: Path, force: bool) -> None:
    """Refuse to write into a directory that holds other things than an index (unless force)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise SourceError(f"--out {out} exists and is not a directory; choose a directory for the index")
    # A killed build's spool folder or a killed `index embed`'s checkpoints are ours too.
    entries = {p.name for p in out.iterdir() if not p.name.startswith(SPOOL_PREFIX) and p.name != CHECKPOINT_DIR} - {LOCK_FILE}
    if entries and not ({CURRENT_FILE, VERSIONS_DIR} & entries) and not force:
        raise SourceError(
            f"--out {out} is a non-empty directory that holds no index; choose an empty or new directory "
            "(or pass --force to add an index beside its files)"
        )


def new_version_name() -> str:
    """Sortable, unique name: UTC time to the microsecond plus the writer's pid."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + f"-{os.getpid()}"


def write_version(out: Path, name: str, contents: IndexContents, manifest: dict[str, Any]) -> Path:
    """Write one complete version as versions/<name>/ (via <name>.partial); returns its path.

    `manifest` is completed here with format_version, chunk_count and the artefact checksums.
    Nothing outside versions/<name>.partial is touched until the final rename.
    """
    versions = out / VERSIONS_DIR
    versions.mkdir(parents=True, exist_ok=True)
    partial = versions / (name + PARTIAL_SUFFIX)
    final = versions / name
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    try:
        artefacts = _write_artefacts(partial, contents)
        complete = dict(manifest)
        complete.update(
            format_version=FORMAT_VERSION,
            kinds=list(KINDS),
            tokenizer=TOKENIZER_SETTINGS,
            chunk_count=len(contents.chunk_ids),
            doc_count=len(contents.docs),
            artefacts=artefacts,
        )
        _write_bytes(partial / MANIFEST_FILE, json.dumps(complete, indent=1, sort_keys=True).encode("utf-8"))
        _fsync_dir(partial)
        os.rename(partial, final)
        _fsync_dir(versions)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # Ctrl-C or a crash: nothing half-written remains
        raise
    return final


def derive_version(
    out: Path, name: str, base: Path, manifest: dict[str, Any], replaced: Sequence[str],
    write_new: Callable[[Path], dict[str, Any]],
) -> Path:
    """Write versions/<name>/ as a copy of the version directory `base` in which the artefacts named
    in `replaced` are dropped and `write_new(folder)` adds files (vectors, mask, encoder...) and
    returns manifest keys to set.

    Unchanged artefacts are hard-linked (versions are immutable; a copy where links fail) and keep
    their manifest entries; new files get theirs computed. `manifest` is the new manifest without
    `artefacts`. Written via <name>.partial and renamed like write_version: all or nothing."""
    versions = out / VERSIONS_DIR
    partial = versions / (name + PARTIAL_SUFFIX)
    final = versions / name
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    try:
        kept = {key: value for key, value in manifest_artefacts(base).items() if key not in set(replaced)}
        for artefact in kept:
            _link_or_copy(base / artefact, partial / artefact)
        updates = write_new(partial)
        artefacts = dict(kept)
        for path in sorted(partial.iterdir()):
            if path.name not in kept and path.name != MANIFEST_FILE:
                artefacts[path.name] = {"sha256": _file_sha256(path), "bytes": path.stat().st_size}
        complete = {**manifest, **updates, "artefacts": dict(sorted(artefacts.items()))}
        _write_bytes(partial / MANIFEST_FILE, json.dumps(complete, indent=1, sort_keys=True).encode("utf-8"))
        _fsync_dir(partial)
        os.rename(partial, final)
        _fsync_dir(versions)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return final


def manifest_artefacts(version_dir: Path) -> dict[str, dict[str, Any]]:
    """The artefacts table of the manifest in `version_dir`."""
    return dict(json.loads((version_dir / MANIFEST_FILE).read_text(encoding="utf-8"))["artefacts"])


def switch_current(out: Path, name: str) -> None:
    """Make versions/<name> current: write CURRENT.tmp, fsync, os.replace onto CURRENT (atomic)."""
    tmp = out / (CURRENT_FILE + ".tmp")
    _write_bytes(tmp, (name + "\n").encode("ascii"))
    os.replace(tmp, out / CURRENT_FILE)
    _fsync_dir(out)


def prune_versions(out: Path, keep: int) -> None:
    """Delete leftover .partial dirs and all but the newest `keep` versions (never the current one)."""
    versions = out / VERSIONS_DIR
    if not versions.is_dir():
        return
    current = _read_current_name(out)
    complete = sorted(p for p in versions.iterdir() if p.is_dir() and not p.name.endswith(PARTIAL_SUFFIX))
    for stale in [p for p in versions.iterdir() if p.name.endswith(PARTIAL_SUFFIX)]:
        shutil.rmtree(stale, ignore_errors=True)
    for old in complete[:-keep] if keep else complete:
        if old.name != current:
            shutil.rmtree(old, ignore_errors=True)


def _write_artefacts(folder: Path, contents: IndexContents) -> dict[str, dict[str, Any]]:
    n = len(contents.chunk_ids)
    tf = contents.tf.tocsr()
    if tf.shape != (n, len(contents.vocab)):
        raise ValueError(f"tf has shape {tf.shape}, expected ({n}, {len(contents.vocab)})")
    linked: dict[str, Path] = {}  # blobs already written (TextBlob): hard-linked, never read into memory
    chunk_blob, chunk_offsets = _blob_parts(contents.chunk_texts, "chunk_text.bin", linked)
    doc_blob, doc_offsets = _blob_parts(contents.doc_texts, "doc_text.bin", linked)
    arrays = {
        "chunk_doc.npy": np.asarray(contents.chunk_doc, dtype=np.int32),
        "chunk_lines.npy": np.asarray(contents.chunk_lines, dtype=np.int32).reshape(n, 2),
        "chunk_keys.npy": np.asarray(contents.chunk_keys, dtype=np.uint8).reshape(n, 16),
        "chunk_text_offsets.npy": chunk_offsets,
        "doc_text_offsets.npy": doc_offsets,
        "tf_data.npy": tf.data.astype(np.float32),
        "tf_indices.npy": tf.indices.astype(np.int32),
        "tf_indptr.npy": tf.indptr.astype(np.int64),
        "doc_lengths.npy": np.asarray(contents.doc_lengths, dtype=np.float32),
    }
    arrays.update(_code_arrays(contents, n))
    blobs = {name: blob for name, blob in (("chunk_text.bin", chunk_blob), ("doc_text.bin", doc_blob)) if blob is not None}
    names = [s["name"] for s in contents.symbols or ()]
    qualified = [s["qualified_name"] for s in contents.symbols or ()]
    blobs["symbol_name.bin"], arrays["symbol_name_offsets.npy"] = encode_blob(names)
    blobs["symbol_qualname.bin"], arrays["symbol_qualname_offsets.npy"] = encode_blob(qualified)
    if contents.chunk_headers is not None:
        if len(contents.chunk_headers) != n:
            raise ValueError(f"{len(contents.chunk_headers)} chunk headers for {n} chunks")
        header_blob, arrays[CHUNK_HEADER_OFFSETS_FILE] = _blob_parts(contents.chunk_headers, CHUNK_HEADER_FILE, linked)
        if header_blob is not None:
            blobs[CHUNK_HEADER_FILE] = header_blob
    if contents.vectors is not None:
        arrays[VECTORS_FILE] = np.ascontiguousarray(contents.vectors, dtype=np.float32)
    for name, array in arrays.items():
        with open(folder / name, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
            handle.flush()
            os.fsync(handle.fileno())
    for name, blob in blobs.items():
        _write_bytes(folder / name, blob)
    for name, source in linked.items():
        _link_or_copy(source, folder / name)
    for name, value in (
        ("docs.json", contents.docs),
        ("chunk_ids.json", contents.chunk_ids),
        ("chunk_titles.json", contents.chunk_titles),
        ("vocab.json", contents.vocab),
    ):
        _write_bytes(folder / name, json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    for name, source in (contents.encoder or {}).items():
        _link_or_copy(Path(source), folder / name)
    if contents.ann is not None:
        import faiss

        faiss.write_index(contents.ann, str(folder / ANN_FILE))
        _fsync_file(folder / ANN_FILE)
    return {
        p.name: {"sha256": _file_sha256(p), "bytes": p.stat().st_size}
        for p in sorted(folder.iterdir())
        if p.name != MANIFEST_FILE
    }


def _blob_parts(texts: Sequence[str], name: str, linked: dict[str, Path]) -> tuple[bytes | None, np.ndarray]:
    """(bytes to write or None, offsets): a TextBlob is linked as `name` (recorded in `linked`)."""
    if isinstance(texts, TextBlob):
        linked[name] = texts.path
        return None, np.asarray(texts.offsets, dtype=np.int64)
    return encode_blob(texts)


def _code_arrays(contents: IndexContents, n: int) -> dict[str, np.ndarray]:
    """Format 3's columns: chunk kinds and symbols, the vector mask and the symbol table."""
    kinds = contents.chunk_kinds
    chunk_kind = (
        np.zeros(n, dtype=np.uint8) if kinds is None else np.fromiter((KIND_CODES[k] for k in kinds), np.uint8, n)
    )
    chunk_symbol = (
        np.full(n, -1, dtype=np.int32) if contents.chunk_symbols is None
        else np.asarray(contents.chunk_symbols, dtype=np.int32).reshape(n)
    )
    if contents.vector_mask is not None:
        mask = np.asarray(contents.vector_mask, dtype=bool).reshape(n)
        if mask.any() and contents.vectors is None:
            raise ValueError("vector_mask marks vectors but no vectors were given")
    else:
        mask = np.full(n, contents.vectors is not None, dtype=bool)
    symbols = list(contents.symbols or ())
    m = len(symbols)
    columns = {
        "symbol_doc.npy": np.fromiter((s["doc"] for s in symbols), np.int32, m),
        "symbol_lines.npy": np.array([[s["start_line"], s["end_line"]] for s in symbols], np.int32).reshape(m, 2),
        "symbol_kind.npy": np.fromiter((KIND_CODES[s["kind"]] for s in symbols), np.uint8, m),
        "symbol_parent.npy": np.fromiter((s["parent"] for s in symbols), np.int32, m),
        "symbol_chunk.npy": np.fromiter((s["chunk"] for s in symbols), np.int32, m),
    }
    order = np.lexsort((-columns["symbol_lines.npy"][:, 1], columns["symbol_lines.npy"][:, 0], columns["symbol_doc.npy"]))
    if m and not np.array_equal(order, np.arange(m)):
        raise ValueError("symbols must be sorted by (doc, start_line, -end_line)")
    if ((chunk_symbol < -1) | (chunk_symbol >= m)).any() or ((columns["symbol_chunk.npy"] < 0) | (columns["symbol_chunk.npy"] >= n)).any():
        raise ValueError("a chunk's symbol row or a symbol's chunk row is out of range")
    return {"chunk_kind.npy": chunk_kind, "chunk_symbol.npy": chunk_symbol, VECTOR_MASK_FILE: mask, **columns}


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the file system allows (the 20 MB encoder is shared by versions and the
    model cache; files are never modified in place), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
        _fsync_file(target)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- reading


def current_version_dir(path: Path) -> Path:
    """The version directory `path` designates: OUT (via CURRENT) or a version directory itself."""
    path = Path(path)
    if (path / MANIFEST_FILE).is_file():
        return path
    if not path.exists():
        raise IndexNotFoundError(path, "the directory does not exist")
    name = _read_current_name(path)
    if name is None:
        raise IndexNotFoundError(path, f"it has no {CURRENT_FILE} file")
    version = path / VERSIONS_DIR / name
    if not (version / MANIFEST_FILE).is_file():
        raise IndexCorruptError(path, f"{VERSIONS_DIR}/{name}/{MANIFEST_FILE}", f"{CURRENT_FILE} names a version that is missing")
    return version


def read_manifest(path: Path) -> dict[str, Any]:
    """The current version's manifest (dict). IndexNotFoundError, IndexFormatError or IndexCorruptError."""
    path = Path(path)
    version = current_version_dir(path)
    index_root = _index_root(path, version)
    try:
        manifest = json.loads((version / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexCorruptError(index_root, MANIFEST_FILE, f"unreadable ({exc})") from exc
    if not isinstance(manifest, dict):
        raise IndexCorruptError(index_root, MANIFEST_FILE, "not a JSON object")
    found = manifest.get("format_version")
    if found != FORMAT_VERSION:
        raise IndexFormatError(index_root, found, FORMAT_VERSION)
    if not isinstance(manifest.get("artefacts"), dict):
        raise IndexCorruptError(index_root, MANIFEST_FILE, "no artefacts table")
    return manifest


def open_index(path: Path, verify: bool = False) -> IndexData:
    """Open the current version at `path` (an index dir or a version dir), arrays memory-mapped.

    Checks the format version, the BM25 tokenizer settings and every artefact's size; `verify=True`
    also checks every sha256 (reads everything: use it in `index info --verify`, not per query).
    """
    path = Path(path)
    manifest = read_manifest(path)
    version = current_version_dir(path)
    index_root = _index_root(path, version)
    if manifest.get("tokenizer") != TOKENIZER_SETTINGS:
        raise IndexFormatError(index_root, manifest.get("tokenizer"), TOKENIZER_SETTINGS, what="BM25 tokenizer settings")
    for name, info in manifest["artefacts"].items():
        artefact = version / name
        if not artefact.is_file():
            raise IndexCorruptError(index_root, name, "the file is missing")
        size = artefact.stat().st_size
        if size != info.get("bytes"):
            raise IndexCorruptError(index_root, name, f"{size} bytes on disk, {info.get('bytes')} expected")
    try:
        data = _load(index_root, version, manifest)
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise IndexCorruptError(index_root, version.name, f"cannot be loaded ({exc})") from exc
    if verify:
        data.verify()
    return data


def _load(index_root: Path, version: Path, manifest: dict[str, Any]) -> IndexData:
    def array(name: str) -> np.ndarray:
        # A plain ndarray view of the memory map (the map stays alive as its base): same pages, no
        # copy, but element access and slicing ~10x faster than through the np.memmap subclass.
        return np.asarray(np.load(version / name, mmap_mode="r", allow_pickle=False))

    def listing(name: str) -> list:
        return json.loads((version / name).read_text(encoding="utf-8"))

    docs = listing("docs.json")
    chunk_ids = listing("chunk_ids.json")
    vocab = listing("vocab.json")
    n = len(chunk_ids)
    tf = sparse.csr_matrix(
        (array("tf_data.npy"), array("tf_indices.npy"), array("tf_indptr.npy")), shape=(n, len(vocab)), copy=False
    )
    vectors = array(VECTORS_FILE) if VECTORS_FILE in manifest["artefacts"] else None
    kinds = tuple(manifest["kinds"])
    symbol_doc = array("symbol_doc.npy")
    symbols = SymbolTable(
        kinds=kinds,
        doc=symbol_doc,
        lines=array("symbol_lines.npy"),
        kind=array("symbol_kind.npy"),
        parent=array("symbol_parent.npy"),
        chunk=array("symbol_chunk.npy"),
        _name_blob=_blob(version / "symbol_name.bin"),
        _name_offsets=array("symbol_name_offsets.npy"),
        _qual_blob=_blob(version / "symbol_qualname.bin"),
        _qual_offsets=array("symbol_qualname_offsets.npy"),
        _doc_starts=np.searchsorted(np.asarray(symbol_doc), np.arange(len(docs) + 1), side="left").astype(np.int64),
    )
    data = IndexData(
        path=index_root,
        version_dir=version,
        manifest=manifest,
        docs=docs,
        doc_index={doc["path"]: i for i, doc in enumerate(docs)},
        chunk_ids=chunk_ids,
        chunk_titles=listing("chunk_titles.json"),
        chunk_doc=array("chunk_doc.npy"),
        chunk_lines=array("chunk_lines.npy"),
        chunk_keys=array("chunk_keys.npy"),
        vocab=vocab,
        term_ids={term: i for i, term in enumerate(vocab)},
        tf=tf,
        doc_lengths=array("doc_lengths.npy"),
        vectors=vectors,
        ann_path=version / ANN_FILE if ANN_FILE in manifest["artefacts"] else None,
        kinds=kinds,
        chunk_kind=array("chunk_kind.npy"),
        chunk_symbol=array("chunk_symbol.npy"),
        vector_mask=array(VECTOR_MASK_FILE),
        symbols=symbols,
        _chunk_blob=_blob(version / "chunk_text.bin"),
        _chunk_offsets=array("chunk_text_offsets.npy"),
        _doc_blob=_blob(version / "doc_text.bin"),
        _doc_offsets=array("doc_text_offsets.npy"),
    )
    lengths = {len(data.chunk_titles), len(data.chunk_doc), len(data.chunk_lines), len(data.doc_lengths),
               len(data._chunk_offsets) - 1, len(data.chunk_kind), len(data.chunk_symbol), len(data.vector_mask)}
    if vectors is not None:
        lengths.add(len(vectors))
    if lengths != {n} or len(data._doc_offsets) - 1 != len(docs):
        raise ValueError("artefacts disagree on the number of chunks or docs")
    m = len(symbols)
    if {len(symbols.lines), len(symbols.kind), len(symbols.parent), len(symbols.chunk),
            len(symbols._name_offsets) - 1, len(symbols._qual_offsets) - 1} != {m}:
        raise ValueError("symbol table columns disagree on the number of symbols")
    return data


def open_previous(path: Path) -> PreviousVersion | None:
    """The current version at `path` for a build to reuse vectors from: this format or an older one in
    REUSABLE_FORMATS (an upgrade never re-embeds unchanged text). None when there is nothing usable."""
    try:
        version = current_version_dir(Path(path))
        manifest = json.loads((version / MANIFEST_FILE).read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or manifest.get("format_version") not in REUSABLE_FORMATS:
            return None
        artefacts = manifest["artefacts"]
        for name in ("chunk_keys.npy", VECTORS_FILE, VECTOR_MASK_FILE):
            if name in artefacts and (version / name).stat().st_size != artefacts[name]["bytes"]:
                return None
        keys = np.load(version / "chunk_keys.npy", mmap_mode="r", allow_pickle=False)
        vectors = np.load(version / VECTORS_FILE, mmap_mode="r", allow_pickle=False) if VECTORS_FILE in artefacts else None
        mask = np.load(version / VECTOR_MASK_FILE, mmap_mode="r", allow_pickle=False) if VECTOR_MASK_FILE in artefacts else None
    except IndexNotFoundError:
        log.debug("first build at %s: nothing to reuse", path)  # not news: this build is making it
        return None
    except (IndexCorruptError, OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        log.info("not reusing anything from %s: %s", path, exc)
        return None
    if vectors is not None and mask is None:
        mask = np.ones(len(keys), dtype=bool)  # format 2: every row has a vector
    return PreviousVersion(_index_root(Path(path), version), version, manifest, keys, vectors, mask)


def _blob(path: Path) -> np.ndarray:
    """The file's bytes as a read-only uint8 array over a memory map (a plain ndarray view: see _load)."""
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=np.uint8)
    return np.asarray(np.memmap(path, dtype=np.uint8, mode="r"))


def _read_current_name(out: Path) -> str | None:
    try:
        name = (out / CURRENT_FILE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name or None


def _index_root(path: Path, version: Path) -> Path:
    """The OUT directory to name in messages (the parent of versions/ when given a version dir)."""
    if version == path and version.parent.name == VERSIONS_DIR:
        return version.parent.parent
    return path


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()
