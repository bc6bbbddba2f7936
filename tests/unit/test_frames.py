"""Our RFC 6455 frames: reading them whole, resumably, within limits; writing them masked."""

from __future__ import annotations

import os
import socket
import struct
import threading
from typing import Optional, Tuple

import pytest

from nublado_sync._frames import (
    OPCODE_BINARY,
    OPCODE_CLOSE,
    OPCODE_CONTINUATION,
    OPCODE_PING,
    OPCODE_TEXT,
    FrameError,
    FrameReader,
    FrameTooLargeError,
    encode_frame,
)
from nublado_sync._transport import _DeadlineSocket


def server_frame(
    opcode: int, payload: bytes, *, final: bool = True, rsv: int = 0, mask: bytes = b""
) -> bytes:
    """A frame as a server sends it (unmasked unless ``mask``)."""
    first = (0x80 if final else 0) | rsv | opcode
    size = len(payload)
    flag = 0x80 if mask else 0
    if size < 126:
        header = bytes((first, flag | size))
    elif size < 1 << 16:
        header = bytes((first, flag | 126)) + struct.pack("!H", size)
    else:
        header = bytes((first, flag | 127)) + struct.pack("!Q", size)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + payload


def unmask_client_frame(frame: bytes) -> Tuple[int, bool, bytes]:
    """Decode a client frame the way a server does: (opcode, masked, payload)."""
    first, second = frame[0], frame[1]
    size = second & 0x7F
    offset = 2
    if size == 126:
        (size,) = struct.unpack_from("!H", frame, 2)
        offset = 4
    elif size == 127:
        (size,) = struct.unpack_from("!Q", frame, 2)
        offset = 10
    key = frame[offset : offset + 4]
    payload = frame[offset + 4 :]
    assert len(payload) == size
    return first & 0x0F, bool(second & 0x80), bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def reader(sock: _DeadlineSocket, limit: Optional[int] = None) -> FrameReader:
    return FrameReader(sock, limit)


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 3 * 1024 * 1024])
def test_frames_of_every_length_form_arrive_whole(
    pair: Tuple[_DeadlineSocket, socket.socket], size: int
) -> None:
    sock, peer = pair
    payload = os.urandom(size)
    frames = reader(sock)
    sock.settimeout(10)
    # Sent from another thread: a large frame fills the socket buffers.
    sender = threading.Thread(target=peer.sendall, args=(server_frame(OPCODE_BINARY, payload),))
    sender.start()
    try:
        opcode, data = frames.read()
    finally:
        sender.join()
    assert (opcode, bytes(data)) == (OPCODE_BINARY, payload)


def test_a_burst_of_small_frames_is_read_in_order(
    pair: Tuple[_DeadlineSocket, socket.socket],
) -> None:
    sock, peer = pair
    peer.sendall(b"".join(server_frame(OPCODE_TEXT, f"m{i}".encode()) for i in range(50)))
    frames = reader(sock)
    sock.settimeout(5)
    assert [frames.read() for _ in range(50)] == [
        (OPCODE_TEXT, f"m{i}".encode()) for i in range(50)
    ]


def test_fragments_join_and_control_frames_come_between(
    pair: Tuple[_DeadlineSocket, socket.socket],
) -> None:
    sock, peer = pair
    peer.sendall(
        server_frame(OPCODE_BINARY, b"one ", final=False)
        + server_frame(OPCODE_PING, b"are you there")
        + server_frame(OPCODE_CONTINUATION, b"two ", final=False)
        + server_frame(OPCODE_CONTINUATION, b"three")
    )
    frames = reader(sock)
    sock.settimeout(5)
    assert frames.read() == (OPCODE_PING, b"are you there")
    assert frames.read() == (OPCODE_BINARY, b"one two three")


def test_a_read_cut_short_by_its_deadline_resumes_where_it_stopped(
    pair: Tuple[_DeadlineSocket, socket.socket],
) -> None:
    sock, peer = pair
    frame = server_frame(OPCODE_BINARY, b"x" * 1000)
    frames = reader(sock)
    # A byte of the header, then the rest of the header and part of the
    # payload: each read times out and keeps what it had.
    for piece in (frame[:1], frame[1:300]):
        peer.sendall(piece)
        sock.settimeout(0.05)
        with pytest.raises(socket.timeout):
            frames.read()
    peer.sendall(frame[300:])
    sock.settimeout(5)
    assert frames.read() == (OPCODE_BINARY, b"x" * 1000)


