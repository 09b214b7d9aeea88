"""Shared fixtures of the index tests: the real packaged model's tokenizer and embedder, loaded once."""

from __future__ import annotations

import pytest

from tests.markers import holds_model

from index import Embedder, IndexConfig, ModelLocation, ModelTokenCounter, open_embedder, open_token_counter, resolve_embed_model


@pytest.fixture(scope="session")
def model_location() -> ModelLocation:
    return resolve_embed_model(None)


@pytest.fixture(scope="session")
def token_counter(model_location: ModelLocation) -> ModelTokenCounter:
    return open_token_counter(model_location)


@pytest.fixture(scope="session")
@holds_model
def embedder(model_location: ModelLocation) -> Embedder:
    return open_embedder(model_location, threads=2)


@pytest.fixture()
def bm25_config() -> IndexConfig:
    """A config for tests where vectors are not the point (fast: no embedding)."""
    return IndexConfig(with_vectors=False, lock_wait_seconds=0.2)
