"""Session fixtures of the search tests: the real cross-encoder (loaded once) and a tiny built index."""

from __future__ import annotations

import pytest

from search import CrossEncoder, resolve_rerank_model


@pytest.fixture(scope="session")
def cross_encoder() -> CrossEncoder:
    """The packaged INT8 cross-encoder with a short truncation (fast on 2 cores)."""
    encoder = CrossEncoder.open(resolve_rerank_model(None), threads=1, max_tokens=128, query_max_tokens=32)
    encoder.warm()
    return encoder
