"""Keyword first, vectors in the background (issue 12 part 1): `serve --root` on a tree with no index
serves BM25 at once, embeds in a separate low-priority process, then switches to the version with
vectors between calls; search_code says how much of the index has vectors. The real server over stdio."""

import re
import shutil
import time

import anyio
import pytest

from tests.server.conftest import connect

pytestmark = [pytest.mark.anyio, pytest.mark.linux_only, pytest.mark.slow, pytest.mark.model]

QUERY = "token bucket rate limiter"
COVERAGE_WAIT_S = 420


async def _coverage(session) -> float:
    reply = await session.call_tool("index_status", {})
    assert reply.is_error is False
    (entry,) = reply.structured_content["indexes"]
    return entry["vector_coverage"]


async def test_keyword_first_then_hybrid_with_honest_coverage(corpus_dir, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(corpus_dir, tree)
    log_path = tmp_path / "server.log"
    with open(log_path, "a") as errlog:
        async with connect("--root", str(tree), home=tmp_path, errlog=errlog) as session:
            first = await session.call_tool(
                "execute_code", {"code": f"result = [h.path for h in bm25({QUERY!r}, k=3)]"})
            assert first.is_error is False, first.content[0].text
            assert "src/ratelimit.py" in first.structured_content["result"]

            # Honest while vectors are missing: the reply's coverage is the served version's, and
            # at 0 the text says hybrid ranked by BM25 alone; semantic refuses and says why.
            early = await session.call_tool("search_code", {"query": QUERY, "rerank": False})
            assert early.is_error is False, early.content[0].text
            coverage = early.structured_content["coverage"]
            assert coverage in (0.0, 1.0) and early.structured_content["hits"]
            if coverage == 0.0:
                assert "vector coverage 0% (BM25 alone)" in early.content[0].text
                semantic = await session.call_tool("search_code", {"query": QUERY, "mode": "semantic",
                                                                   "rerank": False})
                if semantic.structured_content["coverage"] == 0.0:
                    assert semantic.is_error is True and "still being built" in semantic.content[0].text

            deadline = time.monotonic() + COVERAGE_WAIT_S
            while (covered := await _coverage(session)) < 1.0 and time.monotonic() < deadline:
                await anyio.sleep(1.0)
            assert covered == 1.0
            # index_status reads the index on disk; the fork server switches at its next refresh check.
            while time.monotonic() < deadline:
                late = await session.call_tool("search_code", {"query": QUERY, "rerank": False})
                if late.structured_content["coverage"] == 1.0:
                    break
                await anyio.sleep(1.0)
            assert late.is_error is False and late.structured_content["coverage"] == 1.0
            assert late.structured_content["hits"][0]["path"] == "src/ratelimit.py"
            assert "vector coverage" not in late.content[0].text
            semantic = await session.call_tool("search_code", {"query": QUERY, "mode": "semantic", "rerank": False})
            assert semantic.is_error is False and semantic.structured_content["hits"]
    log = log_path.read_text()
    # The first version served was BM25 only, and the vectors came from the background process.
    assert re.search(r"ready in \d+ ms, serving .* \(vector coverage 0\.00\)", log), log[-3000:]
    assert "building vectors in the background" in log
    assert re.search(r"vectors INFO vectors: [1-9]\d* embedded", log)  # the low-priority child's own line
    assert "serving the new version: vector coverage 1.00" in log
