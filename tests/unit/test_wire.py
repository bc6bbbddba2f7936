"""The frame codecs: round trips, the server's own encoder, and fuzzing."""

from __future__ import annotations

import contextlib
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nublado_sync import NubladoProtocolError
from nublado_sync._messages import KernelMessage, execute_request, make_request
from nublado_sync._wire import decode_legacy, decode_v1, encode_legacy, encode_v1


def _message(buffers: list[bytes] | None = None) -> KernelMessage:
    msg = execute_request("print('é ✓')", session="s", username="u")
    msg.buffers = buffers or []
    return msg


def test_v1_round_trip() -> None:
    msg = _message()
    data = encode_v1(msg)
    # Six offsets for a message without buffers: the channel starts at 56.
    assert struct.unpack_from("<Q", data)[0] == 6
    assert struct.unpack_from("<Q", data, 8)[0] == 56
    assert data[56:61] == b"shell"
    assert decode_v1(data) == msg


def test_v1_round_trip_with_buffers() -> None:
    msg = _message([b"\x00\x01", b"", b"buffer"])
    assert decode_v1(encode_v1(msg)) == msg


def _server_v1(channel: str | bytes, parts: list[bytes]) -> bytes:
    # The layout jupyter_server's serialize_msg_to_ws_v1 produces, written
    # out independently of our encoder.
    chan = channel.encode() if isinstance(channel, str) else channel
    offsets = [8 * (1 + 1 + len(parts) + 1)]
    offsets.append(offsets[-1] + len(chan))
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    head = len(offsets).to_bytes(8, "little") + b"".join(o.to_bytes(8, "little") for o in offsets)
    return head + chan + b"".join(parts)


def test_v1_decodes_server_layout() -> None:
    header = {"msg_id": "m", "msg_type": "stream"}
    parent = {"msg_id": "p"}
    content = {"name": "stdout", "text": "hi"}
    parts = [json.dumps(x).encode() for x in (header, parent, {}, content)]
    msg = decode_v1(_server_v1("iopub", [*parts, b"BUF"]))
    assert msg.channel == "iopub"
    assert msg.msg_type == "stream"
    assert msg.parent_id == "p"
    assert msg.content == content
    assert msg.buffers == [b"BUF"]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x06",
        struct.pack("<Q", 6),  # table missing
        struct.pack("<Q", 2) + b"\0" * 16,  # too few offsets
        struct.pack("<7Q", 6, 56, 61, 60, 70, 80, 90) + b"x" * 34,  # decreasing
        struct.pack("<7Q", 6, 56, 57, 59, 61, 63, 999) + b"x" * 7,  # end != size
        struct.pack("<Q", 2**63) + b"\0" * 8,  # absurd count
        _server_v1("shell", [b"{}", b"{}", b"{}", b"[1]"]),  # content not an object
        _server_v1("shell", [b"{}", b"{}", b"{}", b"{"]),  # not JSON
        _server_v1("shell", [b"{}", b"{}", b"{}", b"\xff\xfe\xfd"]),  # not UTF-8
        _server_v1(b"\xff", [b"{}"] * 4),  # channel not UTF-8
    ],
)
def test_v1_rejects_bad_frames(data: bytes) -> None:
    with pytest.raises(NubladoProtocolError):
        decode_v1(data)


def test_legacy_text_round_trip() -> None:
    msg = _message()
    text = encode_legacy(msg)
    frame = json.loads(text)
    assert frame["msg_type"] == "execute_request"
    assert frame["channel"] == "shell"
    assert decode_legacy(text) == msg


def test_legacy_binary_frame() -> None:
    # jupyter_server's serialize_binary_message: big-endian 32-bit count
    # and offsets, the JSON message first, then the buffers.
    body = json.dumps(
        {
            "channel": "iopub",
            "header": {"msg_type": "display_data"},
            "parent_header": {},
            "metadata": {},
            "content": {"data": {}},
        }
    ).encode()
    buffers = [body, b"\x00\xff"]
    offsets = [4 * (len(buffers) + 1)]
    offsets.append(offsets[0] + len(body))
    data = struct.pack("!3I", 2, *offsets) + b"".join(buffers)
    msg = decode_legacy(data)
    assert msg.channel == "iopub"
    assert msg.buffers == [b"\x00\xff"]


@pytest.mark.parametrize(
    "data",
    ["", "[]", '{"header": {}}', '{"channel": "x", "content": []}', "{", b"\0\0", b"\0\0\0\x09"],
)
def test_legacy_rejects_bad_frames(data: str | bytes) -> None:
    with pytest.raises(NubladoProtocolError):
        decode_legacy(data)


def test_encoding_rejects_nan() -> None:
    msg = make_request("shell", "x", {"v": float("nan")}, session="s", username="u")
    with pytest.raises(ValueError):
        encode_v1(msg)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=512))
def test_v1_decoder_fuzz(data: bytes) -> None:
    try:
        msg = decode_v1(data)
    except NubladoProtocolError:
        return
    assert isinstance(msg, KernelMessage)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=5, max_size=8))
def test_v1_decoder_fuzz_structured(parts: list[bytes]) -> None:
    # Well-formed offset tables with arbitrary part contents reach the JSON
    # and UTF-8 checks, which random bytes rarely do.
    data = _server_v1("iopub", parts[1:])
    try:
        msg = decode_v1(data)
    except NubladoProtocolError:
        return
    assert msg.channel == "iopub"


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=256), st.text(max_size=256)))
def test_legacy_decoder_fuzz(data: bytes | str) -> None:
    with contextlib.suppress(NubladoProtocolError):
        decode_legacy(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(
    st.text(min_size=1, max_size=10),
    st.dictionaries(st.text(max_size=5), json_values, max_size=4),
    st.lists(st.binary(max_size=20), max_size=3),
)
def test_v1_round_trip_property(channel: str, content: dict, buffers: list[bytes]) -> None:
    msg = KernelMessage(channel, {"msg_id": "x"}, {}, {}, content, buffers)
    try:
        channel.encode()
    except UnicodeEncodeError:
        return
    assert decode_v1(encode_v1(msg)) == msg
