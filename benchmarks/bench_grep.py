"""grep speed over 100 MB of indexed real source text: literal, regex with classes, catastrophic patterns.

The corpus is the Python sources of this machine's virtualenv (site-packages, sorted by path, files
up to 1 MB, until 100 MB), written as an index by index.write_index with one chunk per file (grep
reads only the stored document texts, so chunking does not change what it scans). Each pattern runs
through Searcher.grep (k=1000, the API's limit) ROUNDS times, one thread. Goals: p50 <= 300 ms for a
literal, <= 1 s for a regex with classes; patterns that backtrack exponentially in Python's re take
time linear in the text (the same order as a plain regex; goal: <= 2 s).

    .venv/bin/pytest benchmarks/bench_grep.py -o python_files='bench_*.py' -p no:cacheprovider -s
"""

from __future__ import annotations

import hashlib
import statistics
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

import common
from index import FORMAT_VERSION, IndexConfig, IndexContents, write_index
from search import Searcher

TARGET_BYTES = 100_000_000
MAX_FILE_BYTES = 1 << 20
ROUNDS = 7
PATTERNS = {  # name: (pattern, ignore_case, goal p50 ms)
    "literal": ("OrderedDict", False, 300),
    "literal_rare": ("LruCache", False, 300),
    "regex_classes": (r"def [a-z_]+_cache\(", False, 1000),
    "regex_classes_ignore_case": (r"\bretry_[a-z]+\s*=\s*\d+", True, 1000),
    "catastrophic_nested_plus": (r"^(a+)+b$", False, 2000),
    "catastrophic_overlap": (r"(x+x+)+y", False, 2000),
}


def _corpus() -> tuple[list[str], list[str]]:
    root = Path(sysconfig.get_paths()["purelib"])
    paths, texts, total = [], [], 0
    for path in sorted(root.rglob("*.py")):
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                continue
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        paths.append(path.relative_to(root).as_posix())
        texts.append(text)
        total += len(text.encode("utf-8"))
        if total >= TARGET_BYTES:
            break
    return paths, texts


@pytest.fixture(scope="module")
def searcher() -> Searcher:
    out = common.CACHE / f"grep-100mb-format{FORMAT_VERSION}"
    if not (out / "CURRENT").is_file():
        paths, texts = _corpus()
        n = len(paths)
        lines = np.array([[1, max(t.count("\n"), 1)] for t in texts], np.int32)
        keys = np.frombuffer(b"".join(hashlib.sha256(t.encode()).digest()[:16] for t in texts), np.uint8)
        contents = IndexContents(
            docs=[{"doc_id": p, "path": p, "language": "python", "title": p} for p in paths],
            doc_texts=texts, chunk_ids=[f"{p}:1-{end}" for p, (_, end) in zip(paths, lines)],
            chunk_titles=paths, chunk_doc=np.arange(n, dtype=np.int32), chunk_lines=lines, chunk_texts=texts,
            chunk_keys=keys.reshape(n, 16), vocab=["x"], tf=sparse.csr_matrix((n, 1), dtype=np.float32),
            doc_lengths=np.ones(n, np.float32),
        )
        write_index(out, contents, config=IndexConfig(show_progress=False, model_cache_dir=common.CACHE / "models"))
        print(f"[bench] wrote {out} ({n} files)", file=sys.stderr)
    return Searcher.open(out, load_models=False)


def test_grep_100mb(searcher):
    """p50 of each pattern over the whole corpus, one JSON line with every figure and goal_met."""
    blob, _ = searcher.data.doc_bytes()
    metrics: dict[str, object] = {"indexed_mb": round(len(blob) / 1e6, 1), "files": len(searcher.data.docs)}
    met = True
    for name, (pattern, ignore_case, goal_ms) in PATTERNS.items():
        searcher.grep(pattern, ignore_case=ignore_case, k=1000)  # warm the page cache
        timings_ms = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            found = searcher.grep(pattern, ignore_case=ignore_case, k=1000)
            timings_ms.append((time.perf_counter() - started) * 1000)
        p50 = statistics.median(timings_ms)
        metrics[name] = {"pattern": pattern, "p50_ms": round(p50, 1), "max_ms": round(max(timings_ms), 1),
                         "matches": len(found), "goal_ms": goal_ms}
        met &= p50 <= goal_ms
    metrics["goal_met"] = met
    common.emit("grep_100mb", {"k": 1000, "rounds": ROUNDS, "threads": 1}, metrics)
    assert met, metrics
