"""The stdio wire: answer malformed JSON-RPC lines per JSON-RPC 2.0 instead of dropping them.

The SDK's stdio transport turns a line it cannot validate into an exception that the session only
logs, so a client that sent a malformed request waits until its own timeout. `serve_stdio` runs the
server on the SDK's own `stdio_server` (which keeps owning stdout and its writer) but hands it a
checked stdin: every line is validated with the SDK's own JSON-RPC adapter first, valid lines go to
the SDK unchanged, and a malformed one is answered on the session's write stream:

- not JSON (or not UTF-8 text that parses)          -> -32700 Parse error, id null
- JSON, but not a JSON-RPC 2.0 message MCP accepts  -> -32600 Invalid Request, with the id when it
  can be read (a string or an integer), else null
- a malformed notification (string "method", no "id") or a malformed response (no "method",
  a "result" or "error") -> no reply, a warning on stderr
- a blank line -> ignored
- a line over MAX_LINE_BYTES -> discarded unread (memory stays bounded; the SDK reads any length)
  and answered -32600 with the id when it appears before the bulky part, else null

Contract: `serve_stdio(server, source, first)` serves until stdin reaches EOF, like
`MCPServer.run_stdio_async`, reading the duplicate of fd 0 that `handshake.claimed_stdin` holds (fd 0
itself points at the null device, so handlers and children read EOF). Logs go to stderr only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, BinaryIO

import anyio
import mcp_types as types
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from .handshake import FirstLine

__all__ = ["MAX_LINE_BYTES", "Verdict", "check_line", "oversized_verdict", "serve_stdio"]

logger = logging.getLogger(__name__)

# The largest legitimate message is a tools/call with MAX_CODE_CHARS (100k) characters of code,
# under 1 MB even fully \u-escaped; 8 MiB leaves room for anything a client may send.
MAX_LINE_BYTES = 8 * 1024 * 1024
_DISCARD_CHUNK = 64 * 1024
_ID_SNIFF_CHARS = 64 * 1024

_SHAPE = (
    'Send one JSON-RPC 2.0 message per line: {"jsonrpc": "2.0", "id": <string or integer>, '
    '"method": <string>, "params": <object, optional>}.'
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one line: pass `text` on to the SDK, or answer with `error` (or stay silent)."""

    text: str | None = None  # the line for the SDK when it is a valid message
    error: types.JSONRPCError | None = None  # the reply to write, when one is owed
    reason: str = ""  # why it was refused, for the log


def check_line(raw: bytes) -> Verdict:
    """Validate one line (without its size check) the way the SDK will, and say why it fails."""
    text = raw.decode("utf-8", errors="replace")  # as the SDK's reader decodes
    if not text.strip():
        return Verdict(reason="blank line")
    try:
        types.jsonrpc_message_adapter.validate_json(text, by_name=False)
    except ValidationError as exc:
        adapter_reason = _first_error(exc)
    else:
        return Verdict(text=text)

    try:
        message = json.loads(text.strip())
    except (ValueError, RecursionError) as exc:
        return _parse_error(_json_detail(exc, raw))
    return _invalid_request(message, adapter_reason)


def _parse_error(detail: str) -> Verdict:
    reason = f"Parse error: the line is not valid JSON ({detail}). {_SHAPE}"
    return Verdict(error=_error(None, types.PARSE_ERROR, reason), reason=reason)


