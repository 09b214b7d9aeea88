"""Errors raised by the search package.

Tree::

    SearchError                      root (exit 1: internal)
    ├── QueryError(ValueError)       bad arguments: empty query, k < 1, unknown mode/language, bad
    │                                line range, a mode the index or the loaded models cannot serve (exit 2)
    ├── PathNotFoundError(LookupError)  read() of a path that is not in the index (exit 2)
    ├── AmbiguousPathError(LookupError) read() of a path that several served indexes hold (exit 2)
    ├── BackendUnavailableError      a Qdrant-backed index's broker or Qdrant itself cannot answer now
    └── RerankModelMissingError      cross-encoder missing, unreadable or failing its sha256 check
                                     (also an ``index.ModelMissingError``; exit 4)

``QueryError`` is also a ``ValueError`` and ``PathNotFoundError`` a ``LookupError`` so code running in
the sandbox can catch them with the builtin classes the contract names.
"""

from __future__ import annotations

from index import ModelMissingError

__all__ = ["AmbiguousPathError", "BackendUnavailableError", "PathNotFoundError", "QueryError", "RerankModelMissingError", "SearchError"]


class SearchError(Exception):
    """Root of every error the search package raises on purpose."""

    exit_code = 1


class QueryError(SearchError, ValueError):
    """A search call got arguments it cannot serve; the message says which and what to do."""

    exit_code = 2


class BackendUnavailableError(SearchError):
    """The remote backend (Qdrant, through the server's broker) cannot answer this query now; the
    message says what happened and what to check. A program sees a RuntimeError."""


class PathNotFoundError(SearchError, LookupError):
    """``read()`` was given a path that is not in the index."""

    exit_code = 2

    def __init__(self, path: str) -> None:
        super().__init__(f"path {path!r} is not in the index; list indexed paths with files()")
        self.path = path


class AmbiguousPathError(SearchError, LookupError):
    """``read()`` was given a path that several of the selected indexes hold."""

    exit_code = 2

    def __init__(self, path: str, indexes: list[str]) -> None:
        super().__init__(
            f"path {path!r} is in several indexes ({', '.join(indexes)}); pass index='{indexes[0]}' "
            "(or another of them) to read()"
        )
        self.path = path
        self.indexes = tuple(indexes)


class RerankModelMissingError(SearchError, ModelMissingError):
    """The cross-encoder model could not be found, read or verified."""

    exit_code = 4

    def __init__(self, model: str, install_command: str, reason: str) -> None:
        # Our own message (reason first) rather than ModelMissingError's generic one.
        Exception.__init__(self, f"reranker model {model}: {reason}. Install it with: {install_command}")
        self.model = model
        self.install_command = install_command
        self.reason = reason
