"""Document-level ranking for batch runs: documents ranked by their best chunk, each docid once.

With rerank, the top ``rerank_depth`` chunks are rescored by the cross-encoder and their documents
come first (score: best logit); documents found only deeper in the first stage follow in
first-stage order with scores placed strictly below (lowest logit - 1 - position), so tools that
sort by score (trec_eval) keep that order. Unlike ``Searcher.search`` (which reranks at least k),
a run of k=100 documents costs rerank_depth cross-encoder pairs per query, not 100+.
"""

from __future__ import annotations

from collections.abc import Iterable

from .coderank import rerank_code
from .searcher import Searcher

__all__ = ["search_batch", "search_documents"]

RUN_TAG = "knowledge-mcp"


def search_documents(
    searcher: Searcher,
    query: str,
    k: int = 10,
    mode: str = "hybrid",
    rerank: bool = True,
    path: str | None = None,
    language: str | None = None,
) -> list[tuple[str, float]]:
    """The k best (doc_id, score) for a query, each doc_id once, best first."""
    depth = max(3 * k, max(searcher.config.rerank_depth, searcher.config.code_rerank_depth) if rerank else 0)
    while True:
        hits = searcher.search(query, k=depth, mode=mode, rerank=False, path=path, language=language)
        documents = _best_per_document((hit.doc_id, hit.score) for hit in hits)
        if len(documents) >= k or len(hits) < depth:
            break
        depth *= 2
    if not rerank:
        return documents[:k]
    second = rerank_code(query, hits[: searcher.config.code_rerank_depth], searcher.config) \
        + hits[searcher.config.code_rerank_depth :]
    reranked = searcher.rerank_prose(query, second[: searcher.config.rerank_depth])
    head = _best_per_document((hit.doc_id, hit.score) for hit in reranked)
    seen = {doc_id for doc_id, _ in head}
    floor = min((score for _, score in head), default=0.0) - 1.0
    tail = [doc_id for doc_id, _ in documents if doc_id not in seen]
    return (head + [(doc_id, floor - position) for position, doc_id in enumerate(tail)])[:k]


def search_batch(
    searcher: Searcher,
    queries: Iterable[tuple[str, str]],
    k: int = 100,
    mode: str = "hybrid",
    rerank: bool = True,
    path: str | None = None,
    language: str | None = None,
    tag: str | None = None,
) -> list[str]:
    """TREC run lines ``qid Q0 docid rank score tag`` for (qid, query text) pairs."""
    tag = tag or f"{RUN_TAG}-{mode}{'-rerank' if rerank else ''}"
    lines = []
    for qid, text in queries:
        ranked = search_documents(searcher, text, k=k, mode=mode, rerank=rerank, path=path, language=language)
        lines.extend(f"{qid} Q0 {doc_id} {rank} {score:.6f} {tag}" for rank, (doc_id, score) in enumerate(ranked, 1))
    return lines


def _best_per_document(scored: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """First (best) score of each doc_id from a best-first list, order kept."""
    best: dict[str, float] = {}
    for doc_id, score in scored:
        best.setdefault(doc_id, score)
    return list(best.items())
