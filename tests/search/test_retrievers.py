"""The backend seam: a Qdrant-backed index (qdrant-client local mode) ranks as the in-process engine does,
and its failures are clear exit-3 errors. Built and searched through the CLI and search.Searcher."""

import importlib.util
import json
import shutil
import socket
from pathlib import Path

import pytest

from search import SearchConfig, Searcher
from tests.test_cli import ROOT, run_cli

# find_spec, not importorskip: importing qdrant-client costs a second at collection, and only the CLI
# processes these tests start (and the slow-marked round trips) use it.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("qdrant_client") is None, reason="qdrant-client is not installed")

# This repository's own text: the search and index packages and the docs.
SOURCES = [ROOT / "search", ROOT / "index", ROOT / "docs"]
QUERIES = [
    "reciprocal rank fusion weights", "BM25 saturation k1 length normalisation", "atomic switch of the CURRENT version",
    "cross-encoder rerank depth", "glob filter on paths", "embedding model sha256 check", "token bucket",
    "chunk overlap lines", "symbol table of definitions", "grep RE2 pattern timeout", "mmap read only arrays",
    "lock file wait seconds", "qdrant collection alias", "idf lucene okapi epsilon", "vector mask chunks without vectors",
]


def _build(base: Path, *extra) -> tuple[Path, Path]:
    out, store = base / "index", base / "store"
    done = run_cli("index", "build", *SOURCES, "--out", out, "--no-vectors", "--backend", "qdrant",
                   "--qdrant-path", store, "--collection", "kmcp", *extra, tmp_home=base)
    assert done.returncode == 0, done.stderr
    assert "qdrant_collection=kmcp-" in done.stdout
    return out, store


@pytest.fixture(scope="module")
def qdrant_index(tmp_path_factory):
    """This repository indexed (BM25 only) into a local-mode Qdrant store; DIR is the sidecar."""
    return _build(tmp_path_factory.mktemp("qdrant"))


@pytest.fixture(scope="module")
def edge_index(tmp_path_factory):
    """The same, into qdrant-edge-py (the Qdrant engine embedded in this process)."""
    pytest.importorskip("qdrant_edge")
    return _build(tmp_path_factory.mktemp("edge"), "--qdrant-edge")


def _in_process_copy(index_dir: Path, tmp_path: Path) -> Path:
    """The same index version without its backend record: served by the in-process engine."""
    copy = tmp_path / "inprocess"
    shutil.copytree(index_dir, copy, symlinks=True)
    (copy / "backend.json").unlink()
    return copy


def _assert_same_ranking(expected, got, query):
    """Same top 10 and scores; rows may swap only where their scores tie (float32 in Qdrant)."""
    assert len(expected) == len(got), query
    for rank, (want, have) in enumerate(zip(expected, got)):
        assert have.score == pytest.approx(want.score, rel=1e-4), (query, rank)
        if want.id != have.id:
            assert any(h.id == want.id and h.score == pytest.approx(want.score, rel=1e-4) for h in got) or \
                rank == len(expected) - 1, (query, rank, want.id, have.id)


def _assert_close_fusion(expected, got, query):
    """Fused lists agree at the top: ties among BM25 scores at the candidate cut (rank 50) may let the
    engines keep different tied chunks, which moves a few fused scores lower down; two of the top
    three may swap only where their fused scores nearly tie (within 2%)."""
    assert {h.id for h in got[:3]} == {h.id for h in expected[:3]}, query
    expected_scores = {h.id: h.score for h in expected}
    for want, have in zip(expected[:3], got[:3]):
        if want.id != have.id:
            assert abs(expected_scores[have.id] - want.score) <= 0.02 * want.score, (query, want.id, have.id)
    assert len({h.id for h in got} & {h.id for h in expected}) >= len(expected) - 2, query


@pytest.mark.slow  # builds this repository into Qdrant through the CLI (module fixture): many seconds
@pytest.mark.parametrize("engine", ["qdrant_index", "edge_index"])
def test_retrievers_qdrant_bm25_matches_in_process_top10(engine, request, tmp_path):
    """It ranks BM25 in Qdrant (sparse vectors of our tokenizer, IDF modifier), through qdrant-client's
    local mode and through qdrant-edge-py, exactly as the in-process Lucene BM25 ranks this repository's
    text: top 10 and scores, with and without a path filter."""
    index_dir, _ = request.getfixturevalue(engine)
    in_process = Searcher.open(_in_process_copy(index_dir, tmp_path), SearchConfig(), load_models=False)
    qdrant = Searcher.open(index_dir, SearchConfig(), load_models=False)
    for query in QUERIES:
        for path in (None, "search/**"):
            expected = in_process.bm25(query, k=10, path=path)
            got = qdrant.bm25(query, k=10, path=path)
            assert expected, query
            _assert_same_ranking(expected, got, query)
            assert [h.path for h in got] == [h.path for h in got if path is None or h.path.startswith("search/")]


