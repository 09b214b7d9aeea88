"""Framed messages between the server, the fork server and each sandbox child.

Contract: a frame is an 8-byte big-endian header ``(json_len: u32, blob_len: u32)`` followed by
``json_len`` bytes of UTF-8 JSON (an object with a ``"type"`` key naming the message) and
``blob_len`` raw bytes (only ``ExecRequest`` uses the blob: the marshalled compiled program).
Frames above ``MAX_JSON_BYTES`` / ``MAX_BLOB_BYTES`` are refused before anything is buffered, so a
hostile child can never make the fork server or the server hold more than one bounded frame.
Decoding is strict (unknown types, missing or mistyped fields are ``ProtocolError``): the fork
server treats everything a child sends as untrusted.

Messages, by direction::

    server -> fork server   Init, ExecStart + body, Cancel, StatsRequest
    fork server -> server   Ready, ExecutionResult, ResultEnvelope + body, Stats
    fork server -> child    ExecRequest (the body of ExecStart, copied from a memfd)
    child -> fork server    ChildReady, ResultStart + body, BlockedSyscall

A *body* is one complete encoded frame (``ExecRequest`` or ``ExecutionResult``) that follows a
small envelope naming its length. The fork server never decodes a body: it moves the bytes
between sockets through a memfd, so no program, state, skill, stdout or result of a call ever
lands in its heap, which every later child inherits (``encode_exec`` / ``encode_result`` build
envelope + body; ``decode_body`` reads one).
"""

from __future__ import annotations

import base64
import json
import os
import struct
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from sandbox.errors import ForkServerError

__all__ = [
    "HEADER",
    "MAX_BLOB_BYTES",
    "MAX_BODY_BYTES",
    "MAX_JSON_BYTES",
    "OUTCOMES",
    "BlockedSyscall",
    "Cancel",
    "ChildReady",
    "ExecRequest",
    "ExecutionResult",
    "FrameDecoder",
    "ExecStart",
    "Init",
    "Message",
    "ProtocolError",
    "Ready",
    "ResultEnvelope",
    "ResultStart",
    "Stats",
    "StatsRequest",
    "decode_body",
    "decode_frame",
    "encode_exec",
    "encode_message",
    "encode_result",
    "read_message",
    "write_message",
]

HEADER = struct.Struct(">II")
# A result carries at most the stdout cap (default 1 MB) plus the 64 KB state; 64 MiB leaves room
# for a raised cap while still bounding what one frame can make anyone buffer.
MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_BLOB_BYTES = 16 * 1024 * 1024

# INTERFACES.md, execute_code outcomes (exactly these, in the documented order: the output schemas'
# enum is built from this tuple).
OUTCOMES = (
    "ok",
    "validation_error",
    "runtime_error",
    "timeout",
    "memory_limit",
    "blocked_syscall",
    "crashed",
    "busy",
    "internal_error",
)
TIMING_KEYS = ("queue", "validate", "execute", "process", "total")


class ProtocolError(ForkServerError):
    """A frame or message that breaks the protocol (oversized, malformed, unknown type)."""


# ---------------------------------------------------------------------------------------------
# messages


@dataclass(frozen=True, slots=True)
class Message:
    """Base of every message: ``TYPE`` is the wire name, fields are JSON values."""

    TYPE: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["type"] = self.TYPE
        return payload

    def blob(self) -> bytes:
        return b""

    @classmethod
    def from_json(cls, payload: dict[str, Any], blob: bytes) -> Message:
        if blob:
            raise ProtocolError(f"message {cls.TYPE!r} carries no blob, got {len(blob)} bytes")
        return cls(**_take_fields(cls, payload))


@dataclass(frozen=True, slots=True)
class Init(Message):
    """First message to the fork server: what to load and how to run children.

    ``sandbox`` and ``search`` are the ``dataclasses.asdict`` of SandboxConfig / SearchConfig
    (rebuilt by the fork server); ``index_dir`` None runs children without a knowledge base.
    ``indexes`` (``[[name, dir], ...]``), when given, serves several named indexes instead of
    ``index_dir`` alone (which is then the first of them).
    """

    TYPE: ClassVar[str] = "init"
    index_dir: str | None
    sandbox: dict[str, Any]
    search: dict[str, Any] | None
    log_level: str = "INFO"
    indexes: list[list[str]] | None = None


@dataclass(frozen=True, slots=True)
class Ready(Message):
    """The fork server has loaded everything and accepts requests."""

    TYPE: ClassVar[str] = "ready"
    pid: int
    load_ms: float
    has_searcher: bool
    threads: int  # tasks in the fork server after loading (must be 1: fork after threads is UB)
    error: str | None = None  # start-up failed (index missing, model missing, ...): the process exits
    exit_code: int = 0  # the CLI exit code of that failure (3 index, 4 model, ...)


