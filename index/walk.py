"""File discovery: sources (directories, single files, `.jsonl` record files) → SourceDoc texts.

Contract: paths are POSIX and relative to `source_root(sources)`. A directory source honours every
.gitignore from the enclosing git repository's top down to each directory, skips VCS/cache dirs,
binaries, invalid UTF-8, files over `max_file_bytes`, lock files, secrets (by name and by a content
scan), and never follows a symlink out of the root; each skipped file is reported once to `on_skip`
with a reason from SKIP_REASONS. A file named explicitly as a source is either indexed or refused with
SourceError (exit 2), never skipped silently. Text is decoded as UTF-8 (a BOM is dropped) and line
endings are normalised to "\\n"; `sha256`, `size` and `mtime` describe the bytes on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pathspec

from .config import IndexConfig
from .errors import SourceError
from .languages import language_for

__all__ = [
    "SourceDoc", "SourceFile", "SkipCallback", "SKIP_REASONS", "source_root", "walk_sources", "scan_sources",
    "find_secret", "read_tree_files",
]

log = logging.getLogger(__name__)

SkipCallback = Callable[[str, str], None]  # (repo-relative path, reason)

SKIP_REASONS = (
    "excluded", "gitignored", "ignored_dir", "symlink_outside_root", "symlink_dir", "not_a_file",
    "lock_file", "secret_name", "secret_content", "too_large", "binary", "not_utf8", "empty", "unreadable",
)

# Directories that never hold sources worth indexing (VCS metadata, caches, installed packages).
ALWAYS_SKIPPED_DIRS = frozenset({
    ".git", ".hg", ".svn", ".bzr",  # version control internals
    "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox", ".nox",  # tool caches
    "node_modules", ".venv",  # installed third-party code
})

# Lock files: machine-written, huge, and they drown BM25 statistics in package names and hashes.
LOCK_FILE_NAMES = frozenset({
    "package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml", "bun.lockb",
    "poetry.lock", "pipfile.lock", "pdm.lock", "uv.lock", "cargo.lock", "composer.lock", "gemfile.lock",
    "go.sum", "flake.lock", "mix.lock", "podfile.lock", "packages.lock.json", "pubspec.lock",
})

# Files that hold secrets by convention (gitignore syntax: no slash = any depth).
SECRET_NAME_PATTERNS = (
    ".env*", ".envrc",  # dotenv files
    "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "*.ppk", "*.kdbx",  # keys and key stores
    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*",  # ssh keys
    ".npmrc", ".pypirc", ".netrc", "_netrc", ".pgpass", ".git-credentials", ".htpasswd",  # tool credentials
    "credentials*", ".aws/", "kubeconfig*", ".kube/config", ".docker/config.json",  # cloud credentials
)
_SECRET_NAMES = pathspec.GitIgnoreSpec.from_lines(SECRET_NAME_PATTERNS)

# Content scan: (rule name shown to the user, pattern). The matched text itself is never logged.
SECRET_CONTENT_RULES = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("private key block", r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"),
        ("AWS access key id", r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"),
        ("AWS secret access key", r"(?i)aws_secret_access_key[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+=]{40}\b"),
        ("GCP service account key", r"\"private_key_id\"\s*:\s*\"[0-9a-f]{40}\""),
        ("Google API key", r"\bAIza[0-9A-Za-z_\-]{35}\b"),
        ("GitHub token", r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}\b|\bgithub_pat_[A-Za-z0-9_]{60,}"),
        ("GitLab token", r"\bglpat-[A-Za-z0-9_\-]{20,}"),
        ("Slack token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
        ("Slack webhook", r"https://hooks\.slack\.com/services/T[A-Za-z0-9]+/B[A-Za-z0-9]+/[A-Za-z0-9]+"),
        ("Stripe live key", r"\b(?:sk|rk)_live_[0-9A-Za-z]{20,}"),
        ("OpenAI API key", r"\bsk-(?:proj-|svcacct-)?[A-Za-z0-9_\-]{16,}T3BlbkFJ[A-Za-z0-9_\-]{16,}"),
        ("Anthropic API key", r"\bsk-ant-(?:api|admin)\d\d-[A-Za-z0-9_\-]{80,}"),
        ("npm token", r"\bnpm_[A-Za-z0-9]{36}\b"),
        ("PyPI token", r"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{50,}"),
    )
)

BINARY_SNIFF_BYTES = 8192
JSONL_SUFFIX = ".jsonl"


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A file a build would read, found by path and stat rules alone. rel: repo-relative POSIX path."""

    path: Path
    rel: str
    size: int
    mtime_ns: int
    info: os.stat_result


