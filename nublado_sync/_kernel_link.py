"""The session's connection to its kernel: sending, reading, reconnecting.

`KernelLink` owns a session's kernel WebSocket (a `KernelSocket`) and opens
a new one to the same kernel when it drops, as the session's
`ReconnectPolicy` says, so that the code above it sends and reads without
minding which socket is current. It also knows when the connection is
over: closed, abandoned (the kernel interrupted first) or aborted from
another thread.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Type

from ._acks import CALLS_IN_FLIGHT, AckPolicy
from ._deadline import Deadline
from ._exceptions import (
    KernelGoneError,
    NubladoError,
    NubladoSessionClosedError,
    NubladoTimeoutError,
    NubladoWebError,
    NubladoWebSocketError,
)
from ._logging import Logger
from ._messages import KernelMessage, make_request
from ._reconnect import Continuity, ReconnectPolicy
from ._transport import KernelSocket

if TYPE_CHECKING:
    import websocket

__all__ = ["KernelLink", "Opener"]

# Seconds given to the interrupt and close that follow a timeout, so the
# call ends soon after its deadline even when the server does not answer.
_ABANDON_SEND_TIMEOUT = 1.0
_CLOSE_TIMEOUT = 1.0

Opener = Callable[[Optional[float]], "websocket.WebSocket"]
"""Opens a new WebSocket to the same kernel within the given seconds."""


class KernelLink:
    """A session's kernel WebSocket, opened again when it drops.

    Parameters
    ----------
    ws
        Open websocket-client connection to the kernel's ``channels``
        endpoint; the link owns it from now on.
    username
        User the session is for, for exceptions.
    client_id
        The client connection's id: the ``session`` of the requests' headers.
    logger
        Logger bound to the session.
    keepalive_interval
        Seconds between unsolicited pongs, or `None` (see `KernelSocket`).
    max_message_size
        Largest message accepted, in bytes, or `None`.
    acks
        How to acknowledge messages early (see `KernelSocket`).
    heartbeat_timeout
        Seconds a send may take when the call has no deadline.
    reconnect
        How to reconnect; `None` to report a drop at once.
    opener
        Opens a new WebSocket to the same kernel; `None` when the session
        cannot reconnect (it wraps the caller's WebSocket).
    """

    def __init__(
        self,
        ws: websocket.WebSocket,
        *,
        username: str,
        client_id: str,
        logger: Logger,
        keepalive_interval: Optional[float],
        max_message_size: Optional[int],
        acks: AckPolicy,
        heartbeat_timeout: float,
        reconnect: Optional[ReconnectPolicy],
        opener: Optional[Opener],
    ) -> None:
        self.username = username
        self._client_id = client_id
        self._logger = logger
        self._keepalive_interval = keepalive_interval
        self._max_message_size = max_message_size
        self._acks = acks
        self._heartbeat_timeout = heartbeat_timeout
        self._reconnect_policy = reconnect
        self._opener = opener
        self._socket = self._wrap(ws)
        self._reconnects = 0
        # The attempt that made the current connection (0: the first one).
        self._made_by_attempt = 0
        self._gave_up = False
        self._aborted = False
        self._closed_because: Optional[str] = None

    @property
    def socket(self) -> KernelSocket:
        """The current WebSocket; a reconnect replaces it."""
        return self._socket

    @property
    def client_id(self) -> str:
        """The client connection's id, for the requests' headers."""
        return self._client_id

    @property
    def logger(self) -> Logger:
        """The session's logger."""
        return self._logger

    @property
    def reconnects(self) -> int:
        """How many times the WebSocket was opened again."""
        return self._reconnects

    @property
    def gave_up(self) -> bool:
        """Whether a reconnect failed for good."""
        return self._gave_up

    @property
    def aborted(self) -> bool:
        """Whether `mark_aborted` was called (from any thread)."""
        return self._aborted

    @property
    def closed_because(self) -> Optional[str]:
        """Why the link was closed, or `None` while it is open."""
        return self._closed_because

    def mark_aborted(self) -> None:
        """Note that the session was aborted: no reconnect follows a drop."""
        self._aborted = True

    def _wrap(self, ws: websocket.WebSocket, *, claimed: bool = False) -> KernelSocket:
        return KernelSocket(
            ws,
            user=self.username,
            logger=self._logger,
            keepalive_interval=self._keepalive_interval,
            max_message_size=self._max_message_size,
            acks=self._acks,
            claimed=claimed,
        )

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Hold the socket for a call; the housekeeping thread stays away meanwhile."""
        # The call reads the socket itself; the housekeeping thread stays
        # away until it lets go (of the socket it ends with, after a
        # reconnect: `reconnect` hands the lock over).
        self._socket.claim()
        CALLS_IN_FLIGHT.enter()
        try:
            yield
        finally:
            CALLS_IN_FLIGHT.leave()
            self._socket.release()

    @contextlib.contextmanager
    def awaiting_reply(self, code: str) -> Iterator[None]:
        """Mark the reading of the reply to an ``execute_request`` for ``code``.

        The socket learns what a reply takes, and while no early ACK is due
        wakes once per reply rather than once per message (`._wakeups`).
        """
        socket = self._socket
        socket.begin_reply(code)
        whole = False
        try:
            yield
            whole = True
        finally:
            # After a reconnect the reply came in parts, on two sockets.
            socket.end_reply(code, whole=whole and socket is self._socket)

    def reconnect(self, deadline: Deadline, cause: NubladoWebSocketError) -> None:
        """Open a new WebSocket to the kernel in place of the one that dropped.

        Raises ``cause`` when the session cannot reconnect (no policy, no
        opener, not a drop), or a `NubladoWebSocketError` saying so when
        every attempt failed or the deadline left no time for another.
        """
        policy, opener = self._reconnect_policy, self._opener
        if policy is None or opener is None or not self._socket.dropped or self._aborted:
            raise cause
        # The old socket is broken: close it without waiting for an answer.
        self._socket.close(0.0)
        last: Optional[NubladoError] = None
        # A connection made again that dropped before the kernel sent
        # anything on it is no reason to start over: its attempt counts.
        # Otherwise a lab that accepts the WebSocket and drops it at once
        # (out of file descriptors, its kernel dying) is tried again
        # several times a second until the deadline.
        first = 1 if self._socket.heard else self._made_by_attempt + 1
        attempts = first - 1
        for attempt in range(first, policy.max_attempts + 1):
            if self._aborted:
                raise cause
            pause = policy.delay(attempt)
            remaining = deadline.remaining()
            if remaining is not None and remaining <= pause:
                break
            if pause:
                time.sleep(pause)
            attempts = attempt
            self._logger.warning(
                "Kernel WebSocket dropped, reconnecting",
                attempt=attempt,
                max_attempts=policy.max_attempts,
                cause=cause.message,
            )
            try:
                ws = opener(deadline.remaining())
            except KernelGoneError as e:
                raise self._giving_up(
                    KernelGoneError, f"{cause.message}; reconnecting is pointless: {e.message}", e
                ) from cause
            except (NubladoWebSocketError, NubladoTimeoutError, NubladoWebError) as e:
                last = e
                # Even a 404 may pass: a restarted configurable-http-proxy
                # knows no route until the hub gives it them again.
                self._logger.info("Reconnect attempt failed", attempt=attempt, error=e.message)
                continue
            # The new socket is held for this call from the start, so the
            # housekeeper never reads it under the call; the old one is let go.
            old, self._socket = self._socket, self._wrap(ws, claimed=True)
            old.io_lock.release()
            if self._was_aborted():
                # abort() ran while this connection was being made.
                self._socket.cut()
                raise cause
            self._reconnects += 1
            self._made_by_attempt = attempt
            self._logger.info("Reconnected kernel WebSocket", attempt=attempt)
            return
        if last is not None:
            why = f"; last attempt: {last.message}"
        elif first > 1:
            why = "; each new connection dropped before the kernel sent anything on it"
        else:
            why = ""
        raise self._giving_up(
            NubladoWebSocketError,
            f"{cause.message}; reconnecting failed after {attempts} attempt(s){why}",
            cause,
        ) from cause

    def _giving_up(
        self, kind: Type[NubladoWebSocketError], message: str, source: NubladoWebSocketError
    ) -> NubladoWebSocketError:
        # Once given up, the session closes; the error keeps the code.
        self._gave_up = True
        error = kind(message, self.username, code=source.code)
        # A kernel that is gone is not a connection to open again.
        error.dropped = kind is NubladoWebSocketError
        return error

    def _was_aborted(self) -> bool:
        # A method, not the attribute: abort() sets it from another thread.
        return self._aborted

    def send_request(self, request: KernelMessage, deadline: Deadline) -> None:
        """Send a request, reconnecting first if the socket dropped.

        A send that fails because the connection dropped did not reach the
        kernel whole (the server discards a truncated frame), so it is sent
        again on the new connection. This ends: a new connection fails a
        send before the kernel sent anything on it, so each failure adds to
        the reconnect attempts until `reconnect` gives up.
        """
        while True:
            if self._socket.dropped:
                self.reconnect(deadline, self.socket_error("dropped while idle"))
            try:
                # Without a deadline the heartbeat bounds the send too: a
                # server that stopped reading must not block it forever.
                self._socket.send(request, deadline.bound(self._heartbeat_timeout))
            except NubladoWebSocketError as e:
                if not self._socket.dropped:
                    raise
                self.reconnect(deadline, e)
            else:
                return

    def socket_error(self, what: str) -> NubladoWebSocketError:
        """Make the error for a kernel WebSocket found broken (``what`` it did)."""
        return NubladoWebSocketError(f"The kernel WebSocket {what}", self.username)

    def recv(
        self, timeout: float, deadline: Deadline, continuity: Optional[Continuity]
    ) -> Optional[KernelMessage]:
        """Read one message; reconnect if the connection dropped.

        Returns `None` when nothing arrived in ``timeout``, for a control
        frame, for a duplicate, and after a reconnect (which
        ``continuity`` counts).
        """
        try:
            msg = self._socket.recv(deadline.bound(timeout), ack=True)
        except NubladoWebSocketError as e:
            self.reconnect(deadline, e)
            if continuity is not None:
                continuity.dropped()
            return None
        if msg is None or continuity is None:
            return msg
        msg_id = msg.header.get("msg_id")
        if isinstance(msg_id, str) and continuity.seen(msg_id):
            return None
        return msg

    def raise_if_aborted(self, cause: NubladoError) -> None:
        """Close and raise `NubladoSessionClosedError` if the session was aborted.

        For a call that failed because `KernelLink.mark_aborted` and a cut
        ended it (``cause``): the caller sees the abort, not the cut.
        """
        if self._aborted:
            self.close("aborted")
            raise NubladoSessionClosedError(
                "The session was aborted while running the code", self.username
            ) from cause

    def close(self, reason: str) -> None:
        """Close the WebSocket, once, remembering why. Never raises."""
        if self._closed_because is None:
            self._closed_because = reason
            self._socket.close(_CLOSE_TIMEOUT)
            self._logger.debug("Closed kernel WebSocket", reason=reason)

    def abandon(self, reason: str) -> None:
        """Interrupt the kernel if the connection still works, then close."""
        # After a timeout, an interrupt from the caller or a broken stream the
        # kernel may still be working on our request: stop it, then close.
        if self._socket.connected:
            try:
                self.send_interrupt(_ABANDON_SEND_TIMEOUT)
            except NubladoError:
                self._logger.debug("Could not interrupt the kernel", exc_info=True)
        self.close(reason)

    def send_interrupt(self, timeout: Optional[float] = _ABANDON_SEND_TIMEOUT) -> None:
        """Send an ``interrupt_request`` on the control channel, not waiting for a reply."""
        request = make_request(
            "control",
            "interrupt_request",
            {},
            session=self._client_id,
            username=self.username,
        )
        self._socket.send(request, timeout)
