"""lookup_code and the code-intelligence API (definitions, outline, grep) through the real stdio server."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.server.conftest import ROOT, connect, server_env

pytestmark = [pytest.mark.anyio, pytest.mark.model]  # built_index embeds the corpus; the server loads the cross-encoder

# Python's re needs 2**n steps for (a+)+$ on n 'a's then a 'b' (n=40: hours); RE2 is linear.
CATASTROPHIC_PROGRAM = "result = [grep('(a+)+$', path='*.py'), grep('a+b$', k=3)]\n"


async def _call(session, arguments):
    reply = await session.call_tool("lookup_code", arguments)
    assert reply.structured_content is not None, reply.content
    return reply, reply.structured_content


async def test_lookup_grep_lines(built_index, tmp_path):
    """grep answers with its matching lines in `result`, narrowed by path_glob, ignore_case and k."""
    async with connect("--index", str(built_index), home=tmp_path) as session:
        reply, data = await _call(session, {"grep": r"def \w+_password", "path_glob": "src/**"})
        assert reply.is_error is False, data
        assert data["result"] == [
            {"path": "src/auth.py", "line": 8, "text": "def hash_password(password, salt=None):"},
            {"path": "src/auth.py", "line": 15, "text": "def verify_password(password, salt, expected):"},
        ]
        reply, data = await _call(session, {"grep": "TTLCACHE", "ignore_case": True, "k": 1})
        assert [(m["path"], m["line"]) for m in data["result"]] == [("src/cache.py", 6)]


async def test_lookup_definitions_and_outline(built_index, tmp_path):
    """definitions answers with the definitions' own chunks (exact, case-insensitive, glob); outline with one
    file's symbols in order."""
    async with connect("--index", str(built_index), home=tmp_path) as session:
        reply, data = await _call(session, {"definitions": "TTLCache.get"})
        assert reply.is_error is False, data
        first = data["result"][0]
        assert (first["path"], first["symbol"], first["kind"]) == ("src/cache.py", "TTLCache.get", "method")
        assert first["start_line"] <= 14 <= first["end_line"]
        _, data = await _call(session, {"definitions": "ttlcache"})
        assert data["result"][0]["symbol"] == "TTLCache"
        _, data = await _call(session, {"definitions": "*_password", "kind": "function"})
        assert sorted(h["symbol"] for h in data["result"]) == ["hash_password", "verify_password"]

        reply, data = await _call(session, {"outline": "src/ratelimit.py"})
        assert reply.is_error is False, data
        assert [(s["symbol"], s["kind"]) for s in data["result"]] == [
            ("TokenBucket", "class"), ("TokenBucket.__init__", "method"), ("TokenBucket.allow", "method"),
        ]
        assert data["result"][0]["start_line"] == 6 and data["result"][-1]["end_line"] == 23


@pytest.mark.parametrize(
    ("arguments", "exception", "fragment"),
    [
        ({"definitions": ""}, "ValueError", "name must not be empty"),
        ({"definitions": "   "}, "ValueError", "name must not be empty"),
        ({"grep": "(a)\\1"}, "ValueError", "backreferences"),
        ({"grep": "f(o"}, "ValueError", "not valid RE2 syntax"),
        ({"grep": ""}, "ValueError", "pattern is empty"),
        ({"outline": "src/nope.py"}, "LookupError", "not in the index"),
        ({}, "ValueError", "exactly one of definitions, outline or grep"),
        ({"grep": "x", "outline": "src/auth.py"}, "ValueError", "exactly one of"),
        ({"definitions": "x", "kind": "gadget"}, "ValueError", "unknown kind"),
    ],
)
async def test_lookup_bad_input_gets_a_clear_error(built_index, tmp_path, arguments, exception, fragment):
    """An empty name, a bad regex, an unknown path (and a call naming no lookup) are is_error replies saying why."""
    async with connect("--index", str(built_index), home=tmp_path) as session:
        reply, data = await _call(session, arguments)
        assert reply.is_error is True, data
        assert data["ok"] is False and data["error"]["exception"] == exception, data
        assert fragment in data["error"]["message"], data


async def test_execute_code_grep_of_a_catastrophic_pattern_does_not_time_out(tmp_path):
    """grep('(a+)+$') over a file of 'aaa…ab' lines finishes well inside a 10 s limit (Python's re would not)."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "evil.py").write_text(("a" * 3000 + "b\n") * 50, encoding="utf-8")  # under the size cap
    (source / "ok.py").write_text("x = 1\n", encoding="utf-8")
    out = tmp_path / "index"
    built = subprocess.run(
        [sys.executable, "-m", "server", "index", "build", str(source), "--out", str(out), "--no-vectors"],
        cwd=ROOT, env=server_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr
    async with connect("--index", str(out), home=tmp_path) as session:
        # The sandbox's own 10 s deadline is the bound: outcome "ok" means grep finished inside it.
        reply = await session.call_tool("execute_code", {"code": CATASTROPHIC_PROGRAM, "timeout_s": 10})
        data = reply.structured_content
        assert reply.is_error is False, data
        assert data["outcome"] == "ok" and data["result"][0] == []
        assert [m["line"] for m in data["result"][1]] == [1, 2, 3]
