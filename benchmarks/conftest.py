"""Benchmark fixtures: the cached SciFact index and a result collector that prints JSON lines.

Run: .venv/bin/pytest benchmarks -o python_files='bench_*.py' -p no:cacheprovider (see README.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


@pytest.fixture(scope="session")
def scifact_index_dir() -> Path:
    if not common.SCIFACT.is_dir():
        pytest.skip("shared/datasets/scifact is not beside the repository")
    index_dir = common.CACHE / "scifact-index"
    if not (index_dir / "CURRENT").is_file():  # the corpus never changes: build once
        common.build_cached_index("scifact-index", [common.SCIFACT / "corpus.jsonl"])
    return index_dir


@pytest.fixture(scope="session")
def scifact_queries() -> list[str]:
    with (common.SCIFACT / "queries.jsonl").open(encoding="utf-8") as lines:
        return [json.loads(line)["text"] for line in lines if line.strip()]


@pytest.fixture(scope="module")
def results() -> dict:
    """Numbers shared between the benches of one module (for ratios measured in the same run)."""
    return {}