@dataclass(frozen=True, slots=True)
class SourceDoc:
    """One indexable document: a file, or one record of a `.jsonl` corpus (`is_record`).

    doc_id: the file's path, or the record's id. path: repo-relative POSIX path (the record id for
    records). text: "\\n" line endings. sha256/size/mtime: of the file bytes (of the record's text for
    records, with the corpus file's mtime).
    """

    doc_id: str
    path: str
    language: str
    title: str
    text: str
    sha256: str
    mtime: float
    size: int
    is_record: bool = False


def source_root(sources: Sequence[Path]) -> Path:
    """The directory every indexed path is relative to: a directory source itself, a file's folder,
    or the deepest common folder of several sources. Raises SourceError for a missing source."""
    if not sources:
        raise SourceError("no source given: name at least one directory, file or .jsonl corpus")
    folders = []
    for source in sources:
        resolved = _resolve_source(source)
        folders.append(resolved if resolved.is_dir() else resolved.parent)
    return Path(os.path.commonpath([str(f) for f in folders]))


def walk_sources(
    sources: Sequence[Path], config: IndexConfig, on_skip: SkipCallback | None = None
) -> Iterator[SourceDoc]:
    """Yield the documents of every source in order (files of a directory sorted by path)."""
    root = source_root(sources)
    excludes = pathspec.GitIgnoreSpec.from_lines(config.excludes)
    report = on_skip or (lambda path, reason: None)
    for source in sources:
        resolved = _resolve_source(source)
        if resolved.is_dir():
            yield from _walk_directory(resolved, root, excludes, config, report)
        elif resolved.suffix.lower() == JSONL_SUFFIX:
            yield from _read_records(resolved)
        else:
            yield _read_single_file(resolved, root, config)


def scan_sources(sources: Sequence[Path], config: IndexConfig) -> Iterator[SourceFile]:
    """The files a build would read, by the path and size rules alone (no file is opened): cheap
    enough to fingerprint a tree for freshness checks or to size it before indexing. Single-file and
    .jsonl sources are yielded as they are."""
    root = source_root(sources)
    excludes = pathspec.GitIgnoreSpec.from_lines(config.excludes)
    for source in sources:
        resolved = _resolve_source(source)
        if resolved.is_dir():
            yield from _scan_directory(resolved, root, excludes, config, lambda path, reason: None)
        else:
            info = resolved.stat()
            rel = resolved.relative_to(root).as_posix()
            yield SourceFile(path=resolved, rel=rel, size=info.st_size, mtime_ns=info.st_mtime_ns, info=info)


