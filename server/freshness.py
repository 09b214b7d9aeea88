"""Which index to serve, and keeping an indexed root fresh.

Contract: `choose_target` picks the index to serve: `--index DIR` as is; `--root DIR` (or, with
neither, the client's first MCP root, else the current directory) is indexed into
`cache_dir/<name>-<sha of the root path>`. `/`, the home directory itself and trees over the size
limit are refused with `RootRefusedError` unless `force`. `tree_fingerprint` is a cheap snapshot
(path, size, mtime) used to debounce refreshes; `build_root_index` runs the incremental build.
`Refresher` is the refresh loop: it re-indexes a changed root (or notices a rebuilt index) and
then switches the fork server to the new version between calls; a failed refresh keeps the
previous version serving.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from index import (
    IndexStoreError,
    build_index,
    current_version_dir,
    read_backend,
    read_manifest,
    scan_sources,
    vector_coverage,
)

from .config import ServerConfig
from .errors import RootRefusedError, UsageError
from .vectors import has_vectors

__all__ = [
    "Refresher",
    "Target",
    "backend_summary",
    "build_root_index",
    "check_index",
    "check_root",
    "choose_target",
    "index_dir_for_root",
    "index_version",
    "served_coverage",
    "target_version",
    "stale_files",
    "summarize_manifest",
    "tree_fingerprint",
]

logger = logging.getLogger(__name__)

CHOOSE_HINT = (
    "choose what to serve with --root DIR (a source tree) or --index DIR (a built index), "
    "or the KNOWLEDGE_MCP_ROOT / KNOWLEDGE_MCP_INDEX environment variables; --force skips this check"
)


@dataclass(frozen=True, slots=True)
class Target:
    """What the server serves: an index directory, and the source root it is kept fresh from (if any)."""

    index_dir: Path
    root: Path | None = None
    indexes: tuple[tuple[str, Path], ...] = ()  # several named indexes (index_dir is the first), else empty

    @property
    def index_dirs(self) -> list[Path]:
        """Every served index directory."""
        return [directory for _, directory in self.indexes] or [self.index_dir]


def index_dir_for_root(cache_dir: Path, root: Path) -> Path:
    """`cache_dir/<root name>-<12 hex of sha256(root path)>`: one cached index per root."""
    digest = hashlib.sha256(str(root).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", root.name or "root")[:40]
    return cache_dir / "indexes" / f"{name}-{digest}"


def check_root(root: Path, config: ServerConfig) -> None:
    """Refuse `/`, the home directory and trees over `max_root_bytes` (unless `config.force`)."""
    if not root.exists():
        raise UsageError(f"root {root} does not exist; {CHOOSE_HINT}")
    if not root.is_dir():
        raise UsageError(f"root {root} is not a directory; {CHOOSE_HINT}")
    if config.force:
        return
    if root == Path(root.anchor):
        raise RootRefusedError(f"refusing to index {root}: it is the filesystem root; {CHOOSE_HINT}")
    if config.home_dir is not None and root == config.home_dir:
        raise RootRefusedError(f"refusing to index {root}: it is the home directory itself; {CHOOSE_HINT}")
    size = tree_size_bytes(root, config, stop_after=config.max_root_bytes)
    if size > config.max_root_bytes:
        raise RootRefusedError(
            f"refusing to index {root}: the tree holds more than {config.max_root_bytes // (1024 * 1024)} MB "
            f"of files; {CHOOSE_HINT}"
        )


def tree_size_bytes(root: Path, config: ServerConfig, stop_after: int) -> int:
    """Bytes of the files a build of root would read (gitignore and skip rules applied), stopping
    once past `stop_after`."""
    total = 0
    for found in scan_sources([root], config.index):
        total += found.size
        if total > stop_after:
            break
    return total


def choose_target(config: ServerConfig, client_roots: Sequence[Path] = (), cwd: Path | None = None) -> Target:
    """The index to serve (see module contract). Raises UsageError / RootRefusedError."""
    if config.index_dir is not None:
        return Target(index_dir=config.index_dir, indexes=config.indexes)
    if config.root is not None:
        root = config.root
    elif client_roots:
        root = client_roots[0]
        logger.info("serving the client's first root %s", root)
    else:
        root = (cwd or Path.cwd()).resolve()
        logger.info("no --index/--root and no client roots: serving the current directory %s", root)
    root = root.resolve()
    check_root(root, config)
    return Target(index_dir=index_dir_for_root(config.cache_dir, root), root=root)


def build_root_index(
    root: Path, index_dir: Path, config: ServerConfig, on_progress: Callable[[str, float], None] | None = None,
    with_vectors: bool | None = None,
) -> Any:
    """Build or incrementally update the cached index of `root` (blocking; run it in a thread);
    on_progress(stage, fraction) as index.build_index reports it. `with_vectors=False` builds BM25
    only (keyword first: vectors follow in the background, server/vectors.py); None: as configured."""
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    index_config = config.index if with_vectors is None else dataclasses.replace(config.index, with_vectors=with_vectors)
    return build_index([root], index_dir, index_config, on_progress)


def served_coverage(target: Target) -> float:
    """Fraction of the served chunks (every index of the target) that have a vector; 0.0 when none or
    not built yet."""
    chunks = with_vectors = 0.0
    for index_dir in target.index_dirs:
        try:
            count, coverage = vector_coverage(index_dir)
        except IndexStoreError:
            continue
        chunks += count
        with_vectors += count * coverage
    return round(with_vectors / chunks, 4) if chunks else 0.0


def check_index(index_dir: Path) -> None:
    """Raise the index package's error (missing: exit 3, other format: exit 3) before serving it."""
    read_manifest(index_dir)
    read_backend(index_dir)  # a Qdrant-backed index is served through the query broker (server/broker.py)


