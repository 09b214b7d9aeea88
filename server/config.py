"""ServerConfig (composes IndexConfig, SearchConfig, SandboxConfig) and its layered loader.

Contract: `load_config(args, env)` resolves every setting as flag > environment > `config.toml` in
the state directory > default. It never reads `os.environ` or `sys.argv` itself: the CLI passes
both in. A bad value raises `UsageError` naming where it came from (flag, variable or file key).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from index import IndexConfig
from sandbox import SandboxConfig
from search import DEFAULT_INDEX_NAME, QueryError, SearchConfig, check_index_name

from .errors import UsageError

__all__ = ["ServerConfig", "load_config", "CONFIG_FILE_NAME"]

APP_NAME = "knowledge-mcp"
CONFIG_FILE_NAME = "config.toml"
ENV_PREFIX = "KNOWLEDGE_MCP_"

DEFAULT_LOG_LEVEL = "INFO"
DEFAULT_MAX_ROOT_BYTES = 200 * 1024 * 1024  # an auto-indexed root above this needs --force
DEFAULT_REFRESH_DEBOUNCE_S = 2.0
# A served root's delta (files saved since its index version) is folded into a new version by a
# background build once the tree has been quiet this long (server/watch.py).
DEFAULT_COMPACT_AFTER_S = 60.0
RERANK_THREADS = 2
LOG_LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})

# Settings that can come from the environment or config.toml: key -> parser. The environment
# variable is KNOWLEDGE_MCP_<KEY upper>; the TOML key is the same lowercase name.
_LAYERED_KEYS: tuple[str, ...] = (
    "index",
    "root",
    "cache_dir",
    "embed_model",
    "rerank_model",
    "token_encoding",
    "max_workers",
    "queue",
    "timeout_s",
    "memory_mb",
    "log_level",
    "audit_log",
    "qdrant_url",
    "qdrant_api_key",
    "compact_after_s",
)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything the server needs, resolved: paths are absolute, numbers validated."""

    state_dir: Path
    cache_dir: Path
    index_dir: Path | None = None
    root: Path | None = None
    # Every served index as (name, dir), in the order given; index_dir is the first one's dir. Empty
    # when serving a root or one plain --index DIR (served as "default").
    indexes: tuple[tuple[str, Path], ...] = ()
    index: IndexConfig = field(default_factory=IndexConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)  # per-call limits, workers, token encoding
    log_level: str = DEFAULT_LOG_LEVEL
    audit_log: Path | None = None
    force: bool = False
    max_root_bytes: int = DEFAULT_MAX_ROOT_BYTES
    refresh_debounce_s: float = DEFAULT_REFRESH_DEBOUNCE_S
    compact_after_s: float = DEFAULT_COMPACT_AFTER_S
    home_dir: Path | None = None  # the user's home, refused as a root without --force
    qdrant_url: str | None = None  # default server of `index build --backend qdrant`
    qdrant_api_key: str | None = field(default=None, repr=False)  # never logged, never sent to a child

    def __post_init__(self) -> None:
        if self.index_dir is not None and self.root is not None:
            raise ValueError("choose one of index_dir and root, not both")
        if self.indexes and self.index_dir != self.indexes[0][1]:
            raise ValueError("index_dir must be the first of indexes when several are served")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {sorted(LOG_LEVELS)}, got {self.log_level!r}")
        if self.max_root_bytes < 1:
            raise ValueError(f"max_root_bytes must be >= 1, got {self.max_root_bytes}")
        if self.compact_after_s < 0:
            raise ValueError(f"compact_after_s must be >= 0, got {self.compact_after_s}")
        if self.refresh_debounce_s < 0:
            raise ValueError(f"refresh_debounce_s must be >= 0, got {self.refresh_debounce_s}")

    @property
    def skills_dir(self) -> Path:
        return self.state_dir / "skills"


# ---------------------------------------------------------------- value parsing


def _parse_int(text: Any, where: str) -> int:
    if isinstance(text, bool):
        raise UsageError(f"{where}: expected an integer, got {text!r}")
    try:
        return int(text)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: expected an integer, got {text!r}") from None


def _parse_float(text: Any, where: str) -> float:
    if isinstance(text, bool):
        raise UsageError(f"{where}: expected a number, got {text!r}")
    try:
        return float(text)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: expected a number, got {text!r}") from None


def _parse_str(text: Any, where: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"{where}: expected a non-empty string, got {text!r}")
    return text.strip()


def _parse_path(text: Any, where: str) -> Path:
    return Path(os.path.expanduser(_parse_str(text, where))).resolve()


