"""`index build --vectors later` then `index embed DIR`, through the real CLI (issue 12).

The keyword index is complete and servable at once with vector coverage 0; `index embed` fills the
vectors, survives `kill -9` (the next run continues from its checkpoints and never embeds a
checkpointed chunk again), switches atomically, and ends with exactly the vectors a full build makes.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.test_cli import ROOT, one_line_error, run_cli

TOPICS = ("retry", "cache", "parser", "socket", "ledger", "invoice", "thumbnail", "scheduler", "quota", "tensor")


def _write_tree(root: Path, files: int = 40, functions: int = 10) -> Path:
    """`files` Python modules of `functions` distinct documented functions (about one chunk each)."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        body = "\n\n".join(
            f"def {TOPICS[(i + j) % len(TOPICS)]}_{i}_{j}(value, limit={j}):\n"
            f"    \"\"\"Handle the {TOPICS[(i * j) % len(TOPICS)]} step {j} of stage {i}: clamp value to limit\n"
            f"    and report how far over it was ({i * 31 + j} units of {TOPICS[j % len(TOPICS)]}).\"\"\"\n"
            f"    over = max(0, value - limit)\n    return min(value, limit), over * {i + 1}\n"
            for j in range(functions)
        )
        (root / f"stage_{i:02d}.py").write_text(body + "\n")
    return root


