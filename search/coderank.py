"""The second stage for code hits: a definition whose name the query spells comes first.

Contract: ``rerank_code(query, hits, config)`` returns the same hits in a new order; prose hits and
any list without code keep their order exactly (so SciFact-like corpora are untouched). A code hit
is one in a language chunked by syntax (index.SYNTAX_LANGUAGES). Each hit of the first-stage list
scores ``1 / (code_rank_k + place)``; a code hit that holds a named definition adds
``code_name_weight`` times the share of its name's parts the query contains (``render_help``: 2 of
2 for "render the help message", where ``render_long_help`` gets 2 of 3), and a module-level or
line-window code hit (kind module or text) is multiplied by ``code_mention_factor``: it
mentions names rather than defines them. Scores: each hit takes the first-stage score of the place
it lands on, so the list stays score-descending. Works on Hits alone (symbol, kind, language),
above the backend seam, so in-process and Qdrant indexes rank alike. Chosen on the multi-language
question set; figures in benchmarks/RESULTS.md.
"""

from __future__ import annotations

from collections.abc import Sequence

from index import SYNTAX_LANGUAGES, tokenize

from .config import SearchConfig
from .hits import Hit

__all__ = ["rerank_code"]

_MENTIONS = frozenset({"module", "text"})


def rerank_code(query: str, hits: Sequence[Hit], config: SearchConfig) -> list[Hit]:
    hits = list(hits)
    if not any(hit.language in SYNTAX_LANGUAGES for hit in hits):
        return hits
    query_terms = set(tokenize(query))
    scored = []
    for place, hit in enumerate(hits):
        score = 1.0 / (config.code_rank_k + place + 1)
        if hit.language in SYNTAX_LANGUAGES:
            parts = _name_parts(hit.symbol)
            if parts:
                score += config.code_name_weight * len(parts & query_terms) / len(parts)
            if hit.kind in _MENTIONS:
                score *= config.code_mention_factor
        scored.append((-score, place))
    scored.sort()
    return [hits[place].with_score(hits[new_place].score) for new_place, (_, place) in enumerate(scored)]


def _name_parts(symbol: str | None) -> frozenset[str]:
    """BM25 terms of the defined name (the last part of a qualified name): its stemmed words when it
    is a compound identifier (`render_help` -> render, help), else the one term."""
    if not symbol:
        return frozenset()
    terms = tokenize(symbol.rsplit(".", 1)[-1])
    return frozenset(terms[1:] if len(terms) > 1 else terms)
