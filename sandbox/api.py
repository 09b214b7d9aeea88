"""The API agent programs see: a read-only facade over ``search.Searcher`` plus output helpers.

Contract: every object handed to user code is immutable or freshly made per call (hits are frozen,
lists are new, help text is a str), so no program can change what a later one sees. Arguments are
checked here with messages that say what was wrong and what to pass instead. Search-engine errors
become the builtin ``ValueError`` / ``LookupError`` / ``RuntimeError`` with the engine's message;
unexpected ones become a ``RuntimeError`` without internals (the details go to the stderr log).
"""

from __future__ import annotations

import logging
import time
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, field, fields, make_dataclass

import search

from sandbox.guards import SAFE_BUILTIN_NAMES
from sandbox.jsonfit import CUT_MARK, shrink_json
from sandbox.modules import ALLOWED_MODULES, JsonValue, json_default, preload_modules
from sandbox.tokens import TokenCounter
from sandbox.validate import REFUSED_BUILTINS

__all__ = [
    "API_NAMES",
    "HIT_FIELDS",
    "MAX_K",
    "RESERVED_NAMES",
    "SandboxAPI",
    "SandboxHit",
    "api_reference",
    "api_signatures",
    "build_api",
    "compact_text",
    "preload_sandbox",
]

logger = logging.getLogger(__name__)

API_NAMES = ("search", "bm25", "semantic", "rerank", "read", "files", "grep", "definitions", "outline",
             "compact", "count_tokens", "help",
             "list_skills")
# Names no skill may take or bind: they would shadow the API, a builtin, a module or a special global
# (round 2's API names are listed too, so no skill saved before they land can take them).
RESERVED_NAMES = frozenset(API_NAMES) | {"state", "result", "Hit", "definitions", "outline", "grep", "index_status"} \
    | SAFE_BUILTIN_NAMES | frozenset(REFUSED_BUILTINS) | ALLOWED_MODULES
MAX_K = 100
MAX_RERANK_HITS = 200
MAX_COMPACT_TOKENS = 100_000
MAX_GREP_K = search.GREP_MAX_K
# grep stops this long before the call's deadline, so its error (not a kill) reaches the program.
_DEADLINE_MARGIN_S = 0.25
_SNIPPET_CHARS = 160


# A hit's fields (names, types, order) are search.Hit's, the contract's source of truth: SandboxHit is
# made from them below and the tools' output schema from SandboxHit, so a field added to search.Hit
# reaches both without another edit.
HIT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(search.Hit))
_HIT_TYPES: dict[str, typing.Any] = typing.get_type_hints(search.Hit)
_SCALAR_TYPES = (str, int, float, bool)  # engine values may be numpy scalars: made plain for JSON


def _plain(name: str, value: object) -> object:
    kind = _HIT_TYPES[name]
    return kind(value) if kind in _SCALAR_TYPES else value


class _HitView(JsonValue):
    """SandboxHit's behaviour: ``h.path`` and ``h["path"]`` both work; JSON is the Hit dict."""

    __slots__ = ()

    @classmethod
    def from_hit(cls, hit: search.Hit) -> SandboxHit:
        return cls(**{name: _plain(name, getattr(hit, name)) for name in HIT_FIELDS})

    def to_hit(self) -> search.Hit:
        return search.Hit(**self.to_dict())  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in HIT_FIELDS}

    def keys(self) -> tuple[str, ...]:
        return HIT_FIELDS

    def get(self, key: str, default: object = None) -> object:
        return getattr(self, key) if key in HIT_FIELDS else default

    def __getitem__(self, key: str) -> object:
        if key not in HIT_FIELDS:
            raise KeyError(f"a hit has no field {key!r}; fields: {', '.join(HIT_FIELDS)}")
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in HIT_FIELDS

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(HIT_FIELDS)

    def __len__(self) -> int:
        return len(HIT_FIELDS)

    def __repr__(self) -> str:
        title = f" {self.title!r}" if self.title and self.title != self.path else ""  # type: ignore[attr-defined]
        return f"Hit({self.path}:{self.start_line}-{self.end_line}{title} score={self.score:.4g})"  # type: ignore[attr-defined]


SandboxHit = make_dataclass(
    "SandboxHit",
    [
        (f.name, _HIT_TYPES[f.name]) if f.default is MISSING else (f.name, _HIT_TYPES[f.name], field(default=f.default))
        for f in fields(search.Hit)
    ],
    bases=(_HitView,),
    namespace={"__module__": __name__, "__doc__": "One search result, read-only (the fields of search.Hit)."},
    frozen=True,
    slots=True,
    repr=False,
)


