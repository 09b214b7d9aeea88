"""SearchConfig validation."""

import pytest

from search import SearchConfig


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("bm25_variant", "bm42", "bm25_variant must be one of"),
        ("k1", -1.0, "k1 must be in"),
        ("b", 1.5, "b must be in"),
        ("k1", float("nan"), "k1 must be a finite number"),
        ("fusion_weights", (0.0, 0.0), "must not both be 0"),
        ("fusion_weights", (1.0,), "fusion_weights must be"),
        ("rerank_depth", 0, "rerank_depth must be an integer >= 1"),
        ("threads", True, "threads must be an integer"),
        ("rerank_max_tokens", 500, "must be <= 512"),
        ("rerank_model", " ", "rerank_model must be a folder path"),
    ],
)
def test_search_config_rejects_bad_values(field, value, message):
    """It raises ValueError naming the field and the allowed range."""
    with pytest.raises(ValueError, match=message):
        SearchConfig(**{field: value})


def test_search_config_defaults_are_valid_and_frozen():
    """It builds with defaults and cannot be changed afterwards."""
    config = SearchConfig()
    assert config.bm25_variant == "lucene"
    with pytest.raises(AttributeError):
        config.k1 = 2.0  # type: ignore[misc]
