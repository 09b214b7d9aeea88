"""Session fixtures of the search tests: the real cross-encoder (loaded once) and a tiny built index."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.markers import holds_model

from index import IndexConfig, build_index
from search import CrossEncoder, SearchConfig, Searcher, resolve_rerank_model

from .corpus import write_records, write_source_tree


@pytest.fixture(scope="session")
@holds_model
def cross_encoder() -> CrossEncoder:
    """The packaged INT8 cross-encoder with a short truncation (fast on 2 cores)."""
    encoder = CrossEncoder.open(resolve_rerank_model(None), threads=1, max_tokens=128, query_max_tokens=32)
    encoder.warm()
    return encoder


@pytest.fixture(scope="session")
def source_tree(tmp_path_factory) -> Path:
    return write_source_tree(tmp_path_factory.mktemp("tree"))


@pytest.fixture(scope="session")
@holds_model
def code_index(source_tree, tmp_path_factory) -> Path:
    """The tiny source tree indexed with vectors (embeds a few dozen chunks)."""
    out = tmp_path_factory.mktemp("code-index")
    build_index([source_tree], out, IndexConfig(threads=1))
    return out


@pytest.fixture(scope="session")
def code_index_bm25(source_tree, tmp_path_factory) -> Path:
    """The tiny source tree indexed without vectors: the same chunks and terms as `code_index`, no model."""
    out = tmp_path_factory.mktemp("code-index-bm25")
    build_index([source_tree], out, IndexConfig(with_vectors=False, threads=1))
    return out


@pytest.fixture(scope="session")
def bm25_searcher(code_index_bm25) -> Searcher:
    """A searcher with no model loaded, for what needs none: BM25, read, files, argument checks."""
    return Searcher.open(code_index_bm25, SearchConfig(rerank_max_tokens=128), load_models=False)


@pytest.fixture(scope="session")
def records_index(tmp_path_factory) -> Path:
    """The tiny jsonl corpus indexed without vectors (d1 spans several chunks)."""
    folder = tmp_path_factory.mktemp("records")
    out = folder / "index"
    build_index([write_records(folder / "corpus.jsonl")], out, IndexConfig(with_vectors=False, threads=1))
    return out


@pytest.fixture(scope="session")
@holds_model
def searcher(code_index) -> Searcher:
    """A fully loaded searcher over the tiny source tree (embedder + cross-encoder, 1 thread)."""
    return Searcher.open(code_index, SearchConfig(rerank_max_tokens=128), load_models=True)
