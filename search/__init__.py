"""Search over a knowledge-mcp index: BM25, vectors, hybrid fusion, cross-encoder rerank, filters."""

from . import errors
from .batch import search_batch, search_documents
from .config import BM25_VARIANTS, SEARCH_MODES, SearchConfig
from .errors import AmbiguousPathError, PathNotFoundError, QueryError, RerankModelMissingError, SearchError
from .filters import compile_glob
from .fusion import fuse_rrf
from .grep import GREP_LINE_CHARS, GREP_MAX_K, GrepMatch, GrepTimeoutError
from .hits import Hit, format_hits_text, merge_overlapping, top_k
from .rerank import RERANK_INSTALL_COMMAND, CrossEncoder, RerankModelLocation, passage_text, resolve_rerank_model
from .indexes import IndexSelection, IndexSet, check_index_name
from .searcher import DEFAULT_INDEX_NAME, Searcher
from .sparse import BM25_LUCENE, BM25_OKAPI, SparseScorer, bm25_weights

__all__ = [
    "AmbiguousPathError",
    "DEFAULT_INDEX_NAME",
    "IndexSelection",
    "IndexSet",
    "BM25_LUCENE",
    "BM25_OKAPI",
    "BM25_VARIANTS",
    "CrossEncoder",
    "GREP_LINE_CHARS",
    "GREP_MAX_K",
    "GrepMatch",
    "GrepTimeoutError",
    "Hit",
    "PathNotFoundError",
    "QueryError",
    "RERANK_INSTALL_COMMAND",
    "RerankModelLocation",
    "RerankModelMissingError",
    "SEARCH_MODES",
    "SearchConfig",
    "SearchError",
    "Searcher",
    "SparseScorer",
    "bm25_weights",
    "check_index_name",
    "compile_glob",
    "errors",
    "format_hits_text", "merge_overlapping",
    "fuse_rrf",
    "passage_text",
    "resolve_rerank_model",
    "search_batch",
    "search_documents",
    "top_k",
]