def _json(*args: str) -> dict:
    done = run_cli(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _coverage(index: Path) -> float:
    return _json("index", "status", str(index))["indexes"][0]["vector_coverage"]


def _current(index: Path) -> str:
    return (index / "CURRENT").read_text().strip()


def _vectors(index: Path) -> np.ndarray:
    return np.load(index / "versions" / _current(index) / "vectors.npy")


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _build_later(folder: Path) -> tuple[Path, Path]:
    src, out = _write_tree(folder / "src"), folder / "index"
    done = run_cli("index", "build", src, "--out", out, "--vectors", "later")
    assert done.returncode == 0, done.stderr
    return src, out


@pytest.fixture()
def later_index(tmp_path: Path) -> tuple[Path, Path]:
    """A keyword-first index of its own, for a test that embeds into it or serves it."""
    return _build_later(tmp_path)


@pytest.fixture(scope="module")
def shared_later_index(tmp_path_factory) -> tuple[Path, Path]:
    """One keyword-first index for the tests that leave its version unchanged (and check that they do)."""
    return _build_later(tmp_path_factory.mktemp("later"))


def test_build_vectors_later_is_a_complete_keyword_index_with_coverage_0(shared_later_index):
    """It writes BM25, symbols and texts at once, intact, and status says coverage 0."""
    _, out = shared_later_index
    status = _json("index", "status", str(out))["indexes"][0]
    assert status["chunks"] >= 300 and status["vector_coverage"] == 0.0 and status["has_vectors"] is False
    hits = _json("search", "clamp the thumbnail step", "--index", str(out), "--mode", "bm25", "--no-rerank")
    assert hits and "thumbnail" in hits[0]["text"]
    assert run_cli("index", "info", out, "--verify").returncode == 0


@pytest.mark.slow
@pytest.mark.model
def test_vectors_later_index_serves_hybrid_as_bm25_and_refuses_semantic(later_index):
    """Served at once: hybrid ranks with BM25 alone, definitions answer in the sandbox, and semantic
    search refuses saying the vectors are not there yet."""
    _, out = later_index
    bm25 = _json("search", "clamp the thumbnail step", "--index", str(out), "--mode", "bm25", "--no-rerank")
    hybrid = _json("search", "clamp the thumbnail step", "--index", str(out), "--mode", "hybrid", "--no-rerank")
    assert [h["id"] for h in hybrid] == [h["id"] for h in bm25]
    done = run_cli("search", "thumbnail", "--index", out, "--mode", "semantic", "--no-rerank")
    assert done.returncode == 2 and "no vectors yet" in one_line_error(done)
    program = "result = [h.symbol for h in definitions('quota_5_3')]"
    done = run_cli("exec", "--index", out, program, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == ["quota_5_3"]


def test_index_embed_refuses_what_is_not_an_index(tmp_path):
    """It exits 3 naming the directory, and creates nothing there."""
    (tmp_path / "notes").mkdir()
    done = run_cli("index", "embed", tmp_path / "notes")
    assert done.returncode == 3, done.stderr
    assert "notes" in one_line_error(done)
    assert os.listdir(tmp_path / "notes") == []


def test_index_embed_refuses_an_index_locked_by_a_build(shared_later_index):
    """While another build holds OUT/.lock it exits 2 saying so, and the index is unchanged."""
    _, out = shared_later_index
    before = _current(out)
    with open(out / ".lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        done = run_cli("index", "embed", out)
    assert done.returncode == 2, done.stderr
    assert "another build" in one_line_error(done)
    assert _current(out) == before and not (out / ".embed").exists()


def test_index_embed_missing_model_exits_4(shared_later_index, tmp_path):
    """A model that is not installed: exit 4 naming it, the keyword index unchanged."""
    _, out = shared_later_index
    before = _current(out)
    done = run_cli("index", "embed", out, "--embed-model", tmp_path / "no-such-model")
    assert done.returncode == 4, done.stderr
    assert "no-such-model" in one_line_error(done)
    assert _current(out) == before and _coverage(out) == 0.0


@pytest.mark.slow
@pytest.mark.model
def test_index_embed_resumes_after_kill_9_and_equals_a_full_build(later_index, tmp_path):
    """Killed with SIGKILL after a few checkpoints, the index still serves its keyword version
    (verified intact, coverage 0); the next run takes every checkpointed chunk from disk, embeds only
    the rest, switches to a version with coverage 1 whose vectors equal a full build's, and leaves no
    checkpoint behind. A third run has nothing to do."""
    src, out = later_index
    before = _current(out)
    env = {**os.environ, "HOME": str(ROOT / ".pytest-home"),
           "KNOWLEDGE_MCP_STATE_DIR": str(ROOT / ".pytest-home" / "state"),
           "KNOWLEDGE_MCP_CACHE_DIR": str(ROOT / ".pytest-home" / "cache"), "KNOWLEDGE_MCP_LOG_LEVEL": "WARNING"}
    process = subprocess.Popen([sys.executable, "-m", "server", "index", "embed", str(out), "--checkpoint-chunks", "16"],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    checkpoints: list[Path] = []
    while time.monotonic() < deadline and process.poll() is None:
        checkpoints = sorted(out.glob(".embed/*/*.npy"))
        if len(checkpoints) >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, f"index embed ended before it could be killed: {process.stderr.read()!r}"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stderr.close()
    saved = sorted(out.glob(".embed/*/*.npy"))
    assert len(saved) >= 3
    saved_keys = {bytes(k) for path in saved for k in np.load(path)["key"]}

    assert _current(out) == before and _coverage(out) == 0.0
    assert run_cli("index", "info", out, "--verify").returncode == 0
    assert _json("search", "ledger step", "--index", str(out), "--mode", "bm25", "--no-rerank")

    report = _json("index", "embed", str(out))
    total = report["chunks_missing"]
    assert report["chunks_resumed"] >= len(saved_keys) >= 48
    assert report["chunks_embedded"] + report["chunks_resumed"] == total == report["chunks"]
    assert report["vector_coverage"] == 1.0 and _coverage(out) == 1.0 and _current(out) != before
    assert not (out / ".embed").exists()
    assert run_cli("index", "info", out, "--verify").returncode == 0

    full = tmp_path / "full"
    done = run_cli("index", "build", src, "--out", full)
    assert done.returncode == 0, done.stderr
    assert np.array_equal(_vectors(out), _vectors(full))
    hits = _json("search", "clamp the invoice value", "--index", str(out), "--mode", "semantic", "--no-rerank")
    assert hits

    again = _json("index", "embed", str(out))
    assert again["chunks_missing"] == 0 and again["chunks_embedded"] == 0


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.linux_only
@pytest.mark.anyio
async def test_serve_index_answers_at_once_and_switches_to_the_embedded_version(later_index, tmp_path):
    """`serve --index DIR` over a `--vectors later` index answers at once and says coverage 0 (hybrid
    is BM25 alone, in the text too); once `index embed DIR` finishes, the running server serves the
    new version between calls: coverage 1 and semantic search answer, with no restart."""
    import anyio

    from tests.server.conftest import connect

    _, out = later_index
    query = "clamp the invoice value to its limit"
    async with connect("--index", str(out), home=tmp_path) as session:
        early = await session.call_tool("search_code", {"query": query, "rerank": False})
        assert early.is_error is False and early.structured_content["hits"]
        assert early.structured_content["coverage"] == 0.0
        assert "vector coverage 0% (BM25 alone)" in early.content[0].text

        done = await anyio.to_thread.run_sync(lambda: run_cli("index", "embed", out))
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            late = await session.call_tool("search_code", {"query": query, "rerank": False})
            if late.structured_content.get("coverage", 1.0) == 1.0:
                break
            await anyio.sleep(0.5)
        assert late.structured_content.get("coverage", 1.0) == 1.0
        semantic = await session.call_tool("search_code", {"query": query, "mode": "semantic", "rerank": False})
        assert semantic.is_error is False and semantic.structured_content["hits"]
