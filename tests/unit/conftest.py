"""Fixtures shared by the unit tests."""

from __future__ import annotations

import socket
from typing import Iterator, Tuple

import pytest

from nublado_sync._transport import _DeadlineSocket


@pytest.fixture
def pair() -> Iterator[Tuple[_DeadlineSocket, socket.socket]]:
    """Our buffered deadline socket, and the peer end of its socket pair."""
    ours, peer = socket.socketpair()
    try:
        yield _DeadlineSocket(ours), peer
    finally:
        ours.close()
        peer.close()