def _invalid_request(message: Any, adapter_reason: str) -> Verdict:
    if not isinstance(message, dict):
        kind = "an array (batches are not supported)" if isinstance(message, list) else f"a JSON {_json_kind(message)}"
        reason = f"Invalid Request: a message must be a JSON object, got {kind}. {_SHAPE}"
        return Verdict(error=_error(None, types.INVALID_REQUEST, reason), reason=reason)

    has_id = "id" in message
    request_id = message.get("id") if _is_request_id(message.get("id")) else None
    problems = []
    if message.get("jsonrpc") != "2.0":
        problems.append('"jsonrpc" must be "2.0"')
    if has_id and not _is_request_id(message["id"]):
        problems.append('"id" must be a string or an integer')
    method = message.get("method")
    if "method" in message:
        if not isinstance(method, str):
            problems.append('"method" must be a string')
        if message.get("params") is not None and not isinstance(message["params"], dict):
            problems.append('"params" must be a JSON object (MCP uses named parameters)')
    elif "result" not in message and "error" not in message:
        problems.append('"method" is missing')
    reason = "Invalid Request: " + ("; ".join(problems) if problems else adapter_reason) + f". {_SHAPE}"

    if "method" not in message and ("result" in message or "error" in message):
        return Verdict(reason=f"malformed response (not answered): {reason}")
    if isinstance(method, str) and not has_id:
        return Verdict(reason=f"malformed notification (not answered): {reason}")
    return Verdict(error=_error(request_id, types.INVALID_REQUEST, reason), reason=reason)


def oversized_verdict(head: bytes) -> Verdict:
    """The reply to a line longer than MAX_LINE_BYTES, of which `head` is the start."""
    request_id = _sniff_id(head[:_ID_SNIFF_CHARS].decode("utf-8", errors="replace"))
    reason = (
        f"Invalid Request: the message is longer than {MAX_LINE_BYTES} bytes, the most this server reads "
        "on one line, and was discarded. Send a smaller request (e.g. shorter code; read large data "
        "from inside the program instead of sending it)."
    )
    return Verdict(error=_error(request_id, types.INVALID_REQUEST, reason), reason=reason)


def _error(request_id: types.RequestId | None, code: int, message: str) -> types.JSONRPCError:
    return types.JSONRPCError(jsonrpc="2.0", id=request_id, error=types.ErrorData(code=code, message=message))


def _is_request_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _json_kind(value: Any) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "null"


def _first_error(exc: ValidationError) -> str:
    """The adapter's first complaint: where and what, never the input value (it can be huge)."""
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return "the message does not match any JSON-RPC message type"
    first = errors[0]
    message = str(first["msg"])[:200]
    if first["type"] == "json_invalid":  # JSON that Python's parser accepts but the SDK's strict one does not
        detail = message.removeprefix("Invalid JSON: ")
        return f"the server's strict JSON parser refused it ({detail}; strings must be valid Unicode, no lone \\ud800-style escapes)"
    # loc starts with the union member tried (JSONRPCRequest, ...); the field path follows.
    where = ".".join(str(part) for part in first["loc"][1:])
    return (f'"{where}": ' if where else "") + message


def _json_detail(exc: BaseException, raw: bytes) -> str:
    if isinstance(exc, RecursionError):
        detail = "nested too deeply"
    elif isinstance(exc, json.JSONDecodeError):
        detail = f"{exc.msg} at character {exc.pos + 1}"
    else:
        detail = str(exc)[:200]
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        detail += "; the line is not valid UTF-8"
    return detail


def _sniff_id(head: str) -> types.RequestId | None:
    """The top-level "id" of a JSON object whose start is `head`, when it comes before anything cut off."""
    decoder = json.JSONDecoder()
    ws = " \t\r\n"
    index = len(head) - len(head.lstrip(ws))
    if not head.startswith("{", index):
        return None
    index += 1
    try:
        while True:
            while index < len(head) and head[index] in ws:
                index += 1
            if not head.startswith('"', index):
                return None
            key, index = json.decoder.scanstring(head, index + 1)
            while index < len(head) and head[index] in ws:
                index += 1
            if not head.startswith(":", index):
                return None
            index += 1
            while index < len(head) and head[index] in ws:
                index += 1
            value, index = decoder.raw_decode(head, index)
            if key == "id":
                return value if _is_request_id(value) else None
            while index < len(head) and head[index] in ws:
                index += 1
            if not head.startswith(",", index):
                return None
            index += 1
    except (ValueError, RecursionError):  # the value runs past the head: the id is not before it
        return None