def read_tree_files(
    root: Path, rels: Iterable[str], config: IndexConfig
) -> tuple[list[SourceDoc], dict[str, str]]:
    """Some files of a directory source, judged by exactly the rules a walk of `root` applies (every
    folder above each file checked as the walk would, .gitignore files included): the documents to
    index, and {rel: reason} for the rest (reason "missing" for a file that is gone). For the file
    watcher: one saved file is read without walking the tree."""
    root = Path(root).resolve()
    excludes = pathspec.GitIgnoreSpec.from_lines(config.excludes)
    enclosing = _enclosing_gitignores(root) if config.use_gitignore else []
    folders: dict[Path, tuple[str | None, list[tuple[Path, pathspec.PathSpec]]]] = {}

    def folder_state(folder: Path) -> tuple[str | None, list[tuple[Path, pathspec.PathSpec]]]:
        """(skip reason of the folder or an ancestor, the .gitignore specs that apply inside it)."""
        if folder in folders:
            return folders[folder]
        if folder == root:
            ignores = list(enclosing)
            own = _load_gitignore(folder) if config.use_gitignore else None
            state: tuple[str | None, list[tuple[Path, pathspec.PathSpec]]] = (
                None, ignores + ([(folder, own)] if own is not None else []))
        else:
            reason, ignores = folder_state(folder.parent)
            if reason is None:
                rel = folder.relative_to(root).as_posix()
                reason = "missing" if not folder.is_dir() else _directory_skip_reason(folder, rel, excludes, ignores)
            own = _load_gitignore(folder) if config.use_gitignore and reason is None else None
            state = (reason, ignores + ([(folder, own)] if own is not None else []))
        folders[folder] = state
        return state

    docs: list[SourceDoc] = []
    skipped: dict[str, str] = {}
    for rel in sorted(set(rels)):
        path = root / rel
        if root not in path.parents:
            skipped[rel] = "excluded"
            continue
        reason, ignores = folder_state(path.parent)
        if reason is None and not (path.is_file() or path.is_symlink()):
            reason = "missing"
        if reason is None:
            found, reason = _check_tree_file(path, rel, root, excludes, ignores, config)
            if found is not None:
                doc, reason = _read_tree_file(found)
                if doc is not None:
                    docs.append(doc)
                    continue
        skipped[rel] = reason or "missing"
    return docs, skipped


def _any_secret_pattern() -> Any:
    """Every rule in one RE2 pattern: one linear pass over a file instead of one `re` pass per rule
    (the scan ran at about 1 MB/s and capped the whole build). RE2's ASCII `\b` makes it match a
    superset of the rules, so a hit is confirmed by the rules themselves."""
    import re2

    options = re2.Options()
    options.max_mem = 64 << 20
    parts = [f"(?i:{p.pattern[4:]})" if p.pattern.startswith("(?i)") else f"(?:{p.pattern})" for _, p in SECRET_CONTENT_RULES]
    return re2.compile("|".join(parts), options=options)


_ANY_SECRET = _any_secret_pattern()


def find_secret(text: str) -> str | None:
    """The name of the first secret rule the text matches (never the secret), or None."""
    if _ANY_SECRET.search(text) is None:
        return None
    for name, pattern in SECRET_CONTENT_RULES:
        if pattern.search(text):
            return name
    return None


# ---------------------------------------------------------------- sources


def _resolve_source(source: Path) -> Path:
    path = Path(source).expanduser()
    if not path.exists():
        raise SourceError(f"source {source} does not exist; name an existing directory, file or .jsonl corpus")
    if not (path.is_dir() or path.is_file()):
        raise SourceError(f"source {source} is neither a directory nor a regular file")
    if not os.access(path, os.R_OK):
        raise SourceError(f"source {source} is not readable (permission denied)")
    return path.resolve()


def _read_single_file(path: Path, root: Path, config: IndexConfig) -> SourceDoc:
    rel = path.relative_to(root).as_posix()
    if _SECRET_NAMES.match_file(rel):
        raise SourceError(f"refusing to index {path}: its name marks it as a secret (ssh/cloud/dotenv credentials)")
    info = path.stat()
    if info.st_size > config.max_file_bytes:
        raise SourceError(
            f"source {path} is {info.st_size} bytes, over the {config.max_file_bytes}-byte limit for one file"
        )
    data = _read_bytes(path)
    if b"\0" in data[:BINARY_SNIFF_BYTES]:
        raise SourceError(f"source {path} is a binary file; only UTF-8 text can be indexed")
    text = _decode(data)
    if text is None:
        raise SourceError(f"source {path} is not valid UTF-8 text; convert it to UTF-8 or leave it out")
    rule = find_secret(text)
    if rule is not None:
        raise SourceError(f"refusing to index {path}: it holds what looks like a secret ({rule})")
    return _document(rel, text, data, info)


