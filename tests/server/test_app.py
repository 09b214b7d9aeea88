"""End to end: the real server spawned over stdio, driven by the mcp SDK client."""

import json
import shutil

import anyio
import pytest

from sandbox import API_NAMES
from server.results import reply_json
from tests.server.conftest import connect
from tests.fake_secrets import AWS_ACCESS_KEY_ID

pytestmark = [pytest.mark.anyio, pytest.mark.linux_only, pytest.mark.model]

SEARCH_PROGRAM = """
hits = search("how are requests rate limited", k=10, path="src/**", language="python")
top = rerank("token bucket rate limiting", hits, k=3)
print(compact(top, max_tokens=200))
result = [f"{h.path}:{h.start_line}" for h in top]
"""


def _structured(reply):
    assert reply.structured_content is not None, reply
    return reply.structured_content


def _count(token_counter, reply):
    text = "".join(block.text for block in reply.content if block.type == "text")
    return token_counter.count(text) + token_counter.count(reply_json(reply.structured_content))


async def test_app_lists_tools_schemas_and_resources(built_index, tmp_path):
    """It lists the tools with ranged input schemas, output schemas, annotations, and two resources."""
    async with connect("--index", str(built_index), home=tmp_path) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert set(tools) == {"execute_code", "search_code", "save_skill", "delete_skill", "lookup_code", "index_status"}
        execute = tools["execute_code"].input_schema["properties"]
        assert execute["timeout_s"]["exclusiveMinimum"] == 0 and execute["timeout_s"]["maximum"] == 120
        assert execute["max_output_tokens"]["minimum"] == 100 and execute["max_output_tokens"]["maximum"] == 20000
        search = tools["search_code"].input_schema["properties"]
        assert search["k"]["minimum"] == 1 and search["k"]["maximum"] == 100
        for tool in tools.values():
            assert tool.output_schema is not None and tool.description
        assert tools["search_code"].annotations.read_only_hint is True
        assert tools["lookup_code"].annotations.read_only_hint is True
        assert tools["save_skill"].annotations.read_only_hint is False
        assert tools["delete_skill"].annotations.read_only_hint is False
        assert "timings_ms" in tools["execute_code"].output_schema["properties"]

        resources = {str(r.uri) for r in (await session.list_resources()).resources}
        assert resources == {"knowledge://api", "knowledge://index"}
        api = (await session.read_resource("knowledge://api")).contents[0].text
        assert "search(query" in api and "read(path" in api
        helps = await session.call_tool("execute_code", {"code": f"result = [help()] + [help(n) for n in {API_NAMES!r}]"})
        assert all(text in api for text in helps.structured_content["result"])  # one source: help() is the resource
        index = json.loads((await session.read_resource("knowledge://index")).contents[0].text)
        assert index["files"] == 6 and index["stale"] is False and index["indexed_at"]


async def test_app_execute_program_searches_reranks_filters_compacts(built_index, tmp_path, token_counter):
    """It runs a program that searches, filters, reranks and compacts, and returns just its answer."""
    async with connect("--index", str(built_index), home=tmp_path) as session:
        reply = await session.call_tool("execute_code", {"code": SEARCH_PROGRAM})
        data = _structured(reply)
        assert reply.is_error is False, data
        assert data["outcome"] == "ok" and data["ok"] is True
        assert data["result"][0].startswith("src/ratelimit.py:")
        assert all(item.startswith("src/") for item in data["result"])
        assert "src/ratelimit.py" in data["stdout"]
        assert set(data["timings_ms"]) == {"queue", "validate", "execute", "process", "total"}
        assert data["output_tokens"] == _count(token_counter, reply)


async def test_app_search_code_returns_hits(built_index, tmp_path, token_counter):
    """It answers search_code through the sandbox with contract-shaped hits, filters applied."""
    async with connect("--index", str(built_index), home=tmp_path) as session:
        reply = await session.call_tool("search_code", {"query": "password hashing", "k": 3, "path_glob": "src/*.py"})
        data = _structured(reply)
        assert reply.is_error is False, data
        assert data["hits"][0]["path"] == "src/auth.py"
        assert all(hit["path"].startswith("src/") for hit in data["hits"])
        assert set(data["hits"][0]) >= {"id", "doc_id", "path", "start_line", "end_line", "language", "title", "score", "text"}
        assert data["output_tokens"] == _count(token_counter, reply)
        md = await session.call_tool("search_code", {"query": "configuration", "mode": "bm25", "rerank": False,
                                                     "language": "markdown"})
        assert {hit["language"] for hit in _structured(md)["hits"]} == {"markdown"}


