"""The ONNX encoder export: faithful to the PyTorch model, cached, carried by every index version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index import (
    IndexConfig,
    IndexCorruptError,
    ModelLocation,
    build_index,
    load_embedder,
    open_index,
    open_index_embedder,
)
from index.export import PRECISIONS, RECIPE, prepare_encoder

TEXTS = [
    "def read_lines(path):\n    with open(path) as handle:\n        return handle.read().splitlines()",
    "Mesenchymal stem cells reside in the suture niche of craniofacial bones.",
    "how do I configure retries with exponential backoff",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


def _reference_vectors(location: ModelLocation) -> np.ndarray:
    """The model run the stock way: sentence-transformers on PyTorch, fp32."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(location.path), device="cpu", local_files_only=True)
    return model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)


@pytest.mark.model
@pytest.mark.parametrize("precision", PRECISIONS)
def test_export_matches_sentence_transformers(model_location: ModelLocation, cache_dir: Path, precision: str) -> None:
    """It exports an encoder whose vectors equal sentence-transformers' fp32 ones (fp32: to 1e-4;
    int8: cosine >= 0.97 on every text), with a tokenizer beside it."""
    files = prepare_encoder(model_location, precision, cache_dir)
    assert files.model.is_file() and files.tokenizer.is_file() and files.precision == precision
    embedder = load_embedder(files.model.read_bytes(), files.tokenizer, files.pooling, model_location.dim,
                             model_location.max_tokens)
    ours, reference = embedder.encode(TEXTS), _reference_vectors(model_location)
    cosines = np.sum(ours * reference, axis=1)
    if precision == "fp32":
        assert np.max(np.abs(ours - reference)) < 1e-4
    else:
        assert cosines.min() >= 0.97, cosines
        assert files.model.stat().st_size < 0.4 * (model_location.path / model_location.weights_file).stat().st_size


@pytest.mark.model
def test_export_is_cached_and_a_damaged_entry_is_replaced(model_location: ModelLocation, cache_dir: Path) -> None:
    """It reuses a cached export (same file, not rewritten) and exports again over a damaged one."""
    first = prepare_encoder(model_location, "int8", cache_dir)
    stamp = first.model.stat().st_mtime_ns
    again = prepare_encoder(model_location, "int8", cache_dir)
    assert (again.model, again.sha256, again.model.stat().st_mtime_ns) == (first.model, first.sha256, stamp)
    first.model.write_bytes(first.model.read_bytes()[:1000])  # a torn file
    repaired = prepare_encoder(model_location, "int8", cache_dir)
    assert repaired.model.stat().st_size > 1000
    load_embedder(repaired.model.read_bytes(), repaired.tokenizer, repaired.pooling, 384, 256).encode(["works"])


@pytest.mark.model
def test_index_carries_its_encoder_and_refuses_a_tampered_one(
    tmp_path: Path, cache_dir: Path, model_location: ModelLocation
) -> None:
    """It stores the encoder in the version (queries embed like the chunks did: a chunk's own text
    finds itself first) and raises IndexCorruptError when that file no longer matches its sha256."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.md").write_text("# Retries\nExponential backoff with jitter for HTTP calls.\n")
    (src / "b.md").write_text("# Bananas\nBananas are yellow and grow in bunches.\n")
    out = tmp_path / "idx"
    build_index([src], out, IndexConfig(model_cache_dir=cache_dir))
    data = open_index(out)
    encoder = data.manifest["models"]["embed"]["encoder"]
    assert encoder["precision"] == "int8" and encoder["sha256"] == data.manifest["artefacts"]["embed.onnx"]["sha256"]
    query = open_index_embedder(data).encode(["Exponential backoff with jitter for HTTP calls."])[0]
    assert int(np.argmax(np.asarray(data.vectors) @ query)) == data.doc_index["a.md"]

    model = data.version_dir / "embed.onnx"
    tampered = bytearray(model.read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF
    model.unlink()  # a hard link may share the cache's inode: replace the file, do not write through it
    model.write_bytes(bytes(tampered))
    with pytest.raises(IndexCorruptError, match="embed.onnx"):
        open_index_embedder(open_index(out))
    assert prepare_encoder(model_location, "int8", cache_dir).sha256 == encoder["sha256"]  # the cache is intact


@pytest.mark.model
def test_two_builds_exporting_at_once_both_get_a_whole_encoder(tmp_path: Path) -> None:
    """Two processes exporting into one empty cache at the same time both end with a loadable
    encoder, and the cache holds one entry and no half-written staging directory."""
    import subprocess
    import sys

    script = (
        "import sys; from pathlib import Path\n"
        "from index import resolve_embed_model, load_embedder\n"
        "from index.export import prepare_encoder\n"
        "files = prepare_encoder(resolve_embed_model(None), 'int8', Path(sys.argv[1]))\n"
        "load_embedder(files.model.read_bytes(), files.tokenizer, files.pooling, 384, 256).encode(['ok'])\n"
        "print(files.model)\n"
    )
    root = Path(__file__).resolve().parents[2]
    runs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=root, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in outputs]
    entries = sorted(p.name for p in (tmp_path / "encoders").iterdir())
    assert len(entries) == 1 and entries[0].endswith(RECIPE), entries  # no staging directory left
    assert all(Path(out.strip()).is_file() for out, _ in outputs)
