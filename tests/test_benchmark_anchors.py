"""The benchmark question sets' answer anchors (benchmarks/anchors.py): they resolve in today's code."""

from __future__ import annotations

import importlib.util
import re
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUESTION_FILES = ("code_queries.jsonl", "token_questions.jsonl")


def _load_anchors():
    """benchmarks/ is not a package: load anchors.py by path (it imports only the standard library)."""
    name = "benchmark_anchors"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "anchors.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is created
        spec.loader.exec_module(module)
    return sys.modules[name]


anchors = _load_anchors()

SOURCE = textwrap.dedent(
    '''\
    import functools


    @functools.lru_cache
    @staticmethod
    def cached(x):
        return x


    class Store:
        """A store."""

        def load(self):
            return 1

        async def fetch(self):
            return 2

        class Inner:
            def load(self):
                return 3


    if True:
        def conditional():
            pass
    else:
        def conditional():
            pass


    def load():
        pass
    '''
)


@pytest.mark.parametrize("file_name", QUESTION_FILES)
def test_question_anchors_resolve_in_current_code(file_name):
    """It resolves every question's symbol to a definition in the current code (the guard that keeps the
    benchmark answers from going stale as code moves); a failure lists each question id to fix."""
    records = anchors.read_jsonl(ROOT / "benchmarks" / file_name)
    spans = anchors.resolve_records(records, anchors.files_under(ROOT), file_name)
    assert len(spans) == len(records) >= 20
    for record in records:
        span = spans[record["id"]]
        def_line = (ROOT / record["path"]).read_text(encoding="utf-8").splitlines()[span.def_line - 1]
        kind, names = anchors.parse_symbol(record["symbol"])
        assert re.match(rf"(async )?{kind} {names[-1]}\b", def_line.strip()), (record["id"], def_line)


def test_resolve_symbol_includes_decorators_through_last_line():
    """It spans a decorated function from its first decorator to its last line."""
    span = anchors.resolve_symbol(SOURCE, "def cached", "mod.py")
    assert (span.start_line, span.def_line, span.end_line) == (4, 6, 7)


def test_resolve_symbol_finds_methods_nested_classes_and_async():
    """It resolves dotted names through classes, async defs included, and tells same-named defs apart."""
    assert anchors.resolve_symbol(SOURCE, "def Store.load").def_line == 13
    assert anchors.resolve_symbol(SOURCE, "def Store.fetch").def_line == 16
    assert anchors.resolve_symbol(SOURCE, "def Store.Inner.load").def_line == 20
    assert anchors.resolve_symbol(SOURCE, "def load").def_line == 32
    assert (anchors.resolve_symbol(SOURCE, "class Store").def_line, anchors.resolve_symbol(SOURCE, "class Store").end_line) == (10, 21)


@pytest.mark.parametrize(
    ("symbol", "message"),
    [
        ("def Store.save", r"no def 'Store\.save'"),
        ("def fetch", r"did you mean 'def Store\.fetch'"),
        ("class load", r"no class 'load'"),
        ("def conditional", r"defined 2 times \(lines 25, 28\)"),
        ("def Store.load(self)", r"not of the form"),
        ("load", r"not of the form"),
    ],
)
def test_resolve_symbol_refuses_missing_wrong_kind_ambiguous_and_malformed(symbol, message):
    """It raises a ValueError saying what is wrong (and what exists) instead of guessing a line."""
    with pytest.raises(ValueError, match=message):
        anchors.resolve_symbol(SOURCE, symbol, "mod.py")


def test_resolve_records_lists_every_failing_question_id(tmp_path):
    """It checks all records and raises one AnchorError naming each failing question id and why."""
    (tmp_path / "mod.py").write_text(SOURCE, encoding="utf-8")
    records = [
        {"id": "ok", "path": "mod.py", "symbol": "def Store.load"},
        {"id": "moved", "path": "mod.py", "symbol": "def Store.gone"},
        {"id": "nofile", "path": "missing.py", "symbol": "def load"},
        {"id": "bare", "path": "mod.py"},
    ]
    with pytest.raises(anchors.AnchorError) as caught:
        anchors.resolve_records(records, anchors.files_under(tmp_path), "q.jsonl")
    message = str(caught.value)
    assert "3 answer anchor(s)" in message
    assert "q.jsonl:2 (moved): mod.py: no def 'Store.gone'" in message
    assert "q.jsonl:3 (nofile): missing.py does not exist" in message
    assert "q.jsonl:4 (bare): missing symbol" in message
    assert "(ok)" not in message
    assert anchors.resolve_records(records[:1], anchors.files_under(tmp_path), "q.jsonl")["ok"].end_line == 14