@dataclass(frozen=True, slots=True)
class ExecRequest(Message):
    """Run one compiled program. ``program`` is ``CompiledProgram.to_bytes()`` (sent as the blob).

    skills: ``[{name, description, program}]`` with ``program`` the skill's ``CompiledProgram``
    bytes (base64 on the wire); state: the session's JSON state.
    timeout_s: wall-clock limit from the moment a child starts the call (queue time excluded).
    memory_mb: address space allowed above the child's inherited size.
    output_cap_bytes: stdout kept by the child; more sets ``truncated``.
    """

    TYPE: ClassVar[str] = "exec"
    request_id: str
    program: bytes
    timeout_s: float
    memory_mb: int
    output_cap_bytes: int
    state: dict[str, Any] = field(default_factory=dict)
    skills: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.request_id, str) or not self.request_id or len(self.request_id) > 200:
            raise ProtocolError(f"request_id must be a non-empty string of at most 200 chars, got {self.request_id!r}")
        if not isinstance(self.program, bytes) or not self.program:
            raise ProtocolError("program must be the non-empty bytes of a compiled program")
        if not _is_number(self.timeout_s) or not 0 < self.timeout_s <= 3600:
            raise ProtocolError(f"timeout_s must be in (0, 3600], got {self.timeout_s!r}")
        for name in ("memory_mb", "output_cap_bytes"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ProtocolError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.state, dict):
            raise ProtocolError("state must be a JSON object")
        if not isinstance(self.skills, list) or not all(_is_skill(s) for s in self.skills):
            raise ProtocolError("skills must be a list of {name: str, description: str, program: bytes}")

    def to_json(self) -> dict[str, Any]:
        payload = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("program", "skills")}
        payload["skills"] = [{**s, "program": base64.b64encode(s["program"]).decode("ascii")} for s in self.skills]
        payload["type"] = self.TYPE
        return payload

    def blob(self) -> bytes:
        return self.program

    @classmethod
    def from_json(cls, payload: dict[str, Any], blob: bytes) -> ExecRequest:
        values = _take_fields(cls, {**payload, "program": blob})
        skills = values.get("skills", [])
        if not isinstance(skills, list) or not all(isinstance(s, dict) and isinstance(s.get("program"), str) for s in skills):
            raise ProtocolError("skills must be a list of objects with a base64 program")
        try:
            values["skills"] = [{**s, "program": base64.b64decode(s["program"], validate=True)} for s in skills]
        except ValueError as exc:
            raise ProtocolError(f"a skill program is not valid base64: {exc}") from exc
        return cls(**values)


@dataclass(frozen=True, slots=True)
class ExecutionResult(Message):
    """The outcome of one call (INTERFACES.md section 5); ``error`` is None or
    ``{exception, message, line, hint, traceback}``."""

    TYPE: ClassVar[str] = "result"
    request_id: str
    outcome: str
    stdout: str = ""
    result: Any = None
    error: dict[str, Any] | None = None
    truncated: bool = False
    state_set: dict[str, Any] = field(default_factory=dict)
    state_deleted: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ProtocolError(f"unknown outcome {self.outcome!r}; expected one of {sorted(OUTCOMES)}")
        if not isinstance(self.request_id, str):
            raise ProtocolError("request_id must be a string")
        if not isinstance(self.stdout, str) or not isinstance(self.truncated, bool):
            raise ProtocolError("stdout must be a string and truncated a bool")
        if self.error is not None and not isinstance(self.error, dict):
            raise ProtocolError("error must be an object or null")
        if not isinstance(self.state_set, dict) or not isinstance(self.state_deleted, list):
            raise ProtocolError("state_set must be an object and state_deleted a list")
        if not all(isinstance(key, str) for key in self.state_deleted):
            raise ProtocolError("state_deleted must hold strings")
        if not isinstance(self.timings_ms, dict) or not all(_is_number(v) for v in self.timings_ms.values()):
            raise ProtocolError("timings_ms must map names to numbers")

    @property
    def is_ok(self) -> bool:
        return self.outcome == "ok"

    @classmethod
    def failure(
        cls,
        request_id: str,
        outcome: str,
        message: str,
        *,
        exception: str | None = None,
        hint: str | None = None,
        line: int | None = None,
        timings_ms: dict[str, float] | None = None,
    ) -> ExecutionResult:
        """A result with no output and an error built from a message (outcomes decided by us)."""
        error = {"exception": exception, "message": message, "line": line, "hint": hint, "traceback": None}
        return cls(request_id=request_id, outcome=outcome, error=error, timings_ms=dict(timings_ms or {}))

    def with_timings(self, **timings_ms: float) -> ExecutionResult:
        merged = {**self.timings_ms, **{k: round(float(v), 3) for k, v in timings_ms.items()}}
        return ExecutionResult(**{**{f.name: getattr(self, f.name) for f in fields(self)}, "timings_ms": merged})

    def with_request_id(self, request_id: str) -> ExecutionResult:
        return ExecutionResult(**{**{f.name: getattr(self, f.name) for f in fields(self)}, "request_id": request_id})


