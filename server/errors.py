"""Errors of the server package and the one table that routes every error to its channel.

Tree::

    ServerError (exit_code 1)          root: our own fault unless a subclass says otherwise
    ├── UsageError (exit_code 2)        bad flags, bad config values, bad program input
    ├── RootRefusedError (exit_code 2)  `serve`/`exec` refused to index `/`, $HOME or a huge tree
    └── SkillError (exit_code 2)        a skill that cannot be saved, loaded or deleted

Contract: `exit_code_for(exc)` maps any exception to a CLI exit code by its `exit_code` class
attribute (errors of index/, search/ and sandbox/ carry one too); anything without one is 1.
`channel_for(exc)` says how the MCP server answers: an `is_error` tool result the model can act
on, or an internal error whose details stay on stderr.
"""

from __future__ import annotations

import enum

__all__ = [
    "Channel",
    "RootRefusedError",
    "ServerError",
    "SkillError",
    "UsageError",
    "channel_for",
    "exit_code_for",
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
