"""The index package: source files → chunks → BM25 term frequencies + vectors → a versioned index.

Public API (everything else is internal): build with `build_index(sources, out, IndexConfig(...))`,
fill deferred vectors with `embed_index(out)` (resumable), read with `open_index(out)` /
`read_manifest(out)` (an `index.format.IndexData`: chunk kinds and symbols,
the symbol table, the vector mask; callers use its attributes and never name the type); `write_index(out, IndexContents(...))` writes a
generated corpus as a build would; `tokenize` is the one BM25 tokenizer for queries;
`open_index_embedder(data)` gives the query encoder an index carries (the one that made its
vectors); `resolve_embed_model` + `open_embedder` give a build's encoder. Layout: docs/ARCHITECTURE.md.

Names resolve on first use (`__getattr__`, PEP 562; why: docs/ARCHITECTURE.md).
"""

from importlib import import_module
from typing import Any

from .tokenize import TOKENIZER_SETTINGS, tokenize  # eager: `tokenize` names both a function and its module

# submodule -> the public names it defines
_EXPORTS = {
    "backfill": ("embed_index",),
    "build": ("build_index", "write_index"),
    "chunk": ("chunk_document", "chunk_file"),
    "config": ("EMBED_PRECISIONS", "IndexConfig"),
    "delta": ("DeltaWriter", "open_delta"),
    "embed": (
        "EMBED_INSTALL_COMMAND",
        "Embedder",
        "ModelLocation",
        "ModelTokenCounter",
        "load_embedder",
        "open_embedder",
        "open_index_embedder",
        "open_token_counter",
        "resolve_embed_model",
    ),
    "errors": (
        "IndexCorruptError",
        "IndexFormatError",
        "IndexLockedError",
        "IndexNotFoundError",
        "IndexStoreError",
        "ModelMissingError",
        "SourceError",
    ),
    "format": ("FORMAT_VERSION", "IndexContents", "TextBlob", "current_version_dir", "open_index", "read_manifest"),
    "languages": ("language_for",),
    "qdrant": (
        "QdrantLocation",
        "QdrantUnavailableError",
        "connect_qdrant",
        "push_to_qdrant",
        "read_backend",
        "sparse_query",
    ),
    "sessions": ("open_session", "run_split"),
    "status": ("index_status", "vector_coverage"),
    "syntax": ("SYNTAX_LANGUAGES",),
    "walk": ("SourceDoc", "read_tree_files", "scan_sources", "walk_sources"),
}
_SOURCES = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "DeltaWriter",
    "EMBED_INSTALL_COMMAND",
    "EMBED_PRECISIONS",
    "Embedder",
    "FORMAT_VERSION",
    "IndexConfig",
    "IndexCorruptError",
    "IndexContents",
    "IndexFormatError",
    "IndexLockedError",
    "IndexNotFoundError",
    "IndexStoreError",
    "ModelLocation",
    "ModelMissingError",
    "QdrantLocation",
    "QdrantUnavailableError",
    "SYNTAX_LANGUAGES",
    "SourceDoc",
    "SourceError",
    "TOKENIZER_SETTINGS",
    "TextBlob",
    "ModelTokenCounter",
    "build_index",
    "chunk_document",
    "connect_qdrant",
    "chunk_file",
    "current_version_dir",
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


def __getattr__(name: str) -> Any:
    """Import the submodule that defines `name` on first use, and keep the value."""
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = getattr(import_module(f".{_SOURCES[name]}", __name__), name)
    return value
