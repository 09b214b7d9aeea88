"""Answer anchors that survive code motion: a definition named by `symbol`, resolved to its current lines.

Convention (see README.md): ``def name`` (a module-level function, async included), ``class Name``, and
dotted names for nested definitions, ``def Class.method`` or ``class Outer.Inner``. The resolved range
runs from the first decorator through the definition's last line (``ast`` end_lineno). A symbol that is
missing, misspelt or defined more than once in its scope is an error naming the question, never a silent 0.
"""

from __future__ import annotations

import ast
import difflib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

SYMBOL_PATTERN = re.compile(r"^(def|class) ([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)$")
_KINDS = {"def": (ast.FunctionDef, ast.AsyncFunctionDef), "class": (ast.ClassDef,)}
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


class AnchorError(ValueError):
    """One or more anchors do not resolve; the message lists every one with its question id."""


@dataclass(frozen=True, slots=True)
class SymbolSpan:
    """Where a symbol's definition is now (1-based, inclusive lines)."""

    path: str
    symbol: str
    start_line: int  # the first decorator, else the def/class line
    def_line: int  # the def/class line itself (what a citation points at)
    end_line: int

    def __post_init__(self) -> None:
        if not 1 <= self.start_line <= self.def_line <= self.end_line:
            raise ValueError(f"{self.path}: {self.symbol!r} has an impossible span {self}")


def parse_symbol(symbol: str) -> tuple[str, tuple[str, ...]]:
    """``"def SkillStore.load"`` → ``("def", ("SkillStore", "load"))``; ValueError on any other shape."""
    match = SYMBOL_PATTERN.match(symbol) if isinstance(symbol, str) else None
    if match is None:
        raise ValueError(
            f"symbol {symbol!r} is not of the form 'def name', 'class Name' or 'def Class.method' "
            "(no parameters, no parentheses)"
        )
    return match.group(1), tuple(match.group(2).split("."))


def resolve_symbol(source: str, symbol: str, path: str = "<source>") -> SymbolSpan:
    """The span of ``symbol`` in Python ``source``; ValueError saying what is wrong and what exists."""
    kind, names = parse_symbol(symbol)
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        raise ValueError(f"{path} does not parse ({exc.msg}, line {exc.lineno})") from exc
    scope: ast.AST = tree
    for depth, name in enumerate(names):
        last = depth == len(names) - 1
        found = [node for node in _definitions_in(scope) if node.name == name]
        if last:
            found = [node for node in found if isinstance(node, _KINDS[kind])]
        if len(found) != 1:
            qualified = ".".join(names[: depth + 1])
            if found:
                lines = ", ".join(str(node.lineno) for node in found)
                raise ValueError(f"{path}: {qualified!r} is defined {len(found)} times (lines {lines}); the anchor is ambiguous")
            raise ValueError(f"{path}: no {kind if last else 'definition'} {qualified!r}{_suggest(tree, kind, names)}")
        scope = found[0]
    node = scope
    assert isinstance(node, _SCOPES)
    start = min([node.lineno, *(decorator.lineno for decorator in node.decorator_list)])
    return SymbolSpan(path, symbol, start, node.lineno, node.end_lineno or node.lineno)


def resolve_records(
    records: Iterable[dict], read_source: Callable[[str], str | None], origin: str
) -> dict[str, SymbolSpan]:
    """{record id: span} for records carrying ``id``, ``path`` and ``symbol``.

    read_source(path) returns the file's text, or None if the file is not there. Every record is
    checked; if any fails, one AnchorError lists them all (``origin`` and the question id first).
    """
    spans: dict[str, SymbolSpan] = {}
    problems: list[str] = []
    for number, record in enumerate(records, 1):
        qid = record.get("id", f"line {number}")
        missing = [key for key in ("id", "path", "symbol") if not record.get(key)]
        if missing:
            problems.append(f"{origin}:{number} ({qid}): missing {', '.join(missing)}")
            continue
        if qid in spans:
            problems.append(f"{origin}:{number} ({qid}): duplicate id")
            continue
        source = read_source(record["path"])
        if source is None:
            problems.append(f"{origin}:{number} ({qid}): {record['path']} does not exist (or is not indexed)")
            continue
        try:
            spans[qid] = resolve_symbol(source, record["symbol"], record["path"])
        except ValueError as exc:
            problems.append(f"{origin}:{number} ({qid}): {exc}")
    if problems:
        raise AnchorError(
            f"{len(problems)} answer anchor(s) do not resolve; fix the symbol (or path) in {origin}:\n  "
            + "\n  ".join(problems)
        )
    return spans


def read_jsonl(path: Path) -> list[dict]:
    """Every non-blank line of a JSON-lines file, as dicts (ValueError naming the bad line)."""
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number} is not JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number} is not a JSON object")
        records.append(record)
    return records


def files_under(root: Path) -> Callable[[str], str | None]:
    """read_source for resolve_records: a repository-relative path's text, or None if it is not a file."""

    def read(path: str) -> str | None:
        file = root / path
        return file.read_text(encoding="utf-8") if file.is_file() else None

    return read


def _definitions_in(scope: ast.AST) -> Iterator[Definition]:
    """The defs and classes of one scope, including those under if/try/with/for (not nested scopes)."""
    for child in ast.iter_child_nodes(scope):
        if isinstance(child, _SCOPES):
            yield child
        elif isinstance(child, ast.stmt):
            yield from _definitions_in(child)


def _qualified_names(scope: ast.AST, prefix: str = "") -> Iterator[tuple[str, Definition]]:
    for node in _definitions_in(scope):
        name = f"{prefix}{node.name}"
        yield name, node
        yield from _qualified_names(node, f"{name}.")


def _suggest(tree: ast.Module, kind: str, names: tuple[str, ...]) -> str:
    """' (did you mean ...?)' from the file's own definitions, matching on the last name first."""
    known = {f"{'class' if isinstance(node, ast.ClassDef) else 'def'} {name}": name for name, node in _qualified_names(tree)}
    same_name = [symbol for symbol, name in known.items() if name.split(".")[-1] == names[-1]]
    close = same_name or difflib.get_close_matches(f"{kind} {'.'.join(names)}", list(known), n=3)
    return f" (did you mean {' or '.join(map(repr, close[:3]))}?)" if close else ""
