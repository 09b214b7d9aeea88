"""Redact what looks like a secret from anything the server returns.

Contract: `redact_text` replaces only the secret part of a match with `[REDACTED:<kind>]`, keeping
the surrounding text (an assignment keeps its name and operator), and never touches plain hex
digests, git SHAs or UUIDs: no rule matches on entropy alone, each needs a known shape or a
secret-sounding name. `redact_value` applies it to every string (and dict key) of a JSON value.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["redact_text", "redact_value"]

# Known token shapes: (kind, pattern). Each pattern matches only the secret itself.
_TOKEN_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("private-key", re.compile(
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)",
        re.DOTALL,
    )),
    # AWS access key ids (long-term AKIA, temporary ASIA, and the other documented prefixes).
    ("aws-access-key", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b")),
    ("github-token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b")),
    ("slack-token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,250}")),
    ("slack-webhook", re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]{20,}")),
    ("stripe-key", re.compile(r"\b[rs]k_live_[0-9A-Za-z]{16,}\b")),
    ("google-api-key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
)

# "Authorization: Bearer <token>" and "Bearer <token>": keep the scheme, drop the credential.
_BEARER = re.compile(r"(?i)(\bbearer\s+)([A-Za-z0-9\-._~+/]{16,}=*)")
_BASIC_AUTH_URL = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]+:)([^\s@/]{3,})(@)")

# Names that announce a secret; the value assigned to them is redacted.
_SECRET_NAME = (
    r"[A-Za-z0-9_.-]*(?:password|passwd|passphrase|secret|api[_-]?key|apikey|private[_-]?key"
    r"|(?:access|auth|api|refresh|bearer|session|client)[_-]?token|credentials?)[A-Za-z0-9_.-]*"
)
_QUOTED_ASSIGNMENT = re.compile(
    rf"""(?ix)
    (["']?\b{_SECRET_NAME}["']?\s*(?::=|=>|[:=])\s*)   # name and operator (JSON, YAML, code, env)
    (["'])([^"'\n]{{4,}})\2                               # a quoted literal value
    """
)
_BARE_ASSIGNMENT = re.compile(
    rf"""(?ix)
    (\b{_SECRET_NAME}\s*(?:=|:)[ \t]*)                    # env/ini/yaml style
    ([^\s"'#,;]{{4,}})                                    # an unquoted value
    """
)
# Unquoted values that are code or placeholders, not secrets (type annotations, references).
_NOT_SECRET_WORDS = frozenset({
    "str", "int", "bytes", "bool", "none", "null", "true", "false", "optional", "any", "string",
    "required", "self", "secret", "password", "redacted", "typing",
})
_CODE_LIKE = re.compile(r"[()\[\]{}<>$]|^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_]")

_MARK = "[REDACTED:{}]"


def redact_text(text: str) -> str:
    """`text` with every secret-looking span replaced by `[REDACTED:<kind>]`."""
    if not text:
        return text
    for kind, pattern in _TOKEN_PATTERNS:
        text = pattern.sub(_MARK.format(kind), text)
    text = _BEARER.sub(lambda m: m.group(1) + _MARK.format("token"), text)
    text = _BASIC_AUTH_URL.sub(lambda m: m.group(1) + _MARK.format("password") + m.group(3), text)
    text = _QUOTED_ASSIGNMENT.sub(_redact_quoted, text)
    text = _BARE_ASSIGNMENT.sub(_redact_bare, text)
    return text


def _redact_quoted(match: re.Match[str]) -> str:
    value = match.group(3)
    if value.startswith("[REDACTED:") or value.strip().lower() in _NOT_SECRET_WORDS:
        return match.group(0)
    quote = match.group(2)
    return f"{match.group(1)}{quote}{_MARK.format('secret')}{quote}"


def _redact_bare(match: re.Match[str]) -> str:
    value = match.group(2)
    if (
        value.startswith("[REDACTED")
        or value.lower().rstrip(":") in _NOT_SECRET_WORDS
        or _CODE_LIKE.search(value)
        or value.isdigit()
    ):
        return match.group(0)
    return match.group(1) + _MARK.format("secret")


def redact_value(value: Any) -> Any:
    """A copy of a JSON value with `redact_text` applied to every string and dict key."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list):
        return [redact_value(item) for item in value]
    if isinstance(value, tuple):
        return [redact_value(item) for item in value]
    if isinstance(value, dict):
        return {redact_text(str(key)): redact_value(item) for key, item in value.items()}
    return value
