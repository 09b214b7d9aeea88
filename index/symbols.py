"""The symbol table of one index version: every definition the chunker found, columnar and mmap'd.

Contract (docs/ARCHITECTURE.md, "Format 3"): rows are sorted by (doc row, start_line, end_line
descending), so one file's symbols are one contiguous slice (`rows_in_doc`). Strings (name and
qualified name) are UTF-8 blobs with int64 offsets; every other column is a .npy array, so opening
a table of a million symbols reads no Python objects until asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["KINDS", "KIND_CODES", "SymbolTable", "encode_blob", "blob_text"]

# INTERFACES.md section 7: what a chunk (and a symbol) is. Stored as uint8 codes; the manifest
# records this list so a reader decodes with the writer's vocabulary.
KINDS: tuple[str, ...] = (
    "text", "function", "method", "class", "interface", "struct", "enum", "trait", "impl", "type",
    "constant", "module", "section", "key",
)
KIND_CODES: dict[str, int] = {kind: code for code, kind in enumerate(KINDS)}


def encode_blob(texts: Sequence[str]) -> tuple[bytes, np.ndarray]:
    """UTF-8 bytes of `texts` joined, and int64 offsets (len + 1) into them."""
    encoded = [t.encode("utf-8") for t in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return b"".join(encoded), offsets


def blob_text(blob: np.ndarray, offsets: np.ndarray, i: int) -> str:
    """Text i of a blob written by encode_blob (negative i counts from the end)."""
    count = len(offsets) - 1
    if not -count <= i < count:
        raise IndexError(f"text {i} out of range (0..{count - 1})")
    i %= count
    return blob[int(offsets[i]) : int(offsets[i + 1])].tobytes().decode("utf-8")


@dataclass(frozen=True)
class SymbolTable:
    """Columns of the symbol table (m rows). `doc`, `chunk` and `parent` are row numbers: into the
    index's docs, chunks and this table (-1: none). `kind` holds codes into `kinds`."""

    kinds: tuple[str, ...]
    doc: np.ndarray  # int32 (m,)
    lines: np.ndarray  # int32 (m, 2) 1-based inclusive
    kind: np.ndarray  # uint8 (m,)
    parent: np.ndarray  # int32 (m,)
    chunk: np.ndarray  # int32 (m,): the definition's own chunk
    _name_blob: np.ndarray = field(repr=False)
    _name_offsets: np.ndarray = field(repr=False)
    _qual_blob: np.ndarray = field(repr=False)
    _qual_offsets: np.ndarray = field(repr=False)
    _doc_starts: np.ndarray = field(repr=False)  # int64 (n_docs + 1,): rows_in_doc slices

    def __len__(self) -> int:
        return len(self.doc)

    def name(self, i: int) -> str:
        """The symbol's own name (`evict`)."""
        return blob_text(self._name_blob, self._name_offsets, i)

    def qualified_name(self, i: int) -> str:
        """The name with its containers (`Cache.evict`, `pkg.Handler`)."""
        return blob_text(self._qual_blob, self._qual_offsets, i)

    def kind_name(self, i: int) -> str:
        return self.kinds[int(self.kind[i])]

    def names(self) -> list[str]:
        """Every name, in row order (decodes the whole column: build lookups once)."""
        return _all_texts(self._name_blob, self._name_offsets)

    def qualified_names(self) -> list[str]:
        """Every qualified name, in row order."""
        return _all_texts(self._qual_blob, self._qual_offsets)

    def rows_in_doc(self, doc_row: int) -> range:
        """The rows of one file's symbols, in line order (outline)."""
        return range(int(self._doc_starts[doc_row]), int(self._doc_starts[doc_row + 1]))

    def record(self, i: int, docs: Sequence[dict[str, Any]], chunk_ids: Sequence[str]) -> dict[str, Any]:
        """One row as a dict: name, qualified_name, kind, path, language, start_line, end_line,
        parent (qualified name or None), chunk_id."""
        doc = docs[int(self.doc[i])]
        parent = int(self.parent[i])
        start, end = (int(v) for v in self.lines[i])
        return {
            "name": self.name(i),
            "qualified_name": self.qualified_name(i),
            "kind": self.kind_name(i),
            "path": doc["path"],
            "language": doc["language"],
            "start_line": start,
            "end_line": end,
            "parent": self.qualified_name(parent) if parent >= 0 else None,
            "chunk_id": chunk_ids[int(self.chunk[i])],
        }


def _all_texts(blob: np.ndarray, offsets: np.ndarray) -> list[str]:
    data = blob.tobytes()
    bounds = np.asarray(offsets).tolist()
    return [data[a:b].decode("utf-8") for a, b in zip(bounds, bounds[1:])]
