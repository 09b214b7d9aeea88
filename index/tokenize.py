"""The one BM25 tokenizer, shared by indexing and queries (code-aware, lowercase, stemmed).

Contract: `tokenize(text)` is deterministic and depends only on TOKENIZER_SETTINGS, which the
manifest records; an index whose settings differ is refused at open (IndexFormatError).
"""

from __future__ import annotations

import re
from array import array
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from typing import TYPE_CHECKING

import snowballstemmer

if TYPE_CHECKING:  # imported where used: `import index` loads this module eagerly and must stay cheap
    import numpy as np
    from scipy import sparse

__all__ = ["term_frequencies", "tokenize", "TOKENIZER_SETTINGS"]

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


def term_frequencies(texts: Iterable[str]) -> tuple[list[str], sparse.csr_matrix, np.ndarray]:
    """BM25 statistics of many texts, as tokenize() would give them: the sorted vocabulary, the CSR
    float32 (texts x terms) term frequencies and the number of terms of each text.

    Fast for a build: each text becomes word counts (found and counted in C), each distinct word of
    the corpus is split and stemmed once, and one sparse product (texts x words) @ (words x terms)
    gives the term frequencies (a word's terms repeat as tokenize repeats them)."""
    import numpy as np
    from scipy import sparse

    word_ids: dict[str, int] = {}
    ids = array("i")  # C arrays, not lists: 4 bytes an entry instead of a 36-byte int object and pointer
    counts = array("i")
    indptr = array("q", [0])
    for text in texts:
        words = Counter(_WORD.findall(text))
        for word in set(words).difference(word_ids):  # (a dict argument: O(len(words)), not O(corpus))
            word_ids[word] = len(word_ids)
        ids.extend(map(word_ids.__getitem__, words))
        counts.extend(words.values())
        indptr.append(len(ids))
    words_by_id = list(word_ids)
    terms_of = [_terms_of_word(word) for word in words_by_id]
    vocab = sorted({term for terms in terms_of for term in terms})
    term_ids = {term: i for i, term in enumerate(vocab)}
    rows = np.repeat(np.arange(len(terms_of), dtype=np.int64), [len(terms) for terms in terms_of])
    cols = np.fromiter((term_ids[term] for terms in terms_of for term in terms), dtype=np.int64, count=len(rows))
    word_terms = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                                   shape=(len(terms_of), len(vocab)))
    text_words = sparse.csr_matrix((np.frombuffer(counts, dtype=np.int32).astype(np.float32),
                                    np.frombuffer(ids, dtype=np.int32), np.frombuffer(indptr, dtype=np.int64)),
                                   shape=(len(indptr) - 1, len(terms_of)))
    tf = (text_words @ word_terms).tocsr().astype(np.float32)
    tf.eliminate_zeros()
    tf.sort_indices()
    lengths = np.asarray(tf.sum(axis=1), dtype=np.float32).reshape(-1)
    return vocab, tf, lengths


@lru_cache(maxsize=262_144)
def _terms_of_word(word: str) -> tuple[str, ...]:
    if len(word) > MAX_TOKEN_CHARS:
        return ()
    if word == word.lower() and "." not in word and "_" not in word:  # most words: no split to try
        return () if word in STOP_WORDS else (_stem(word),)
    parts = [p for piece in re.split(r"[._]+", word) if piece for p in _CAMEL_BOUNDARY.split(piece)]
    if len(parts) == 1:
        single = parts[0].lower()
        return () if single in STOP_WORDS else (_stem(single),)
    return (word.lower().strip("_"), *(_stem(part.lower()) for part in parts))


@lru_cache(maxsize=262_144)
def _stem(word: str) -> str:
    return _STEMMER.stemWord(word)