# --------------------------------------------------------------------------- argument checks
def _check_str(name: str, value: object, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise ValueError(f"{name} must not be empty")
    return str.__str__(value)


def _check_optional_str(name: str, value: object) -> str | None:
    return None if value is None else _check_str(name, value)


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer in [{low}, {high}], got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return int(value)


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def _check_index(value: object) -> str | list[str] | None:
    """None (every served index), a name, or a list of names (checked against the served ones later)."""
    if value is None:
        return None
    if isinstance(value, str):
        return _check_str("index", value)
    if isinstance(value, (list, tuple)) and value and all(isinstance(name, str) for name in value):
        return [str.__str__(name) for name in value]
    raise TypeError(f"index must be None (every index), a name or a non-empty list of names, got {value!r}")


def _check_hits(value: object) -> list[search.Hit]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise TypeError(f"hits must be a list of hits from search()/bm25()/semantic(), got {type(value).__name__}")
    hits = []
    for position, item in enumerate(value):
        if len(hits) >= MAX_RERANK_HITS:
            raise ValueError(f"rerank() takes at most {MAX_RERANK_HITS} hits; cut the list first (hits[:50])")
        if isinstance(item, SandboxHit):
            hits.append(item.to_hit())
        else:
            raise TypeError(f"hits[{position}] is a {type(item).__name__}, not a hit from search()/bm25()/semantic()")
    return hits


# --------------------------------------------------------------------------- compact()
def _is_hit_list(obj: object) -> bool:
    return isinstance(obj, (list, tuple)) and bool(obj) and all(isinstance(h, (SandboxHit, search.Hit)) for h in obj)


def _hit_header(hit: SandboxHit | search.Hit) -> str:
    header = f"{hit.path}:{hit.start_line}-{hit.end_line}"
    return f"{header}  {hit.title}" if hit.title and hit.title != hit.path else header


def _hit_snippet(hit: SandboxHit | search.Hit, max_lines: int) -> list[str]:
    lines = [line.strip() for line in hit.text.splitlines() if line.strip()][:max_lines]
    return ["    " + (line if len(line) <= _SNIPPET_CHARS else line[:_SNIPPET_CHARS] + CUT_MARK) for line in lines]


def _render_hits(hits: Sequence[SandboxHit | search.Hit], tokens: TokenCounter, max_tokens: int) -> str:
    for snippet_lines in (4, 2, 1, 0):
        text = "\n".join("\n".join([_hit_header(h), *_hit_snippet(h, snippet_lines)]) for h in hits)
        if tokens.count(text) <= max_tokens:
            return text
    headers = [_hit_header(h) for h in hits]
    kept: list[str] = []
    used = 0
    for position, header in enumerate(headers):
        more = f"{CUT_MARK} {len(headers) - position} more hits"
        cost = tokens.count(header + "\n")
        if used + cost + tokens.count(more) > max_tokens:
            kept.append(more)
            break
        kept.append(header)
        used += cost
    return tokens.truncate("\n".join(kept), max_tokens)


def compact_text(obj: object, tokens: TokenCounter, max_tokens: int) -> str:
    """Render ``obj`` for an agent within ``max_tokens`` (the logic behind the API's ``compact``)."""
    if isinstance(obj, (SandboxHit, search.Hit)):
        obj = [obj]
    if _is_hit_list(obj):
        return _render_hits(obj, tokens, max_tokens)  # type: ignore[arg-type]
    if isinstance(obj, str):
        return tokens.truncate(obj, max_tokens, marker=f" {CUT_MARK}[cut]")
    text, _ = shrink_json(obj, lambda candidate: tokens.count(candidate) <= max_tokens, default=json_default)
    return text if tokens.count(text) <= max_tokens else tokens.truncate(text, max_tokens, marker=CUT_MARK)


# --------------------------------------------------------------------------- help()
_DOCS: dict[str, str] = {
    "search": "search(query, k=10, mode='hybrid', rerank=True, path=None, language=None, index=None) -> list[Hit]\n"
              "  Hybrid (BM25 + vectors), 'bm25' or 'semantic' search; rerank=True reorders the prose candidates\n"
              "  (markdown, text, ...) with the cross-encoder, code keeps its first-stage place. k in [1, 100]. path: a glob on repo-relative paths ('src/**/*.py');\n"
              "  language: e.g. 'python', 'markdown'.",
    "bm25": "bm25(query, k=10, path=None, language=None, index=None) -> list[Hit]\n  Keyword search only (no rerank).",
    "semantic": "semantic(query, k=10, path=None, language=None, index=None) -> list[Hit]\n"
                "  Embedding search only (no rerank).",
    "rerank": "rerank(query, hits, k=None) -> list[Hit]\n"
              "  New list sorted by cross-encoder score (the score field becomes the logit); k cuts it.",
    "read": "read(path, start_line=1, end_line=None, index=None) -> str\n"
            "  Lines start_line..end_line (1-based, inclusive) of an indexed file; unknown path -> LookupError.",
    "files": "files(pattern='**/*', index=None) -> list[str]\n  Sorted indexed paths matching a glob.",
    "index": "index=None | 'name' | ['a', 'b']  (argument of search, bm25, semantic, read, files)\n"
             "  Which served index to ask: None = every index (several are fused by rank, scores become fused RRF),\n"
             "  one name, or a list. Every hit's `index` field names its index; an unknown name raises ValueError\n"
             "  listing the served ones; read(path) of a path several indexes hold raises LookupError naming them.",
    "grep": "grep(pattern, path=None, ignore_case=False, index=None, k=100) -> list[dict]\n"
            "  Lines matching a regular expression (RE2 syntax, linear time: no backreferences or lookaround)\n"
            "  in every indexed file, or the files matching the path glob; each {'path', 'line', 'text'} (text cut\n"
            f"  to {search.GREP_LINE_CHARS} characters), in path then line order, one per line, at most k (<= {MAX_GREP_K}). '^'/'$' match at\n"
            "  line ends. A refused pattern -> ValueError saying why; a path matching no file -> LookupError;\n"
            "  the call's time limit reached -> TimeoutError. Faster than read()-ing files to search them.",
    "definitions": "definitions(name, kind=None, path=None, language=None, index=None, k=20) -> list[Hit]\n"
                   "  Where a symbol is defined: each hit is the definition's own chunk (h.symbol its qualified name,\n"
                   "  h.kind e.g. 'class', 'method'). name: 'evict', 'Cache.evict' (also 'Cache::evict', 'Cache#evict'),\n"
                   "  'pkg.cache.Cache.evict' (module path first) or a glob '*evict*'. Exact matches first, then\n"
                   "  case-insensitive, then glob; kind/path (glob)/language filter. k in [1, 100].",
    "outline": "outline(path, index=None) -> list[dict]\n"
               "  The symbols of one indexed file in file order: {'symbol', 'kind', 'start_line', 'end_line'}\n"
               "  (members after their container). Unknown path -> LookupError (see files()).",
    "compact": "compact(obj, max_tokens=500) -> str\n"
               "  Hits as 'path:start-end  title' lines with short snippets, other data as compact JSON, text cut;\n"
               "  always within max_tokens.",
    "count_tokens": "count_tokens(text) -> int\n  Tokens of text in the server's encoding.",
    "help": "help(name=None) -> str\n  This overview, or one function's docs: help('search').",
    "state": "state: dict\n  This session's saved data. Keys you set or delete are kept for the next call when the program\n"
             "  succeeds (JSON values, 64 KB in total).",
    "list_skills": "list_skills() -> list[dict]\n  Saved skills (name, description); each is a function you can call.",
    "Hit": "Hit: read-only result with fields " + ", ".join(HIT_FIELDS) + ".\n"
           "  Use h.path or h['path']; dict(h) copies it; results and json.dumps serialise it as that dict.\n"
           "  title says what the chunk is: 'def f', 'class C', 'C.method' (a method of a big class),\n"
           "  'constant NAME' (a module-level table), 'module a.b' (other module-level code), 'A > B' (Markdown).",
}


def api_signatures() -> list[str]:
    """The first line of each API name's help, in help() order: the signatures tool descriptions list."""
    return [doc.splitlines()[0] for doc in _DOCS.values()]


def api_reference() -> str:
    """help() followed by help(name) of every API name: the one documentation source (help() inside a
    program, the knowledge://api resource and the execute_code description all come from `_DOCS`)."""
    return "\n\n".join([_overview(), *_DOCS.values()])


def _overview() -> str:
    signatures = "\n".join(api_signatures())
    return (
        "knowledge-mcp sandbox API. Print what you need, or set `result` to a JSON value.\n\n"
        f"{signatures}\n\n"
        f"Modules you can import: {', '.join(sorted(ALLOWED_MODULES))} (listed public members only).\n"
        "Not available: files, network, processes, names starting with '_', open/exec/eval/getattr/type/...\n"
        "Example:\n"
        "  hits = search('where are retries configured', k=20)\n"
        "  result = [dict(path=h.path, line=h.start_line) for h in hits if 'retry' in h.text][:5]\n"
        "Code questions: search() reranks only prose (the cross-encoder is trained on web prose; code keeps its\n"
        "first-stage place); definitions('Name') finds where a symbol is defined, outline(path) lists a file's\n"
        "symbols, grep(regex) finds exact lines (much faster than read()-ing files); fusing bm25() and\n"
        "semantic() rankings of two phrasings finds more; a 'constant NAME' hit is a table, and the functions\n"
        "using it (bm25('NAME')) are usually where the work happens."
    )


# --------------------------------------------------------------------------- the facade
class SandboxAPI:
    """The per-child facade: call ``namespace()`` for the functions a program sees."""

    __slots__ = ("_searcher", "_tokens", "_skills", "_deadline")

    def __init__(self, searcher: search.IndexSet | search.Searcher | None, token_counter: TokenCounter,
                 skills_info: Sequence[Mapping[str, object]] = (), deadline: float | None = None) -> None:
        # One index or several: programs always talk to an IndexSet (index=None, a name or names).
        if searcher is None:  # a fork server started without an index: every query says so
            self._searcher = search.IndexSet({})
        else:
            self._searcher = searcher if isinstance(searcher, search.IndexSet) else search.IndexSet.single(searcher)
        self._tokens = token_counter
        self._deadline = deadline
        self._skills = tuple(
            (str(info.get("name", "")), str(info.get("description", ""))) for info in skills_info
        )

    def namespace(self) -> dict[str, object]:
        """Fresh API functions (plain closures: no attributes to write, nothing shared between runs)."""
        searcher, tokens, skills, deadline = self._searcher, self._tokens, self._skills, self._deadline

        def search_(query: str, k: int = 10, mode: str = "hybrid", rerank: bool = True,
                    path: str | None = None, language: str | None = None,
                    index: str | list[str] | None = None) -> list[SandboxHit]:
            query = _check_str("query", query)
            k = _check_int("k", k, 1, MAX_K)
            if mode not in search.SEARCH_MODES:
                raise ValueError(f"mode must be one of {', '.join(repr(m) for m in search.SEARCH_MODES)}, got {mode!r}")
            rerank = _check_bool("rerank", rerank)
            path, language = _check_optional_str("path", path), _check_optional_str("language", language)
            index = _check_index(index)
            return _wrap(lambda: searcher.search(query, k=k, mode=mode, rerank=rerank, path=path, language=language,
                                                 index=index), "search")

        def bm25(query: str, k: int = 10, path: str | None = None, language: str | None = None,
                 index: str | list[str] | None = None) -> list[SandboxHit]:
            query, k = _check_str("query", query), _check_int("k", k, 1, MAX_K)
            path, language = _check_optional_str("path", path), _check_optional_str("language", language)
            index = _check_index(index)
            return _wrap(lambda: searcher.bm25(query, k=k, path=path, language=language, index=index), "bm25")

        def semantic(query: str, k: int = 10, path: str | None = None,
                     language: str | None = None, index: str | list[str] | None = None) -> list[SandboxHit]:
            query, k = _check_str("query", query), _check_int("k", k, 1, MAX_K)
            path, language = _check_optional_str("path", path), _check_optional_str("language", language)
            index = _check_index(index)
            return _wrap(lambda: searcher.semantic(query, k=k, path=path, language=language, index=index),
                         "semantic")

        def rerank(query: str, hits: list[SandboxHit], k: int | None = None) -> list[SandboxHit]:
            query = _check_str("query", query)
            engine_hits = _check_hits(hits)
            k = None if k is None else _check_int("k", k, 1, MAX_K)
            if not engine_hits:
                return []
            return _wrap(lambda: searcher.rerank(query, engine_hits, k=k), "rerank")

        def read(path: str, start_line: int = 1, end_line: int | None = None,
                 index: str | list[str] | None = None) -> str:
            path = _check_str("path", path)
            start_line = _check_int("start_line", start_line, 1, 10**9)
            end_line = None if end_line is None else _check_int("end_line", end_line, 1, 10**9)
            index = _check_index(index)
            return _call_engine(lambda: searcher.read(path, start_line, end_line, index=index),  # type: ignore[return-value]
                                "read")

        def files(pattern: str = "**/*", index: str | list[str] | None = None) -> list[str]:
            pattern = _check_str("pattern", pattern)
            index = _check_index(index)
            return list(_call_engine(lambda: searcher.files(pattern, index=index), "files"))  # type: ignore[call-overload]

        def grep(pattern: str, path: str | None = None, ignore_case: bool = False,
                 index: str | list[str] | None = None, k: int = 100) -> list[dict[str, object]]:
            pattern = _check_str("pattern", pattern, allow_empty=True)
            path, ignore_case = _check_optional_str("path", path), _check_bool("ignore_case", ignore_case)
            index = _check_index(index)
            k = _check_int("k", k, 1, MAX_GREP_K)
            matches = _call_engine(
                lambda: searcher.grep(pattern, path=path, ignore_case=ignore_case, k=k, deadline=deadline,
                                      index=index), "grep"
            )
            return [match.to_dict() for match in matches]  # type: ignore[attr-defined]

        def definitions(name: str, kind: str | None = None, path: str | None = None, language: str | None = None,
                        index: str | list[str] | None = None, k: int = 20) -> list[SandboxHit]:
            name = _check_str("name", name)
            kind, path = _check_optional_str("kind", kind), _check_optional_str("path", path)
            language = _check_optional_str("language", language)
            index = _check_index(index)
            k = _check_int("k", k, 1, MAX_K)
            return _wrap(lambda: searcher.definitions(name, kind=kind, path=path, language=language, k=k,
                                                      index=index), "definitions")

        def outline(path: str, index: str | list[str] | None = None) -> list[dict[str, object]]:
            path = _check_str("path", path)
            index = _check_index(index)
            return list(_call_engine(lambda: searcher.outline(path, index=index),  # type: ignore[call-overload]
                                     "outline"))

        def compact(obj: object, max_tokens: int = 500) -> str:
            max_tokens = _check_int("max_tokens", max_tokens, 1, MAX_COMPACT_TOKENS)
            try:
                return compact_text(obj, tokens, max_tokens)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"compact() cannot render this value: {exc}") from None

        def count_tokens(text: str) -> int:
            return tokens.count(_check_str("text", text, allow_empty=True))

        def help_(name: str | None = None) -> str:
            if name is None:
                return _overview()
            if not isinstance(name, str):
                raise TypeError("help() takes a name such as help('search'), or nothing for the overview")
            if name not in _DOCS:
                raise ValueError(f"no help for {name!r}; try one of: {', '.join(_DOCS)}")
            return _DOCS[name]

        def list_skills() -> list[dict[str, str]]:
            return [{"name": name, "description": description} for name, description in skills]

        search_.__name__ = "search"
        help_.__name__ = "help"
        return {"search": search_, "bm25": bm25, "semantic": semantic, "rerank": rerank, "read": read,
                "files": files, "grep": grep,
                "definitions": definitions, "outline": outline, "compact": compact, "count_tokens": count_tokens, "help": help_,
                "list_skills": list_skills}


