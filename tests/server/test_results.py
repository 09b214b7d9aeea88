"""Tests of server.results: the token budget, head/tail cuts, hit compaction, exact output_tokens."""

import json

import pytest

from server import execution_reply, reply_tokens, search_reply
from server.results import reply_json, retime
from tests.fake_secrets import AWS_ACCESS_KEY_ID

LONG_STDOUT = "".join(f"line {i}: value={i * 7}\n" for i in range(3000))
TIMINGS = {"queue": 0.4, "validate": 1.2, "execute": 8.5, "process": 0.3, "total": 10.4}


def _hits(n, text_lines=30):
    return [
        {
            "id": f"pkg/mod{i}.py:{i}-{i + 9}", "doc_id": f"pkg/mod{i}.py", "path": f"pkg/mod{i}.py",
            "start_line": i + 1, "end_line": i + 10, "language": "python", "title": f"def handler_{i}",
            "score": 10.0 - i / 10, "text": "def handler():\n    return compute(value)\n" * text_lines,
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("budget", [100, 150, 400, 2000, 20000])
def test_execution_reply_fits_budget_with_exact_count(token_counter, budget):
    """It keeps text + structuredContent JSON within the budget and reports exactly that sum."""
    reply = execution_reply(
        outcome="ok", stdout=LONG_STDOUT, result={"hits": _hits(40)}, timings_ms=TIMINGS,
        counter=token_counter, max_output_tokens=budget,
    )
    total = reply_tokens(reply.text, reply.structured, token_counter)
    assert total <= budget
    assert reply.structured["output_tokens"] == total
    assert reply.structured["truncated"] is True
    json.loads(reply_json(reply.structured))  # valid JSON


def test_execution_reply_keeps_head_and_tail_of_stdout(token_counter):
    """It keeps the first and last lines of a long stdout with a marker saying what was cut."""
    reply = execution_reply(outcome="ok", stdout=LONG_STDOUT, counter=token_counter, max_output_tokens=1000)
    stdout = reply.structured["stdout"]
    assert stdout.startswith("line 0: value=0\n")
    assert stdout.rstrip().endswith("line 2999: value=20993")
    assert "[stdout cut:" in stdout and "lines" in stdout


def test_execution_reply_compacts_hits_keeping_fields(token_counter):
    """It cuts hit snippets rather than JSON: every hit keeps its fields, the result stays valid JSON."""
    hits = _hits(8)
    reply = execution_reply(outcome="ok", result=hits, counter=token_counter, max_output_tokens=1200)
    result = reply.structured["result"]
    assert reply.structured["truncated"] is True
    assert len(result) == 8
    for original, kept in zip(hits, result):
        assert set(kept) == set(original)
        assert kept["path"] == original["path"] and kept["start_line"] == original["start_line"]
        assert len(kept["text"]) < len(original["text"]) and "chars]" in kept["text"]


def test_execution_reply_small_output_is_untouched(token_counter):
    """It returns a small reply whole, untruncated, with the rendering in the text block."""
    reply = execution_reply(
        outcome="ok", stdout="hello\n", result=[1, 2, 3], timings_ms=TIMINGS, counter=token_counter,
        max_output_tokens=2000,
    )
    assert reply.structured["stdout"] == "hello\n" and reply.structured["result"] == [1, 2, 3]
    assert reply.structured["truncated"] is False and reply.is_error is False
    assert "hello" in reply.text and "result = [1,2,3]" in reply.text
    assert reply_json(reply.structured) not in reply.text  # a rendering, not a second copy of the JSON


@pytest.mark.parametrize("outcome", ["validation_error", "runtime_error", "timeout", "busy", "internal_error"])
def test_execution_reply_is_error_for_failures(token_counter, outcome):
    """It marks every outcome but ok as an error and keeps the error fields."""
    error = {"exception": "ValueError", "message": "bad thing", "line": 2, "hint": "do x", "traceback": None}
    reply = execution_reply(outcome=outcome, error=error, counter=token_counter, max_output_tokens=500)
    assert reply.is_error is True and reply.structured["ok"] is False
    assert reply.structured["error"]["message"] == "bad thing"
    assert "ValueError: bad thing (line 2)" in reply.text


def test_execution_reply_redacts_secrets(token_counter):
    """It redacts secrets in stdout and in the result before counting tokens."""
    reply = execution_reply(
        outcome="ok", stdout=f"key={AWS_ACCESS_KEY_ID}\n", result={"conf": 'password = "hunter2-is-great"'},
        counter=token_counter, max_output_tokens=500,
    )
    dumped = reply_json(reply.structured) + reply.text
    assert AWS_ACCESS_KEY_ID not in dumped and "hunter2-is-great" not in dumped
    assert reply.structured["output_tokens"] == reply_tokens(reply.text, reply.structured, token_counter)


def test_retime_keeps_budget_and_exact_count(token_counter):
    """It puts real timings into a reply fitted with placeholder timings without breaking the budget."""
    reply = execution_reply(outcome="ok", stdout=LONG_STDOUT, counter=token_counter, max_output_tokens=300)
    timed = retime(reply, {"queue": 123456.7, "validate": 0.1, "execute": 5.5, "process": 2, "total": 130000}, token_counter)
    total = reply_tokens(timed.text, timed.structured, token_counter)
    assert total <= 300 and timed.structured["output_tokens"] == total
    assert timed.structured["timings_ms"]["queue"] == 123456.7


@pytest.mark.parametrize("budget", [100, 500, 2000, 20000])
def test_search_reply_fits_budget(token_counter, budget):
    """It fits a long hit list to the budget, cutting snippets before dropping hits from the end."""
    hits = _hits(100)
    reply = search_reply(
        query="handler", mode="hybrid", rerank=True, hits=hits, timings_ms=TIMINGS, counter=token_counter,
        max_output_tokens=budget,
    )
    total = reply_tokens(reply.text, reply.structured, token_counter)
    assert total <= budget and reply.structured["output_tokens"] == total
    kept = reply.structured["hits"]
    assert [hit["path"] for hit in kept] == [hit["path"] for hit in hits[: len(kept)]]
    assert reply.structured["total_hits"] == 100


def test_search_reply_cuts_snippets_before_hits(token_counter):
    """It keeps all hits with shorter snippets when that is enough to fit."""
    hits = _hits(10)
    reply = search_reply(query="q", mode="bm25", rerank=False, hits=hits, counter=token_counter, max_output_tokens=2500)
    assert len(reply.structured["hits"]) == 10
    assert reply.structured["truncated"] is True
    assert all(len(h["text"]) < len(hits[0]["text"]) for h in reply.structured["hits"])