def _scan_directory(
    top: Path, root: Path, excludes: pathspec.PathSpec, config: IndexConfig, report: SkipCallback
) -> Iterator[SourceFile]:
    """Files of a directory source that pass every rule decidable without reading them, by path."""
    ignores = _enclosing_gitignores(top) if config.use_gitignore else []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False, onerror=_raise_walk_error):
        folder = Path(dirpath)
        ignores = [(base, spec) for base, spec in ignores if folder == base or base in folder.parents]
        own = _load_gitignore(folder) if config.use_gitignore else None
        if own is not None:
            ignores.append((folder, own))
        kept = []
        for name in sorted(dirnames):
            sub = folder / name
            rel = sub.relative_to(root).as_posix()
            reason = _directory_skip_reason(sub, rel, excludes, ignores)
            if reason is None:
                kept.append(name)
            elif reason != "ignored_dir":  # VCS/cache dirs are routine, not worth a count per build
                report(rel + "/", reason)
        dirnames[:] = kept
        for name in sorted(filenames):
            path = folder / name
            rel = path.relative_to(root).as_posix()
            found, reason = _check_tree_file(path, rel, root, excludes, ignores, config)
            if found is not None:
                yield found
            else:
                log.debug("skipped %s (%s)", rel, reason)
                report(rel, reason)


def _walk_directory(
    top: Path, root: Path, excludes: pathspec.PathSpec, config: IndexConfig, report: SkipCallback
) -> Iterator[SourceDoc]:
    for found in _scan_directory(top, root, excludes, config, report):
        doc, reason = _read_tree_file(found)
        if doc is not None:
            yield doc
        else:
            log.debug("skipped %s (%s)", found.rel, reason)
            report(found.rel, reason)


def _directory_skip_reason(
    path: Path, rel: str, excludes: pathspec.PathSpec, ignores: list[tuple[Path, pathspec.PathSpec]]
) -> str | None:
    if path.name in ALWAYS_SKIPPED_DIRS:
        return "ignored_dir"
    if path.is_symlink():
        return "symlink_dir"  # its target is either outside the root or indexed where it lives
    if excludes.match_file(rel + "/"):
        return "excluded"
    if _is_gitignored(path, ignores, is_dir=True):
        return "gitignored"
    if _SECRET_NAMES.match_file(rel + "/"):
        return "secret_name"
    return None


def _check_tree_file(
    path: Path,
    rel: str,
    root: Path,
    excludes: pathspec.PathSpec,
    ignores: list[tuple[Path, pathspec.PathSpec]],
    config: IndexConfig,
) -> tuple[SourceFile | None, str]:
    """The path and stat rules (no content read): the file to read, or None and the skip reason."""
    if excludes.match_file(rel):
        return None, "excluded"
    if _is_gitignored(path, ignores, is_dir=False):
        return None, "gitignored"
    if path.is_symlink():
        target = path.resolve()
        if target != root and root not in target.parents:
            return None, "symlink_outside_root"
    if path.name.lower() in LOCK_FILE_NAMES:
        return None, "lock_file"
    if _SECRET_NAMES.match_file(rel):
        log.info("skipped %s: its name marks it as a secret", rel)
        return None, "secret_name"
    try:
        info = path.stat()
    except OSError:
        return None, "unreadable"
    if not stat.S_ISREG(info.st_mode):
        return None, "not_a_file"  # FIFOs, sockets, devices: opening one could block forever
    if info.st_size > config.max_file_bytes:
        return None, "too_large"
    return SourceFile(path=path, rel=rel, size=info.st_size, mtime_ns=info.st_mtime_ns, info=info), ""


def _read_tree_file(found: SourceFile) -> tuple[SourceDoc | None, str]:
    """The content rules: binary, encoding, empty, secrets. Returns the document or the skip reason."""
    try:
        data = _read_bytes(found.path)
    except SourceError:
        return None, "unreadable"
    if b"\0" in data[:BINARY_SNIFF_BYTES]:
        return None, "binary"
    text = _decode(data)
    if text is None:
        return None, "not_utf8"
    if not text.strip():
        return None, "empty"
    rule = find_secret(text)
    if rule is not None:
        log.warning("skipped %s: it holds what looks like a secret (%s); it is not indexed", found.rel, rule)
        return None, "secret_content"
    return _document(found.rel, text, data, found.info), ""


