"""build_index with real vectors: incremental reuse equals a fresh build; the report; model errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from index import IndexConfig, ModelMissingError, build_index, open_index

FILES = {
    "pkg/walker.py": (
        "import os\n\n\ndef list_files(root):\n    '''Every file below root.'''\n"
        "    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]\n\n\n"
        "class Cache:\n    '''Remembers results.'''\n\n    def get(self, key):\n        return self.store.get(key)\n"
    ),
    "pkg/math_utils.py": "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n",
    "docs/guide.md": "# Guide\n\n## Install\n\nRun the installer.\n\n## Search\n\nAsk a question.\n",
}

pytestmark = pytest.mark.model


def _corpus(root: Path) -> Path:
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


def _snapshot(out: Path) -> dict:
    data = open_index(out)
    return {
        "ids": list(data.chunk_ids),
        "texts": [data.chunk_text(i) for i in range(data.n_chunks)],
        "titles": list(data.chunk_titles),
        "vocab": list(data.vocab),
        "tf": data.tf.toarray(),
        "lengths": np.asarray(data.doc_lengths).copy(),
        "vectors": np.asarray(data.vectors).copy(),
        "files": {p: (f["sha256"], f["chunks"]) for p, f in data.manifest["files"].items()},
    }


def test_build_incremental_reembeds_only_changed_chunks_and_equals_fresh(tmp_path: Path) -> None:
    """It re-embeds nothing for unchanged sources, only the edited file's chunks after an edit,
    and the result equals a fresh build (ids, texts, BM25 statistics; vectors within 1e-5)."""
    config = IndexConfig(lock_wait_seconds=0.2)
    src, out = _corpus(tmp_path / "src"), tmp_path / "out"
    first = build_index([src], out, config)
    assert first.has_vectors and first.chunks_embedded == first.chunks and first.chunks_reused == 0
    vectors = open_index(out).vectors
    assert vectors.dtype == np.float32 and vectors.shape == (first.chunks, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    again = build_index([src], out, config)
    assert again.chunks_embedded == 0 and again.chunks_reused == again.chunks

    edited = FILES["pkg/math_utils.py"].replace("return a * b", "return a * b * 1  # scaled")
    (src / "pkg" / "math_utils.py").write_text(edited)
    incremental = build_index([src], out, config)
    assert incremental.chunks_embedded == 1  # only `def mul` changed
    assert incremental.chunks_reused == incremental.chunks - 1

    fresh_src = tmp_path / "fresh"
    shutil.copytree(src, fresh_src)
    fresh_out = tmp_path / "fresh_out"
    fresh = build_index([fresh_src], fresh_out, config)
    assert fresh.chunks_embedded == fresh.chunks
    a, b = _snapshot(out), _snapshot(fresh_out)
    for key in ("ids", "texts", "titles", "vocab", "files"):
        assert a[key] == b[key], key
    assert np.array_equal(a["tf"], b["tf"]) and np.array_equal(a["lengths"], b["lengths"])
    assert np.max(np.abs(a["vectors"] - b["vectors"])) < 1e-5


def test_build_force_reembeds_everything(tmp_path: Path) -> None:
    """It ignores the current version's vectors with force=True."""
    src, out = _corpus(tmp_path / "src"), tmp_path / "out"
    build_index([src], out, IndexConfig())
    report = build_index([src], out, IndexConfig(force=True))
    assert report.chunks_reused == 0 and report.chunks_embedded == report.chunks


def test_build_report_summarises_for_humans(tmp_path: Path) -> None:
    """It reports files, skip reasons, chunks and embedding counts in a readable summary."""
    src = _corpus(tmp_path / "src")
    (src / "yarn.lock").write_text("lock")
    report = build_index([src], tmp_path / "out", IndexConfig(with_vectors=False))
    assert (report.files_indexed, report.files_skipped, report.skipped) == (3, 1, {"lock_file": 1})
    assert report.files_seen == 4 and not report.has_vectors
    text = report.summary()
    assert "3 indexed, 1 skipped (lock_file 1)" in text and "--no-vectors" in text


@pytest.mark.parametrize("spec", ["/nonexistent/model/folder", "no-such-embedding-package"])
def test_build_missing_model_exits_4_with_the_install_command(tmp_path: Path, spec: str) -> None:
    """It raises ModelMissingError (exit 4) naming the install command, and writes no index."""
    src, out = _corpus(tmp_path / "src"), tmp_path / "out"
    with pytest.raises(ModelMissingError, match="pip install") as info:
        build_index([src], out, IndexConfig(embed_model=spec))
    assert info.value.exit_code == 4
    assert not (out / "CURRENT").exists()


def test_build_jsonl_corpus_gives_record_chunks(tmp_path: Path) -> None:
    """It indexes a BEIR-style jsonl: record ids as doc ids and paths, titles on every chunk."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        '{"id": "10", "title": "Yeast mitosis", "text": "Cells divide by mitosis."}\n'
        '{"id": "11", "title": "Bees", "text": "Bees dance to share where food is."}\n'
    )
    build_index([corpus], tmp_path / "out", IndexConfig(with_vectors=False))
    data = open_index(tmp_path / "out")
    assert data.chunk_ids == ["10:1-1", "11:1-1"]
    assert data.chunk_titles == ["Yeast mitosis", "Bees"]
    assert [d["doc_id"] for d in data.docs] == ["10", "11"]
    assert "mitosi" in data.term_ids and "yeast" in data.term_ids  # the title is indexed too


def test_build_writes_an_approximate_index_above_the_threshold(tmp_path: Path) -> None:
    """It writes ann.faiss above approx_threshold and records its measured recall@10 in the manifest."""
    import faiss

    src = _corpus(tmp_path / "src")
    report = build_index([src], tmp_path / "out", IndexConfig(approx_threshold=2))
    data = open_index(tmp_path / "out")
    assert data.ann_path is not None and data.ann_path.is_file()
    assert faiss.read_index(str(data.ann_path)).ntotal == data.n_chunks
    ann = data.manifest["ann"]
    assert ann["kind"] == "hnsw_flat_ip" and ann["recall_queries"] == data.n_chunks
    assert report.ann_recall_at_10 == ann["recall_at_10"] == 1.0  # tiny corpus: HNSW is exact
