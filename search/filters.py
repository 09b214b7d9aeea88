"""Path-glob and language filters, turned into chunk masks applied before any cut to k.

Glob rule (wcmatch ``globmatch`` on the repo-relative POSIX path):
- ``*``, ``?`` and ``[...]`` match within one path segment, never across ``/``;
- ``**`` as a whole segment matches zero or more directories (``src/**/*.py`` matches
  ``src/a.py`` and ``src/x/y/a.py``);
- a pattern without ``/`` is matched against the file name at any depth (``*.py``, ``README.md``);
- a pattern ending in ``/`` selects everything below that directory (``docs/`` = ``docs/**``);
- ``{a,b}`` alternatives are expanded; a leading ``./`` or ``/`` is ignored; dotfiles match.
So ``http/*`` selects the files directly in ``http/``; use ``http/**`` or ``http/`` for the whole tree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from wcmatch import glob as wcglob

from .errors import QueryError

__all__ = ["chunk_mask", "compile_glob", "doc_mask"]

_GLOB_FLAGS = wcglob.GLOBSTAR | wcglob.MATCHBASE | wcglob.DOTGLOB | wcglob.BRACE
MAX_GLOB_CHARS = 1000


def compile_glob(pattern: str):
    """A compiled matcher for one glob (see the module docstring); QueryError if malformed."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise QueryError(f"path glob must be a non-empty string such as 'src/**/*.py', got {pattern!r}")
    if len(pattern) > MAX_GLOB_CHARS:
        raise QueryError(f"path glob is {len(pattern)} characters; the limit is {MAX_GLOB_CHARS}")
    pattern = pattern.strip()
    while pattern.startswith("./"):
        pattern = pattern[2:]
    pattern = pattern.lstrip("/")
    if pattern == "" or pattern.endswith("/"):
        pattern += "**"
    try:
        return wcglob.compile(pattern, flags=_GLOB_FLAGS)
    except Exception as exc:  # wcmatch raises ValueError and friends for malformed patterns
        raise QueryError(f"bad path glob {pattern!r}: {exc}") from exc


def doc_mask(paths: Sequence[str], languages: Sequence[str], path_glob: str | None, language: str | None) -> np.ndarray:
    """bool (n_docs,): which documents pass both filters (None = no filter on that field).

    An unknown language is a QueryError naming the languages the index holds.
    """
    mask = np.ones(len(paths), dtype=bool)
    if language is not None:
        if not isinstance(language, str) or not language.strip():
            raise QueryError(f"language must be a non-empty string such as 'python', got {language!r}")
        wanted = language.strip().lower()
        known = sorted(set(languages))
        if wanted not in known:
            raise QueryError(f"unknown language {language!r}; this index holds: {', '.join(known) or 'nothing'}")
        mask &= np.fromiter((lang == wanted for lang in languages), dtype=bool, count=len(languages))
    if path_glob is not None:
        matcher = compile_glob(path_glob)
        mask &= np.fromiter((matcher.match(path) for path in paths), dtype=bool, count=len(paths))
    return mask


def chunk_mask(data: object, path_glob: str | None, language: str | None) -> np.ndarray | None:
    """bool (n_chunks,) of chunks whose document passes the filters, or None when there are none.

    data: an ``index.IndexData`` (its ``docs`` and ``chunk_doc``).
    """
    if path_glob is None and language is None:
        return None
    paths = [doc["path"] for doc in data.docs]
    languages = [doc["language"] for doc in data.docs]
    return doc_mask(paths, languages, path_glob, language)[np.asarray(data.chunk_doc)]
