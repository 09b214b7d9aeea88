"""Chunkers: Python by ast, Markdown by headings, line windows, and the embedding token window."""

from __future__ import annotations

import hashlib

import pytest

from index import IndexConfig, SourceDoc, ModelTokenCounter, chunk_document, language_for

MAX_TOKENS = 256

PYTHON_SOURCE = '''"""Module docstring."""
import os

LIMIT = 3


# Comment that belongs to the decorated function.
@decorator(1)
@other
def decorated(x):
    """Docstring of decorated."""
    return x


class Small:
    """A small class stays whole."""

    def method(self):
        return 1


if __name__ == "__main__":
    decorated(LIMIT)
'''


def _doc(path: str, text: str, title: str = "", is_record: bool = False) -> SourceDoc:
    return SourceDoc(
        doc_id=path,
        path=path,
        language="text" if is_record else language_for(path),
        title=title,
        text=text,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        mtime=0.0,
        size=len(text.encode()),
        is_record=is_record,
    )


def _lines(text: str, start: int, end: int) -> str:
    return "\n".join(text.split("\n")[start - 1 : end])


def test_chunk_python_units_include_decorators_comments_and_docstrings(token_counter: ModelTokenCounter) -> None:
    """It cuts Python into module rest, `def` and `class` units with their decorators and comments."""
    chunks = chunk_document(_doc("pkg/mod.py", PYTHON_SOURCE), token_counter, IndexConfig(), MAX_TOKENS)
    got = [(c.title, c.start_line, c.end_line) for c in chunks]
    assert got == [
        ("module pkg.mod", 1, 4),
        ("def decorated", 7, 12),
        ("class Small", 15, 19),
        ("module pkg.mod", 22, 23),
    ]
    decorated = chunks[1]
    assert decorated.text.startswith("# Comment that belongs") and "@decorator(1)" in decorated.text
    assert '"""Docstring of decorated."""' in decorated.text
    assert decorated.text == _lines(PYTHON_SOURCE, 7, 12)
    assert decorated.chunk_id == "pkg/mod.py:7-12" and decorated.language == "python"


CONSTANTS_SOURCE = '''"""Module docstring."""
import re

SHORT = ("one", "line")
lower_case_table = (
    "not", "a", "constant",
)

# Patterns of things that must not be indexed (a comment above belongs to the table).
SECRET_RULES: tuple[str, ...] = (
    "private key block",
    "cloud access key",
)
RUN_TAG = "x"


def uses_rules(text):
    return [rule for rule in SECRET_RULES if rule in text]
'''


def test_chunk_python_constant_tables_get_their_own_named_chunks(token_counter: ModelTokenCounter) -> None:
    """A module-level UPPER_CASE assignment of MIN_CONSTANT_LINES lines or more becomes a `constant NAME`
    chunk with the comment above it; one-liners, lower-case names and the rest stay in the module chunks."""
    chunks = chunk_document(_doc("pkg/rules.py", CONSTANTS_SOURCE), token_counter, IndexConfig(), MAX_TOKENS)
    got = [(c.title, c.start_line, c.end_line) for c in chunks]
    assert got == [
        ("module pkg.rules", 1, 7),  # blank lines at a chunk's end are not part of it
        ("constant SECRET_RULES", 9, 13),
        ("module pkg.rules", 14, 14),
        ("def uses_rules", 17, 18),
    ]
    table = chunks[1]
    assert table.text.startswith("# Patterns of things") and table.text.endswith(")")
    assert "SHORT" not in table.text and "RUN_TAG" not in table.text


def test_chunk_python_splits_a_big_class_into_methods(token_counter: ModelTokenCounter) -> None:
    """It gives each method of a class too big for one chunk its own `Class.method` chunk."""
    methods = "\n".join(
        f"    @property\n    def method_{i}(self):\n        '''Return value {i} of the big table.'''\n"
        f"        return [{', '.join(str(j) for j in range(25))}]\n"
        for i in range(8)
    )
    source = f'class Big:\n    """Docstring of Big."""\n\n    ATTR = 1\n\n{methods}'
    chunks = chunk_document(_doc("big.py", source), token_counter, IndexConfig(), MAX_TOKENS)
    titles = [c.title for c in chunks]
    assert titles[0] == "class Big" and "Docstring of Big" in chunks[0].text
    assert titles[1:] == [f"Big.method_{i}" for i in range(8)]
    assert all(c.text.lstrip().startswith("@property") for c in chunks[1:])


def test_chunk_python_that_does_not_parse_falls_back_to_windows(token_counter: ModelTokenCounter) -> None:
    """It chunks a Python file with a syntax error by line windows, covering every line."""
    source = "\n".join(f"def broken_{i}(:" for i in range(100))
    config = IndexConfig(window_lines=30, chunk_overlap_lines=5)
    chunks = chunk_document(_doc("bad.py", source), token_counter, config, MAX_TOKENS)
    spans = [(c.start_line, c.end_line) for c in chunks]
    assert spans[0] == (1, 30) and spans[-1][1] == 100 and all(c.kind == "text" for c in chunks)
    assert all(a[0] < b[0] <= a[1] for a, b in zip(spans, spans[1:]))  # overlapping windows, in order
    assert chunks[0].title == "def broken_0(:"