async def test_app_truncates_to_budget_with_exact_count(built_index, tmp_path, token_counter):
    """It cuts a huge output to max_output_tokens, keeps head and tail, and reports the exact count."""
    code = "for i in range(20000):\n    print('line', i, 'of output')\nresult = list(range(3000))"
    async with connect("--index", str(built_index), home=tmp_path) as session:
        reply = await session.call_tool("execute_code", {"code": code, "max_output_tokens": 400})
        data = _structured(reply)
        assert data["outcome"] == "ok" and data["truncated"] is True
        assert data["output_tokens"] == _count(token_counter, reply) <= 400
        assert data["stdout"].startswith("line 0 of output")
        assert "stdout cut" in data["stdout"]


async def test_app_outcomes_are_errors_the_agent_can_act_on(built_index, tmp_path):
    """It reports validation, runtime and timeout outcomes as isError with actionable fields."""
    async with connect("--index", str(built_index), home=tmp_path) as session:
        refused = _structured(await session.call_tool("execute_code", {"code": "import os\nos.listdir('/')"}))
        assert refused["outcome"] == "validation_error" and refused["error"]["line"] == 1
        raised = await session.call_tool("execute_code", {"code": "x = 1\ny = x / 0"})
        assert raised.is_error is True
        data = _structured(raised)
        assert data["outcome"] == "runtime_error" and data["error"]["exception"] == "ZeroDivisionError"
        assert data["error"]["line"] == 2
        slow = _structured(await session.call_tool("execute_code", {"code": "while True:\n    pass", "timeout_s": 1}))
        assert slow["outcome"] == "timeout"
        still = _structured(await session.call_tool("execute_code", {"code": "print('alive')"}))
        assert still["stdout"] == "alive\n"


async def test_app_bad_input_gets_is_error_and_server_keeps_serving(built_index, tmp_path):
    """It refuses unknown tools, wrong types, empty or oversized code and out-of-range numbers (non-UTF-8: test_stdio)."""
    async with connect("--index", str(built_index), home=tmp_path) as session:
        bad_calls = [
            ("no_such_tool", {}),
            ("execute_code", {"code": 42}),
            ("execute_code", {"code": ""}),
            ("execute_code", {"code": "x = 1\n" * 30000}),
            ("execute_code", {"code": "print(1)", "timeout_s": 0}),
            ("execute_code", {"code": "print(1)", "timeout_s": 500}),
            ("execute_code", {"code": "print(1)", "max_output_tokens": 50}),
            ("search_code", {"query": "x", "k": 101}),
            ("search_code", {"query": "x", "mode": "fuzzy"}),
        ]
        for name, arguments in bad_calls:
            reply = await session.call_tool(name, arguments)
            assert reply.is_error is True, (name, arguments, reply)
            text = " ".join(block.text for block in reply.content if block.type == "text")
            assert text.strip(), (name, arguments)
        ok = _structured(await session.call_tool("execute_code", {"code": "print(1 + 1)"}))
        assert ok["stdout"] == "2\n"


async def test_app_runs_calls_concurrently(built_index, tmp_path):
    """It serves several calls in flight at once, each with its own correct answer."""
    results = {}
    async with connect("--index", str(built_index), home=tmp_path) as session:
        async def call(n):
            reply = await session.call_tool("execute_code", {"code": f"result = sum(range({n}))"})
            results[n] = _structured(reply)["result"]

        async with anyio.create_task_group() as group:
            for n in (10, 100, 1000, 10000, 100000):
                group.start_soon(call, n)
    assert results == {n: sum(range(n)) for n in (10, 100, 1000, 10000, 100000)}


async def test_app_cancellation_kills_the_child(built_index, tmp_path):
    """It kills the child of a cancelled call, so the only worker is free for the next call."""
    audit = tmp_path / "audit.log"
    env = {"KNOWLEDGE_MCP_MAX_WORKERS": "1", "KNOWLEDGE_MCP_AUDIT_LOG": str(audit)}
    async with connect("--index", str(built_index), home=tmp_path, env_extra=env) as session:
        await session.call_tool("execute_code", {"code": "print('warm')"})
        with anyio.move_on_after(3):
            await session.call_tool("execute_code", {"code": "while True:\n    pass", "timeout_s": 120})
        # With one worker, this call can only run if the spinning child was killed.
        with anyio.fail_after(60):
            reply = await session.call_tool("execute_code", {"code": "print('next')"})
        assert _structured(reply)["stdout"] == "next\n"
    outcomes = [json.loads(line[line.index("{"):])["outcome"] for line in audit.read_text().splitlines()]
    assert "cancelled" in outcomes


