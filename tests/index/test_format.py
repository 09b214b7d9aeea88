"""On-disk format: round trip, atomic switch under crashes, lock, checksums, versions, bad input."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import numpy as np
import pytest

import index.format
from index import (
    FORMAT_VERSION,
    IndexConfig,
    IndexCorruptError,
    IndexFormatError,
    IndexLockedError,
    IndexNotFoundError,
    SourceError,
    build_index,
    open_index,
    read_manifest,
    tokenize,
)

FILES = {
    "src/app.py": 'def handle_request(req):\n    """Serve one request."""\n    return req\n',
    "README.md": "# Demo\n\nA demo project about zebras.\n",
    "notes/todo.txt": "buy milk\nwrite tests\n",
}


def _corpus(root: Path, files: dict[str, str] = FILES) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


def _current(out: Path) -> str:
    return (out / "CURRENT").read_text().strip()


def test_format_round_trip(tmp_path: Path, bm25_config: IndexConfig) -> None:
    """It reads back exactly the docs, chunks, lines, titles, texts and term frequencies it wrote."""
    src = _corpus(tmp_path / "src")
    build_index([src], tmp_path / "out", bm25_config)
    data = open_index(tmp_path / "out")
    assert [d["path"] for d in data.docs] == ["README.md", "notes/todo.txt", "src/app.py"]
    assert [data.doc_text(i) for i in range(len(data.docs))] == [FILES[d["path"]] for d in data.docs]
    row = data.chunk_ids.index("src/app.py:1-3")
    assert data.chunk_titles[row] == "def handle_request"
    assert data.chunk_text(row) == FILES["src/app.py"].rstrip("\n")
    assert data.chunk_lines[row].tolist() == [1, 3]
    assert data.docs[data.chunk_doc[row]]["language"] == "python"
    term_counts = {data.vocab[j]: data.tf[row, j] for j in data.tf[row].indices}
    expected = tokenize("src/app.py def handle_request\n" + data.chunk_text(row))
    assert term_counts == {t: expected.count(t) for t in set(expected)}
    assert data.doc_lengths[row] == len(expected)
    assert data.vectors is None and data.manifest["models"]["embed"] is None
    assert data.manifest["format_version"] == FORMAT_VERSION and data.manifest["root"] == str(src.resolve())
    assert set(data.manifest["files"]["src/app.py"]) == {"sha256", "mtime", "size", "chunks"}
    # A view of a memory map (a plain ndarray over the map's pages: nothing was read into memory).
    assert isinstance(data.chunk_lines.base, np.memmap) and not data.chunk_lines.flags.writeable
    data.verify()


@pytest.mark.parametrize("interrupt", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_format_interrupted_build_leaves_the_current_version_intact(
    tmp_path: Path, bm25_config: IndexConfig, monkeypatch: pytest.MonkeyPatch, interrupt: BaseException
) -> None:
    """It keeps the old version current and loadable when a build dies mid-write (crash or Ctrl-C)."""
    src, out = _corpus(tmp_path / "src"), tmp_path / "out"
    build_index([src], out, bm25_config)
    before = _current(out)
    (src / "src" / "app.py").write_text("def changed():\n    return 2\n")
    real_write = index.format._write_bytes

    def dying_write(path: Path, data: bytes) -> None:
        if path.name == "docs.json":
            raise interrupt
        real_write(path, data)

    monkeypatch.setattr(index.format, "_write_bytes", dying_write)
    with pytest.raises(type(interrupt)):
        build_index([src], out, bm25_config)
    monkeypatch.undo()
    assert _current(out) == before
    assert [p.name for p in (out / "versions").iterdir()] == [before]  # no partial left behind
    data = open_index(out)
    assert "def handle_request" in data.chunk_titles
    data.verify()


def test_format_reader_of_the_old_version_keeps_working(tmp_path: Path, bm25_config: IndexConfig) -> None:
    """It leaves a version opened before a rebuild readable, and switches new readers to the new one."""
    src, out = _corpus(tmp_path / "src"), tmp_path / "out"
    build_index([src], out, bm25_config)
    old = open_index(out)
    (src / "notes" / "todo.txt").write_text("sell milk\n")
    build_index([src], out, bm25_config)
    new = open_index(out)
    assert new.version_dir != old.version_dir
    assert old.doc_text(old.doc_index["notes/todo.txt"]) == "buy milk\nwrite tests\n"
    assert new.doc_text(new.doc_index["notes/todo.txt"]) == "sell milk\n"
    old.verify()


def test_format_keeps_only_the_newest_versions(tmp_path: Path, bm25_config: IndexConfig) -> None:
    """It prunes versions beyond keep_versions, never the current one."""
    src, out = _corpus(tmp_path / "src"), tmp_path / "out"
    for _ in range(4):
        build_index([src], out, bm25_config)
    names = sorted(p.name for p in (out / "versions").iterdir())
    assert len(names) == 2 and names[-1] == _current(out)


def test_format_second_build_is_refused_while_locked(tmp_path: Path, bm25_config: IndexConfig) -> None:
    """It refuses a build (IndexLockedError, exit 2) while another process holds OUT/.lock."""
    src, out = _corpus(tmp_path / "src"), tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "a+b") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        with pytest.raises(IndexLockedError, match="lock") as info:
            build_index([src], out, bm25_config)
    assert info.value.exit_code == 2
    assert not (out / "CURRENT").exists()
    build_index([src], out, bm25_config)  # released: the next build succeeds
    assert (out / "CURRENT").exists()


def test_format_checksum_mismatch_is_named(tmp_path: Path, bm25_config: IndexConfig) -> None:
    """It reports a same-size corruption on verify(), naming the artefact and the rebuild command."""
    src, out = _corpus(tmp_path / "src"), tmp_path / "out"
    build_index([src], out, bm25_config)
    victim = out / "versions" / _current(out) / "chunk_text.bin"
    data = bytearray(victim.read_bytes())
    data[0] ^= 0x20
    victim.write_bytes(bytes(data))
    opened = open_index(out)  # sizes still match: opening stays cheap
    with pytest.raises(IndexCorruptError, match=r"chunk_text\.bin.*index build") as info:
        opened.verify()
    assert info.value.exit_code == 3
    with pytest.raises(IndexCorruptError, match=r"chunk_text\.bin"):
        open_index(out, verify=True)


def test_format_truncated_artefact_fails_on_open(tmp_path: Path, bm25_config: IndexConfig) -> None:
    """It refuses to open an index whose artefact has the wrong size, naming the file."""
    src, out = _corpus(tmp_path / "src"), tmp_path / "out"
    build_index([src], out, bm25_config)
    victim = out / "versions" / _current(out) / "tf_data.npy"
    victim.write_bytes(victim.read_bytes()[:-4])
    with pytest.raises(IndexCorruptError, match=r"tf_data\.npy"):
        open_index(out)


def test_format_other_version_is_refused(tmp_path: Path, bm25_config: IndexConfig) -> None:
    """It raises IndexFormatError (exit 3) for an index written by another format version."""
    src, out = _corpus(tmp_path / "src"), tmp_path / "out"
    build_index([src], out, bm25_config)
    manifest_path = out / "versions" / _current(out) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="format version") as info:
        open_index(out)
    assert info.value.exit_code == 3 and info.value.found == FORMAT_VERSION + 1
    with pytest.raises(IndexFormatError):
        read_manifest(out)
    build_index([src], out, bm25_config)  # a rebuild replaces it
    assert open_index(out).manifest["format_version"] == FORMAT_VERSION


def test_format_missing_index_is_not_found(tmp_path: Path) -> None:
    """It raises IndexNotFoundError (exit 3) with the build command for a path holding no index."""
    for path in (tmp_path / "absent", tmp_path):
        with pytest.raises(IndexNotFoundError, match="index build") as info:
            open_index(path)
        assert info.value.exit_code == 3


def test_format_empty_corpus_writes_nothing(tmp_path: Path, bm25_config: IndexConfig) -> None:
    """It raises SourceError (exit 2) for a corpus with nothing to index and leaves no index behind."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "image.bin").write_bytes(b"\0\1\2")
    out = tmp_path / "out"
    with pytest.raises(SourceError, match="nothing to index") as info:
        build_index([src], out, bm25_config)
    assert info.value.exit_code == 2
    assert not (out / "CURRENT").exists() and not (out / "versions").exists()


