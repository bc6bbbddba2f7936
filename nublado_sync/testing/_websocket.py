"""The server side of RFC 6455 WebSockets, by hand, on a blocking socket.

Enough for a fake kernel endpoint and for test servers that misbehave on
purpose: the opening handshake, frame encoding and decoding (masked client
frames, fragmented messages, control frames), automatic answers to pings
and the closing handshake. Nothing here knows about Jupyter.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import threading
from dataclasses import dataclass
from email.message import Message
from typing import Callable, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INVALID_DATA",
    "CLOSE_NORMAL",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_TOO_BIG",
    "CLOSE_UNSUPPORTED_DATA",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONTINUATION",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "Frame",
    "ServerWebSocket",
    "WebSocketClosedError",
    "WebSocketError",
    "accept_key",
    "encode_frame",
    "handshake_headers",
    "offered_subprotocols",
    "read_frame",
]

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_CONTROL = (OP_CLOSE, OP_PING, OP_PONG)
_DATA = (OP_TEXT, OP_BINARY)

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009

Headers = Union[Mapping[str, str], "Message[str, str]"]
"""Request headers: a mapping, or the case-insensitive `email.message.Message`."""

Reader = Callable[[int], bytes]
"""Reads up to n bytes, blocking; returns fewer only at end of stream."""


class WebSocketError(Exception):
    """A handshake or framing error.

    Parameters
    ----------
    message
        What went wrong.
    code
        The close code (or, for a handshake, the HTTP status) that fits.
    """

    def __init__(self, message: str, code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class WebSocketClosedError(WebSocketError):
    """The connection is closed or broken; nothing more can be sent."""


@dataclass(frozen=True)
class Frame:
    """One WebSocket frame as it was on the wire (payload unmasked)."""

    fin: bool
    opcode: int
    payload: bytes
    masked: bool
    rsv: int = 0


def accept_key(key: str) -> str:
    """Return the ``Sec-WebSocket-Accept`` value for a client's key.

    Parameters
    ----------
    key
        The client's ``Sec-WebSocket-Key``.

    Returns
    -------
    str
        Base64 of the SHA-1 of the key and the RFC 6455 GUID.
    """
    digest = hashlib.sha1((key + _GUID).encode("ascii")).digest()  # noqa: S324
    return base64.b64encode(digest).decode("ascii")


def _mask(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return payload
    # XOR four bytes at a time through one big integer: fast enough for
    # the megabytes a test may send, with no dependency.
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    value = int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")
    return value.to_bytes(len(payload), "little")


def encode_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    mask: Optional[bytes] = None,
    rsv: int = 0,
) -> bytes:
    """Encode one frame.

    Parameters
    ----------
    opcode
        Frame opcode (``OP_TEXT``, ``OP_BINARY``, ``OP_CLOSE`` ...).
    payload
        Unmasked payload.
    fin
        Whether this is the last frame of its message.
    mask
        Four-byte masking key (clients must mask, servers must not).
    rsv
        The three reserved bits (0-7), for misbehaving servers.

    Returns
    -------
    bytes
        The frame on the wire.
    """
    first = (0x80 if fin else 0) | ((rsv & 0x7) << 4) | (opcode & 0x0F)
    length = len(payload)
    mask_bit = 0x80 if mask is not None else 0
    if length < 126:
        head = struct.pack("!BB", first, mask_bit | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, length)
    if mask is None:
        return head + payload
    if len(mask) != 4:
        raise ValueError("A masking key has four bytes")
    return head + mask + _mask(payload, mask)


def _read_exact(read: Reader, size: int) -> bytes:
    data = read(size) if size else b""
    if len(data) != size:
        raise WebSocketClosedError(
            "Connection closed in the middle of a frame", CLOSE_PROTOCOL_ERROR
        )
    return data


def read_frame(read: Reader, *, max_size: Optional[int] = None) -> Optional[Frame]:
    """Read one frame.

    Parameters
    ----------
    read
        Blocking reader, such as a socket file's ``read``.
    max_size
        Largest payload accepted.

    Returns
    -------
    Frame or None
        The frame, or `None` when the stream ended cleanly before it.

    Raises
    ------
    WebSocketError
        The frame is malformed or too big.
    WebSocketClosedError
        The stream ended in the middle of the frame.
    """
    head = read(2)
    if not head:
        return None
    if len(head) == 1:
        head += _read_exact(read, 1)
    first, second = head[0], head[1]
    fin = bool(first & 0x80)
    rsv = (first >> 4) & 0x7
    opcode = first & 0x0F
    masked = bool(second & 0x80)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", _read_exact(read, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", _read_exact(read, 8))
        if length >> 63:
            raise WebSocketError("Frame length has its top bit set")
    if max_size is not None and length > max_size:
        raise WebSocketError(f"Frame of {length} bytes exceeds {max_size}", CLOSE_TOO_BIG)
    key = _read_exact(read, 4) if masked else None
    payload = _read_exact(read, length)
    if key is not None:
        payload = _mask(payload, key)
    return Frame(fin=fin, opcode=opcode, payload=payload, masked=masked, rsv=rsv)


def offered_subprotocols(headers: Headers) -> List[str]:
    """Return the subprotocols a handshake request offers, in order.

    Parameters
    ----------
    headers
        Request headers; looked up as ``Sec-WebSocket-Protocol``.

    Returns
    -------
    list of str
        The offered subprotocols.
    """
    value = headers.get("Sec-WebSocket-Protocol") or ""
    return [p.strip() for p in value.split(",") if p.strip()]


def handshake_headers(
    headers: Headers, *, subprotocols: Sequence[str] = ()
) -> Tuple[List[Tuple[str, str]], Optional[str]]:
    """Check an opening handshake and build the ``101`` answer's headers.

    Parameters
    ----------
    headers
        Request headers; a case-insensitive `email.message.Message` (as
        `http.server` gives), or a mapping with the exact header names.
    subprotocols
        Subprotocols the server speaks, best first; the first one the
        client also offered is chosen.

    Returns
    -------
    tuple
        The headers of the ``101 Switching Protocols`` answer, and the
        chosen subprotocol (`None` when none was agreed).

    Raises
    ------
    WebSocketError
        Not a valid WebSocket upgrade request; ``code`` is the HTTP status
        to answer with (400, or 426 for a wrong version).
    """
    if (headers.get("Upgrade") or "").lower() != "websocket":
        raise WebSocketError("Not a WebSocket upgrade request", 400)
    connection = [t.strip().lower() for t in (headers.get("Connection") or "").split(",")]
    if "upgrade" not in connection:
        raise WebSocketError("Connection header lacks Upgrade", 400)
    if (headers.get("Sec-WebSocket-Version") or "").strip() != "13":
        raise WebSocketError("Only WebSocket version 13 is supported", 426)
    key = (headers.get("Sec-WebSocket-Key") or "").strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError("wrong length")
    except ValueError:
        raise WebSocketError("Invalid Sec-WebSocket-Key", 400) from None
    answer = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(key)),
    ]
    offered = offered_subprotocols(headers)
    chosen = next((p for p in subprotocols if p in offered), None)
    if chosen is not None:
        answer.append(("Sec-WebSocket-Protocol", chosen))
    return answer, chosen


class ServerWebSocket:
    """The server end of an open WebSocket connection.

    Reading happens in one thread (`receive`); sending may happen from any
    thread. Pings are answered while reading, and a close frame from the
    client is answered and ends reading.

    Parameters
    ----------
    read
        Blocking reader of the connection (after the handshake).
    write
        Writes all the bytes given (such as ``socket.sendall``).
    max_message_size
        Largest message accepted; a bigger one closes with 1009.
    require_mask
        Close with 1002 on an unmasked frame, as RFC 6455 demands.
    """

    def __init__(
        self,
        read: Reader,
        write: Callable[[bytes], object],
        *,
        max_message_size: Optional[int] = None,
        require_mask: bool = True,
    ) -> None:
        self._read = read
        self._write = write
        self._max_size = max_message_size
        self._require_mask = require_mask
        self._send_lock = threading.Lock()
        self._close_sent = False
        self._broken = False
        self.close_code: Optional[int] = None
        """Code of the close frame received from the client, if any."""
        self.close_reason = ""
        """Reason of the close frame received from the client."""
        self.pongs = 0
        """Number of pong frames received (solicited or not)."""

    @property
    def closed(self) -> bool:
        """Whether nothing more can be sent."""
        return self._close_sent or self._broken

    def _send_raw(self, data: bytes) -> None:
        with self._send_lock:
            if self._close_sent or self._broken:
                raise WebSocketClosedError("The WebSocket is closed")
            self._send_unlocked(data)

    def _send_unlocked(self, data: bytes) -> None:
        try:
            self._write(data)
        except OSError as e:
            self._broken = True
            raise WebSocketClosedError(f"Sending failed: {e}") from e

    def send(self, opcode: int, payload: bytes) -> None:
        """Send one unfragmented frame.

        Raises
        ------
        WebSocketClosedError
            The connection is closed or broke.
        """
        self._send_raw(encode_frame(opcode, payload))

    def send_binary(self, payload: bytes) -> None:
        """Send a binary message.

        Raises
        ------
        WebSocketClosedError
            The connection is closed or broke.
        """
        self.send(OP_BINARY, payload)

    def send_text(self, text: str) -> None:
        """Send a text message.

        Raises
        ------
        WebSocketClosedError
            The connection is closed or broke.
        """
        self.send(OP_TEXT, text.encode("utf-8"))

    def ping(self, payload: bytes = b"") -> None:
        """Send a ping.

        Raises
        ------
        WebSocketClosedError
            The connection is closed or broke.
        """
        self.send(OP_PING, payload)

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Send a close frame once; later calls and a broken link are ignored."""
        payload = struct.pack("!H", code) + reason.encode("utf-8")[:123]
        with self._send_lock:
            if self._close_sent or self._broken:
                return
            self._close_sent = True
            try:
                self._write(encode_frame(OP_CLOSE, payload))
            except OSError:
                self._broken = True

    def receive(self) -> Optional[Tuple[int, bytes]]:
        """Read the next message, answering control frames on the way.

        Returns
        -------
        tuple of (int, bytes) or None
            The opcode (``OP_TEXT`` or ``OP_BINARY``) and the payload of the
            next message, or `None` once the connection is closed: by the
            client's close frame (answered), by end of stream, or by a
            protocol error (answered with the right close code).
        """
        opcode: Optional[int] = None
        parts: List[bytes] = []
        size = 0
        while True:
            try:
                frame = read_frame(self._read, max_size=self._max_size)
            except WebSocketClosedError:
                self._broken = True
                return None
            except WebSocketError as e:
                self.close(e.code, str(e))
                return None
            except OSError:
                self._broken = True
                return None
            if frame is None:
                self._broken = True
                return None
            problem = self._check(frame, opcode)
            if problem is not None:
                self.close(CLOSE_PROTOCOL_ERROR, problem)
                return None
            if frame.opcode in _CONTROL:
                if not self._control(frame):
                    return None
                continue
            if frame.opcode != OP_CONTINUATION:
                opcode = frame.opcode
            parts.append(frame.payload)
            size += len(frame.payload)
            if self._max_size is not None and size > self._max_size:
                self.close(CLOSE_TOO_BIG, "Message too big")
                return None
            if frame.fin:
                assert opcode is not None
                data = b"".join(parts)
                if opcode == OP_TEXT:
                    try:
                        data.decode("utf-8")
                    except UnicodeDecodeError:
                        self.close(CLOSE_INVALID_DATA, "Text message is not UTF-8")
                        return None
                return opcode, data

    def _check(self, frame: Frame, current: Optional[int]) -> Optional[str]:
        if self._require_mask and not frame.masked:
            return "Client frames must be masked"
        if frame.rsv:
            return "Reserved bits set without an extension"
        if frame.opcode in _CONTROL:
            if not frame.fin or len(frame.payload) > 125:
                return "Invalid control frame"
            return None
        if frame.opcode == OP_CONTINUATION:
            return "Continuation without a message" if current is None else None
        if frame.opcode in _DATA:
            return "New message inside a fragmented one" if current is not None else None
        return f"Unknown opcode {frame.opcode}"

    def _control(self, frame: Frame) -> bool:
        """Handle a control frame; return whether reading should go on."""
        if frame.opcode == OP_PING:
            try:
                self.send(OP_PONG, frame.payload)
            except WebSocketClosedError:
                return False
            return True
        if frame.opcode == OP_PONG:
            self.pongs += 1
            return True
        # A close frame: remember why and answer it with the same code.
        payload = frame.payload
        if len(payload) >= 2:
            (self.close_code,) = struct.unpack("!H", payload[:2])
            self.close_reason = payload[2:].decode("utf-8", errors="replace")
        self.close(self.close_code or CLOSE_NORMAL)
        return False
