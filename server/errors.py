"""Errors of the server package and the one table that routes every error to its channel.

Tree::

    ServerError (exit_code 1)          root: our own fault unless a subclass says otherwise
    ├── UsageError (exit_code 2)        bad flags, bad config values, bad program input
    ├── RootRefusedError (exit_code 2)  `serve`/`exec` refused to index `/`, $HOME or a huge tree
    └── SkillError (exit_code 2)        a skill that cannot be saved, loaded or deleted

    └── ProgramEncodingError (exit_code 2)  program text that is not UTF-8

Contract: `exit_code_for(exc)` maps any exception to a CLI exit code by its `exit_code` class
attribute (errors of index/, search/ and sandbox/ carry one too); anything without one is 1.
Host paths never reach the wire: messages pass `hide_host_paths`.
`channel_for(exc, request_id=...)` is the one place that turns an exception into a tool reply's
outcome and `error` object (the table `_TRANSLATIONS` below): an `is_error` tool result the model
can act on, or an internal error whose details stay on stderr.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sandbox import BusyError, PolicyError

from .state import StateTooLargeError

__all__ = [
    "Channel",
    "ProgramEncodingError",
    "RootRefusedError",
    "ServerError",
    "SkillError",
    "UsageError",
    "WireError",
    "channel_for",
    "exit_code_for",
    "hide_host_paths",
]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INDEX = 3
EXIT_MODEL = 4


class ServerError(Exception):
    """Root of the server package's errors."""

    exit_code = EXIT_INTERNAL


class UsageError(ServerError):
    """Bad command-line input, configuration or tool input the caller can fix."""

    exit_code = EXIT_USAGE


class RootRefusedError(UsageError):
    """A root that is too broad to index without --force (/, the home directory, a huge tree)."""


class SkillError(UsageError):
    """A skill that cannot be saved, loaded or deleted (bad name, shadowing, policy violation)."""


class ProgramEncodingError(UsageError):
    """Program text refused before compiling: it is not valid UTF-8."""


class Channel(enum.Enum):
    """How the MCP server reports an error."""

    TOOL_ERROR = "tool_error"  # is_error result with an actionable message
    INTERNAL = "internal"  # "internal error <id>" on the wire, traceback on stderr only


def exit_code_for(exc: BaseException) -> int:
    """The CLI exit code of `exc`: its `exit_code` attribute if it is a valid code, else 1."""
    if isinstance(exc, KeyboardInterrupt):
        return 130
    code = getattr(exc, "exit_code", None)
    if isinstance(code, int) and code in (EXIT_INTERNAL, EXIT_USAGE, EXIT_INDEX, EXIT_MODEL):
        return code
    return EXIT_INTERNAL


def channel_for(exc: BaseException) -> Channel:
    """Errors with a usage/index/model exit code are the caller's to fix; everything else is ours."""
    return Channel.TOOL_ERROR if exit_code_for(exc) in (EXIT_USAGE, EXIT_INDEX, EXIT_MODEL) else Channel.INTERNAL


@dataclass(frozen=True, slots=True)
class WireError:
    """An exception as a tool reply sees it: the channel, the call's outcome and its `error` object
    (`{exception, message, line, hint, traceback}`, the output schemas' ErrorInfo)."""

    channel: Channel
    outcome: str
    error: dict[str, Any]


# The one table, most specific first: (class, outcome, name on the wire or None for the class's own,
# hint or None for the exception's own `hint`). An exception not listed is the caller's to fix when
# its exit code says so (usage, index, model: load failures), else ours.
_TRANSLATIONS: tuple[tuple[type[BaseException], str, str | None, str | None], ...] = (
    (PolicyError, "validation_error", None, None),
    (ProgramEncodingError, "validation_error", "ValueError", "send the program as UTF-8 text"),
    (BusyError, "busy", None, "retry in a moment, or combine several searches into one program"),
    (StateTooLargeError, "runtime_error", None, "store ids and line numbers in state, not texts"),
)
LOAD_FAILURE_HINT = "fix the server's configuration and restart it"
INTERNAL_HINT = "retry; if it persists, report the id"
BUSY_MESSAGE = "every worker is busy and the queue is full"


# An absolute path: a "/" that starts a token (not inside a relative path, a URL or a glob), then
# path characters. What it names is the server's business; the caller sees a placeholder.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/*-])/(?:[\w.@+~-]+/)*[\w.@+~-]+/?")


def hide_host_paths(text: str, known: Mapping[str, str] | None = None) -> str:
    """`text` with the host paths in `known` replaced by their labels (longest first) and any other
    absolute path by `<path>`: messages built for a terminal, before they go on the wire."""
    for path, label in sorted((known or {}).items(), key=lambda item: -len(item[0])):
        if path and path != "/":
            text = text.replace(path, label)
    return _ABSOLUTE_PATH.sub("<path>", text)


def channel_for(exc: BaseException, *, request_id: str, host_paths: Mapping[str, str] | None = None) -> WireError:
    """How the MCP server answers `exc` (see the table above); `request_id` names an internal error;
    `host_paths` labels the configured directories in the messages of load failures."""
    for kind, outcome, name, hint in _TRANSLATIONS:
        if isinstance(exc, kind):
            if isinstance(exc, PolicyError):
                return WireError(Channel.TOOL_ERROR, outcome, _error(type(exc).__name__, exc.describe(), exc.hint,
                                                                     exc.line))
            message = str(exc) or (BUSY_MESSAGE if isinstance(exc, BusyError) else type(exc).__name__)
            return WireError(Channel.TOOL_ERROR, outcome, _error(name or type(exc).__name__, message, hint))
    if exit_code_for(exc) in (EXIT_USAGE, EXIT_INDEX, EXIT_MODEL):
        message = hide_host_paths(" ".join(str(exc).split()), host_paths) or type(exc).__name__
        return WireError(Channel.TOOL_ERROR, "internal_error", _error(type(exc).__name__, message, LOAD_FAILURE_HINT))
    return WireError(Channel.INTERNAL, "internal_error", _error(
        "InternalError", f"internal error {request_id}; the server log has the details", INTERNAL_HINT,
    ))


def _error(exception: str, message: str, hint: str | None, line: int | None = None) -> dict[str, Any]:
    return {"exception": exception, "message": message, "line": line, "hint": hint, "traceback": None}
