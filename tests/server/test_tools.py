"""The tool handlers in process: the hit schema's single source of truth, and the load-failure reply."""

import dataclasses
import typing

import pytest
from mcp import Client

import search
from sandbox import API_NAMES, SandboxHit
from server.app import build_server
from server import ServerConfig

pytestmark = pytest.mark.anyio

JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}
TOOLS = {
    "execute_code": {"code": "result = 1"},
    "search_code": {"query": "retry"},
    "save_skill": {"name": "top", "source": "def top():\n    return 1\n", "description": "one"},
    "delete_skill": {"name": "top"},
    "lookup_code": {"grep": "retry"},
}


def _json_type(spec: dict) -> tuple[str, ...]:
    """A property's JSON types: `type`, or the types of an `anyOf` (an optional field)."""
    return (spec["type"],) if "type" in spec else tuple(option["type"] for option in spec["anyOf"])


def _json_type_of(kind: object) -> tuple[str, ...]:
    """The JSON types of a Python annotation (`str` or `str | None`)."""
    return tuple("null" if arg is type(None) else JSON_TYPES[arg] for arg in typing.get_args(kind) or (kind,))


def _server(tmp_path, **overrides):
    config = ServerConfig(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", **overrides)
    return build_server(config)


async def test_tools_hit_schema_matches_search_hit_sandbox_hit_and_output_schema(tmp_path):
    """It declares the same hit fields (names, types, order) in search.Hit, SandboxHit and search_code's output schema."""
    hit_types = typing.get_type_hints(search.Hit)
    expected = [(field.name, hit_types[field.name]) for field in dataclasses.fields(search.Hit)]
    assert [(field.name, field.type) for field in dataclasses.fields(SandboxHit)] == expected

    async with Client(_server(tmp_path)) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    schema = tools["search_code"].output_schema
    item = schema["properties"]["hits"]["items"]
    hit_schema = schema["$defs"][item["$ref"].rsplit("/", 1)[1]]
    assert hit_schema["required"] == [name for name, _ in expected]
    assert {name: _json_type(spec) for name, spec in hit_schema["properties"].items()} == {
        name: _json_type_of(kind) for name, kind in expected
    }
    assert " ".join(name for name, _ in expected) in tools["execute_code"].description

    hit = search.Hit(id="a.py:1-2", doc_id="a.py", path="a.py", start_line=1, end_line=2, language="python",
                     title="def f", score=0.5, text="def f():\n    pass")
    assert SandboxHit.from_hit(hit).to_dict() == hit.to_dict()
    assert SandboxHit.from_hit(hit).to_hit() == hit


async def test_tools_every_tool_answers_a_load_failure_with_what_to_fix(tmp_path):
    """It answers each tool with an error naming the load failure (a missing index), in the
    shape of that tool's output schema (the client validates structuredContent against it)."""
    async with Client(_server(tmp_path, index_dir=tmp_path / "no-such-index")) as client:
        await client.list_tools()  # the client validates replies against the schemas it has listed
        for name, arguments in TOOLS.items():
            reply = await client.call_tool(name, arguments)
            assert reply.is_error is True, (name, reply)
            data = reply.structured_content
            assert data["ok"] is False, (name, data)
            if name in ("save_skill", "delete_skill"):
                assert data["action"] == "refused" and "could not load" in data["error"], (name, data)
            else:
                assert data["outcome"] == "internal_error", (name, data)
                assert data["error"]["exception"] == "IndexNotFoundError" and data["error"]["hint"], (name, data)
            assert "could not load" in reply.content[0].text
            # The SDK skips this check for is_error replies; MCP Inspector does not: check as it would.
            await client.session.validate_tool_result(name, reply.model_copy(update={"is_error": False}))



async def test_tools_execute_code_description_lists_every_api_function(tmp_path):
    """It lists the signature of every function a program can call (from the sandbox's help texts)."""
    async with Client(_server(tmp_path)) as client:
        description = {tool.name: tool for tool in (await client.list_tools()).tools}["execute_code"].description
    for name in API_NAMES:
        assert f"\n  {name}(" in description, name