def _call_engine(call: Callable[[], object], what: str) -> object:
    """Run one engine call, mapping its errors to builtin exceptions a program can catch."""
    try:
        return call()
    except search.GrepTimeoutError as exc:
        raise TimeoutError(str(exc)) from None
    except (search.PathNotFoundError, search.AmbiguousPathError) as exc:
        raise LookupError(str(exc)) from None
    except search.QueryError as exc:
        raise ValueError(str(exc)) from None
    except search.SearchError as exc:
        raise RuntimeError(f"{what}() failed: {exc}") from None
    except (MemoryError, RecursionError):
        raise
    except Exception as exc:  # an engine bug: keep internals (paths, types) out of the program's view
        logger.exception("sandbox API %s() failed", what)
        raise RuntimeError(f"{what}() failed with an internal error ({type(exc).__name__})") from None


def _wrap(call: Callable[[], list[search.Hit]], what: str) -> list[SandboxHit]:
    hits = _call_engine(call, what)
    return [SandboxHit.from_hit(hit) for hit in hits]  # type: ignore[attr-defined]


def build_api(searcher: search.IndexSet | search.Searcher | None, token_counter: TokenCounter, *,
              skills_info: Sequence[Mapping[str, object]] = (), timeout_s: float | None = None) -> SandboxAPI:
    """The API of one child: ``searcher`` and ``token_counter`` are opened once in the fork server.

    timeout_s: the call's wall-clock limit from now; long scans (grep) stop just before it with an
    error the program sees, instead of being killed with the child.
    """
    if not isinstance(token_counter, TokenCounter):
        raise TypeError(f"token_counter must be a TokenCounter, got {type(token_counter).__name__}")
    deadline = None
    if timeout_s is not None:
        deadline = time.monotonic() + max(timeout_s - min(_DEADLINE_MARGIN_S, timeout_s / 10), 0.0)
    return SandboxAPI(searcher, token_counter, skills_info, deadline)


def preload_sandbox() -> None:
    """In the fork server, before forking: import and build everything a child needs to run a program
    (module proxies, the runner, RestrictedPython's guards), so children read no files for it."""
    import importlib

    preload_modules()
    importlib.import_module("sandbox.runner")
