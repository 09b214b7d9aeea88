"""The fork server's reader of one socket: small frames into its heap, call bodies into memfds unread.

Contract: ``Inbox.pump()`` reads what a socket has ready (never blocking, never past the frame it
is in) and returns the complete messages, each paired with the memfd holding the body that
followed it (``ExecStart`` and ``ResultStart`` announce one; other messages have None). Body bytes
pass only through one fixed scratch buffer, zeroed after every chunk, into a memfd the caller owns
and closes: a program, state, skill, stdout or result never becomes a Python object of the fork
server, so no later child inherits it. Small frames are capped (``SMALL_FRAME_BYTES``) and carry no
blob. ``MemfdBody.send_to`` moves a body to another socket with ``sendfile`` (no user-space copy).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from sandbox.protocol import HEADER, ExecStart, Message, ProtocolError, ResultStart, decode_frame

__all__ = ["SMALL_FRAME_BYTES", "Inbox", "MemfdBody"]

SMALL_FRAME_BYTES = 1 << 20  # envelopes, cancels, stats, tracebacks of internal errors
SCRATCH_BYTES = 1 << 20
_SCRATCH = bytearray(SCRATCH_BYTES)
_SCRATCH_VIEW = memoryview(_SCRATCH)
_ZEROS = bytes(SCRATCH_BYTES)


@dataclass(slots=True)
class MemfdBody:
    """A body held in a memfd (closed by ``close``; the kernel frees its pages with the last fd)."""

    fd: int
    size: int

    def send_to(self, sock_fd: int) -> None:
        """Write the whole body to a blocking ``sock_fd`` straight from the memfd."""
        offset = 0
        while offset < self.size:
            sent = os.sendfile(sock_fd, self.fd, offset, self.size - offset)
            if sent == 0:
                raise BrokenPipeError("the peer closed its socket")
            offset += sent

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Inbox:
    """Frames from one socket, read exactly (see module contract)."""

    __slots__ = ("_body", "_body_left", "_body_message", "_frame", "_have", "_sock", "is_eof")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._frame = bytearray(HEADER.size)  # the header, then header + JSON of the frame being read
        self._have = 0
        self._body: MemfdBody | None = None
        self._body_message: Message | None = None
        self._body_left = 0
        self.is_eof = False

    def pump(self) -> list[tuple[Message, MemfdBody | None]]:
        """Everything complete that the socket holds now; sets ``is_eof`` at end of stream.
        Raises ProtocolError for a malformed, oversized or blob-carrying frame."""
        done: list[tuple[Message, MemfdBody | None]] = []
        while not self.is_eof:
            try:
                if self._body is not None:
                    self._read_body(done)
                else:
                    self._read_frame(done)
            except (BlockingIOError, InterruptedError):
                break
        return done

    def close(self) -> None:
        """Drop a half-read body (its memfd)."""
        if self._body is not None:
            self._body.close()
            self._body = None

    def _recv_into(self, view: memoryview) -> int:
        received = self._sock.recv_into(view, len(view), socket.MSG_DONTWAIT)
        if received == 0:
            self.is_eof = True
        return received

    def _read_frame(self, done: list[tuple[Message, MemfdBody | None]]) -> None:
        if self._have < HEADER.size:
            self._have += self._recv_into(memoryview(self._frame)[self._have : HEADER.size])
            if self._have < HEADER.size:
                return
            json_len, blob_len = HEADER.unpack_from(self._frame)
            if blob_len or json_len > SMALL_FRAME_BYTES:
                raise ProtocolError(f"frame of {json_len}+{blob_len} bytes: the fork server takes only small frames")
            self._frame.extend(bytes(json_len))
        if self._have < len(self._frame):
            self._have += self._recv_into(memoryview(self._frame)[self._have :])
            if self._have < len(self._frame):
                return
        message = decode_frame(bytes(self._frame[HEADER.size :]), b"")
        del self._frame[HEADER.size :]
        self._have = 0
        if isinstance(message, (ExecStart, ResultStart)):
            fd = os.memfd_create("kmcp-body", os.MFD_CLOEXEC)
            self._body, self._body_message, self._body_left = MemfdBody(fd, message.body_bytes), message, message.body_bytes
        else:
            done.append((message, None))

    def _read_body(self, done: list[tuple[Message, MemfdBody | None]]) -> None:
        assert self._body is not None and self._body_message is not None
        chunk = _SCRATCH_VIEW[: min(self._body_left, SCRATCH_BYTES)]
        received = self._recv_into(chunk)
        try:
            written = 0
            while written < received:
                written += os.write(self._body.fd, chunk[written:received])
        finally:
            chunk[:received] = _ZEROS[:received]  # scrub: the next fork copies this buffer too
        self._body_left -= received
        if self._body_left == 0:
            done.append((self._body_message, self._body))
            self._body, self._body_message = None, None