def test_format_refuses_a_non_index_output_directory(tmp_path: Path, bm25_config: IndexConfig) -> None:
    """It will not write an index into a non-empty directory that holds no index (unless forced)."""
    src, out = _corpus(tmp_path / "src"), tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(SourceError, match="--force"):
        build_index([src], out, bm25_config)
    assert (out / "precious.txt").read_text() == "keep me"


def test_format_output_inside_the_source_is_not_indexed(tmp_path: Path, bm25_config: IndexConfig) -> None:
    """It never indexes its own output directory when it lies inside the source tree."""
    src = _corpus(tmp_path / "src")
    build_index([src], src / ".index", bm25_config)
    build_index([src], src / ".index", bm25_config)
    assert all(not d["path"].startswith(".index") for d in open_index(src / ".index").docs)


SYMBOL_FILES = {
    "pkg/cache.py": (
        "LIMITS = {\n    'a': 1,\n    'b': 2,\n}\n\n\n"
        "class LruCache:\n    '''Least recently used.'''\n\n    def get(self, key):\n        return key\n\n"
        "    def evict(self):\n        pass\n\n\n"
        "def make_cache():\n    return LruCache()\n"
    ),
    "README.md": "# Cache\n\nAbout caches.\n",
}


def test_format_carries_kinds_symbols_and_the_symbol_table(tmp_path: Path, bm25_config: IndexConfig) -> None:
    """Format 3: each chunk's kind and symbol, the symbol table (with each definition's own chunk and
    parent) and the vector mask read back as written."""
    build_index([_corpus(tmp_path / "src", SYMBOL_FILES)], tmp_path / "out", bm25_config)
    data = open_index(tmp_path / "out")
    by_title = {data.chunk_titles[i]: i for i in range(data.n_chunks)}
    assert data.kind_of(by_title["class LruCache"]) == "class" and data.symbol_of(by_title["class LruCache"]) == "LruCache"
    assert data.kind_of(by_title["def make_cache"]) == "function"
    assert data.kind_of(by_title["constant LIMITS"]) == "constant" and data.symbol_of(by_title["constant LIMITS"]) == "LIMITS"
    assert data.kind_of(by_title["Cache"]) == "section" and data.symbol_of(by_title["Cache"]) is None
    table = data.symbols
    doc_row = data.doc_index["pkg/cache.py"]
    records = [table.record(i, data.docs, data.chunk_ids) for i in table.rows_in_doc(doc_row)]
    assert [(r["qualified_name"], r["kind"], r["start_line"], r["end_line"], r["parent"]) for r in records] == [
        ("LIMITS", "constant", 1, 4, None),
        ("LruCache", "class", 7, 14, None),
        ("LruCache.get", "method", 10, 11, "LruCache"),
        ("LruCache.evict", "method", 13, 14, "LruCache"),
        ("make_cache", "function", 17, 18, None),
    ]
    class_chunk = data.chunk_ids[by_title["class LruCache"]]
    assert [r["chunk_id"] for r in records][1:4] == [class_chunk] * 3  # the methods live in the class's chunk
    assert {r["path"] for r in records} == {"pkg/cache.py"} and {r["language"] for r in records} == {"python"}
    assert table.names() == ["LIMITS", "LruCache", "get", "evict", "make_cache"]
    assert len(table.rows_in_doc(data.doc_index["README.md"])) == 0
    assert data.vector_mask.dtype == bool and not data.vector_mask.any() and data.vector_coverage == 0.0


