"""Waking once per reply instead of once per message, while many calls overlap.

A reply to ``execute_request`` is at least four small messages (status
``busy``, ``execute_input``, ``execute_reply``, status ``idle``), each its
own frame and, from a lab that leaves Nagle's algorithm on, its own TCP
segment. A thread that waits for each of them is woken four times per
execution, and with many sessions busy in threads each wake-up hands the
GIL around: that, not parsing, is most of the client's CPU per execution
then (the scale benchmark, `docs/benchmarks.rst`).

The operating system can wait for more than one message: with
``SO_RCVLOWAT`` set, the socket reads as ready only once that many bytes
are in. How many bytes a reply takes at least is learned per connection
from the replies before it: every message of a reply carries the request's
header, and the kernel's own header, so the fewest bytes a reply took,
less the code it echoed, is a floor the next one reaches too. The wait is
then for that floor, bounded by `HINT_WAIT_LIMIT`, after which the reader
waits as usual. A wrong floor thus costs at most that bound once, and the
floor is learned again from the reply that undercut it.

Used only while the session does not acknowledge messages early (`._acks`):
an early ACK needs the reader awake after each message, and with few calls
in flight those ACKs matter more than the wake-ups.
"""

from __future__ import annotations

import contextlib
import json
import math
import select
import socket
from typing import Optional

__all__ = ["HINT_WAIT_LIMIT", "ReplyFloor", "wait_for_bytes"]

# Absent on some platforms; where it is, a socket that refuses it turns
# the hint off (see wait_for_bytes).
_SO_RCVLOWAT: Optional[int] = getattr(socket, "SO_RCVLOWAT", None)

HINT_WAIT_LIMIT = 0.25
"""Longest a reader waits for a reply's floor of bytes before it waits as usual."""

# Below the learned floor, for what varies between otherwise equal replies:
# a date without microseconds, and fewer digits in a count or a time.
_SLACK = 64
# No hint for fewer bytes than this: a wait for one message's worth saves nothing.
_MIN_HINT = 256
# Nor for more: a larger low-water mark makes Linux grow the receive buffer.
_MAX_HINT = 64 * 1024


class ReplyFloor:
    """The fewest bytes a reply to ``execute_request`` took on one connection.

    Learned from whole replies (`learn`); `hint` then says how many bytes the
    next reply brings at least. The code a reply echoes (``execute_input``)
    is left out of the floor and added back per request, so a long cell
    does not raise the floor for short ones.
    """

    def __init__(self) -> None:
        self._floor: Optional[int] = None

    def hint(self, code: str) -> Optional[int]:
        """Bytes a reply to ``code`` brings at least, or `None` (not known, or too few).

        Returns
        -------
        int or None
            The byte count, at most 64 KiB.
        """
        if self._floor is None:
            return None
        # Each character of the code is at least one byte in any encoding of
        # the echo.
        count = self._floor + len(code) - _SLACK
        if count < _MIN_HINT:
            return None
        return min(count, _MAX_HINT)

    def learn(self, reply_bytes: int, code: str) -> None:
        """Take in a whole reply of ``reply_bytes`` bytes to ``code``."""
        # The echo of the code is at most its JSON with every non-ASCII
        # character escaped; subtracting that keeps the floor a floor.
        floor = reply_bytes - len(json.dumps(code))
        if floor > 0 and (self._floor is None or floor < self._floor):
            self._floor = floor


def wait_for_bytes(sock: socket.socket, count: int, timeout: float) -> Optional[bool]:
    """Wait until ``count`` bytes can be read from ``sock``, or ``timeout`` seconds pass.

    The end of the stream and errors end the wait too, as in any poll.

    Returns
    -------
    bool or None
        Whether the bytes (or the end) came; `None` when the platform or
        the socket does not take a low-water mark (nothing waited).
    """
    if _SO_RCVLOWAT is None or not hasattr(select, "poll"):
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVLOWAT, count)
    except OSError:
        return None
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(math.ceil(timeout * 1000)))
    finally:
        # Every other wait on this socket (the housekeeper's, the checks
        # for waiting bytes) means one byte.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVLOWAT, 1)
