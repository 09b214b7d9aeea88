"""How complete and how fresh an index is: the facts behind `index status` and the `index_status` tool.

Contract: `index_status(path, name, root)` reads the current version's manifest and its vector mask
(memory-mapped: no chunk text or vector is loaded) and, when the source root is known and present,
compares the tree with the manifest by path, size and mtime (no file is read):
`pending_changes` = indexed files changed or deleted + files added after the build. A file the
build skipped (binary, secret) that predates the build is not counted. Raises the index package's
errors for a missing or unreadable index (exit 3).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .config import IndexConfig
from .format import FORMAT_VERSION, VECTOR_MASK_FILE, current_version_dir, read_manifest
from .walk import scan_sources

__all__ = ["DEFAULT_BACKEND", "index_status", "pending_changes", "vector_coverage"]

DEFAULT_BACKEND = "inprocess"
MTIME_TOLERANCE_S = 1e-3  # the manifest keeps mtimes as float seconds


def index_status(path: Path | str, name: str = "default", root: Path | None = None,
                 config: IndexConfig | None = None) -> dict[str, Any]:
    """{name, backend, files, chunks, vector_coverage, last_updated, pending_changes, version,
    format_version, has_vectors, root_present}. `root` defaults to the manifest's root;
    pending_changes is None when the root is not there to compare with."""
    path = Path(path)
    manifest = read_manifest(path)
    version_dir = current_version_dir(path)
    chunks = int(manifest.get("chunk_count") or 0)
    coverage = 0.0
    if VECTOR_MASK_FILE in manifest["artefacts"] and chunks:
        mask = np.load(version_dir / VECTOR_MASK_FILE, mmap_mode="r", allow_pickle=False)
        coverage = float(np.count_nonzero(mask)) / chunks
    root = root if root is not None else (Path(manifest["root"]) if manifest.get("root") not in (None, "generated") else None)
    is_root_present = root is not None and root.is_dir()
    return {
        "name": name,
        "backend": _backend(path),
        "files": len(manifest.get("files") or {}),
        "chunks": chunks,
        "vector_coverage": round(coverage, 4),
        "has_vectors": bool((manifest.get("models") or {}).get("embed")),
        "last_updated": manifest.get("built_at"),
        "pending_changes": pending_changes(manifest, root, config) if is_root_present else None,
        "version": version_dir.name,
        "format_version": manifest.get("format_version", FORMAT_VERSION),
    }


def vector_coverage(path: Path | str) -> tuple[int, float]:
    """(chunks, fraction of them with a vector) of the current version: the manifest and the mask
    (mmap) only, no tree walk. Raises the index package's errors like index_status."""
    path = Path(path)
    manifest = read_manifest(path)
    chunks = int(manifest.get("chunk_count") or 0)
    if VECTOR_MASK_FILE not in manifest["artefacts"] or not chunks:
        return chunks, 0.0
    mask = np.load(current_version_dir(path) / VECTOR_MASK_FILE, mmap_mode="r", allow_pickle=False)
    return chunks, float(np.count_nonzero(mask)) / chunks


def pending_changes(manifest: dict[str, Any], root: Path, config: IndexConfig | None = None) -> int:
    """Files under `root` added, changed or deleted since the build that wrote `manifest` (see the
    module contract); walks the tree by the build's rules, stats only."""
    indexed: dict[str, Any] = manifest.get("files") or {}
    built_at = _timestamp(manifest.get("built_at"))
    config = config or IndexConfig(excludes=tuple((manifest.get("walk") or {}).get("excludes") or ()))
    seen = 0
    pending = 0
    for found in scan_sources([root], config):
        info = indexed.get(found.rel)
        if info is None:
            if built_at is None or found.mtime_ns / 1e9 >= built_at:
                pending += 1
            continue
        seen += 1
        size, mtime = info.get("size"), info.get("mtime")
        if (size is not None and size != found.size) or (
            mtime is not None and abs(float(mtime) - found.mtime_ns / 1e9) > MTIME_TOLERANCE_S
        ):
            pending += 1
    return pending + (len(indexed) - seen)  # the rest of the indexed files are gone


def _backend(path: Path) -> str:
    """"qdrant" when DIR/backend.json names it (qdrant.py), else the in-process default."""
    from .qdrant import read_backend

    record = read_backend(path)
    return str(record.get("backend")) if record and record.get("backend") else DEFAULT_BACKEND


def _timestamp(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return None