async def test_app_state_merges_per_session(built_index, tmp_path):
    """It keeps keys a program sets or deletes for later calls, only after ok calls, within 64 KB."""
    async with connect("--index", str(built_index), home=tmp_path) as session:
        async def run(code):
            return _structured(await session.call_tool("execute_code", {"code": code}))

        await run("state['seen'] = ['src/auth.py']\nstate['count'] = 1")
        assert (await run("state['count'] += 1\nresult = state['count']"))["result"] == 2
        failed = await run("state['lost'] = True\nraise ValueError('boom')")
        assert failed["outcome"] == "runtime_error"
        await run("del state['seen']")
        assert (await run("result = dict(state)"))["result"] == {"count": 2}
        too_big = await run("state['big'] = 'x' * 70000")
        assert too_big["outcome"] == "runtime_error"
        assert (await run("result = sorted(state)"))["result"] == ["count"]


async def test_app_skills_save_use_refuse_and_survive_restart(built_index, tmp_path):
    """It saves a skill, calls it from a later program, refuses shadowing, and keeps it across a restart."""
    source = "def top_paths(query, k=3):\n    return [h.path for h in bm25(query, k=k)]\n"
    async with connect("--index", str(built_index), home=tmp_path) as session:
        saved = await session.call_tool("save_skill", {"name": "top_paths", "source": source,
                                                       "description": "paths of the best BM25 hits"})
        assert saved.is_error is False, saved
        used = _structured(await session.call_tool("execute_code", {"code": "result = top_paths('token bucket', 1)"}))
        assert used["result"] == ["src/ratelimit.py"]
        listed = _structured(await session.call_tool("execute_code", {"code": "result = list_skills()"}))
        assert listed["result"] == [{"name": "top_paths", "description": "paths of the best BM25 hits"}]
        shadow = await session.call_tool("save_skill", {"name": "search", "source": "def search(q):\n    return q\n",
                                                        "description": "shadows the API"})
        assert shadow.is_error is True and _structured(shadow)["action"] == "refused"
        unsafe = await session.call_tool("save_skill", {"name": "sneaky", "source": "import os\ndef sneaky():\n    return 1\n",
                                                        "description": "imports os"})
        assert unsafe.is_error is True
        await session.call_tool("execute_code", {"code": "state['k'] = 1"})
    async with connect("--index", str(built_index), home=tmp_path) as session:
        used = _structured(await session.call_tool("execute_code", {"code": "result = [top_paths('password'), dict(state)]"}))
        assert used["result"][0][0] == "src/auth.py"
        assert used["result"][1] == {}  # state belongs to the old session only
        deleted = await session.call_tool("delete_skill", {"name": "top_paths"})
        assert deleted.is_error is False
        gone = _structured(await session.call_tool("execute_code", {"code": "top_paths('x')"}))
        assert gone["outcome"] == "runtime_error"


async def test_app_redacts_secrets_from_replies(built_index, tmp_path):
    """It redacts secret-looking output but leaves digests and UUIDs alone."""
    code = (
        "key = 'AKIA' + 'IOSFODNN7EXAMPLE'\n"
        "print('aws', key)\n"
        "print('password = \"' + 'hunter2' + '-xyz\"')\n"
        "result = {'sha': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',\n"
        "          'uuid': '123e4567-e89b-12d3-a456-426614174000'}"
    )
    async with connect("--index", str(built_index), home=tmp_path) as session:
        reply = await session.call_tool("execute_code", {"code": code})
        wire = reply_json(reply.structured_content) + "".join(b.text for b in reply.content if b.type == "text")
        assert AWS_ACCESS_KEY_ID not in wire and "hunter2-xyz" not in wire
        assert "[REDACTED:" in wire
        assert reply.structured_content["result"]["uuid"] == "123e4567-e89b-12d3-a456-426614174000"
        assert reply.structured_content["result"]["sha"].startswith("e3b0c442")


async def test_app_serves_root_and_refreshes_after_edit(corpus_dir, tmp_path):
    """It indexes --root into the cache, then picks up an edited file without a restart."""
    root = tmp_path / "project"
    shutil.copytree(corpus_dir, root)
    async with connect("--root", str(root), home=tmp_path) as session:
        probe = "result = [h.path for h in bm25('zanzibar quokka', k=3) if 'zanzibar' in h.text]"
        assert _structured(await session.call_tool("execute_code", {"code": probe}))["result"] == []
        (root / "src" / "cache.py").write_text(
            (root / "src" / "cache.py").read_text() + "\n\ndef zanzibar_quokka():\n    return 'zanzibar'\n"
        )
        found = []
        with anyio.fail_after(180):
            while not found:
                await anyio.sleep(1)
                found = _structured(await session.call_tool("execute_code", {"code": probe}))["result"]
        assert found == ["src/cache.py"]
    assert any((tmp_path / "cache").rglob("CURRENT"))