def index_version(index_dir: Path) -> str | None:
    """An identifier of the index's current version (changes when a build switches versions)."""
    try:
        manifest = read_manifest(index_dir)
    except Exception:  # noqa: BLE001 - a missing or half-written index simply has no version yet
        return None
    # The version directory's name too: `index embed` switches to a version with the same sources.
    try:
        version = current_version_dir(index_dir).name
    except IndexStoreError:
        return None
    return f"{version}|{manifest.get('built_at')}|{manifest.get('chunk_count')}|{len(manifest.get('files') or {})}"


def backend_summary(index_dir: Path) -> dict[str, Any]:
    """Where an index's queries run: {"name": "inprocess"} or its Qdrant location and collections."""
    record = read_backend(index_dir)
    if record is None:
        return {"name": "inprocess"}
    return {"name": "qdrant", "collection": record.get("collection"), "url": record.get("url"),
            "path": record.get("path"), "versions": record.get("versions")}


def target_version(target: Target) -> str | None:
    """The served version: one index's, or every named index's joined (a change in any switches all)."""
    if not target.indexes:
        return index_version(target.index_dir)
    versions = [(name, index_version(directory)) for name, directory in target.indexes]
    if any(version is None for _, version in versions):
        return None
    return ",".join(f"{name}={version}" for name, version in versions)


def tree_fingerprint(root: Path, config: ServerConfig) -> frozenset[tuple[str, int, int]]:
    """(relative path, size, mtime_ns) of every file a build of root would read: edits to ignored
    files (caches, build output) never trigger a re-index."""
    return frozenset((found.rel, found.size, found.mtime_ns) for found in scan_sources([root], config.index))


def stale_files(manifest: dict[str, Any], root: Path | None, limit: int = 20) -> list[str]:
    """Indexed files whose size or mtime on disk no longer match the manifest (or that are gone)."""
    if root is None or not root.is_dir():
        return []
    stale: list[str] = []
    for rel_path, info in sorted((manifest.get("files") or {}).items()):
        try:
            stat = (root / rel_path).stat()
        except OSError:
            stale.append(rel_path)
        else:
            size, mtime = info.get("size"), info.get("mtime")
            if (size is not None and size != stat.st_size) or (
                mtime is not None and abs(float(mtime) - stat.st_mtime) > 1e-3
            ):
                stale.append(rel_path)
        if len(stale) >= limit:
            break
    return stale


def summarize_manifest(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of `index info`: sources, files, chunks, models, built_at, format version."""
    files = manifest.get("files") or {}
    return {
        "format_version": manifest.get("format_version"),
        "built_at": manifest.get("built_at"),
        "root": manifest.get("root"),
        "sources": manifest.get("sources"),
        "files": len(files) if isinstance(files, Mapping) else files,
        "chunks": manifest.get("chunk_count"),
        "models": manifest.get("models"),
        "has_vectors": bool((manifest.get("models") or {}).get("embed")),
    }


class Refresher:
    """The debounced refresh loop of one served target.

    `switch(index_dir)` makes the fork server serve the index's current version (calls in flight
    finish on the old one). `fingerprint` is the tree's snapshot the served index was built from.
    """

    def __init__(
        self, config: ServerConfig, target: Target, switch: Callable[[Path], Awaitable[Any]],
        fingerprint: frozenset[tuple[str, int, int]] | None, version: str | None,
    ) -> None:
        self._config = config
        self._target = target
        self._switch = switch
        self._fingerprint = fingerprint
        self.version = version

    async def run(self) -> None:
        """Check every `refresh_debounce_s` (at least 0.2 s) until cancelled."""
        interval = max(self._config.refresh_debounce_s, 0.2)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep serving the old version
                logger.warning("refresh failed, still serving the previous version: %s", " ".join(str(exc).split()))

    async def refresh_once(self) -> bool:
        """One freshness check; True when a new index version is now being served."""
        target = self._target
        if target.root is not None and self._fingerprint is not None:  # a watched root has no fingerprint
            fingerprint = await asyncio.to_thread(tree_fingerprint, target.root, self._config)
            if fingerprint != self._fingerprint:
                await self._reindex(fingerprint)
        # A new version without a tree change too: the background vector build (server/vectors.py).
        version = await asyncio.to_thread(target_version, target)
        if version is None or version == self.version:
            return False
        await self._switch(target.index_dir)
        self.version = version
        logger.info("now serving index version %s", version)
        return True

    async def _reindex(self, fingerprint: frozenset[tuple[str, int, int]]) -> None:
        """Re-index the changed root once the tree stops changing (debounced)."""
        target = self._target
        assert target.root is not None
        await asyncio.sleep(self._config.refresh_debounce_s)
        settled = await asyncio.to_thread(tree_fingerprint, target.root, self._config)
        if settled != fingerprint:
            return
        logger.info("sources changed under %s: re-indexing", target.root)
        # Vectors only if the index has them: while they are built in the background (keyword
        # first) a refresh stays BM25-only and the background build follows (server/vectors.py).
        with_vectors = self._config.index.with_vectors and await asyncio.to_thread(has_vectors, target.index_dir)
        await asyncio.to_thread(build_root_index, target.root, target.index_dir, self._config, None, with_vectors)
        self._fingerprint = settled