@dataclass(frozen=True, slots=True)
class Cancel(Message):
    """Kill the call's child (or drop it from the queue); it still gets exactly one result."""

    TYPE: ClassVar[str] = "cancel"
    request_id: str


@dataclass(frozen=True, slots=True)
class ApplyDeltas(Message):
    """Merge each served index's current delta (files changed since its version: index/delta.py) and
    fork fresh spares; calls already running finish on what they had. No answer."""

    TYPE: ClassVar[str] = "apply_deltas"


@dataclass(frozen=True, slots=True)
class StatsRequest(Message):
    TYPE: ClassVar[str] = "stats_request"


@dataclass(frozen=True, slots=True)
class Stats(Message):
    """A snapshot of the fork server (for tests, benchmarks and health checks)."""

    TYPE: ClassVar[str] = "stats"
    pid: int
    running: int
    queued: int
    spares: int  # idle children
    child_pids: list[int]
    running_pids: list[int]  # children holding a request
    threads: int
    open_fds: int
    rss_kb: int


@dataclass(frozen=True, slots=True)
class ChildReady(Message):
    """A spare child finished its warm-up and lock-down and waits for one request."""

    TYPE: ClassVar[str] = "child_ready"
    pid: int
    warm_ms: float
    error: str | None = None  # set when a lock-down step failed: the child exits, never runs code


@dataclass(frozen=True, slots=True)
class BlockedSyscall(Message):
    """Sent by a child's SIGSYS handler just before it dies: seccomp stopped ``syscall``."""

    TYPE: ClassVar[str] = "blocked_syscall"
    syscall: str
    number: int


MAX_BODY_BYTES = HEADER.size + MAX_JSON_BYTES + MAX_BLOB_BYTES


@dataclass(frozen=True, slots=True)
class ExecStart(Message):
    """Envelope of one call: what the fork server needs to route it; ``body_bytes`` of the encoded
    ``ExecRequest`` follow (the fork server copies them to a memfd unread)."""

    TYPE: ClassVar[str] = "exec_start"
    request_id: str
    timeout_s: float
    memory_mb: int
    body_bytes: int

    def __post_init__(self) -> None:
        if not isinstance(self.request_id, str) or not self.request_id or len(self.request_id) > 200:
            raise ProtocolError(f"request_id must be a non-empty string of at most 200 chars, got {self.request_id!r}")
        if not _is_number(self.timeout_s) or not 0 < self.timeout_s <= 3600:
            raise ProtocolError(f"timeout_s must be in (0, 3600], got {self.timeout_s!r}")
        if not _is_int(self.memory_mb) or self.memory_mb < 1:
            raise ProtocolError(f"memory_mb must be a positive int, got {self.memory_mb!r}")
        _check_body(self.body_bytes)


@dataclass(frozen=True, slots=True)
class ResultStart(Message):
    """A child's result follows: ``body_bytes`` of an encoded ``ExecutionResult``."""

    TYPE: ClassVar[str] = "result_start"
    body_bytes: int

    def __post_init__(self) -> None:
        _check_body(self.body_bytes)


@dataclass(frozen=True, slots=True)
class ResultEnvelope(Message):
    """The fork server's wrapper of a child's result body: whose it is and the fork server's timings."""

    TYPE: ClassVar[str] = "result_envelope"
    request_id: str
    body_bytes: int
    timings_ms: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_body(self.body_bytes)
        if not isinstance(self.timings_ms, dict) or not all(_is_number(v) for v in self.timings_ms.values()):
            raise ProtocolError("timings_ms must map names to numbers")


_MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (Init, Ready, ExecRequest, ExecutionResult, Cancel, ApplyDeltas, StatsRequest, Stats, ChildReady, BlockedSyscall,
                ExecStart, ResultStart, ResultEnvelope)
}


# ---------------------------------------------------------------------------------------------
# frames


