"""The index package: source files → chunks → BM25 term frequencies + vectors → a versioned index.

Public API (everything else is internal): build with `build_index(sources, out, IndexConfig(...))`,
fill deferred vectors with `embed_index(out)` (resumable), read with `open_index(out)` / `read_manifest(out)` (IndexData: chunk kinds and symbols, the symbol
table, the vector mask); `write_index(out, IndexContents(...))` writes a
generated corpus as a build would; `tokenize` is the one BM25 tokenizer for queries;
`open_index_embedder(data)` gives the query encoder an index carries (the one that made its
vectors); `resolve_embed_model` + `open_embedder` give a build's encoder. Layout: docs/ARCHITECTURE.md.
"""

from .backfill import embed_index
from .build import build_index, write_index
from .chunk import Symbol, chunk_document, chunk_file
from .config import EMBED_PRECISIONS, IndexConfig
from .delta import DeltaWriter, open_delta
from .embed import (
    EMBED_INSTALL_COMMAND,
    Embedder,
    ModelLocation,
    ModelTokenCounter,
    load_embedder,
    open_embedder,
    open_index_embedder,
    open_token_counter,
    resolve_embed_model,
)
from .errors import (
    IndexCorruptError,
    IndexFormatError,
    IndexLockedError,
    IndexNotFoundError,
    IndexStoreError,
    ModelMissingError,
    SourceError,
)
from .format import FORMAT_VERSION, IndexContents, IndexData, open_index, read_manifest
from .languages import language_for
from .qdrant import (
    QdrantLocation,
    QdrantUnavailableError,
    connect_qdrant,
    push_to_qdrant,
    read_backend,
    sparse_query,
)
from .sessions import open_session, run_split
from .status import index_status, vector_coverage
from .symbols import KINDS, SymbolTable
from .tokenize import TOKENIZER_SETTINGS, tokenize
from .walk import SourceDoc, read_tree_files, scan_sources, walk_sources

__all__ = [
    "DeltaWriter",
    "EMBED_INSTALL_COMMAND",
    "EMBED_PRECISIONS",
    "Embedder",
    "FORMAT_VERSION",
    "IndexConfig",
    "IndexCorruptError",
    "IndexContents",
    "IndexData",
    "IndexFormatError",
    "IndexLockedError",
    "IndexNotFoundError",
    "IndexStoreError",
    "KINDS",
    "ModelLocation",
    "ModelMissingError",
    "QdrantLocation",
    "QdrantUnavailableError",
    "SourceDoc",
    "SourceError",
    "Symbol",
    "SymbolTable",
    "TOKENIZER_SETTINGS",
    "ModelTokenCounter",
    "build_index",
    "chunk_document",
    "connect_qdrant",
    "chunk_file",
    "embed_index",
    "index_status",
    "language_for",
    "load_embedder",
    "open_embedder",
    "open_index_embedder",
    "open_session",
    "open_delta",
    "open_index",
    "open_token_counter",
    "push_to_qdrant",
    "read_backend",
    "read_manifest",
    "read_tree_files",
    "resolve_embed_model",
    "run_split",
    "scan_sources",
    "sparse_query",
    "tokenize",
    "vector_coverage",
    "walk_sources",
    "write_index",
]
