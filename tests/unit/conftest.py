"""Fixtures shared by the unit tests."""

from __future__ import annotations

import socket
import sys
from typing import Iterator, Tuple

import pytest

from nublado_sync import _transport
from nublado_sync._transport import _DeadlineSocket


@pytest.fixture(
    params=[
        pytest.param(True, id="kernel-timeouts"),
        pytest.param(False, id="polled"),
    ]
)
def pair(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Tuple[_DeadlineSocket, socket.socket]]:
    """Our buffered deadline socket, and the peer end of its socket pair.

    Both ways of waiting: blocking reads bounded by the kernel's timeouts
    (Linux, plain TCP) and non-blocking reads with a poll (TLS, elsewhere).
    """
    kernel_timeouts: bool = request.param
    if kernel_timeouts and not sys.platform.startswith("linux"):
        pytest.skip("the kernel's socket timeouts are used on Linux only")
    monkeypatch.setattr(_transport, "_KERNEL_TIMEOUTS", kernel_timeouts)
    ours, peer = socket.socketpair()
    try:
        yield _DeadlineSocket(ours), peer
    finally:
        ours.close()
        peer.close()
