"""The BM25 tokenizer: code-aware splits, lowercase, stemming, stop words."""

from __future__ import annotations

from index import TOKENIZER_SETTINGS, tokenize


def test_tokenize_splits_snake_case_and_keeps_the_identifier() -> None:
    """It yields a snake_case identifier whole, then its stemmed parts."""
    assert tokenize("walk_sources") == ["walk_sources", "walk", "sourc"]


def test_tokenize_splits_camel_case_and_acronyms() -> None:
    """It splits camelCase and an acronym run at the right boundaries."""
    assert tokenize("getHTTPResponse") == ["gethttpresponse", "get", "http", "respons"]
    assert tokenize("HTTPServer") == ["httpserver", "http", "server"]


def test_tokenize_splits_dotted_names() -> None:
    """It keeps a dotted name whole and yields each component."""
    assert tokenize("os.path.join") == ["os.path.join", "os", "path", "join"]


def test_tokenize_stems_prose_and_drops_stop_words() -> None:
    """It lowercases, stems and drops English stop words in prose."""
    assert tokenize("The Indexes are running in the Kitchen") == ["index", "run", "kitchen"]


def test_tokenize_query_and_document_agree() -> None:
    """It maps a natural query word and the code identifier that holds it to a shared term."""
    assert set(tokenize("how are sources walked")) & set(tokenize("def walk_sources(config):"))


def test_tokenize_drops_overlong_runs() -> None:
    """It drops runs longer than the configured limit (hashes, base64)."""
    blob = "a" * (TOKENIZER_SETTINGS["max_token_chars"] + 1)
    assert tokenize(f"keep {blob} word") == ["keep", "word"]
