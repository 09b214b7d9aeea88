"""The one BM25 tokenizer, shared by indexing and queries (code-aware, lowercase, stemmed).

Contract: `tokenize(text)` is deterministic and depends only on TOKENIZER_SETTINGS, which the
manifest records; an index whose settings differ is refused at open (IndexFormatError).
"""

from __future__ import annotations

import re
from functools import lru_cache

import snowballstemmer

__all__ = ["tokenize", "TOKENIZER_SETTINGS"]

# Lucene's default English stop set (what Anserini's BM25 baselines use), for prose.
STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there "
    "these they this to was will with".split()
)
MAX_TOKEN_CHARS = 64  # longer runs are hashes, base64 or minified code: noise for BM25

TOKENIZER_SETTINGS = {
    "name": "code-aware",
    "version": 1,
    "lowercase": True,
    "splits": ["dotted", "snake_case", "camelCase"],
    "keeps_whole_identifier": True,
    "stemmer": "snowball-english",
    "stop_words": "lucene-english-33",
    "max_token_chars": MAX_TOKEN_CHARS,
}

# A word, or a dotted name such as os.path.join (Unicode letters and digits included).
_WORD = re.compile(r"[^\W_]\w*(?:\.[^\W_]\w*)*|_\w+")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_STEMMER = snowballstemmer.stemmer("english")


def tokenize(text: str) -> list[str]:
    """BM25 terms of `text`, in order of appearance (duplicates kept: they are term frequencies).

    A compound identifier yields itself lowercased (`walk_sources`, `os.path.join`, `httpserver`) and
    then its stemmed parts (`walk`, `sourc` / `os`, `path`, `join` / `http`, `server`); a plain word
    yields its stem. Stop words are dropped only as whole words.
    """
    terms: list[str] = []
    for match in _WORD.finditer(text):
        terms.extend(_terms_of_word(match.group()))
    return terms


@lru_cache(maxsize=262_144)
def _terms_of_word(word: str) -> tuple[str, ...]:
    if len(word) > MAX_TOKEN_CHARS:
        return ()
    parts = [p for piece in re.split(r"[._]+", word) if piece for p in _CAMEL_BOUNDARY.split(piece)]
    if len(parts) == 1:
        single = parts[0].lower()
        return () if single in STOP_WORDS else (_stem(single),)
    return (word.lower().strip("_"), *(_stem(part.lower()) for part in parts))


@lru_cache(maxsize=262_144)
def _stem(word: str) -> str:
    return _STEMMER.stemWord(word)
