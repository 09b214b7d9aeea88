"""Search over a knowledge-mcp index: BM25, vectors, hybrid fusion, cross-encoder rerank, filters."""

from .batch import search_batch, search_documents
from .config import SEARCH_MODES, SearchConfig
from .errors import AmbiguousPathError, PathNotFoundError, QueryError, RerankModelMissingError, SearchError
from .filters import compile_glob
from .fusion import fuse_rrf
from .grep import GREP_LINE_CHARS, GREP_MAX_K, GrepMatch, GrepTimeoutError
from .hits import DEFAULT_INDEX_NAME, Hit, format_hits_text, merge_overlapping, top_k
from .indexes import IndexSet, check_index_name
from .rerank import RERANK_INSTALL_COMMAND, CrossEncoder, passage_text, resolve_rerank_model
from .remote import (
    BROKER_FRAME,
    MAX_BROKER_REQUEST_BYTES,
    BrokerLink,
    BrokerQuery,
    encode_frame,
    parse_request,
)
from .retrievers import EdgeRetriever, QdrantRetriever
from .searcher import Searcher
from .sparse import SparseScorer, bm25_weights

__all__ = [
    "AmbiguousPathError",
    "BROKER_FRAME",
    "BrokerLink",
    "BrokerQuery",
    "EdgeRetriever",
    "MAX_BROKER_REQUEST_BYTES",
    "QdrantRetriever",
    "encode_frame",
    "parse_request",
    "DEFAULT_INDEX_NAME",
    "IndexSet",
    "CrossEncoder",
    "GREP_LINE_CHARS",
    "GREP_MAX_K",
    "GrepMatch",
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
