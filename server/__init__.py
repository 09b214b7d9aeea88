"""The MCP stdio server and the `knowledge-mcp` CLI: tools, result processing, state, skills, freshness."""

from .config import ServerConfig, load_config
from .errors import RootRefusedError, ServerError, SkillError, UsageError, exit_code_for
from .redact import redact_text, redact_value
from .results import Reply, execution_reply, reply_tokens, search_reply

__all__ = [
    "Reply",
    "RootRefusedError",
    "ServerConfig",
    "ServerError",
    "SkillError",
    "UsageError",
    "execution_reply",
    "exit_code_for",
    "load_config",
    "redact_text",
    "redact_value",
    "reply_tokens",
    "search_reply",
]