def encode_message(message: Message) -> bytes:
    """One complete frame for ``message``; raises ProtocolError if it exceeds the limits."""
    payload = json.dumps(message.to_json(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    blob = message.blob()
    _check_sizes(len(payload), len(blob))
    return HEADER.pack(len(payload), len(blob)) + payload + blob


def encode_exec(request: ExecRequest) -> bytes:
    """``ExecStart`` + the encoded request: what the server sends the fork server for one call."""
    body = encode_message(request)
    start = ExecStart(request_id=request.request_id, timeout_s=request.timeout_s, memory_mb=request.memory_mb,
                      body_bytes=len(body))
    return encode_message(start) + body


def encode_result(result: ExecutionResult) -> bytes:
    """``ResultStart`` + the encoded result: what a child sends the fork server."""
    body = encode_message(result)
    return encode_message(ResultStart(body_bytes=len(body))) + body


def decode_body(body: bytes | bytearray | memoryview) -> Message:
    """The message in one body (a complete frame, as ``encode_message`` made it)."""
    if len(body) < HEADER.size:
        raise ProtocolError(f"a body of {len(body)} bytes is shorter than a frame header")
    json_len, blob_len = HEADER.unpack_from(body)
    _check_sizes(json_len, blob_len)
    if HEADER.size + json_len + blob_len != len(body):
        raise ProtocolError(f"a body of {len(body)} bytes holds a frame of {HEADER.size + json_len + blob_len}")
    view = memoryview(body)
    return decode_frame(bytes(view[HEADER.size : HEADER.size + json_len]), bytes(view[HEADER.size + json_len :]))


def decode_frame(payload: bytes, blob: bytes) -> Message:
    """The message in one frame's JSON and blob parts (strict)."""
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"frame is not UTF-8 JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ProtocolError("frame JSON must be an object")
    kind = data.pop("type", None)
    cls = _MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {kind!r}")
    try:
        return cls.from_json(data, blob)
    except TypeError as exc:
        raise ProtocolError(f"malformed {kind!r} message: {exc}") from exc


class FrameDecoder:
    """Incremental decoder for non-blocking readers: ``feed(bytes) -> [Message, ...]``.

    The header is checked against the limits before the body is buffered, so the buffer never
    grows beyond one maximal frame.
    """

    def __init__(self, max_json_bytes: int = MAX_JSON_BYTES, max_blob_bytes: int = MAX_BLOB_BYTES) -> None:
        self._buffer = bytearray()
        self._max_json = max_json_bytes
        self._max_blob = max_blob_bytes

    @property
    def pending_bytes(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        messages: list[Message] = []
        while len(self._buffer) >= HEADER.size:
            json_len, blob_len = HEADER.unpack_from(self._buffer)
            _check_sizes(json_len, blob_len, self._max_json, self._max_blob)
            end = HEADER.size + json_len + blob_len
            if len(self._buffer) < end:
                break
            payload = bytes(self._buffer[HEADER.size : HEADER.size + json_len])
            blob = bytes(self._buffer[HEADER.size + json_len : end])
            del self._buffer[:end]
            messages.append(decode_frame(payload, blob))
        return messages


def write_message(fd: int, message: Message) -> None:
    """Write one frame to a blocking descriptor (loops over short writes)."""
    view = memoryview(encode_message(message))
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_message(fd: int, max_json_bytes: int = MAX_JSON_BYTES) -> Message | None:
    """Read one frame from a blocking descriptor; None on a clean EOF before any byte."""
    header = _read_exactly(fd, HEADER.size, allow_eof=True)
    if header is None:
        return None
    json_len, blob_len = HEADER.unpack(header)
    _check_sizes(json_len, blob_len, max_json_bytes)
    payload = _read_exactly(fd, json_len, allow_eof=False) or b""
    blob = _read_exactly(fd, blob_len, allow_eof=False) or b""
    return decode_frame(payload, blob)


def _read_exactly(fd: int, size: int, *, allow_eof: bool) -> bytes | None:
    # Short-read loop as in CPython's multiprocessing/forkserver.py (read_signed).
    chunks = bytearray()
    while len(chunks) < size:
        data = os.read(fd, size - len(chunks))
        if not data:
            if allow_eof and not chunks:
                return None
            raise ProtocolError(f"unexpected end of stream after {len(chunks)} of {size} bytes")
        chunks += data
    return bytes(chunks)


def _check_sizes(
    json_len: int, blob_len: int, max_json: int = MAX_JSON_BYTES, max_blob: int = MAX_BLOB_BYTES
) -> None:
    if json_len > max_json:
        raise ProtocolError(f"frame JSON of {json_len} bytes exceeds the {max_json}-byte limit")
    if blob_len > max_blob:
        raise ProtocolError(f"frame blob of {blob_len} bytes exceeds the {max_blob}-byte limit")


def _check_body(body_bytes: object) -> None:
    if not _is_int(body_bytes) or not HEADER.size <= body_bytes <= MAX_BODY_BYTES:  # type: ignore[operator]
        raise ProtocolError(f"body_bytes must be an int in [{HEADER.size}, {MAX_BODY_BYTES}], got {body_bytes!r}")


def _take_fields(cls: type[Message], payload: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = set(payload) - names
    if unknown:
        raise ProtocolError(f"message {cls.TYPE!r} has unknown fields {sorted(unknown)}")
    return dict(payload)


def _is_skill(value: object) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("name"), str)
        and isinstance(value.get("description", ""), str)
        and isinstance(value.get("program"), bytes)
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