def _parse_log_level(text: Any, where: str) -> str:
    level = _parse_str(text, where).upper()
    if level not in LOG_LEVELS:
        raise UsageError(f"{where}: log level must be one of {', '.join(sorted(LOG_LEVELS))}, got {text!r}")
    return level


_PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "index": _parse_path,
    "root": _parse_path,
    "cache_dir": _parse_path,
    "embed_model": _parse_str,
    "rerank_model": _parse_str,
    "token_encoding": _parse_str,
    "max_workers": _parse_int,
    "queue": _parse_int,
    "timeout_s": _parse_float,
    "memory_mb": _parse_int,
    "log_level": _parse_log_level,
    "audit_log": _parse_path,
    "qdrant_url": _parse_str,
    "qdrant_api_key": _parse_str,
    "compact_after_s": _parse_float,
}


# ---------------------------------------------------------------- layers


def default_state_dir(env: Mapping[str, str]) -> Path:
    """`$XDG_STATE_HOME/knowledge-mcp`, falling back to `~/.local/state/knowledge-mcp`."""
    base = env.get("XDG_STATE_HOME") or str(_home(env) / ".local" / "state")
    return Path(base).expanduser().resolve() / APP_NAME


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """`$XDG_CACHE_HOME/knowledge-mcp`, falling back to `~/.cache/knowledge-mcp`."""
    base = env.get("XDG_CACHE_HOME") or str(_home(env) / ".cache")
    return Path(base).expanduser().resolve() / APP_NAME


def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME")
    return Path(home) if home else Path.home()


