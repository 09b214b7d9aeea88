"""Answer MCP `initialize` before the SDK has loaded (issue 12: the reply within 1 s on a large tree).

Importing the mcp SDK costs over a second of CPU (pydantic models of every protocol revision), and
clients give up on a server whose handshake is slow. So `serve` reads the client's first line itself
while the SDK and the server's modules load in a thread: an `initialize` request is answered here at
once, with the reply the SDK gives (its protocol negotiation, our capabilities, server info and
instructions: tests/server/test_handshake.py compares the two over stdio). The line is then handed to
the SDK as the first one it reads, and its own reply to that request is dropped (wire.py), so the
session's state is exactly as if the SDK had answered. Any other first line goes to the SDK unanswered.

Contract: imports nothing heavy (no SDK, no numpy, no other package); writes to fd 1 only before the
SDK's transport claims stdout. Loading the index still starts in the server's lifespan (app.py).
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, BinaryIO

__all__ = [
    "HANDSHAKE_PROTOCOL_VERSIONS",
    "INSTRUCTIONS",
    "SERVER_NAME",
    "FirstLine",
    "answer_first_line",
    "claimed_stdin",
]

SERVER_NAME = "knowledge-mcp"
INSTRUCTIONS = (
    "Knowledge server over an indexed codebase. Send ONE short Python program to execute_code that "
    "searches (search/bm25/semantic/rerank), reads (read/files), filters and prints only what you need; "
    "it is far cheaper in tokens than many search_code calls. help() inside a program, or the resource "
    "knowledge://api, documents the API; knowledge://index describes the index."
)
# The SDK's `initialize` revisions, oldest first: a client's version among them is echoed, any other
# gets the newest (mcp_types.version.HANDSHAKE_PROTOCOL_VERSIONS; a test checks they agree).
HANDSHAKE_PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
# What the SDK announces for this server's handlers (tools, resources, prompts; no subscriptions).
_CAPABILITIES = {
    "prompts": {"listChanged": False},
    "resources": {"listChanged": False, "subscribe": False},
    "tools": {"listChanged": False},
}
# One line is read before the SDK's reader takes over; the wire's own cap (wire.MAX_LINE_BYTES) is
# larger, and a longer first line is simply handed on for the wire to judge.
_FIRST_LINE_MAX_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class FirstLine:
    """The client's first line (replayed to the SDK; b"" at end of input) and the id answered here."""

    raw: bytes
    answered_id: int | str | None = None


def answer_first_line(source: BinaryIO, out_fd: int = 1) -> FirstLine:
    """Read one line from `source`; answer it on `out_fd` when it is a well-formed `initialize`."""
    raw = source.readline(_FIRST_LINE_MAX_BYTES)
    request = _initialize_request(raw)
    if request is None:
        return FirstLine(raw)
    requested = request["params"]["protocolVersion"]
    reply = {"jsonrpc": "2.0", "id": request["id"], "result": {
        "capabilities": _CAPABILITIES,
        "instructions": INSTRUCTIONS,
        "protocolVersion": requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else HANDSHAKE_PROTOCOL_VERSIONS[-1],
        "serverInfo": {"name": SERVER_NAME, "version": ""},
    }}
    data = (json.dumps(reply, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    while data:
        data = data[os.write(out_fd, data):]
    return FirstLine(raw, request["id"])


def _initialize_request(raw: bytes) -> dict[str, Any] | None:
    """The parsed line when it is an `initialize` request the SDK accepts as such, else None."""
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not (isinstance(message, dict) and message.get("jsonrpc") == "2.0" and message.get("method") == "initialize"):
        return None
    request_id, params = message.get("id"), message.get("params")
    if isinstance(request_id, bool) or not isinstance(request_id, (int, str)) or not isinstance(params, dict):
        return None
    client = params.get("clientInfo")
    if not (isinstance(params.get("protocolVersion"), str) and isinstance(params.get("capabilities"), dict)
            and isinstance(client, dict) and isinstance(client.get("name"), str)
            and isinstance(client.get("version"), str)):
        return None
    return message


@contextmanager
def claimed_stdin() -> Iterator[BinaryIO]:
    """A private duplicate of fd 0 to read the wire from, with fd 0 pointed at the null device.

    Mirrors what the SDK's stdio_server does when it reads stdin itself (it skips that when given a
    stream): handlers and children then read EOF instead of stealing the client's bytes. The
    duplicate is never closed, as in the SDK: a worker thread may still block on it after exit.
    """
    try:
        private_fd = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    except OSError:
        yield sys.stdin.buffer
        return
    diverted = False
    with suppress(OSError):
        null_fd = os.open(os.devnull, os.O_RDONLY)
        try:
            os.dup2(null_fd, 0)
            diverted = True
        finally:
            os.close(null_fd)
    try:
        yield os.fdopen(private_fd, "rb", closefd=False)
    finally:
        if diverted:
            with suppress(OSError):
                os.dup2(private_fd, 0)
