"""Long work over MCP (issue 12): the index_status tool, resource and CLI; progress notifications of a
long execute_code; cancellation of a queued call and of search_code. The real server over stdio."""

import json
import shutil
import subprocess
import sys
import time

import anyio
import pytest

from tests.server.conftest import ROOT, connect, server_env

pytestmark = [pytest.mark.anyio, pytest.mark.linux_only]

STATUS_FIELDS = {"name", "backend", "files", "chunks", "vector_coverage", "last_updated", "pending_changes",
                 "watcher", "version"}
SPIN = "while True:\n    pass"


@pytest.fixture(scope="module")
def keyword_tree(corpus_dir, tmp_path_factory):
    """A copy of the test corpus and its BM25-only index (no model needed), built through the CLI."""
    base = tmp_path_factory.mktemp("keyword")
    tree = base / "tree"
    shutil.copytree(corpus_dir, tree)
    out = base / "index"
    done = subprocess.run([sys.executable, "-m", "server", "index", "build", str(tree), "--out", str(out), "--no-vectors"],
                          cwd=ROOT, env=server_env(base / "home"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return tree, out


def _cli_status(index_dir, home):
    done = subprocess.run([sys.executable, "-m", "server", "index", "status", str(index_dir), "--json"],
                          cwd=ROOT, env=server_env(home), capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.slow  # three CLI runs around a 1.1 s wait for the mtime to move
def test_cli_index_status_fields_and_pending_changes(keyword_tree, tmp_path):
    """`index status DIR --json` gives every field; an edit, a new file and a deletion are 3 pending changes."""
    tree, out = keyword_tree
    code, stdout, stderr = _cli_status(out, tmp_path)
    assert code == 0, stderr
    (entry,) = json.loads(stdout)["indexes"]
    assert STATUS_FIELDS <= set(entry)
    version = (out / "CURRENT").read_text().strip()
    assert entry["version"] == version and entry["name"] == "default" and entry["backend"] == "inprocess"
    assert entry["files"] == 6 and entry["chunks"] > 6 and entry["vector_coverage"] == 0.0
    assert entry["pending_changes"] == 0 and entry["watcher"] == "none" and entry["last_updated"]
    edited, added, removed = tree / "src" / "ratelimit.py", tree / "src" / "added.py", tree / "docs" / "guide.md"
    originals = {path: path.read_bytes() for path in (edited, removed)}
    try:
        time.sleep(1.1)  # past built_at's second: the new file is newer than the build
        edited.write_bytes(originals[edited] + b"\n# edited\n")
        added.write_text("def added():\n    return 1\n")
        removed.unlink()
        code, stdout, stderr = _cli_status(out, tmp_path)
        assert code == 0, stderr
        assert json.loads(stdout)["indexes"][0]["pending_changes"] == 3
    finally:  # the module's other tests serve this tree's index
        added.unlink(missing_ok=True)
        for path, data in originals.items():
            path.write_bytes(data)
    code, _, stderr = _cli_status(tmp_path / "missing", tmp_path)
    assert code == 3 and "missing" in stderr


@pytest.mark.model  # the served fork server loads the cross-encoder
async def test_index_status_tool_and_resource(keyword_tree, tmp_path):
    """The read-only tool answers every field; the resource carries the same `indexes`; coverage is 0 on a
    BM25-only index (honest), and the refresh loop is reported as running."""
    _, out = keyword_tree
    async with connect("--index", str(out), home=tmp_path) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert tools["index_status"].annotations.read_only_hint is True
        await session.call_tool("execute_code", {"code": "result = 1"})  # loaded
        reply = await session.call_tool("index_status", {})
        assert reply.is_error is False
        (entry,) = reply.structured_content["indexes"]
        assert STATUS_FIELDS <= set(entry)
        assert entry["vector_coverage"] == 0.0 and entry["has_vectors"] is False
        assert entry["files"] == 6 and entry["watcher"] == "polling"
        assert entry["version"] == (out / "CURRENT").read_text().strip()
        assert "vectors 0%" in reply.content[0].text
        resource = json.loads((await session.read_resource("knowledge://index")).contents[0].text)
        assert resource["indexes"][0]["version"] == entry["version"] and resource["files"] == 6


@pytest.mark.model
async def test_index_status_full_coverage(built_index, tmp_path):
    """An index built with vectors reports vector_coverage 1.0."""
    async with connect("--index", str(built_index), home=tmp_path) as session:
        entry = (await session.call_tool("index_status", {})).structured_content["indexes"][0]
        assert entry["vector_coverage"] == 1.0 and entry["has_vectors"] is True


@pytest.mark.model
@pytest.mark.slow
async def test_long_execute_code_sends_progress_with_a_total(keyword_tree, tmp_path):
    """A call with a progress token gets notifications with progress <= total = its timeout."""
    _, out = keyword_tree
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done, total, message):
        seen.append((done, total, message))

    async with connect("--index", str(out), home=tmp_path) as session:
        await session.call_tool("execute_code", {"code": "result = 1"})  # loaded: what follows is the run
        program = "total = 0\nfor i in range(30_000_000):\n    total += i\nresult = total"
        reply = await session.call_tool("execute_code", {"code": program, "timeout_s": 60},
                                        progress_callback=on_progress)
        assert reply.structured_content["outcome"] == "ok", reply.structured_content
    assert seen, "no progress notification arrived"
    assert all(total == 60 and 0 < done <= total and "running" in message for done, total, message in seen)
    assert [done for done, _, _ in seen] == sorted(done for done, _, _ in seen)


def _audit(path):
    return [json.loads(line[line.index("{"):]) for line in path.read_text().splitlines()]


@pytest.mark.model
@pytest.mark.slow
async def test_cancelled_queued_call_never_runs(keyword_tree, tmp_path):
    """With one worker busy, a queued call that is cancelled leaves the queue: after the running call is
    cancelled too, the next call runs at once (a queued spinner would hold the worker for 120 s)."""
    _, out = keyword_tree
    audit = tmp_path / "audit.log"
    env = {"KNOWLEDGE_MCP_MAX_WORKERS": "1", "KNOWLEDGE_MCP_AUDIT_LOG": str(audit)}
    async with connect("--index", str(out), home=tmp_path, env_extra=env) as session:
        await session.call_tool("execute_code", {"code": "print('warm')"})
        running, queued = anyio.CancelScope(), anyio.CancelScope()

        async def call(scope):
            with scope:
                await session.call_tool("execute_code", {"code": SPIN, "timeout_s": 120})

        async with anyio.create_task_group() as group:
            group.start_soon(call, running)
            await anyio.sleep(3)  # the first spinner holds the only worker
            group.start_soon(call, queued)
            await anyio.sleep(2)  # the second waits in the queue
            queued.cancel()
            await anyio.sleep(1)
            running.cancel()
        with anyio.fail_after(60):
            reply = await session.call_tool("execute_code", {"code": "print('next')"})
        assert reply.structured_content["stdout"] == "next\n"
    outcomes = [line["outcome"] for line in _audit(audit) if line.get("tool") == "execute_code"]
    assert outcomes.count("cancelled") == 2


@pytest.mark.model
@pytest.mark.slow
async def test_cancelled_search_code_takes_the_cancel_path(keyword_tree, tmp_path):
    """A search_code queued behind a busy worker and cancelled is recorded as cancelled and never
    answered; the server goes on answering."""
    _, out = keyword_tree
    audit = tmp_path / "audit.log"
    env = {"KNOWLEDGE_MCP_MAX_WORKERS": "1", "KNOWLEDGE_MCP_AUDIT_LOG": str(audit)}
    answered = []
    async with connect("--index", str(out), home=tmp_path, env_extra=env) as session:
        await session.call_tool("execute_code", {"code": "print('warm')"})
        spinner, search = anyio.CancelScope(), anyio.CancelScope()

        async def spin():
            with spinner:
                await session.call_tool("execute_code", {"code": SPIN, "timeout_s": 120})

        async def find():
            with search:
                answered.append(await session.call_tool("search_code", {"query": "token bucket", "mode": "bm25"}))

        async with anyio.create_task_group() as group:
            group.start_soon(spin)
            await anyio.sleep(3)
            group.start_soon(find)
            await anyio.sleep(2)
            search.cancel()
            await anyio.sleep(1)
            spinner.cancel()
        with anyio.fail_after(60):
            reply = await session.call_tool("search_code", {"query": "token bucket", "mode": "bm25"})
        assert reply.structured_content["hits"][0]["path"] == "src/ratelimit.py"
    assert answered == []
    searches = [line["outcome"] for line in _audit(audit) if line.get("tool") == "search_code"]
    assert searches[0] == "cancelled" and searches[-1] == "ok"


@pytest.mark.model
@pytest.mark.slow
async def test_indexing_a_root_reports_a_fraction(corpus_dir, tmp_path):
    """While `serve --root` builds its first index, warm-up notifications carry a fraction done
    (total 1), never going back, ending at 1."""
    tree = tmp_path / "tree"
    shutil.copytree(corpus_dir, tree)
    seen: list[tuple[float, float | None]] = []

    async def on_progress(done, total, message):
        seen.append((done, total))

    (tmp_path / "home").mkdir()
    async with connect("--root", str(tree), home=tmp_path / "home") as session:
        reply = await session.call_tool("execute_code", {"code": "result = files('src/*.py')"},
                                        progress_callback=on_progress)
        assert reply.structured_content["result"] == ["src/auth.py", "src/cache.py", "src/ratelimit.py"]
    assert seen, "no progress notification arrived during warm-up"
    assert all(total == 1.0 and 0.0 <= done <= 1.0 for done, total in seen), seen
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
