"""Waking once per reply: the learned floor of a reply's bytes, and the wait for it."""

from __future__ import annotations

import json
import socket
import time
from typing import Iterator, Tuple

import pytest

from nublado_sync._transport import _DeadlineSocket
from nublado_sync._wakeups import HINT_WAIT_LIMIT, ReplyFloor, wait_for_bytes

# Generous: the machine running the tests may be busy.
MARGIN = 2.0

needs_lowat = pytest.mark.skipif(
    not hasattr(socket, "SO_RCVLOWAT"), reason="no SO_RCVLOWAT on this platform"
)


@pytest.fixture
def tcp_pair() -> Iterator[Tuple[socket.socket, socket.socket]]:
    """Both ends of a TCP connection on 127.0.0.1 (a low-water mark is a TCP matter)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    try:
        yield client, accepted
    finally:
        client.close()
        accepted.close()


def test_nothing_is_hinted_before_a_reply_was_seen() -> None:
    assert ReplyFloor().hint("pass") is None


def test_the_floor_is_the_smallest_reply_less_the_code_it_echoed() -> None:
    floor = ReplyFloor()
    floor.learn(2300, "pass")
    floor.learn(9000, "print('x' * 5000)")
    floor.learn(2400, "pass")
    smallest = 2300 - len(json.dumps("pass"))
    # Each character of the code adds at least a byte; less a slack for
    # what varies between equal replies.
    assert floor.hint("pass") == smallest + 4 - 64
    assert floor.hint("x = 1; y = 2") == smallest + 12 - 64


def test_code_echoed_with_escapes_keeps_the_floor_below_the_reply() -> None:
    floor = ReplyFloor()
    code = 'print("été\\n")\n' * 10
    # The lab may echo the code as raw UTF-8 (fewer bytes) or escaped
    # (more): the floor must stay below a reply echoing it either way.
    raw_echo = len(json.dumps(code, ensure_ascii=False).encode())
    floor.learn(2000 + len(json.dumps(code)), code)
    hint = floor.hint(code)
    assert hint is not None
    assert hint <= 2000 + raw_echo


def test_small_and_huge_hints_are_left_out_or_capped() -> None:
    floor = ReplyFloor()
    floor.learn(200, "")
    # One message's worth is not worth a hint.
    assert floor.hint("") is None
    floor = ReplyFloor()
    floor.learn(10_000_000, "")
    assert floor.hint("") == 64 * 1024


@needs_lowat
def test_the_wait_ends_only_once_the_bytes_are_in(
    tcp_pair: Tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = tcp_pair
    peer.sendall(b"x" * 100)
    start = time.monotonic()
    assert wait_for_bytes(ours, 300, 0.3) is False
    assert time.monotonic() - start < 0.3 + MARGIN
    peer.sendall(b"y" * 200)
    assert wait_for_bytes(ours, 300, 30) is True
    # Every other wait on the socket means one byte again.
    assert ours.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1


@needs_lowat
def test_the_end_of_the_stream_ends_the_wait(
    tcp_pair: Tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = tcp_pair
    peer.sendall(b"x" * 10)
    peer.shutdown(socket.SHUT_WR)
    start = time.monotonic()
    assert wait_for_bytes(ours, 5000, 30) is True
    assert time.monotonic() - start < MARGIN


def test_a_socket_that_refuses_the_mark_waits_for_nothing() -> None:
    # A closed socket refuses every option: the caller waits as usual.
    sock = socket.socket()
    sock.close()
    assert wait_for_bytes(sock, 300, 0.1) is None


@needs_lowat
def test_a_read_at_a_message_boundary_waits_for_the_hinted_bytes(
    tcp_pair: Tuple[socket.socket, socket.socket],
) -> None:
    raw, peer = tcp_pair
    sock = _DeadlineSocket(raw)
    sock.settimeout(30)
    sock.wake_after = sock.received + 300
    peer.sendall(b"a" * 100)
    # Fewer bytes than hinted: the hinted wait gives up after its limit and
    # the read goes on with what came.
    start = time.monotonic()
    assert sock.take(100) == b"a" * 100
    assert 0.9 * HINT_WAIT_LIMIT <= time.monotonic() - start < HINT_WAIT_LIMIT + MARGIN
    # One try per hint.
    assert sock.wake_after == 0
    sock.wake_after = sock.received + 300
    peer.sendall(b"b" * 300)
    assert sock.take(100) == b"b" * 100
    # The whole hinted count came in with that one read.
    assert sock.pending() == 200
    assert sock.position == sock.received - 200