def read_config_file(path: Path) -> dict[str, Any]:
    """The parsed `config.toml` (empty when absent); unknown keys are a `UsageError`."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the config file ({exc.strerror}); fix its permissions or remove it") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{path}: invalid TOML ({exc}); fix the file or remove it") from exc
    unknown = sorted(set(data) - set(_LAYERED_KEYS))
    if unknown:
        raise UsageError(
            f"{path}: unknown key(s) {', '.join(unknown)}; allowed keys: {', '.join(_LAYERED_KEYS)}"
        )
    return data


def _layered(key: str, flag: Any, env: Mapping[str, str], toml: Mapping[str, Any], toml_path: Path) -> Any:
    """flag > environment > config.toml; None when no layer sets the key."""
    parse = _PARSERS[key]
    flag_name = "--" + key.replace("_", "-")
    if flag is not None:
        return parse(str(flag) if isinstance(flag, Path) else flag, flag_name)
    env_name = ENV_PREFIX + key.upper()
    if env.get(env_name, "").strip():
        return parse(env[env_name], f"environment variable {env_name}")
    if key in toml:
        return parse(toml[key], f"{toml_path} key {key!r}")
    return None


def load_config(
    args: Any,
    env: Mapping[str, str],
    *,
    cpu_count: int | None = None,
    show_progress: bool = False,
) -> ServerConfig:
    """Resolve a `ServerConfig` from parsed CLI args (any object with optional attributes) and `env`.

    Attributes read from `args` when present: index, root, state_dir, max_workers, timeout_s,
    embed_model, exclude, no_vectors, force. Raises `UsageError` for a bad value.
    """

    def flag(name: str) -> Any:
        return getattr(args, name, None)

    state_dir_flag = flag("state_dir")
    if state_dir_flag is not None:
        state_dir = _parse_path(str(state_dir_flag), "--state-dir")
    elif env.get(ENV_PREFIX + "STATE_DIR", "").strip():
        state_dir = _parse_path(env[ENV_PREFIX + "STATE_DIR"], f"environment variable {ENV_PREFIX}STATE_DIR")
    else:
        state_dir = default_state_dir(env)
    toml_path = state_dir / CONFIG_FILE_NAME
    toml = read_config_file(toml_path)

    index_flags = flag("index")
    if isinstance(index_flags, list):  # serve/exec: --index [NAME=]DIR, repeatable
        index_flags = index_flags or None
    indexes = _parse_index_specs(index_flags) if isinstance(index_flags, list) else ()
    values = {
        key: _layered(key, indexes[0][1] if key == "index" and indexes else flag(key), env, toml, toml_path)
        for key in _LAYERED_KEYS
    }
    if len(indexes) == 1 and indexes[0][0] == DEFAULT_INDEX_NAME:
        indexes = ()  # one plain --index DIR: served exactly as before

    index_dir, root = values["index"], values["root"]
    if index_dir is not None and root is not None:
        # A flag on one side beats a lower layer on the other side.
        if index_flags is not None and flag("root") is None:
            root = None
        elif flag("root") is not None and index_flags is None:
            index_dir = None
        else:
            raise UsageError("both an index and a root are set; pass only one of --index DIR and --root DIR")

    workers = values["max_workers"] if values["max_workers"] is not None else (cpu_count or os.cpu_count() or 1)
    force = bool(flag("force"))
    embed_model = values["embed_model"]
    rerank_model = values["rerank_model"]


    excludes = tuple(flag("exclude") or ())
    cache_dir = values["cache_dir"] or default_cache_dir(env)
    try:
        index_config = IndexConfig(
            excludes=excludes,
            use_gitignore=not bool(flag("no_gitignore")),
            embed_model=embed_model,
            embed_precision=flag("embed_precision") or "int8",
            model_cache_dir=cache_dir / "models",
            with_vectors=not bool(flag("no_vectors")),
            force=force and flag("command") == "index",  # `index build --force` rebuilds from scratch
            show_progress=show_progress,
        )
        # A reranking call scores its pairs on up to two threads of its own child (p50 0.31 s for the
        # top 10 instead of 0.55 s on one): worth more to the waiting agent than a free core.
        rerank_threads = max(1, min(RERANK_THREADS, cpu_count or os.cpu_count() or 1))
        search_config = SearchConfig(embed_model=embed_model, rerank_model=rerank_model, threads=rerank_threads)
        sandbox_config = _sandbox_config(values, workers)
        return ServerConfig(
            state_dir=state_dir,
            cache_dir=cache_dir,
            index_dir=index_dir,
            root=root,
            indexes=indexes if index_dir is not None else (),
            index=index_config,
            search=search_config,
            sandbox=sandbox_config,
            log_level=values["log_level"] or DEFAULT_LOG_LEVEL,
            audit_log=values["audit_log"],
            force=force and flag("command") != "index",  # `serve/exec --force` allows broad roots
            home_dir=_home(env).expanduser().resolve(),
            qdrant_url=values["qdrant_url"],
            qdrant_api_key=values["qdrant_api_key"],
            compact_after_s=(values["compact_after_s"] if values["compact_after_s"] is not None
                             else DEFAULT_COMPACT_AFTER_S),
        )
    except ValueError as exc:
        raise UsageError(f"invalid configuration: {exc}") from exc


def _parse_index_specs(specs: list[Any]) -> tuple[tuple[str, Path], ...]:
    """`--index [NAME=]DIR` values: a plain DIR is named "default"; names are unique."""
    parsed: list[tuple[str, Path]] = []
    for spec in specs:
        text = _parse_str(str(spec), "--index")
        name, sep, directory = text.partition("=")
        if not sep or not _is_index_name(name):
            name, directory = DEFAULT_INDEX_NAME, text
        parsed.append((name, _parse_path(directory, f"--index {text}")))
    names = [name for name, _ in parsed]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UsageError(
            f"--index: the name {', '.join(repeated)} is given to several indexes; "
            "name each with --index NAME=DIR (a plain DIR is named 'default')"
        )
    return tuple(parsed)


def _is_index_name(text: str) -> bool:
    try:
        check_index_name(text)
    except QueryError:
        return False
    return True


def _check_range(ok: bool, what: str, value: Any, expected: str, where: str) -> None:
    if not ok:
        raise UsageError(f"{what} must be {expected}, got {value!r} (set by {where})")

# Layered keys that set a SandboxConfig field: key -> (field, where a bad value came from).
_SANDBOX_KEYS = {
    "timeout_s": ("timeout_s", "--timeout-s / KNOWLEDGE_MCP_TIMEOUT_S"),
    "memory_mb": ("memory_mb", "KNOWLEDGE_MCP_MEMORY_MB"),
    "queue": ("queue_size", "KNOWLEDGE_MCP_QUEUE"),
    "token_encoding": ("token_encoding", "KNOWLEDGE_MCP_TOKEN_ENCODING"),
}


def _sandbox_config(values: Mapping[str, Any], workers: int) -> SandboxConfig:
    """The SandboxConfig of the layered values (its own defaults and checks for the rest); a bad
    value is a UsageError naming the flag or variable that set it."""
    if workers < 1:
        raise UsageError(f"max workers must be >= 1, got {workers!r} (set by --max-workers / KNOWLEDGE_MCP_MAX_WORKERS)")
    chosen = {name: values[key] for key, (name, _) in _SANDBOX_KEYS.items() if values[key] is not None}
    for key, (name, where) in _SANDBOX_KEYS.items():
        if name in chosen:  # check one at a time so that the message names its source
            try:
                SandboxConfig(**{name: chosen[name]})
            except ValueError as exc:
                raise UsageError(f"{exc} (set by {where})") from None
    return SandboxConfig(max_workers=workers, **chosen)