class _CheckedStdin:
    """An async iterator of stdin lines for the SDK's reader: valid lines only, the rest answered."""

    def __init__(self, source: BinaryIO, first_line: bytes | None = None) -> None:
        self._source = source
        self._first_line = first_line  # read before the SDK loaded (handshake.py): served first
        self._replies: Any = None  # the session's write stream, once stdio_server has yielded it
        self._attached = anyio.Event()

    def attach(self, write_stream: Any) -> None:
        self._replies = write_stream
        self._attached.set()

    def __aiter__(self) -> _CheckedStdin:
        return self

    async def __anext__(self) -> str:
        while True:
            raw = await self._readline(MAX_LINE_BYTES + 1)
            if not raw:
                raise StopAsyncIteration
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                verdict = oversized_verdict(raw[:_ID_SNIFF_CHARS])
                del raw
                await self._discard_rest_of_line()
            else:
                try:
                    verdict = check_line(raw)
                except Exception:  # a bug here must not stop the server: let the SDK judge the line
                    logger.exception("checking a line from stdin failed")
                    verdict = Verdict(text=raw.decode("utf-8", errors="replace"))
            if verdict.text is not None:
                return verdict.text
            await self._answer(verdict)

    async def _readline(self, limit: int) -> bytes:
        if self._first_line is not None:  # read by handshake.py; a line longer than it read goes on
            line, self._first_line = self._first_line, None
            if not line or line.endswith(b"\n"):
                return line
            return line + await anyio.to_thread.run_sync(self._source.readline, limit - len(line))
        # In a worker thread, as the SDK's reader (anyio.wrap_file) reads: a blocking read is not
        # cancellable, so shutdown waits for EOF exactly as it did before.
        return await anyio.to_thread.run_sync(self._source.readline, limit)

    async def _discard_rest_of_line(self) -> None:
        while True:
            chunk = await self._readline(_DISCARD_CHUNK)
            if not chunk or chunk.endswith(b"\n"):
                return

    async def _answer(self, verdict: Verdict) -> None:
        if verdict.error is None:
            if verdict.reason != "blank line":
                logger.warning("ignored a message on stdin: %s", verdict.reason.split(". Send")[0])
            return
        logger.warning("refused a message on stdin (id %r): %s", verdict.error.id, verdict.reason.split(". Send")[0])
        await self._attached.wait()
        try:
            await self._replies.send(SessionMessage(verdict.error))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            logger.debug("the session closed before the error reply could be written")


async def serve_stdio(server: MCPServer, source: BinaryIO, first: FirstLine | None = None) -> None:
    """Serve `server` on `source` (the claimed stdin) and stdout until EOF, answering malformed lines
    (see the module docstring). `first`: the line handshake.py read already, given to the SDK first;
    when it answered that line's `initialize` itself, the SDK's reply to it is dropped."""
    stdin = _CheckedStdin(source, first.raw if first is not None else None)
    async with stdio_server(stdin=stdin) as (read_stream, write_stream):  # type: ignore[arg-type]
        stdin.attach(write_stream)
        if first is not None and first.answered_id is not None:
            write_stream = _DropReply(write_stream, first.answered_id)
        # As MCPServer.run_stdio_async does; the SDK offers no public handle on its low-level server.
        lowlevel = server._lowlevel_server  # noqa: SLF001
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())


class _DropReply:
    """The session's write stream, less the SDK's reply to the `initialize` handshake.py answered."""

    def __init__(self, inner: Any, request_id: int | str) -> None:
        self._inner, self._request_id = inner, request_id

    async def send(self, item: SessionMessage) -> None:
        message = item.message
        if self._request_id is not None and getattr(message, "id", None) == self._request_id and (
                isinstance(message, (types.JSONRPCResponse, types.JSONRPCError))):
            self._request_id = None
            if isinstance(message, types.JSONRPCError):  # the client already holds a success reply
                logger.error("the SDK refused the initialize request answered at start-up: %s", message.error.message)
            return
        await self._inner.send(item)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _DropReply:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._inner.__aexit__(*exc_info)
