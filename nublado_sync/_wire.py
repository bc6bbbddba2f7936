"""Kernel messages to and from WebSocket frames.

Two encodings exist. ``v1.kernel.websocket.jupyter.org`` (binary frames of
little-endian 64-bit offsets followed by the channel and four JSON parts)
is what Rubin labs speak. Without that subprotocol jupyter_server speaks the
legacy protocol: one JSON text frame per message, or, for messages with
binary buffers, a binary frame with 32-bit big-endian offsets.

Decoders take any bytes and either return a message or raise
`NubladoProtocolError`; nothing else escapes them.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Dict, List, Union

from ._exceptions import NubladoProtocolError
from ._messages import KernelMessage

__all__ = [
    "V1_SUBPROTOCOL",
    "SplitFrame",
    "decode_legacy",
    "decode_v1",
    "encode_legacy",
    "encode_v1",
    "split_v1",
]

V1_SUBPROTOCOL = "v1.kernel.websocket.jupyter.org"

_V1_WORD = struct.Struct("<Q")
_JSON_PARTS = ("header", "parent_header", "metadata", "content")


# allow_nan=False: NaN is not JSON, and servers reject it. One encoder for
# every message: json.dumps with options builds a new one per call.
_encode_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _dumps(value: Dict[str, Any]) -> bytes:
    # A request's parent header and metadata are empty.
    return _encode_json(value).encode() if value else b"{}"


# For the common case: a compact JSON text, parsed without json.loads's
# type checks and two whitespace scans (four parts per message add up).
_raw_decode = json.JSONDecoder().raw_decode


def _loads_object(data: Union[bytes, memoryview, str], part: str) -> Dict[str, Any]:
    try:
        if isinstance(data, str):
            try:
                value, end = _raw_decode(data)
            except ValueError:
                end = -1  # leading whitespace, or not JSON: json.loads tells
            if end != len(data):
                value = json.loads(data)
        else:
            value = json.loads(bytes(data) if isinstance(data, memoryview) else data)
    except (ValueError, RecursionError) as e:
        raise NubladoProtocolError(f"Kernel message {part} is not JSON: {e}") from e
    if not isinstance(value, dict):
        raise NubladoProtocolError(f"Kernel message {part} is not a JSON object")
    return value


def encode_v1(msg: KernelMessage) -> bytes:
    """Encode a message as a v1 binary frame."""
    parts: List[bytes] = [msg.channel.encode()]
    parts.extend(_dumps(getattr(msg, name)) for name in _JSON_PARTS)
    parts.extend(bytes(b) for b in msg.buffers)
    count = len(parts) + 1
    offsets = [8 * (count + 1)]
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    head = struct.pack(f"<{count + 1}Q", count, *offsets)
    return b"".join([head, *parts])


class SplitFrame:
    """A v1 frame cut into its parts, the JSON parts still unparsed.

    Splitting first lets a caller drop the frame's bytes before the JSON is
    parsed, so a large output is never held three times at once (frame,
    text, parsed value).
    """

    def __init__(self, channel: str, texts: List[str], buffers: List[bytes]) -> None:
        self.channel = channel
        self._texts = texts
        self.buffers = buffers

    def parse(self) -> KernelMessage:
        """Parse the JSON parts (once: the texts are released as they go).

        Raises
        ------
        NubladoProtocolError
            A part is not a JSON object.
        """
        parts: List[Dict[str, Any]] = []
        for name in _JSON_PARTS:
            parts.append(_loads_object(self._texts.pop(0), name))
        header, parent_header, metadata, content = parts
        return KernelMessage(self.channel, header, parent_header, metadata, content, self.buffers)


def split_v1(data: Union[bytes, bytearray]) -> SplitFrame:
    """Cut a v1 binary frame into its channel, JSON texts and buffers.

    Raises
    ------
    NubladoProtocolError
        The frame is truncated, its offsets are inconsistent, or a part is
        not valid UTF-8.
    """
    size = len(data)
    if size < 8:
        raise NubladoProtocolError(f"Kernel frame of {size} bytes is truncated")
    (count,) = _V1_WORD.unpack_from(data, 0)
    # Channel, four JSON parts and the end offset at the very least.
    if count < 6:
        raise NubladoProtocolError(f"Kernel frame has {count} offsets, expected >= 6")
    if 8 * (count + 1) > size:
        raise NubladoProtocolError("Kernel frame is shorter than its offset table")
    offsets = struct.unpack_from(f"<{count}Q", data, 8)
    if offsets[0] < 8 * (count + 1) or offsets[-1] != size:
        raise NubladoProtocolError("Kernel frame offsets do not match its size")
    for start, end in zip(offsets, offsets[1:]):
        if end < start:
            raise NubladoProtocolError("Kernel frame offsets are not increasing")
    with memoryview(data) as view:
        try:
            channel = str(view[offsets[0] : offsets[1]], "utf-8")
            texts = [str(view[offsets[i] : offsets[i + 1]], "utf-8") for i in range(1, 5)]
        except UnicodeDecodeError as e:
            raise NubladoProtocolError(f"Kernel frame is not UTF-8: {e.reason}") from None
        buffers = [bytes(view[offsets[i] : offsets[i + 1]]) for i in range(5, count - 1)]
    return SplitFrame(channel, texts, buffers)


def decode_v1(data: bytes) -> KernelMessage:
    """Decode a v1 binary frame.

    Raises
    ------
    NubladoProtocolError
        The frame is truncated, its offsets are inconsistent, or a part is
        not valid UTF-8 JSON.
    """
    return split_v1(data).parse()


def encode_legacy(msg: KernelMessage) -> str:
    """Encode a message as a legacy JSON text frame (no buffers)."""
    frame: Dict[str, Any] = {
        "channel": msg.channel,
        "header": msg.header,
        "parent_header": msg.parent_header,
        "metadata": msg.metadata,
        "content": msg.content,
        "buffers": [],
        "msg_id": msg.msg_id,
        "msg_type": msg.msg_type,
    }
    return _encode_json(frame)


def _from_legacy_dict(frame: Dict[str, Any], buffers: List[bytes]) -> KernelMessage:
    channel = frame.get("channel")
    if not isinstance(channel, str):
        raise NubladoProtocolError("Legacy kernel message has no channel")
    parts: List[Dict[str, Any]] = []
    for name in _JSON_PARTS:
        value = frame.get(name, {})
        if not isinstance(value, dict):
            raise NubladoProtocolError(f"Legacy kernel message {name} is not an object")
        parts.append(value)
    header, parent_header, metadata, content = parts
    return KernelMessage(channel, header, parent_header, metadata, content, buffers)


def decode_legacy(data: Union[str, bytes, bytearray]) -> KernelMessage:
    """Decode a legacy frame: JSON text, or binary when it carries buffers.

    Raises
    ------
    NubladoProtocolError
        The frame is not a well-formed legacy message.
    """
    if isinstance(data, str):
        return _from_legacy_dict(_loads_object(data, "frame"), [])
    # Binary legacy frame: 32-bit big-endian count, then that many offsets;
    # the first part is the JSON message, the rest are its buffers.
    size = len(data)
    if size < 4:
        raise NubladoProtocolError(f"Kernel frame of {size} bytes is truncated")
    (count,) = struct.unpack_from("!I", data, 0)
    if count < 1 or 4 * (count + 1) > size:
        raise NubladoProtocolError("Legacy binary kernel frame has a bad offset table")
    offsets = [*struct.unpack_from(f"!{count}I", data, 4), size]
    for start, end in zip(offsets, offsets[1:]):
        if end < start or start < 4 * (count + 1):
            raise NubladoProtocolError("Legacy binary kernel frame offsets are bad")
    view = memoryview(data)
    frame = _loads_object(view[offsets[0] : offsets[1]], "frame")
    buffers = [bytes(view[offsets[i] : offsets[i + 1]]) for i in range(1, count)]
    return _from_legacy_dict(frame, buffers)
