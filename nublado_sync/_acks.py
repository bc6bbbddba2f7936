"""Early acknowledgements: when a kernel socket ACKs ahead of TCP's delayed ACK.

The lab's kernel WebSocket leaves Nagle's algorithm on, so the server holds
each small message until the one before it is acknowledged, and the
receiving end delays that ACK by up to 40 ms. A cell's reply is several
small messages in a row, so without help each of them waits out that delay.
Two cures, of different cost and reach:

- ``TCP_QUICKACK`` (Linux) makes the client's TCP stack send the pending ACK
  at once. It costs one system call and nothing on the server, but it only
  reaches the first hop: behind a proxy, the stall sits on the proxy's own
  connection to the lab.
- An unsolicited pong frame gives every hop a segment to carry its ACK, so it
  reaches the lab through any proxy (the default). But it is a frame for the
  client to write and for every proxy and the server to read, per message.

When many calls of the process overlap, one call's stall hides behind the
others' work; either cure then costs more than it saves, since a stalled
server sends several messages at once and the client reads them in one
wake-up. So early ACKs stop above a number of calls in flight.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass
from typing import Optional

from ._exceptions import NubladoUsageError

__all__ = [
    "CALLS_IN_FLIGHT",
    "DEFAULT_ACKS",
    "AckPolicy",
    "CallsInFlight",
    "as_ack_policy",
    "quickack",
]

# Absent outside Linux; the pong still works there.
_TCP_QUICKACK: Optional[int] = getattr(socket, "TCP_QUICKACK", None)

_METHODS = ("pong", "quickack")


@dataclass(frozen=True)
class AckPolicy:
    """How a session acknowledges kernel messages early while it awaits a reply.

    Only when the client is about to wait for more of a reply and nothing
    more has arrived does it acknowledge early: never in the middle of a
    burst of output, and never after a reply's last message.

    Parameters
    ----------
    method
        ``"pong"`` sends an unsolicited pong frame, which carries the ACK
        across every hop, proxies included. ``"quickack"`` asks the
        operating system to send the ACK at once (``TCP_QUICKACK``, Linux
        only; nothing elsewhere): no frame for the lab to read, but it
        reaches only a lab the client connects to directly.
    max_calls
        Acknowledge early only while at most this many calls of this process
        (all its sessions) await replies; `None` for no limit, 0 for never.
        Beyond it the calls overlap enough that a stall in one is hidden by
        the work of the others, and leaving TCP alone lets the client read
        several messages per wake-up, which is what bounds throughput then;
        a call then also waits for its reply as a whole, not message by
        message.
        The default, 8, is where the scale benchmark turns (2 cores, one
        kernel per session): at 8 sessions early ACKs ran 1.8 times as
        many executions per second; at 16 the lab was the limit with or
        without them, and they only cost the client 1.26 times the CPU
        per execution.

    Raises
    ------
    NubladoUsageError
        A value has the wrong type or is out of range.
    """

    method: str = "pong"
    max_calls: Optional[int] = 8

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise NubladoUsageError('AckPolicy.method must be "pong" or "quickack"')
        limit = self.max_calls
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            raise NubladoUsageError("AckPolicy.max_calls must be an int of 0 or more, or None")

    @classmethod
    def off(cls) -> AckPolicy:
        """Acknowledge nothing early: send the server nothing it did not ask for.

        Returns
        -------
        AckPolicy
            A policy that never acknowledges early.
        """
        return cls(max_calls=0)

    @property
    def active(self) -> bool:
        """Whether the policy ever acknowledges early."""
        if self.max_calls == 0:
            return False
        return self.method == "pong" or _TCP_QUICKACK is not None

    def due(self) -> bool:
        """Whether an early ACK is due now, given the calls in flight.

        Returns
        -------
        bool
            `True` while the process is within ``max_calls``.
        """
        return self.max_calls is None or CALLS_IN_FLIGHT.count <= self.max_calls


class CallsInFlight:
    """How many calls of this process hold a kernel socket, awaiting replies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def enter(self) -> None:
        """Count a call that starts."""
        with self._lock:
            self.count += 1

    def leave(self) -> None:
        """Count a call that ended."""
        with self._lock:
            self.count -= 1


CALLS_IN_FLIGHT = CallsInFlight()
"""The process's calls in flight, across all sessions."""

DEFAULT_ACKS = AckPolicy()
"""The policy a session uses unless told otherwise."""


def as_ack_policy(value: object, user: Optional[str] = None) -> AckPolicy:
    """Return the policy a ``prompt_acks`` argument names.

    Raises
    ------
    NubladoUsageError
        It is not `True`, `False` or an `AckPolicy`.
    """
    if isinstance(value, AckPolicy):
        return value
    if isinstance(value, bool):
        return DEFAULT_ACKS if value else AckPolicy.off()
    raise NubladoUsageError("prompt_acks must be True, False or an AckPolicy", user)


def quickack(sock: socket.socket) -> None:
    """Have the operating system acknowledge what ``sock`` received, at once.

    A no-op where ``TCP_QUICKACK`` does not exist; errors (a closed socket)
    are left for the next read.
    """
    if _TCP_QUICKACK is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