@pytest.mark.slow  # builds this repository into Qdrant through the CLI (module fixture): many seconds
def test_retrievers_index_info_names_backend(qdrant_index, tmp_path):
    """It reports the backend and collection in `index info` (text and JSON)."""
    index_dir, store = qdrant_index
    done = run_cli("index", "info", index_dir, "--json", tmp_home=tmp_path)
    assert done.returncode == 0, done.stderr
    backend = json.loads(done.stdout)["backend"]
    assert backend["name"] == "qdrant" and backend["collection"] == "kmcp" and backend["path"] == str(store)
    text = run_cli("index", "info", index_dir, tmp_home=tmp_path).stdout
    assert "backend:        qdrant, collection kmcp" in text


@pytest.mark.slow  # builds this repository into Qdrant through the CLI (module fixture): many seconds
def test_retrievers_missing_collection_is_exit_3(qdrant_index, tmp_path):
    """It exits 3 naming the missing collection and how to rebuild when the version's collection is gone."""
    index_dir, store = qdrant_index
    copy = tmp_path / "copy"
    shutil.copytree(index_dir, copy, symlinks=True)
    record = json.loads((copy / "backend.json").read_text())
    record["versions"] = {version: "kmcp-gone" for version in record["versions"]}
    (copy / "backend.json").write_text(json.dumps(record))
    done = run_cli("search", "token bucket", "--index", copy, "--mode", "bm25", "--no-rerank", tmp_home=tmp_path)
    assert done.returncode == 3, done.stderr
    assert "no collection 'kmcp-gone'" in done.stderr and "--backend qdrant" in done.stderr


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow  # waits on a refused connection through qdrant-client
def test_retrievers_unreachable_qdrant_is_exit_3_and_builds_nothing_remote(tmp_path):
    """It exits 3 with the URL and what to check when Qdrant is unreachable, and never prints the key."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.py").write_text("def f():\n    return 1\n")
    url = f"http://127.0.0.1:{_closed_port()}"
    done = run_cli("index", "build", source, "--out", tmp_path / "index", "--no-vectors", "--backend", "qdrant",
                   "--qdrant-url", url, tmp_home=tmp_path, env_extra={"KNOWLEDGE_MCP_QDRANT_API_KEY": "s3cret-key"})
    assert done.returncode == 3, done.stderr
    assert url in done.stderr and "server is running" in done.stderr
    assert "s3cret-key" not in done.stderr + done.stdout
    assert not (tmp_path / "index" / "CURRENT").exists()  # checked before the build, not after


def test_retrievers_backend_flags_are_checked(tmp_path):
    """It refuses Qdrant flags without --backend qdrant, and --backend qdrant without a location (exit 2)."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.py").write_text("x = 1\n")
    done = run_cli("index", "build", source, "--out", tmp_path / "i", "--qdrant-path", tmp_path / "s", tmp_home=tmp_path)
    assert done.returncode == 2 and "--backend qdrant" in done.stderr
    done = run_cli("index", "build", source, "--out", tmp_path / "i", "--backend", "qdrant", tmp_home=tmp_path)
    assert done.returncode == 2 and "--qdrant-url" in done.stderr


@pytest.mark.slow  # builds this repository into Qdrant through the CLI (module fixture): many seconds
def test_retrievers_serve_refuses_qdrant_index_until_the_broker(qdrant_index, tmp_path):
    """It refuses to serve a Qdrant-backed index from the sandbox (no network there, no key in the fork
    server) with exit 2 and what to use instead, instead of starting a half-working server."""
    index_dir, _ = qdrant_index
    done = run_cli("exec", "--index", index_dir, "print(1)", tmp_home=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Qdrant-backed index" in done.stderr and "search --index DIR" in done.stderr


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.parametrize("engine", [(), ("--qdrant-edge",)], ids=["local-mode", "edge"])
def test_retrievers_qdrant_semantic_and_hybrid_match_in_process(engine, tmp_path):
    """It ranks by vectors in Qdrant and fuses sparse + dense (in Qdrant with equal weights, over one
    batched round trip with our default unequal ones), giving the in-process engine's top 10 and scores."""
    if engine:
        pytest.importorskip("qdrant_edge")
    out = tmp_path / "index"
    done = run_cli("index", "build", ROOT / "docs", "--out", out, "--backend", "qdrant", "--qdrant-path",
                   tmp_path / "store", *engine, tmp_home=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr
    copy = _in_process_copy(out, tmp_path)
    for config in (SearchConfig(), SearchConfig(fusion_weights=(1.0, 1.0))):
        in_process = Searcher.open(copy, config, load_models=True)
        qdrant = Searcher.open(out, config, load_models=True)
        for query in QUERIES[:8]:
            _assert_same_ranking(in_process.semantic(query, k=10), qdrant.semantic(query, k=10), query)
            for path in (None, "ARCHITECTURE.md"):
                _assert_close_fusion(in_process.hybrid(query, k=10, path=path), qdrant.hybrid(query, k=10, path=path),
                                     query)
        qdrant.close()  # local mode: one client per storage folder at a time
