"""Symbol lookups over the index's symbol table: definitions(name) and outline(path).

Contract: ``SymbolLookup`` decodes the table's names once (built lazily by the Searcher, before the
fork server forks when it is warmed, so children share it). ``find`` ranks matching symbol rows in
tiers, best first; within a tier, ties go to definitions outside test directories, then to the
shorter qualified name, then to index order (path, line):

0. the qualified name equals ``name`` (``Cache.evict``);
1. the name equals ``name``, or the qualified name or the module-qualified name (the file's path
   without its extension, ``/`` read as ``.``, then the qualified name: ``pkg.cache.Cache.evict``)
   ends with ``.name``;
2. tiers 0 and 1 ignoring case;
3. ``name`` holds a glob character (``*``, ``?``, ``[``) and, as a glob, matches the name, qualified or
   module-qualified name, ignoring case.

Separators other than ``.`` in a query (``::``, ``#``, ``->``, ``/``) are read as ``.``, so
``Cache::evict`` (Rust, C++) and ``Cache#evict`` (Ruby) find ``Cache.evict``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import PathNotFoundError, QueryError
from .filters import doc_mask

__all__ = ["MAX_NAME_CHARS", "SymbolLookup", "normalise_symbol"]

MAX_NAME_CHARS = 500
_SEPARATORS = re.compile(r"::|->|#|/|\\")
_GLOB_CHARS = frozenset("*?[")
_TEST_DIR = re.compile(r"(^|/)(tests?|__tests__|spec|testdata|test_\w+\.py$|\w+_test\.\w+$)", re.IGNORECASE)
_TIERS = 4


def normalise_symbol(name: str) -> str:
    """``name`` with language separators read as ``.`` (``a::b``, ``a#b``, ``a->b``, ``a/b`` → ``a.b``)."""
    return _SEPARATORS.sub(".", name.strip())


def _module_name(path: str) -> str:
    stem = path.rsplit(".", 1)[0] if "." in path.rsplit("/", 1)[-1] else path
    return stem.replace("/", ".")


@dataclass(frozen=True)
class SymbolLookup:
    """Decoded names of one symbol table plus the maps the tiers use (see module docstring)."""

    names: list[str]
    qualified: list[str]
    full: list[str]  # module-qualified names
    by_exact: dict[str, list[int]]  # qualified name → rows (tier 0)
    by_key: dict[str, list[int]]  # name and every dotted suffix of the full name → rows (tier 1)
    by_folded: dict[str, list[int]]  # casefolded tier-0 and tier-1 keys → rows (tier 2)
    preference: np.ndarray  # int64 (m,): tie order inside a tier, lower first

    @classmethod
    def from_index(cls, data: object) -> SymbolLookup:
        """Build from an ``index.IndexData`` with a symbol table (format 3)."""
        table = data.symbols
        names, qualified = table.names(), table.qualified_names()
        paths = [doc["path"] for doc in data.docs]
        doc_rows = np.asarray(table.doc).tolist()
        full = [f"{_module_name(paths[d])}.{q}" for d, q in zip(doc_rows, qualified)]
        by_exact: dict[str, list[int]] = {}
        by_key: dict[str, list[int]] = {}
        by_folded: dict[str, list[int]] = {}
        for row, (name, qual, whole) in enumerate(zip(names, qualified, full)):
            by_exact.setdefault(qual, []).append(row)
            keys = {name}
            parts = whole.split(".")
            keys.update(".".join(parts[i:]) for i in range(len(parts)))
            keys.discard(qual)
            for key in keys:
                by_key.setdefault(key, []).append(row)
            for key in keys | {qual}:
                by_folded.setdefault(key.casefold(), []).append(row)
        is_test = np.fromiter((bool(_TEST_DIR.search(paths[d])) for d in doc_rows), dtype=np.int64, count=len(doc_rows))
        depth = np.fromiter((q.count(".") for q in qualified), dtype=np.int64, count=len(qualified))
        preference = (is_test * 1_000_000 + depth) * (len(names) + 1) + np.arange(len(names))
        return cls(names, qualified, full, by_exact, by_key, by_folded, preference)

    def find(self, name: str, allowed: np.ndarray | None, k: int) -> list[tuple[int, int]]:
        """(row, tier) of the best ``k`` symbols for ``name``; ``allowed``: bool (m,) rows that pass
        the filters, or None for all."""
        query = normalise_symbol(name)
        ranked: list[tuple[int, int]] = []
        seen: set[int] = set()

        def take(rows: Sequence[int], tier: int) -> None:
            fresh = [r for r in rows if r not in seen and (allowed is None or allowed[r])]
            for row in sorted(fresh, key=lambda r: int(self.preference[r])):
                seen.add(row)
                ranked.append((row, tier))

        take(self.by_exact.get(name.strip(), ()), 0)  # as stored, even with glob characters (`[Symbol.iterator]`)
        take(self.by_exact.get(query, ()), 0)
        take(self.by_key.get(query, ()), 1)
        take(self.by_folded.get(query.casefold(), ()), 2)
        if _GLOB_CHARS & set(query):
            matcher = re.compile(fnmatch.translate(query.casefold()))
            rows = [
                row for row, (short, qual, whole) in enumerate(zip(self.names, self.qualified, self.full))
                if matcher.match(short.casefold()) or matcher.match(qual.casefold()) or matcher.match(whole.casefold())
            ]
            take(rows, 3)
        return ranked[:k]


def check_symbol_name(name: object) -> str:
    """The name to look up, or QueryError saying what to pass."""
    if not isinstance(name, str):
        raise QueryError(f"name must be a string such as 'LruCache', 'Cache.evict' or '*evict*', got {type(name).__name__}")
    if not name.strip():
        raise QueryError("name is empty; pass a symbol name ('evict'), a qualified name ('Cache.evict') or a glob ('*evict*')")
    if len(name) > MAX_NAME_CHARS:
        raise QueryError(f"name is {len(name)} characters; the limit is {MAX_NAME_CHARS}")
    return name


def symbol_filter(data: object, kinds: Sequence[str], kind: str | None, path: str | None,
                  language: str | None) -> np.ndarray | None:
    """bool (m,) of the symbol rows passing the kind, path-glob and language filters, or None (no filter).

    QueryError for an unknown kind or language, PathNotFoundError when the glob matches no file."""
    if kind is None and path is None and language is None:
        return None
    table = data.symbols
    allowed = np.ones(len(table), dtype=bool)
    if kind is not None:
        if not isinstance(kind, str) or kind.strip().lower() not in kinds:
            raise QueryError(f"unknown kind {kind!r}; use one of: {', '.join(k for k in kinds if k != 'text')}")
        allowed &= np.asarray(table.kind) == kinds.index(kind.strip().lower())
    if path is not None or language is not None:
        docs = doc_mask([d["path"] for d in data.docs], [d["language"] for d in data.docs], path, language)
        if path is not None and not docs.any():
            raise PathNotFoundError(path)
        allowed &= docs[np.asarray(table.doc)]
    return allowed


def outline_rows(data: object, path: str) -> list[dict[str, object]]:
    """``{symbol, kind, start_line, end_line}`` of one file's symbols in file order (containers before
    their members); PathNotFoundError for a path that is not indexed."""
    if not isinstance(path, str) or not path.strip():
        raise QueryError(f"path must be a non-empty string naming an indexed file (see files()), got {path!r}")
    doc = data.doc_index.get(path)
    if doc is None:
        doc = data.doc_index.get(path.strip().removeprefix("./"))
    if doc is None:
        raise PathNotFoundError(path)
    table = data.symbols
    rows = table.rows_in_doc(doc)
    lines = np.asarray(table.lines[rows.start : rows.stop]).tolist()
    return [
        {"symbol": table.qualified_name(row), "kind": table.kind_name(row), "start_line": start, "end_line": end}
        for row, (start, end) in zip(rows, lines)
    ]
