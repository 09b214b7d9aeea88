"""grep() (and the code-intelligence functions) of the in-sandbox API over a real index."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from sandbox import PolicyConfig, TokenCounter, build_api, compile_program, run_program

LONG_LINE = "x = '" + "ab" * 400 + "'"  # 805 characters: grep cuts it to 300


@pytest.fixture(scope="module")
def code_index():
    from index import IndexConfig, build_index

    root = Path(tempfile.mkdtemp(prefix="kmcp-code-"))
    source = root / "src"
    (source / "pkg").mkdir(parents=True)
    (source / "pkg" / "cache.py").write_text(
        '"""An LRU cache."""\n\n\nclass LruCache:\n    """Keeps the most recently used entries."""\n\n'
        "    def get(self, key):\n        return self.entries.get(key)\n\n"
        "    def evict(self):\n        self.entries.popitem(last=False)\n"
    )
    (source / "retry.go").write_text(
        "package retry\n\n// Retry calls fn until it succeeds.\nfunc Retry(fn func() error, attempts int) error {\n"
        "\tfor i := 0; i < attempts; i++ {\n\t\tif fn() == nil {\n\t\t\treturn nil\n\t\t}\n\t}\n\treturn nil\n}\n"
    )
    (source / "long.py").write_text(LONG_LINE + "\n" + "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab\n")
    (source / "README.md").write_text("# Demo\n\nThe LruCache evicts the oldest entry.\nSee retry.go for Retry.\n")
    out = root / "index"
    build_index([source], out, IndexConfig(show_progress=False, with_vectors=False))
    yield out
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def api(code_index):
    from search import Searcher

    return build_api(Searcher.open(code_index, load_models=False), TokenCounter.open())


def _run(api, source: str):
    return run_program(compile_program(source, PolicyConfig()), api, state={}, stdout_cap_bytes=100_000)


def test_grep_returns_matching_lines_in_path_then_line_order(api):
    """It reports each matching line once, with its 1-based number, across files sorted by path."""
    run = _run(api, "result = grep('LruCache|Retry')\n")
    assert run.outcome == "ok", run.error
    assert run.result == [
        {"path": "README.md", "line": 3, "text": "The LruCache evicts the oldest entry."},
        {"path": "README.md", "line": 4, "text": "See retry.go for Retry."},
        {"path": "pkg/cache.py", "line": 4, "text": "class LruCache:"},
        {"path": "retry.go", "line": 3, "text": "// Retry calls fn until it succeeds."},
        {"path": "retry.go", "line": 4, "text": "func Retry(fn func() error, attempts int) error {"},
    ]


def test_grep_anchors_case_path_and_k(api):
    """'^' anchors at line starts; ignore_case, the path glob and k narrow the matches."""
    run = _run(api, "result = [grep('^\\\\s+def \\\\w+'), grep('lrucache', ignore_case=True, path='*.md'),\n"
                    "          grep('lrucache'), grep('e', k=2)]\n")
    assert run.outcome == "ok", run.error
    defs, folded, exact, first_two = run.result
    assert [(m["path"], m["line"]) for m in defs] == [("pkg/cache.py", 7), ("pkg/cache.py", 10)]
    assert [(m["path"], m["line"]) for m in folded] == [("README.md", 3)]
    assert exact == [] and len(first_two) == 2


def test_grep_cuts_long_lines_to_300_characters(api):
    """A matching line longer than 300 characters comes back cut to 300."""
    run = _run(api, "result = grep('abab', path='long.py')\n")
    assert run.outcome == "ok", run.error
    assert run.result == [{"path": "long.py", "line": 1, "text": LONG_LINE[:300]}]


def test_grep_catastrophic_pattern_runs_in_linear_time(api):
    """(a+)+$ backtracks exponentially in Python's re on 'aaa...ab'; RE2 answers at once."""
    run = _run(api, "result = [grep('(a+)+$', path='long.py'), grep('(a+)+b$', path='long.py')]\n")
    assert run.outcome == "ok", run.error
    assert run.result == [[], [{"path": "long.py", "line": 2, "text": "a" * 68 + "b"}]]


