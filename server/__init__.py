"""The MCP stdio server and the `knowledge-mcp` CLI: tools, result processing, state, skills, freshness."""

from .config import ServerConfig
from .redact import redact_text, redact_value
from .results import execution_reply, reply_tokens, search_reply

__all__ = [
    "ServerConfig",
    "execution_reply",
    "redact_text",
    "redact_value",
    "reply_tokens",
    "search_reply",
]
