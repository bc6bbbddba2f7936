"""The kernel WebSocket's socket wrapper: reads ahead, hands out exact sizes, one deadline."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import List, Optional, Tuple

import pytest

from nublado_sync import _transport
from nublado_sync._transport import _READ_SIZE, _DeadlineSocket

# Generous: the machine running the tests may be busy.
MARGIN = 2.0


def test_reads_ahead_and_hands_out_what_is_asked(
    pair: Tuple[_DeadlineSocket, socket.socket],
) -> None:
    sock, peer = pair
    peer.sendall(b"\x81\x05hello\x82\x03abc")
    assert sock.recv(2) == b"\x81\x05"
    # The rest came in with the first read and waits in the buffer.
    assert sock.pending() == 10
    assert sock.recv(5) == b"hello"
    assert sock.recv(100) == b"\x82\x03abc"
    assert sock.pending() == 0


def test_large_data_arrives_whole_and_in_order(
    pair: Tuple[_DeadlineSocket, socket.socket],
) -> None:
    sock, peer = pair
    data = bytes(range(256)) * (3 * _READ_SIZE // 256 + 7)
    peer.setblocking(False)
    sent = 0
    received: List[bytes] = []
    sock.settimeout(30)
    while sum(map(len, received)) < len(data):
        if sent < len(data):
            with contextlib.suppress(BlockingIOError):
                sent += peer.send(data[sent : sent + 65536])
        if sent > sum(map(len, received)):
            received.append(sock.recv(16384))
    assert b"".join(received) == data


def test_a_read_ends_at_the_deadline(pair: Tuple[_DeadlineSocket, socket.socket]) -> None:
    sock, _ = pair
    sock.settimeout(0.2)
    start = time.monotonic()
    with pytest.raises(socket.timeout):
        sock.recv(2)
    assert time.monotonic() - start < 0.2 + MARGIN


def test_buffered_data_is_handed_out_before_the_deadline_is_checked_again(
    pair: Tuple[_DeadlineSocket, socket.socket],
) -> None:
    sock, peer = pair
    peer.sendall(b"abcd")
    sock.settimeout(5)
    assert sock.recv(1) == b"a"
    sock.settimeout(0)  # expired: what is buffered is still there
    assert sock.recv(3) == b"bcd"
    with pytest.raises(socket.timeout):
        sock.recv(1)


def test_a_send_the_peer_never_reads_ends_at_the_deadline(
    pair: Tuple[_DeadlineSocket, socket.socket],
) -> None:
    sock, _ = pair
    sock.settimeout(0.3)
    start = time.monotonic()
    with pytest.raises(socket.timeout):
        sock.sendall(b"x" * (64 * 1024 * 1024))
    assert time.monotonic() - start < 0.3 + MARGIN


def test_the_end_of_the_stream_reads_as_empty(
    pair: Tuple[_DeadlineSocket, socket.socket],
) -> None:
    sock, peer = pair
    peer.sendall(b"xy")
    peer.shutdown(socket.SHUT_WR)
    sock.settimeout(5)
    assert sock.recv(10) == b"xy"
    assert sock.recv(10) == b""


def test_a_read_waiting_in_another_thread_ends_when_the_socket_is_shut_down(
    pair: Tuple[_DeadlineSocket, socket.socket],
) -> None:
    # How a cut or an abort ends a call that waits for the kernel.
    sock, _ = pair
    got: List[bytes] = []

    def read() -> None:
        sock.settimeout(60)
        got.append(sock.recv(10))

    reader = threading.Thread(target=read)
    start = time.monotonic()
    reader.start()
    sock.shutdown(socket.SHUT_RDWR)
    reader.join(60)
    assert got == [b""]
    # Long before the reader's own deadline.
    assert time.monotonic() - start < 30


class _Counts:
    """System calls a `_DeadlineSocket` makes: reads, and readiness waits."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, sock: _DeadlineSocket) -> None:
        self.reads = 0
        self.waits = 0
        raw = sock._sock
        real_ready = _transport._ready
        counts = self

        class Counted:
            def __getattr__(self, name: str) -> object:
                return getattr(raw, name)

            def recv(self, size: int) -> bytes:
                counts.reads += 1
                return raw.recv(size)

        def ready(target: socket.socket, writing: bool, timeout: Optional[float]) -> bool:
            counts.waits += 1
            return real_ready(raw, writing, timeout)

        monkeypatch.setattr(sock, "_sock", Counted())
        monkeypatch.setattr(_transport, "_ready", ready)


def test_at_a_message_boundary_it_waits_before_reading(
    pair: Tuple[_DeadlineSocket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing buffered, and the last read came up short: the next bytes are
    # most likely not there yet, so a read would find nothing (a system
    # call for nothing). It waits first.
    sock, peer = pair
    counts = _Counts(monkeypatch, sock)
    peer.sendall(b"abc")
    sock.settimeout(5)
    assert sock.take(3) == b"abc"
    assert (counts.waits, counts.reads) == (1, 1)
    sock.settimeout(0.2)
    with pytest.raises(socket.timeout):
        sock.take(2)
    assert (counts.waits, counts.reads) == (2, 1)
    peer.sendall(b"de")
    sock.settimeout(5)
    assert sock.take(2) == b"de"
    assert (counts.waits, counts.reads) == (3, 2)


def test_in_the_middle_of_a_message_it_reads_at_once(
    pair: Tuple[_DeadlineSocket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, peer = pair
    peer.sendall(b"abc")
    sock.settimeout(5)
    assert sock.take(2) == b"ab"
    counts = _Counts(monkeypatch, sock)
    peer.sendall(b"de")
    # One byte of the three is in: the rest is read without a wait first.
    assert sock.take(3) == b"cde"
    assert (counts.waits, counts.reads) == (0, 1)


def test_after_a_full_read_it_reads_at_once(
    pair: Tuple[_DeadlineSocket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A read that filled the whole read size left the sender ahead: more
    # is most likely waiting, even at a message boundary.
    sock, peer = pair
    peer.sendall(b"x" * _READ_SIZE + b"yz")
    sock.settimeout(5)
    assert sock.take(_READ_SIZE) == b"x" * _READ_SIZE
    counts = _Counts(monkeypatch, sock)
    assert sock.take(2) == b"yz"
    assert (counts.waits, counts.reads) == (0, 1)