@pytest.mark.model
def test_format_upgrade_from_format_2_reuses_vectors_and_serving_it_is_refused(tmp_path: Path) -> None:
    """A format-2 index (no kinds, symbols or mask; manifest says 2) is refused for serving with the
    rebuild message (exit 3), and a build over it re-embeds nothing whose text is unchanged."""
    config = IndexConfig(lock_wait_seconds=0.2)
    src, out = _corpus(tmp_path / "src", SYMBOL_FILES), tmp_path / "out"
    first = build_index([src], out, config)
    version = out / "versions" / _current(out)
    manifest = json.loads((version / "manifest.json").read_text())
    format_3_only = [name for name in manifest["artefacts"] if name.startswith(("symbol_", "chunk_kind", "chunk_symbol", "vector_mask"))]
    for name in format_3_only:  # what format 2 wrote: everything else, unchanged
        (version / name).unlink()
        del manifest["artefacts"][name]
    manifest["format_version"] = 2
    del manifest["kinds"]
    (version / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError) as info:
        open_index(out)
    assert info.value.exit_code == 3 and info.value.found == 2
    upgraded = build_index([src], out, config)
    assert upgraded.chunks == first.chunks and upgraded.chunks_embedded == 0 and upgraded.chunks_reused == first.chunks
    data = open_index(out)
    assert data.vector_mask.all() and data.vector_coverage == 1.0 and len(data.symbols) == 5
