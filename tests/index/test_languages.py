"""language_for: contract language names from file names."""

from __future__ import annotations

import pytest

from index import language_for


@pytest.mark.parametrize(
    ("path", "language"),
    [("a/b.py", "python"), ("README.md", "markdown"), ("x.tsx", "typescript"), ("Dockerfile", "dockerfile"),
     ("run.sh", "shell"), ("c.hpp", "cpp"), ("conf.yml", "yaml"), ("LICENSE", "text"), ("X.PY", "python")],
)
def test_language_for_maps_names_to_contract_languages(path: str, language: str) -> None:
    """It names the language from the suffix or whole file name, "text" when unknown."""
    assert language_for(path) == language