def _read_records(path: Path) -> Iterator[SourceDoc]:
    """BEIR-style corpus: one {"id", "title"?, "text"} object per line; blank lines are ignored."""
    mtime = path.stat().st_mtime
    seen: set[str] = set()
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        for line_number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise SourceError(f"{where}: the line is not valid UTF-8") from exc
            except json.JSONDecodeError as exc:
                raise SourceError(f"{where}: not a JSON object ({exc.msg} at column {exc.colno})") from exc
            doc_id, title, text = _record_fields(record, where)
            if doc_id in seen:
                raise SourceError(f"{where}: duplicate record id {doc_id!r}; every id must be unique")
            seen.add(doc_id)
            text = _normalise_newlines(text)
            if not (text.strip() or title.strip()):
                continue
            rule = find_secret(title + "\n" + text)
            if rule is not None:
                log.warning("skipped record %r of %s: it holds what looks like a secret (%s)", doc_id, path, rule)
                continue
            encoded = text.encode("utf-8")
            yield SourceDoc(
                doc_id=doc_id,
                path=doc_id,
                language="text",
                title=" ".join(title.split()),
                text=text,
                sha256=hashlib.sha256(title.encode("utf-8") + b"\0" + encoded).hexdigest(),
                mtime=mtime,
                size=len(encoded),
                is_record=True,
            )


def _record_fields(record: object, where: str) -> tuple[str, str, str]:
    if not isinstance(record, dict):
        raise SourceError(f'{where}: expected a JSON object with "id" and "text", got {type(record).__name__}')
    doc_id = record.get("id", record.get("_id"))
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or str(doc_id).strip() == "":
        raise SourceError(f'{where}: the record needs a non-empty "id" (string or integer)')
    title = record.get("title") or ""
    text = record.get("text")
    if not isinstance(text, str):
        raise SourceError(f'{where}: the record needs a "text" string')
    if not isinstance(title, str):
        raise SourceError(f'{where}: "title" must be a string')
    return str(doc_id), title, text


# ---------------------------------------------------------------- helpers


def _document(rel: str, text: str, data: bytes, info: os.stat_result) -> SourceDoc:
    return SourceDoc(
        doc_id=rel,
        path=rel,
        language=language_for(rel),
        title="",
        text=text,
        sha256=hashlib.sha256(data).hexdigest(),
        mtime=info.st_mtime,
        size=info.st_size,
    )


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _decode(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    return _normalise_newlines(text)


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _raise_walk_error(exc: OSError) -> None:
    log.warning("cannot list %s: %s; its files are not indexed", exc.filename, exc.strerror or exc)


def _load_gitignore(folder: Path) -> pathspec.PathSpec | None:
    path = folder / ".gitignore"
    if not path.is_file():
        return None
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _enclosing_gitignores(top: Path) -> list[tuple[Path, pathspec.PathSpec]]:
    """.gitignore files of the folders above `top`, up to the top of its git work tree (if any).

    A source the user named explicitly is indexed even when those files ignore it (a package inside
    a gitignored `.venv`, a build folder): then none of them applies, only `top`'s own .gitignore
    files do. Otherwise they apply to everything below `top`, as git would.
    """
    if (top / ".git").exists():
        return []  # top is the work tree's top: its own .gitignore is read by the walk
    chain: list[Path] = []
    for folder in top.parents:
        chain.append(folder)
        if (folder / ".git").exists():
            break
    else:
        return []  # not inside a git work tree: only the source's own .gitignore files apply
    specs = []
    for folder in reversed(chain):
        spec = _load_gitignore(folder)
        if spec is not None:
            specs.append((folder, spec))
    # top and every folder between it and the work tree's top (git never looks inside an ignored folder)
    if any(_is_gitignored(folder, [(b, s) for b, s in specs if b in folder.parents], is_dir=True)
           for folder in [top, *chain[:-1]]):
        log.info("%s is gitignored by its enclosing repository; indexing it anyway because it was named "
                 "explicitly (only its own .gitignore files apply)", top)
        return []
    return specs


def _is_gitignored(path: Path, ignores: Iterable[tuple[Path, pathspec.PathSpec]], is_dir: bool) -> bool:
    # The deepest .gitignore with an opinion wins (git's precedence; a negation can re-include).
    for base, spec in reversed(list(ignores)):
        rel = path.relative_to(base).as_posix() + ("/" if is_dir else "")
        result = spec.check_file(rel)
        if result.include is not None:
            return bool(result.include)
    return False