def test_a_large_payload_cut_short_resumes_into_the_same_buffer(
    pair: Tuple[_DeadlineSocket, socket.socket],
) -> None:
    sock, peer = pair
    payload = os.urandom(1024 * 1024)
    frame = server_frame(OPCODE_BINARY, payload)
    frames = reader(sock)
    sent = 0
    # A large payload is read straight into its own buffer; each piece
    # below ends in a timeout that keeps what came.
    for end in (100, 50_000, 100_000):
        peer.sendall(frame[sent:end])
        sent = end
        sock.settimeout(0.05)
        with pytest.raises(socket.timeout):
            frames.read()
    sender = threading.Thread(target=peer.sendall, args=(frame[sent:],))
    sender.start()
    try:
        sock.settimeout(10)
        opcode, data = frames.read()
    finally:
        sender.join()
    assert (opcode, bytes(data)) == (OPCODE_BINARY, payload)


def test_a_masked_server_frame_is_unmasked(pair: Tuple[_DeadlineSocket, socket.socket]) -> None:
    sock, peer = pair
    peer.sendall(server_frame(OPCODE_TEXT, b"hidden", mask=b"\x01\x02\x03\x04"))
    sock.settimeout(5)
    assert reader(sock).read() == (OPCODE_TEXT, b"hidden")


def test_the_size_limit_holds_at_the_header(pair: Tuple[_DeadlineSocket, socket.socket]) -> None:
    sock, peer = pair
    # Only the header is sent: the limit must not wait for the payload.
    peer.sendall(server_frame(OPCODE_BINARY, b"z" * 2000)[:4])
    sock.settimeout(5)
    with pytest.raises(FrameTooLargeError) as info:
        reader(sock, limit=1000).read()
    assert info.value.size == 2000


def test_the_size_limit_counts_every_fragment(pair: Tuple[_DeadlineSocket, socket.socket]) -> None:
    sock, peer = pair
    peer.sendall(
        server_frame(OPCODE_BINARY, b"a" * 600, final=False)
        + server_frame(OPCODE_CONTINUATION, b"b" * 600)
    )
    sock.settimeout(5)
    with pytest.raises(FrameTooLargeError) as info:
        reader(sock, limit=1000).read()
    assert info.value.size == 1200


@pytest.mark.parametrize(
    ("frame", "words"),
    [
        (server_frame(OPCODE_BINARY, b"x", rsv=0x40), "reserved"),
        (server_frame(0x3, b"x"), "opcode"),
        (server_frame(OPCODE_PING, b"p", final=False), "control frame"),
        (server_frame(OPCODE_PING, b"p" * 126), "control frame"),
        (server_frame(OPCODE_CONTINUATION, b"x"), "continuation"),
        (
            server_frame(OPCODE_BINARY, b"x", final=False) + server_frame(OPCODE_TEXT, b"y"),
            "new message",
        ),
    ],
)
def test_broken_framing_is_refused(
    pair: Tuple[_DeadlineSocket, socket.socket], frame: bytes, words: str
) -> None:
    sock, peer = pair
    peer.sendall(frame)
    sock.settimeout(5)
    with pytest.raises(FrameError, match=words):
        reader(sock).read()


def test_the_end_of_the_stream_is_reported(pair: Tuple[_DeadlineSocket, socket.socket]) -> None:
    sock, peer = pair
    peer.sendall(server_frame(OPCODE_BINARY, b"abc")[:3])
    peer.shutdown(socket.SHUT_WR)
    sock.settimeout(5)
    with pytest.raises(EOFError):
        reader(sock).read()


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_client_frames_are_masked_and_decode_back(size: int) -> None:
    payload = os.urandom(size)
    frame = encode_frame(OPCODE_BINARY, payload)
    assert frame[0] == 0x80 | OPCODE_BINARY
    assert unmask_client_frame(frame) == (OPCODE_BINARY, True, payload)


def test_each_client_frame_has_its_own_key() -> None:
    frames = {encode_frame(OPCODE_CLOSE, b"\x03\xe8") for _ in range(20)}
    assert len(frames) > 1
