"""Fetch the pinned open-source projects of the multi-language question set (benchmarks/polyglot_queries.jsonl).

Each project comes from a package registry at an exact version: PyPI sdists (pip download), npm
tarballs (npm pack) and Debian source packages (apt-get source; needs a deb-src line for bookworm and
`apt-get update`, which --enable-deb-src adds). Sources go to benchmarks/.cache/polyglot-src/<name>/
(never committed); only the files of `keep` (globs) are indexed, so vendored or generated code stays out.

    .venv/bin/python benchmarks/polyglot_sources.py [--enable-deb-src] [--set polyglot|heldout]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import common

SOURCES = common.CACHE / "polyglot-src"
DEB_SRC_LIST = Path("/etc/apt/sources.list.d/knowledge-mcp-bench-src.sources")
DEB_SRC_ENTRY = """Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

# name: (registry, package, exact version, language, globs of the files to index under the unpacked root)
PINNED: dict[str, tuple[str, str, str, str, tuple[str, ...]]] = {
    "requests": ("pypi", "requests", "2.32.3", "python", ("src/requests/*.py",)),
    "express": ("npm", "express", "4.21.2", "javascript", ("lib/**/*.js", "index.js")),
    "rxjs": ("npm", "rxjs", "7.8.1", "typescript", ("src/internal/**/*.ts",)),
    "cobra": ("debian", "golang-github-spf13-cobra", "1.6.1-1", "go", ("*.go", "doc/*.go")),
    "clap": ("debian", "rust-clap", "4.0.32-1", "rust", ("src/**/*.rs",)),
    "jsoup": ("debian", "jsoup", "1.15.3-1", "java", ("src/main/java/**/*.java",)),
    "jq": ("debian", "jq", "1.6-2.1+deb12u2", "c", ("src/*.c", "src/*.h")),
}

# The held-out set (benchmarks/heldout_queries.jsonl): other projects, the same seven languages; never used
# to choose a ranking parameter, only to report what the tuned engine does on code it was not tuned on.
HELD_OUT: dict[str, tuple[str, str, str, str, tuple[str, ...]]] = {
    "click": ("pypi", "click", "8.1.7", "python", ("src/click/*.py",)),
    "commander": ("npm", "commander", "12.1.0", "javascript", ("lib/*.js", "index.js")),
    "immer": ("npm", "immer", "10.1.1", "typescript", ("src/**/*.ts",)),
    "pflag": ("debian", "golang-github-spf13-pflag", "1.0.6~git20210604-d5e0c0615ace-1", "go", ("*.go",)),
    "jpype": ("pypi", "JPype1", "1.5.0", "java", ("native/java/**/*.java",)),
    "cjson": ("debian", "cjson", "1.7.15-1+deb12u4", "c", ("*.c", "*.h")),
}
# No Rust project: this mirror's Debian pool answers 404 for every rust-* source tried (rust-clap of the
# tuning set was fetched earlier), and PyPI's Rust sdists need maturin to resolve their metadata.
SETS = {"polyglot": PINNED, "heldout": HELD_OUT}
ALL_PROJECTS = {**PINNED, **HELD_OUT}


def project_dir(name: str) -> Path:
    """Where project `name` is unpacked (its root: the directory the `keep` globs start from)."""
    return SOURCES / name


def project_files(name: str) -> list[Path]:
    """The files of project `name` the question set indexes (sorted, de-duplicated)."""
    root = project_dir(name)
    found = {path for pattern in ALL_PROJECTS[name][4] for path in root.glob(pattern) if path.is_file()}
    return sorted(found)


def _unpack_tarball(archive: Path, target: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch, tarfile.open(archive) as tar:
        tar.extractall(scratch, filter="data")
        (top,) = [p for p in Path(scratch).iterdir() if p.is_dir()]
        shutil.move(str(top), target)


def fetch(name: str) -> Path:
    registry, package, version, _, _ = ALL_PROJECTS[name]
    target = project_dir(name)
    if target.is_dir():
        return target
    SOURCES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        if registry == "pypi":
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                            "--no-build-isolation", "-d", str(work), f"{package}=={version}"], check=True)
            (archive,) = work.glob("*.tar.gz")
            _unpack_tarball(archive, target)
        elif registry == "npm":
            subprocess.run(["npm", "pack", f"{package}@{version}", "--pack-destination", str(work)], check=True,
                           cwd=work, stdout=subprocess.DEVNULL)
            (archive,) = work.glob("*.tgz")
            _unpack_tarball(archive, target)
        elif registry == "debian":
            subprocess.run(["apt-get", "source", "--download-only", f"{package}={version}"], check=True, cwd=work)
            (dsc,) = work.glob("*.dsc")
            subprocess.run(["dpkg-source", "--no-check", "-x", str(dsc), str(work / "unpacked")], check=True,
                           cwd=work, stdout=subprocess.DEVNULL)
            shutil.move(str(work / "unpacked"), target)
        else:
            raise ValueError(f"unknown registry {registry!r}")
    print(f"[fetch] {name}: {package} {version} from {registry}: {len(project_files(name))} files", file=sys.stderr)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--enable-deb-src", action="store_true",
                        help=f"write {DEB_SRC_LIST} and run apt-get update (as root) before fetching")
    parser.add_argument("--set", choices=sorted(SETS), default="polyglot", help="which question set's projects")
    args = parser.parse_args(argv)
    if args.enable_deb_src:
        DEB_SRC_LIST.write_text(DEB_SRC_ENTRY, encoding="utf-8")
        subprocess.run(["apt-get", "update"], check=True, stdout=subprocess.DEVNULL)
    for name in SETS[args.set]:
        fetch(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
