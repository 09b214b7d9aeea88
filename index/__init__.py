"""The index package: source files → chunks → BM25 term frequencies + vectors → a versioned index.

Public API (everything else is internal): build with `build_index(sources, out, IndexConfig(...))`,
read with `open_index(out)` / `read_manifest(out)`; `tokenize` is the one BM25 tokenizer for queries;
`resolve_embed_model` + `open_embedder` give the query embedder. Layout: docs/ARCHITECTURE.md.
"""

from .build import BuildReport, build_index
from .chunk import Chunk, chunk_document
from .config import IndexConfig
from .embed import (
    DEFAULT_EMBED_PACKAGE,
    EMBED_INSTALL_COMMAND,
    Embedder,
    ModelLocation,
    TokenCounter,
    open_embedder,
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
from .format import FORMAT_VERSION, IndexData, open_index, read_manifest
from .languages import language_for
from .tokenize import TOKENIZER_SETTINGS, tokenize
from .walk import SKIP_REASONS, SourceDoc, SourceFile, find_secret, scan_sources, source_root, walk_sources

__all__ = [
    "BuildReport",
    "Chunk",
    "DEFAULT_EMBED_PACKAGE",
    "EMBED_INSTALL_COMMAND",
    "Embedder",
    "FORMAT_VERSION",
    "IndexConfig",
    "IndexCorruptError",
    "IndexData",
    "IndexFormatError",
    "IndexLockedError",
    "IndexNotFoundError",
    "IndexStoreError",
    "ModelLocation",
    "ModelMissingError",
    "SKIP_REASONS",
    "SourceDoc",
    "SourceError",
    "SourceFile",
    "TOKENIZER_SETTINGS",
    "TokenCounter",
    "build_index",
    "chunk_document",
    "find_secret",
    "language_for",
    "open_embedder",
    "open_index",
    "open_token_counter",
    "read_manifest",
    "resolve_embed_model",
    "scan_sources",
    "source_root",
    "tokenize",
    "walk_sources",
]
