"""The watcher process of `serve --root` (issue 12): inotify events of one tree, as JSON lines.

Run as a script by path (`python watch_events.py ROOT`), never imported: it needs only watchfiles,
so it starts in a fraction of a second and holds a few MB. It lives in its own process so that a
watcher that dies (killed, inotify limit reached, the Rust thread panics) never takes the server
with it: the server (server/watch.py) sees the end of its stdout, reports the watcher dead, starts a
new one and rescans the tree for what it missed.

Output, one JSON object per line on stdout: `{"changes": [[kind, path], ...]}` for a batch (kind
"added" | "modified" | "deleted", absolute paths; a burst such as a branch switch arrives coalesced
in batches of at most DEBOUNCE_MS), and `{"changes": []}` every HEARTBEAT_MS while the tree is
quiet: the first line says the watches are in place, later ones that the process is alive.
Directories that never hold indexed files (.git, caches, node_modules, .venv) are filtered here.
"""

from __future__ import annotations

import json
import os
import sys

SKIPPED_DIRS = frozenset({".git", ".hg", ".svn", ".bzr", "__pycache__", ".mypy_cache", ".pytest_cache",
                          ".ruff_cache", ".tox", ".nox", "node_modules", ".venv"})
DEBOUNCE_MS = 1000  # a burst is cut into batches no longer than this
STEP_MS = 30  # a batch ends once no event came for this long
HEARTBEAT_MS = 1000


def _keep(_change: object, path: str) -> bool:
    return not (SKIPPED_DIRS & set(path.split(os.sep)))


def main(argv: list[str]) -> int:
    from watchfiles import watch

    root = argv[1]
    out = sys.stdout
    for changes in watch(root, watch_filter=_keep, debounce=DEBOUNCE_MS, step=STEP_MS, rust_timeout=HEARTBEAT_MS,
                         yield_on_timeout=True, raise_interrupt=False, ignore_permission_denied=True):
        out.write(json.dumps({"changes": sorted([change.name, path] for change, path in changes)}) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except BrokenPipeError:  # the server went away
        sys.exit(0)
