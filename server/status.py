"""The `index_status` tool and the status part of `knowledge://index`: what is served, how complete
and how fresh, and whether anything keeps it fresh.

Contract: `describe_status(runtime)` answers while loading too (it never waits for warm-up): an
index not built yet is listed with zero counts and its loading stage. It reads only the manifest,
the vector mask (mmap) and file metadata (index.index_status), never chunk texts or vectors; run it
in a thread. The watcher state is read on the event loop first (`Runtime.watcher_state`, which
restarts a dead refresh loop) and passed in, with the file watcher's details when a root is watched
(`watch`: state, events pending, last event, delta size, restarts; server/watch.py): then
`pending_changes` is the number of reported changes not merged yet (the delta, merged over the index,
is served), and the tree is not walked.
"""

from __future__ import annotations

from typing import Any

from index import IndexStoreError, index_status

from .freshness import Target, backend_summary

__all__ = ["STATUS_FIELDS", "describe_status", "format_status"]

STATUS_FIELDS = ("name", "backend", "files", "chunks", "vector_coverage", "last_updated", "pending_changes",
                 "watcher", "version")


def describe_status(target: Target | None, stage: str, watcher: str,
                    watch: dict[str, Any] | None = None, coverage: float | None = None) -> dict[str, Any]:
    """{indexes: [{name, backend, files, chunks, vector_coverage, last_updated, pending_changes,
    watcher, version, ...}], stage}. `stage` is the runtime's loading stage ("ready" once serving);
    `watch` the root watcher's details and `coverage` the served vector coverage (delta included)."""
    if target is None:
        return {"indexes": [], "stage": stage}
    served = list(target.indexes) or [("default", target.index_dir)]  # several named, or the one target
    entries = []
    for name, index_dir in served:
        try:
            entry = index_status(index_dir, name, None if watch is not None or target.indexes else target.root)
            entry["backend"] = backend_summary(index_dir)["name"]
            if watch is not None:
                entry["pending_changes"] = int(watch.get("events_pending") or 0)
                entry["files"] += int(watch.get("files_change") or 0)
                entry["chunks"] += int(watch.get("chunks_change") or 0)
                entry["watch"] = {key: value for key, value in watch.items()
                                  if key not in ("files_change", "chunks_change")}
                if coverage is not None:
                    entry["vector_coverage"] = coverage
        except IndexStoreError:  # not built yet (the first build is running) or unreadable: say so
            entry = {"name": name, "backend": "inprocess", "files": 0, "chunks": 0, "vector_coverage": 0.0,
                     "has_vectors": False, "last_updated": None, "pending_changes": None, "version": None}
        entry.pop("root_present", None)
        entries.append({**entry, "watcher": watcher, "stage": stage})
    return {"indexes": entries, "stage": stage}


def format_status(status: dict[str, Any]) -> str:
    """One line per index for the reply's text block."""
    lines = []
    for entry in status["indexes"]:
        pending = entry.get("pending_changes")
        lines.append(
            f"{entry['name']} ({entry['backend']}): {entry['files']} files, {entry['chunks']} chunks, "
            f"vectors {entry['vector_coverage']:.0%}, updated {entry['last_updated'] or 'never'}, "
            f"pending changes {'unknown' if pending is None else pending}, watcher {entry['watcher']}, "
            f"version {entry['version'] or 'none'}"
        )
    return "\n".join(lines) or f"no index yet ({status['stage']})"
