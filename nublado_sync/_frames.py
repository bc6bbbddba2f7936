"""RFC 6455 frames on an open kernel WebSocket: reading them and writing them.

websocket-client opens the connection (the handshake, proxies, TLS); the
frames after it are ours. Its frame reader costs a few dozen Python calls
per frame (three reads, a buffer object, a frame object, validation), which
a process with many busy sessions pays on every message; this one parses a
frame from the socket's read-ahead buffer in a handful.

The reader is resumable: a read that runs out of time keeps what it has
(the buffered bytes, a parsed header, the parts of a fragmented message),
and the next read goes on from there.
"""

from __future__ import annotations

import struct
from typing import List, Optional, Protocol, Tuple, Union

from ._random_pool import random_bytes

__all__ = [
    "OPCODE_BINARY",
    "OPCODE_CLOSE",
    "OPCODE_CONTINUATION",
    "OPCODE_PING",
    "OPCODE_PONG",
    "OPCODE_TEXT",
    "FrameError",
    "FrameReader",
    "FrameTooLargeError",
    "Payload",
    "encode_frame",
]

OPCODE_CONTINUATION = 0x0
OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9
OPCODE_PONG = 0xA

_DATA_OPCODES = frozenset({OPCODE_CONTINUATION, OPCODE_TEXT, OPCODE_BINARY})
_CONTROL_OPCODES = frozenset({OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG})
_U16 = struct.Struct("!H")
# A payload: bytes, or a bytearray when read straight into its own buffer.
Payload = Union[bytes, bytearray]
_U64 = struct.Struct("!Q")


class FrameError(Exception):
    """The server broke the framing rules; the connection cannot go on."""


class FrameTooLargeError(FrameError):
    """A frame header announced a message over the size limit."""

    def __init__(self, size: int) -> None:
        super().__init__(f"message of {size} bytes")
        self.size = size


class _Source(Protocol):
    def take(self, size: int, *, consume: bool = True) -> Payload: ...


class FrameReader:
    """Reads whole messages and control frames from a buffered socket.

    Parameters
    ----------
    source
        Hands out exactly the bytes asked for, or raises with none taken
        (`socket.timeout` at its deadline, `EOFError` at the end of the
        stream, `OSError`).
    max_size
        Largest message accepted, in bytes, or `None`. Checked as soon as a
        frame header announces the size, before its payload is read.
    """

    def __init__(self, source: _Source, max_size: Optional[int]) -> None:
        self._source = source
        self._max_size = max_size
        # A header parsed whose payload has not all arrived yet:
        # (final, opcode, length, masking key or empty).
        self._header: Optional[Tuple[bool, int, int, bytes]] = None
        # A fragmented message in progress: its opcode, parts and size.
        self._message_opcode: Optional[int] = None
        self._parts: List[Payload] = []
        self._size = 0

    def read(self) -> Tuple[int, Payload]:
        """Return the next control frame or whole data message as (opcode, payload).

        Raises
        ------
        FrameError
            The frames break RFC 6455, or a message exceeds the limit
            (`FrameTooLargeError`).
        socket.timeout, EOFError, OSError
            As the source raises them; what was read so far is kept.
        """
        while True:
            final, opcode, payload = self._frame()
            if opcode in _CONTROL_OPCODES:
                return opcode, payload
            if opcode == OPCODE_CONTINUATION:
                if self._message_opcode is None:
                    raise FrameError("a continuation frame without a message to continue")
                self._parts.append(payload)
                if not final:
                    continue
                message_opcode, parts = self._message_opcode, self._parts
                self._message_opcode, self._parts, self._size = None, [], 0
                return message_opcode, b"".join(parts)
            if self._message_opcode is not None:
                raise FrameError("a new message began inside a fragmented one")
            if final:
                return opcode, payload
            self._message_opcode, self._parts = opcode, [payload]

    def _frame(self) -> Tuple[bool, int, Payload]:
        if self._header is None:
            self._header = self._read_header()
        final, opcode, length, key = self._header
        payload = self._source.take(length) if length else b""
        self._header = None
        if key:
            payload = _mask(payload, key)
        # The size of the message so far, for the limit check of its next part.
        if opcode == OPCODE_CONTINUATION:
            self._size += length
        elif opcode in _DATA_OPCODES:
            self._size = length
        return final, opcode, payload

    def _read_header(self) -> Tuple[bool, int, int, bytes]:
        # The first two bytes say how long the header is; it is taken whole,
        # so a timeout never leaves half a header consumed.
        start = self._source.take(2, consume=False)
        second = start[1]
        length = second & 0x7F
        masked = bool(second & 0x80)
        size = 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if masked else 0)
        header = self._source.take(size)
        first = header[0]
        final = bool(first & 0x80)
        opcode = first & 0x0F
        if length == 126:
            (length,) = _U16.unpack_from(header, 2)
        elif length == 127:
            (length,) = _U64.unpack_from(header, 2)
        if first & 0x70:
            raise FrameError("reserved frame bits set, though no extension was agreed")
        if opcode in _CONTROL_OPCODES:
            if not final or length > 125:
                raise FrameError("a control frame fragmented or over 125 bytes")
        elif opcode not in _DATA_OPCODES:
            raise FrameError(f"unknown frame opcode {opcode:#x}")
        else:
            total = length + (self._size if opcode == OPCODE_CONTINUATION else 0)
            if self._max_size is not None and total > self._max_size:
                raise FrameTooLargeError(total)
        return final, opcode, length, bytes(header[-4:]) if masked else b""


def _mask(payload: Payload, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``key`` repeated (masking is its own inverse)."""
    size = len(payload)
    if not size:
        return b""
    # One big-integer XOR: linear, and in C.
    keys = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(keys, "little")).to_bytes(
        size, "little"
    )


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """Return one final, masked client frame carrying ``payload``."""
    size = len(payload)
    first = 0x80 | opcode
    if size < 126:
        header = bytes((first, 0x80 | size))
    elif size < 1 << 16:
        header = bytes((first, 0x80 | 126)) + _U16.pack(size)
    else:
        header = bytes((first, 0x80 | 127)) + _U64.pack(size)
    # RFC 6455 asks for an unpredictable key per frame: the operating
    # system's random bytes, drawn in batches (see _random_pool).
    key = random_bytes(4)
    return header + key + _mask(payload, key)
