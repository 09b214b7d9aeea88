"""Search over a knowledge-mcp index: BM25, vectors, hybrid fusion, cross-encoder rerank, filters.

Names resolve on first use (`__getattr__`, PEP 562; why: docs/ARCHITECTURE.md).
"""

from importlib import import_module
from typing import Any

# submodule -> the public names it defines
_EXPORTS = {
    "batch": ("search_batch", "search_documents"),
    "config": ("DEFAULT_INDEX_NAME", "SEARCH_MODES", "SearchConfig", "check_index_name"),
    "errors": ("AmbiguousPathError", "PathNotFoundError", "QueryError", "RerankModelMissingError", "SearchError"),
    "filters": ("compile_glob",),
    "fusion": ("fuse_rrf",),
    "grep": ("GREP_LINE_CHARS", "GREP_MAX_K", "GrepTimeoutError"),
    "hits": ("Hit", "format_hits_text", "merge_overlapping", "top_k"),
    "indexes": ("IndexSet",),
    "rerank": ("RERANK_INSTALL_COMMAND", "CrossEncoder", "passage_text", "resolve_rerank_model"),
    "searcher": ("Searcher",),
    "sparse": ("SparseScorer", "bm25_weights"),
}
_SOURCES = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "AmbiguousPathError",
    "DEFAULT_INDEX_NAME",
    "IndexSet",
    "CrossEncoder",
    "GREP_LINE_CHARS",
    "GREP_MAX_K",
    "GrepTimeoutError",
    "Hit",
    "PathNotFoundError",
    "QueryError",
    "RERANK_INSTALL_COMMAND",
    "RerankModelMissingError",
    "SEARCH_MODES",
    "SearchConfig",
    "SearchError",
    "Searcher",
    "SparseScorer",
    "bm25_weights",
    "check_index_name",
    "compile_glob",
    "format_hits_text", "merge_overlapping",
    "fuse_rrf",
    "passage_text",
    "resolve_rerank_model",
    "search_batch",
    "search_documents",
    "top_k",
]


def __getattr__(name: str) -> Any:
    """Import the submodule that defines `name` on first use, and keep the value."""
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = getattr(import_module(f".{_SOURCES[name]}", __name__), name)
    return value
