"""Frames and messages between the server, the fork server and the sandbox children."""

from __future__ import annotations

import os

import pytest

from sandbox.protocol import (
    HEADER,
    MAX_JSON_BYTES,
    OUTCOMES,
    BlockedSyscall,
    Cancel,
    ExecRequest,
    ExecutionResult,
    FrameDecoder,
    ProtocolError,
    encode_message,
    read_message,
    write_message,
)

REQUEST = ExecRequest(
    request_id="r1",
    program=b"\x00compiled\xffbytes",
    timeout_s=2.5,
    memory_mb=128,
    output_cap_bytes=1000,
    state={"seen": [1, 2]},
    skills=[{"name": "helper", "description": "does things", "program": b"\x01\x02"}],
)


def test_exec_request_round_trip_keeps_every_field() -> None:
    """It decodes an encoded request, raw program bytes and base64 skills included, unchanged."""
    (decoded,) = FrameDecoder().feed(encode_message(REQUEST))
    assert decoded == REQUEST


def test_frame_decoder_handles_byte_by_byte_arrival() -> None:
    """It yields nothing until a frame is complete, then exactly the frames sent, in order."""
    data = encode_message(REQUEST) + encode_message(Cancel(request_id="r1"))
    decoder = FrameDecoder()
    messages = []
    for i in range(len(data)):
        messages += decoder.feed(data[i : i + 1])
    assert messages == [REQUEST, Cancel(request_id="r1")]
    assert decoder.pending_bytes == 0


def test_frame_decoder_refuses_oversized_header_before_buffering() -> None:
    """It raises ProtocolError as soon as a header announces more than the limit."""
    with pytest.raises(ProtocolError, match="exceeds"):
        FrameDecoder().feed(HEADER.pack(MAX_JSON_BYTES + 1, 0))


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[1, 2]", b'{"type": "nope"}', b'{"type": "cancel"}', b'{"type": "cancel", "request_id": "a", "x": 1}'],
)
def test_decode_refuses_malformed_messages(payload: bytes) -> None:
    """It raises ProtocolError for non-JSON, non-objects, unknown types, missing and unknown fields."""
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(HEADER.pack(len(payload), 0) + payload)


def test_execution_result_refuses_unknown_outcome() -> None:
    """It accepts exactly the contract's outcomes."""
    assert len(set(OUTCOMES)) == len(OUTCOMES) and set(OUTCOMES) == {
        "ok", "validation_error", "runtime_error", "timeout", "memory_limit",
        "blocked_syscall", "crashed", "busy", "internal_error",
    }
    with pytest.raises(ProtocolError, match="unknown outcome"):
        ExecutionResult(request_id="r", outcome="exploded")


def test_execution_result_from_untrusted_child_is_type_checked() -> None:
    """It refuses a result frame whose fields have the wrong types (a hostile child can forge frames)."""
    payload = b'{"type": "result", "request_id": "r", "outcome": "ok", "stdout": 5}'
    with pytest.raises(ProtocolError, match="stdout"):
        FrameDecoder().feed(HEADER.pack(len(payload), 0) + payload)


def test_exec_request_validates_limits() -> None:
    """It refuses a request with a non-positive timeout or memory budget."""
    with pytest.raises(ProtocolError, match="timeout_s"):
        ExecRequest(request_id="r", program=b"x", timeout_s=0, memory_mb=1, output_cap_bytes=1)
    with pytest.raises(ProtocolError, match="memory_mb"):
        ExecRequest(request_id="r", program=b"x", timeout_s=1, memory_mb=0, output_cap_bytes=1)


def test_read_write_message_over_a_pipe_with_short_reads() -> None:
    """It reassembles a frame larger than the pipe buffer and reports a clean EOF as None."""
    big = ExecutionResult(request_id="r", outcome="ok", stdout="x" * 300_000, timings_ms={"execute": 1.5})
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # writer child: the pipe buffer (64 KB) forces short reads on the other side
        try:
            os.close(read_fd)
            write_message(write_fd, big)
            write_message(write_fd, BlockedSyscall(syscall="socket", number=41))
        finally:
            os._exit(0)
    os.close(write_fd)
    try:
        assert read_message(read_fd) == big
        assert read_message(read_fd) == BlockedSyscall(syscall="socket", number=41)
        assert read_message(read_fd) is None
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)


def test_read_message_refuses_truncated_frame() -> None:
    """It raises ProtocolError when the stream ends inside a frame."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, encode_message(Cancel(request_id="r"))[:-3])
    os.close(write_fd)
    try:
        with pytest.raises(ProtocolError, match="unexpected end"):
            read_message(read_fd)
    finally:
        os.close(read_fd)




def test_protocol_exec_envelope_carries_routing_only_and_the_body_decodes_back() -> None:
    """It sends ExecStart (id, timeout, memory, body length: nothing of the program or state) then the body."""
    from sandbox.protocol import ExecStart, decode_body, decode_frame, encode_exec

    data = encode_exec(REQUEST)
    json_len, blob_len = HEADER.unpack_from(data)
    start = decode_frame(data[HEADER.size : HEADER.size + json_len], b"")
    assert blob_len == 0 and isinstance(start, ExecStart)
    assert (start.request_id, start.timeout_s, start.memory_mb) == ("r1", 2.5, 128)
    body = data[HEADER.size + json_len :]
    assert start.body_bytes == len(body) and b"compiled" not in data[: HEADER.size + json_len]
    assert decode_body(body) == REQUEST


def test_protocol_result_envelope_and_bad_bodies() -> None:
    """It round-trips a child's result body and refuses a body whose length or frame does not match."""
    from sandbox.protocol import ExecStart, ResultStart, decode_body, encode_result

    result = ExecutionResult(request_id="r1", outcome="ok", stdout="hi\n", result={"a": 1})
    data = encode_result(result)
    json_len, _ = HEADER.unpack_from(data)
    body = data[HEADER.size + json_len :]
    assert decode_body(body) == result
    with pytest.raises(ProtocolError):
        decode_body(body[:-1])
    with pytest.raises(ProtocolError):
        decode_body(b"\x00")
    for bad in (0, -1, 2**40, "8", True):
        with pytest.raises(ProtocolError):
            ResultStart(body_bytes=bad)
    with pytest.raises(ProtocolError):
        ExecStart(request_id="", timeout_s=1.0, memory_mb=1, body_bytes=100)
