"""Chunking pipeline speed: walk + parse + chunk + BM25 (an `index build` without vectors) on a large
real tree, in MB of source per CPU second of the one build thread (per core: the figure does not
depend on how busy the other cores are, wall time is reported beside it).

The tree is real code installed at pinned versions with `pip install --no-deps --target` (Python,
C headers, Markdown, ...: TREE_PACKAGES), kept in benchmarks/.cache (never committed); set
KNOWLEDGE_MCP_CHUNK_TREE=DIR to measure another tree (a polyglot checkout, say).
Goal (issue 11): >= 2 MB/s per core.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import common
from index import IndexConfig, build_index, open_index

TREE_PACKAGES = ("transformers==5.23.0", "sympy==1.14.0", "numpy==2.4.6")
GOAL_MB_PER_CPU_SECOND = 2.0


def _tree() -> Path:
    override = os.environ.get("KNOWLEDGE_MCP_CHUNK_TREE")
    if override:
        return Path(override)
    tree = common.CACHE / "chunk-tree"
    if not (tree / ".complete").is_file():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(tree),
                        *TREE_PACKAGES], check=True)
        (tree / ".complete").write_text("\n".join(TREE_PACKAGES) + "\n")
    return tree


def test_chunking_pipeline_mb_per_cpu_second(tmp_path):
    """walk + parse + chunk + BM25 + write of a large real tree, timed by the process's CPU clock."""
    tree = _tree()
    out = tmp_path / "index"
    config = IndexConfig(with_vectors=False, model_cache_dir=common.CACHE / "models")
    cpu, wall = time.process_time(), time.perf_counter()
    report = build_index([tree], out, config)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    data = open_index(out)
    source_bytes = sum(entry["size"] for entry in data.manifest["files"].values())
    by_language: dict[str, int] = {}
    for doc in data.docs:
        by_language[doc["language"]] = by_language.get(doc["language"], 0) + 1
    rate = source_bytes / 1e6 / cpu
    common.emit(
        "chunking_pipeline",
        {"tree": str(tree), "packages": list(TREE_PACKAGES) if "KNOWLEDGE_MCP_CHUNK_TREE" not in os.environ else None},
        {"files": report.files_indexed, "source_bytes": source_bytes, "chunks": report.chunks,
         "symbols": len(data.symbols), "cpu_seconds": round(cpu, 2), "wall_seconds": round(wall, 2),
         "mb_per_cpu_second": round(rate, 3), "mb_per_wall_second": round(source_bytes / 1e6 / wall, 3),
         "files_by_language": dict(sorted(by_language.items(), key=lambda kv: -kv[1])[:12]),
         "goal_mb_per_cpu_second": GOAL_MB_PER_CPU_SECOND, "goal_met": rate >= GOAL_MB_PER_CPU_SECOND},
    )