def test_chunk_markdown_by_headings_with_heading_path_titles(token_counter: ModelTokenCounter) -> None:
    """It cuts Markdown at headings (not inside code fences) and titles chunks with the heading path."""
    text = (
        "Intro line.\n\n# Guide\n\n## Install\n\nRun it.\n\n```sh\n# not a heading\n```\n\n"
        "## Use\n\n### Deep\n\nDetails.\n"
    )
    chunks = chunk_document(_doc("docs/guide.md", text), token_counter, IndexConfig(), MAX_TOKENS)
    assert [(c.title, c.start_line, c.end_line) for c in chunks] == [
        ("guide.md", 1, 1),
        ("Guide > Install", 3, 11),  # "# Guide" has no body: it joins the next section
        ("Guide > Use > Deep", 13, 17),
    ]
    assert "# not a heading" in chunks[1].text


def test_chunk_text_windows_overlap(token_counter: ModelTokenCounter) -> None:
    """It cuts plain text into windows of window_lines with chunk_overlap_lines of overlap."""
    text = "\n".join(f"line {i}" for i in range(1, 26)) + "\n"
    config = IndexConfig(window_lines=10, chunk_overlap_lines=3)
    chunks = chunk_document(_doc("notes.txt", text), token_counter, config, MAX_TOKENS)
    assert [(c.start_line, c.end_line) for c in chunks] == [(1, 10), (8, 17), (15, 24), (22, 25)]
    assert chunks[1].text == _lines(text, 8, 17)


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("prose.txt", "The quick brown fox jumps over the lazy dog near the riverbank. " * 60),
        ("app.min.js", "var a=function(b){return b*2};" * 300),
        ("long.py", "def f():\n    return [" + ", ".join(f"'item_{i}'" for i in range(400)) + "]\n"),
    ],
)
def test_chunk_every_chunk_fits_the_embedding_window(token_counter: ModelTokenCounter, path: str, line: str) -> None:
    """It splits over-long units and lines so every chunk's indexed text fits 256 model tokens."""
    chunks = chunk_document(_doc(path, line), token_counter, IndexConfig(), MAX_TOKENS)
    assert len(chunks) > 1
    counts = [token_counter.count(c.indexed_text) for c in chunks]
    assert max(counts) <= MAX_TOKENS
    assert sorted(counts)[len(counts) // 2] > MAX_TOKENS // 2  # pieces are mostly full, not slivers
    assert len({c.chunk_id for c in chunks}) == len(chunks)


def test_chunk_long_prose_line_splits_at_words_with_overlap(token_counter: ModelTokenCounter) -> None:
    """It cuts a long line at word boundaries and repeats some words across neighbouring pieces."""
    words = [f"word{i}" for i in range(400)]
    chunks = chunk_document(_doc("one.txt", " ".join(words)), token_counter, IndexConfig(), MAX_TOKENS)
    for left, right in zip(chunks, chunks[1:]):
        left_words, right_words = left.text.split(), right.text.split()
        assert set(left_words) <= set(words) and set(right_words) <= set(words)  # no word cut in two
        assert set(left_words) & set(right_words)  # overlap
    assert chunks[0].text.startswith("word0 ") and chunks[-1].text.endswith("word399")


def test_chunk_record_carries_its_title_in_every_chunk(token_counter: ModelTokenCounter) -> None:
    """It gives every chunk of a long record the record's title, and the title heads the indexed text."""
    text = "Cells divide. " * 200
    doc = _doc("rec-1", text, title="Mitosis in yeast", is_record=True)
    chunks = chunk_document(doc, token_counter, IndexConfig(), MAX_TOKENS)
    assert len(chunks) > 1
    assert all(c.title == "Mitosis in yeast" and c.indexed_text.startswith("Mitosis in yeast\n") for c in chunks)
    assert all(c.doc_id == "rec-1" and c.start_line == c.end_line == 1 for c in chunks)


def test_chunk_code_pieces_fill_the_window(token_counter: ModelTokenCounter) -> None:
    """It fills code chunks close to the model's window (the token estimate over-counts code): a long
    function's pieces are each at least 85% of 256 exact tokens, none over. Fuller code chunks
    measured better on the Python code set (benchmarks/RESULTS.md, "same corpus")."""
    body = "\n".join(f"    if not isinstance(value_{i}, (int, float)): raise TypeError(name_{i})" for i in range(26))
    text = f"def check(values):\n{body}\n    return True\n"
    chunks = chunk_document(_doc("check.py", text), token_counter, IndexConfig(), MAX_TOKENS)
    counts = [token_counter.count(c.indexed_text) for c in chunks]
    assert len(chunks) > 1 and max(counts) <= MAX_TOKENS
    assert min(counts[:-1]) >= 0.85 * MAX_TOKENS, counts
    assert "\n".join(c.text for c in chunks).count("raise TypeError") >= 26  # no line lost
