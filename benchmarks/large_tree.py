"""The large real tree of the scale benchmarks (issue 12): fetch it, and say exactly what it holds.

`python benchmarks/large_tree.py [DIR]` installs the pinned packages of `large_tree.txt` with
`pip install --no-deps --no-compile --target DIR` (default `benchmarks/.cache/large_tree`), then prints
one JSON line: the files and bytes a build would read (the walk's own rules: .gitignore, binaries,
size cap, secrets), the on-disk totals and the per-package split. Benchmarks call `ensure_tree()`.
Never the project's own `.venv`: it is gitignored and changes with every dependency.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import common

REQUIREMENTS = Path(__file__).with_name("large_tree.txt")
DEFAULT_DIR = common.CACHE / "large_tree"
MIN_FILES = 20_000
MIN_BYTES = 250 * 1024 * 1024


def requirements_sha256() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def ensure_tree(folder: Path = DEFAULT_DIR) -> Path:
    """`folder` with the pinned packages installed (installed once; again when the list changes)."""
    stamp = folder.with_name(folder.name + ".sha256")  # beside it: a file inside would be indexed
    if stamp.is_file() and stamp.read_text().strip() == requirements_sha256():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    print(f"[bench] installing {REQUIREMENTS.name} into {folder} (pip --no-deps --target)", file=sys.stderr)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile", "--upgrade",
         "--target", str(folder), "-r", str(REQUIREMENTS)],
        check=True,
    )
    stamp.write_text(requirements_sha256() + "\n")
    return folder


def describe_tree(folder: Path) -> dict[str, object]:
    """The files (and bytes) a build of `folder` considers by the walk's path and size rules (a binary
    among them is skipped later, when read), and what the folder holds on disk."""
    from index import IndexConfig, scan_sources

    files = 0
    source_bytes = 0
    per_top: Counter[str] = Counter()
    for found in scan_sources([folder], IndexConfig()):
        files += 1
        source_bytes += found.size
        per_top[found.rel.split("/", 1)[0]] += 1
    disk_files = disk_bytes = 0
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            disk_files += 1
            disk_bytes += path.stat().st_size
    return {
        "requirements_sha256": requirements_sha256()[:16],
        "source_files": files,
        "source_bytes": source_bytes,
        "disk_files": disk_files,
        "disk_bytes": disk_bytes,
        "top_dirs": dict(per_top.most_common(8)),
        "is_large_enough": files >= MIN_FILES and source_bytes >= MIN_BYTES,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args()
    folder = ensure_tree(args.folder.resolve())
    facts = describe_tree(folder)
    common.emit("large_tree", {"folder": str(folder), "requirements": REQUIREMENTS.name},
                common.with_goals(facts, {"source_files": (facts["source_files"], ">=", MIN_FILES),
                                          "source_bytes": (facts["source_bytes"], ">=", MIN_BYTES)}))
    print(json.dumps({"packages": [line for line in REQUIREMENTS.read_text().splitlines()
                                   if line and not line.startswith("#")]}), file=sys.stderr)


if __name__ == "__main__":
    main()
