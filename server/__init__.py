"""The MCP stdio server and the `knowledge-mcp` CLI: tools, result processing, state, skills, freshness.

Names resolve on first use (`__getattr__`, PEP 562; why: docs/ARCHITECTURE.md).
"""

from importlib import import_module
from typing import Any

# submodule -> the public names it defines
_EXPORTS = {
    "config": ("ServerConfig",),
    "redact": ("redact_text", "redact_value"),
    "results": ("execution_reply", "reply_tokens", "search_reply"),
}
_SOURCES = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "ServerConfig",
    "execution_reply",
    "redact_text",
    "redact_value",
    "reply_tokens",
    "search_reply",
]


def __getattr__(name: str) -> Any:
    """Import the submodule that defines `name` on first use, and keep the value."""
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = getattr(import_module(f".{_SOURCES[name]}", __name__), name)
    return value