@pytest.mark.parametrize(
    ("call", "exception", "fragment"),
    [
        ("grep('')", "ValueError", "pattern is empty"),
        ("grep('(a)\\\\1')", "ValueError", "backreferences"),
        ("grep('foo(?=bar)')", "ValueError", "lookahead"),
        ("grep('(?<!x)y')", "ValueError", "lookbehind"),
        ("grep('f(o')", "ValueError", "not valid RE2 syntax"),
        ("grep('x', k=1001)", "ValueError", "k must be in [1, 1000]"),
        ("grep('x', path='nowhere/**')", "LookupError", "not in the index"),
        ("grep('x', index='other')", "ValueError", "unknown index 'other'; served indexes: default"),
        ("grep(3)", "TypeError", "pattern must be a string"),
    ],
)
def test_grep_refuses_bad_input_with_clear_messages(api, call, exception, fragment):
    """Each bad argument gets the builtin exception a program can catch, with a message saying why."""
    run = _run(api, f"{call}\n")
    assert run.outcome == "runtime_error"
    assert run.error["exception"] == exception and fragment in run.error["message"], run.error


def test_definitions_exact_case_insensitive_module_qualified_and_glob(api):
    """It finds a definition by qualified name, name ignoring case, module path, other separators or glob."""
    run = _run(api, "result = [[(h.path, h.symbol, h.kind, h.score) for h in definitions(name)] for name in\n"
                    "          ('LruCache.evict', 'lrucache', 'pkg.cache.LruCache.get', 'LruCache::get', '*ict')]\n")
    assert run.outcome == "ok", run.error
    exact, folded, module, rust_style, glob = run.result
    assert exact == [["pkg/cache.py", "LruCache.evict", "method", 4.0]]
    assert folded == [["pkg/cache.py", "LruCache", "class", 2.0]]
    assert module == [["pkg/cache.py", "LruCache.get", "method", 3.0]]
    assert rust_style == [["pkg/cache.py", "LruCache.get", "method", 4.0]]
    assert glob == [["pkg/cache.py", "LruCache.evict", "method", 1.0]]


def test_definitions_hit_is_the_definitions_chunk_and_filters_apply(api):
    """Each hit's lines hold the definition; kind, path and language filters narrow the lookup."""
    run = _run(api, "h = definitions('evict')[0]\n"
                    "result = [h.start_line <= 10 <= h.end_line, 'def evict' in h.text,\n"
                    "          definitions('evict', kind='class'), definitions('evict', path='*.md'),\n"
                    "          len(definitions('LruCache', language='python'))]\n")
    assert run.outcome == "ok", run.error
    assert run.result == [True, True, [], [], 1]


def test_outline_lists_a_files_symbols_in_order(api):
    """It gives {symbol, kind, start_line, end_line} of one file, containers before their members."""
    run = _run(api, "result = outline('pkg/cache.py')\n")
    assert run.outcome == "ok", run.error
    assert [(s["symbol"], s["kind"]) for s in run.result] == [
        ("LruCache", "class"), ("LruCache.get", "method"), ("LruCache.evict", "method"),
    ]
    assert (run.result[0]["start_line"], run.result[0]["end_line"]) == (4, 11)
    assert (run.result[2]["start_line"], run.result[2]["end_line"]) == (10, 11)


@pytest.mark.parametrize(
    ("call", "exception", "fragment"),
    [
        ("definitions('')", "ValueError", "name must not be empty"),
        ("definitions('x', kind='gadget')", "ValueError", "unknown kind"),
        ("definitions('x', path='nowhere/**')", "LookupError", "not in the index"),
        ("definitions('x', k=101)", "ValueError", "k must be in [1, 100]"),
        ("outline('nope.py')", "LookupError", "not in the index"),
        ("outline('')", "ValueError", "path must not be empty"),
    ],
)
def test_definitions_and_outline_refuse_bad_input(api, call, exception, fragment):
    """An empty name, an unknown kind or path: the builtin exception with a message saying what to pass."""
    run = _run(api, f"{call}\n")
    assert run.outcome == "runtime_error"
    assert run.error["exception"] == exception and fragment in run.error["message"], run.error
