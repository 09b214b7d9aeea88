"""Glob semantics of path filters (the rule documented in search/filters.py)."""

import pytest

from search import QueryError, compile_glob

PATHS = [
    "README.md",
    "src/app.py",
    "src/pkg/deep/mod.py",
    "src/pkg/data.json",
    "http/client.py",
    "http/sub/server.py",
    "docs/guide.md",
    ".github/workflows/ci.yml",
]


def _matching(pattern):
    matcher = compile_glob(pattern)
    return [path for path in PATHS if matcher.match(path)]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("src/**/*.py", ["src/app.py", "src/pkg/deep/mod.py"]),
        ("http/*", ["http/client.py"]),
        ("http/**", ["http/client.py", "http/sub/server.py"]),
        ("http/", ["http/client.py", "http/sub/server.py"]),
        ("*.py", ["src/app.py", "src/pkg/deep/mod.py", "http/client.py", "http/sub/server.py"]),
        ("*.md", ["README.md", "docs/guide.md"]),
        ("./docs/*.md", ["docs/guide.md"]),
        ("{http,docs}/*", ["http/client.py", "docs/guide.md"]),
        ("**/*.yml", [".github/workflows/ci.yml"]),
        ("src/*.py", ["src/app.py"]),
        ("nothing/**", []),
    ],
)
def test_compile_glob_follows_the_documented_rule(pattern, expected):
    """It matches * within a segment, ** across directories and slash-less patterns by file name."""
    assert _matching(pattern) == expected


def test_compile_glob_matches_everything_with_double_star():
    """It selects every path, dotfiles included, for the default pattern."""
    assert _matching("**/*") == PATHS


@pytest.mark.parametrize("pattern", ["", "   ", None, 3, "x" * 1001])
def test_compile_glob_rejects_bad_patterns(pattern):
    """It raises QueryError with an example of a valid glob."""
    with pytest.raises(QueryError, match="glob"):
        compile_glob(pattern)
