"""Errors of the index package; every one carries the CLI exit code its caller should use.

    IndexStoreError (exit 1)                 root: anything the index package raises on purpose
    ├── SourceError (exit 2)                 missing/unreadable source, binary single file, empty corpus,
    │                                        malformed jsonl line N, an output dir that is not an index
    ├── IndexLockedError (exit 2)            another build holds OUT/.lock
    ├── IndexNotFoundError (exit 3)          no index (no CURRENT / manifest) at the path
    ├── IndexFormatError (exit 3)            built by another format version or incompatible settings
    ├── IndexCorruptError (exit 3)           an artefact is missing, has the wrong size or checksum
    └── ModelMissingError (exit 4)           the embedding model folder/package is not installed
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "IndexStoreError",
    "SourceError",
    "IndexLockedError",
    "IndexNotFoundError",
    "IndexFormatError",
    "IndexCorruptError",
    "ModelMissingError",
]


class IndexStoreError(Exception):
    """Root of the index package's errors (exit 1: our fault unless a subclass says otherwise)."""

    exit_code = 1


class SourceError(IndexStoreError):
    """A source path or record cannot be indexed, or the corpus is empty (exit 2: bad input)."""

    exit_code = 2


class IndexLockedError(IndexStoreError):
    """Another build is writing the same index directory (exit 2)."""

    exit_code = 2

    def __init__(self, out: Path) -> None:
        self.out = out
        super().__init__(
            f"another build is writing the index at {out} (lock {out / '.lock'} is held); "
            "wait for it to finish and run the build again"
        )


class IndexNotFoundError(IndexStoreError):
    """There is no index at the path (exit 3)."""

    exit_code = 3

    def __init__(self, path: Path, detail: str = "") -> None:
        self.path = path
        reason = f" ({detail})" if detail else ""
        super().__init__(
            f"no index at {path}{reason}; build one with `knowledge-mcp index build SOURCE... --out {path}`"
        )


class IndexFormatError(IndexStoreError):
    """The index was written by another format version or with incompatible settings (exit 3)."""

    exit_code = 3

    def __init__(self, path: Path, found: object, expected: object, what: str = "format version") -> None:
        self.path = path
        self.found = found
        self.expected = expected
        super().__init__(
            f"the index at {path} has {what} {found!r} but this knowledge-mcp reads {expected!r}; "
            f"rebuild it with `knowledge-mcp index build SOURCE... --out {path} --force`"
        )


class IndexCorruptError(IndexStoreError):
    """An artefact of the index is missing, truncated or fails its checksum (exit 3)."""

    exit_code = 3

    def __init__(self, path: Path, artefact: str, detail: str) -> None:
        self.path = path
        self.artefact = artefact
        super().__init__(
            f"the index at {path} is corrupt: {artefact}: {detail}; "
            f"rebuild it with `knowledge-mcp index build SOURCE... --out {path} --force`"
        )


class ModelMissingError(IndexStoreError):
    """A model folder or package is not installed; the message names the install command (exit 4)."""

    exit_code = 4

    def __init__(self, model: str, install_command: str, detail: str = "") -> None:
        self.model = model
        self.install_command = install_command
        reason = f": {detail}" if detail else ""
        super().__init__(f"model {model!r} is not available{reason}; install it with: {install_command}")
