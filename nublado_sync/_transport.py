"""The kernel WebSocket: opening it, frames in and out, keepalive, close.

Wraps a websocket-client `~websocket.WebSocket`. It picks the wire encoding
from the negotiated subprotocol, turns every websocket-client and socket
error into `NubladoWebSocketError`, and keeps an idle connection alive.
"""

from __future__ import annotations

import contextlib
import math
import select
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING, Any, Optional, Union

from ._acks import DEFAULT_ACKS, AckPolicy, quickack
from ._cancel import shutdown_socket
from ._exceptions import NubladoError, NubladoProtocolError, NubladoWebSocketError
from ._frames import (
    OPCODE_BINARY,
    OPCODE_CLOSE,
    OPCODE_PING,
    OPCODE_PONG,
    OPCODE_TEXT,
    FrameError,
    FrameReader,
    FrameTooLargeError,
    encode_frame,
)
from ._housekeeping import HOUSEKEEPER
from ._logging import Logger
from ._messages import KernelMessage
from ._reasons import connection_failure
from ._reconnect import DROP_CLOSE_CODES
from ._wakeups import HINT_WAIT_LIMIT, ReplyFloor, wait_for_bytes
from ._wire import V1_SUBPROTOCOL, decode_legacy, encode_legacy, encode_v1, split_v1

if TYPE_CHECKING:
    import websocket

__all__ = ["KernelSocket", "open_websocket"]


# Bytes asked of the socket at a time: one read takes in a burst of small
# messages, or a good slice of a large one (websocket-client alone asks for
# a frame's header, length and payload separately, 16 KiB at most each).
_READ_SIZE = 64 * 1024
# Payloads from this size on are read straight into their own buffer.
_DIRECT_READ = 256 * 1024


def _ready(sock: socket.socket, writing: bool, timeout: Optional[float]) -> bool:
    """Wait up to ``timeout`` seconds (`None`: no limit) for a socket to be ready."""
    if hasattr(select, "poll"):
        # poll, unlike select, works for descriptors above FD_SETSIZE.
        poller = select.poll()
        poller.register(sock, select.POLLOUT if writing else select.POLLIN)
        return bool(poller.poll(None if timeout is None else math.ceil(timeout * 1000)))
    readers, writers, _ = select.select(
        [] if writing else [sock], [sock] if writing else [], [], timeout
    )
    return bool(readers or writers)


class _DeadlineSocket:
    """A buffered socket whose timeout is a deadline for all reads and writes after it.

    websocket-client applies the socket timeout to each ``recv`` call, and a
    frame takes many of them: a server trickling a frame one byte at a time
    would never time out. Installed in place of the connection's socket,
    this turns ``settimeout(t)`` into "everything must be done ``t`` seconds
    from now", which is the deadline a caller means. Deadlines are kept per
    thread, so an interrupt sent from another thread neither moves nor
    inherits the reader's.

    It also reads ahead: the descriptor stays non-blocking, a read takes up
    to ``_READ_SIZE`` bytes and hands them out as websocket-client asks, and
    the socket is polled only when nothing is buffered. A small message
    then costs one poll and one read instead of three of each (plus a
    system call per timeout change), which is what a thread per session
    pays for in system calls and in handing the GIL around.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._local = threading.local()
        # Read and not yet handed out: self._chunk[self._offset:].
        self._chunk = b""
        self._offset = 0
        # A large take in progress: its buffer and how much of it is filled.
        self._large: Optional[bytearray] = None
        self._large_filled = 0
        # Whether the last read came up short: the reader caught up with
        # the sender, so once that is all handed out, the next bytes are
        # most likely still on their way (see take).
        self._caught_up = True
        # Bytes read from the socket so far, and the count before which a
        # wait at a message boundary is not worth waking for (see
        # `._wakeups`; 0: any byte is).
        self.received = 0
        self.wake_after = 0
        # Python's own timeouts would poll before every call; ours polls
        # only when a call would block.
        sock.settimeout(0.0)
        import ssl  # loaded already: websocket-client imports it

        self._would_block_reading = (BlockingIOError, ssl.SSLWantReadError)
        self._would_block_writing = (BlockingIOError, ssl.SSLWantWriteError)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def settimeout(self, timeout: Optional[float]) -> None:
        self._local.deadline = None if timeout is None else time.monotonic() + timeout

    def gettimeout(self) -> Optional[float]:
        deadline: Optional[float] = getattr(self._local, "deadline", None)
        if deadline is None:
            return None
        return max(deadline - time.monotonic(), 0.0)

    def pending(self) -> int:
        """Bytes received and not yet handed out (TLS: decrypted ones included)."""
        tls = getattr(self._sock, "pending", None)
        buffered = max(len(self._chunk) - self._offset, 0)
        return buffered + (tls() if tls is not None else 0)

    @property
    def position(self) -> int:
        """Bytes handed out so far (read, less what is still buffered)."""
        return self.received - max(len(self._chunk) - self._offset, 0)

    def _wait_for_more(self) -> None:
        """Wait for bytes at a message boundary: for the hinted count first, if any."""
        wanted = self.wake_after - self.received
        if wanted > 1:
            # One try per hint: a floor that turned out wrong costs one
            # bounded wait, not one per message.
            self.wake_after = 0
            remaining = self.gettimeout()
            limit = HINT_WAIT_LIMIT if remaining is None else min(remaining, HINT_WAIT_LIMIT)
            if limit > 0 and wait_for_bytes(self._sock, wanted, limit):
                return
        self._wait(writing=False)

    def _wait(self, writing: bool) -> None:
        """Wait until the socket is ready, or raise `socket.timeout` at the deadline."""
        remaining = self.gettimeout()
        if remaining is not None and remaining <= 0:
            raise socket.timeout("timed out")
        if not _ready(self._sock, writing, remaining):
            raise socket.timeout("timed out")

    def recv(self, bufsize: int) -> bytes:
        if self._offset >= len(self._chunk):
            self._chunk, self._offset = self._fill(), 0  # b"" at the end of the stream
        chunk, start = self._chunk, self._offset
        self._offset = start + bufsize
        if start == 0 and bufsize >= len(chunk):
            return chunk  # all of it: no copy
        return chunk[start : start + bufsize]

    def take(self, size: int, *, consume: bool = True) -> Union[bytes, bytearray]:
        """Return exactly ``size`` bytes, all or none.

        Without ``consume`` the bytes stay buffered (a peek). A large size
        is read straight into one buffer of that size (`_take_large`).

        Raises
        ------
        socket.timeout
            At the deadline; what arrived stays buffered for the next call.
        EOFError
            The stream ended first.
        """
        chunk, start = self._chunk, self._offset
        end = start + size
        if end <= len(chunk):
            if consume:
                self._offset = end
            if start == 0 and end == len(chunk):
                return chunk  # all of it: no copy
            return chunk[start:end]
        if consume and size >= _DIRECT_READ:
            return self._take_large(size)
        pieces = [chunk[start:]]
        have = len(pieces[0])
        # At a message boundary after a short read, wait before reading: a
        # read that finds nothing is a system call for nothing (two per
        # execution, each handing the GIL to another thread and back). In
        # the middle of a message, or of a burst, read at once.
        wait_first = not have and self._caught_up and not self._tls_pending()
        try:
            while have < size:
                if wait_first:
                    wait_first = False
                    self._wait_for_more()
                data = self._fill()
                if not data:
                    raise EOFError("the stream ended")
                pieces.append(data)
                have += len(data)
        except BaseException:
            # Nothing taken: what came stays buffered.
            self._chunk, self._offset = b"".join(pieces), 0
            raise
        # Split the last piece where the asked size ends; one join copies
        # the rest (a large payload is copied once).
        last = pieces[-1]
        cut = len(last) - (have - size)
        pieces[-1] = last[:cut]
        taken = b"".join(pieces)
        if consume:
            self._chunk, self._offset = last, cut
        else:
            self._chunk, self._offset = taken + last[cut:], 0
        return taken

    def _take_large(self, size: int) -> bytearray:
        # Read into one buffer of the final size: a large output is then
        # held once while it arrives, not as pieces plus their join. A
        # timeout keeps the buffer for the next call (the frame reader asks
        # for the same payload again).
        if self._large is None or len(self._large) != size:
            buffered = self._chunk[self._offset : self._offset + size]
            self._offset += len(buffered)
            self._large = bytearray(size)
            self._large[: len(buffered)] = buffered
            self._large_filled = len(buffered)
        large = self._large
        with memoryview(large) as view:
            while self._large_filled < size:
                remaining = self.gettimeout()
                if remaining is not None and remaining <= 0:
                    raise socket.timeout("timed out")
                try:
                    count = self._sock.recv_into(view[self._large_filled :])
                except self._would_block_reading:
                    self._wait(writing=False)
                    continue
                except self._would_block_writing:  # TLS renegotiation
                    self._wait(writing=True)
                    continue
                if not count:
                    raise EOFError("the stream ended")
                self.received += count
                self._large_filled += count
        self._large = None
        return large

    def _fill(self) -> bytes:
        # A caller that finds nothing waiting must still see its deadline.
        remaining = self.gettimeout()
        if remaining is not None and remaining <= 0:
            raise socket.timeout("timed out")
        while True:
            try:
                data: bytes = self._sock.recv(_READ_SIZE)
            except self._would_block_reading:
                self._wait(writing=False)
            except self._would_block_writing:  # TLS renegotiation
                self._wait(writing=True)
            else:
                self._caught_up = len(data) < _READ_SIZE
                self.received += len(data)
                return data

    def _tls_pending(self) -> bool:
        # Bytes TLS has decrypted are not readable on the descriptor.
        pending = getattr(self._sock, "pending", None)
        return pending is not None and pending() > 0

    def send(self, data: Union[bytes, memoryview]) -> int:
        remaining = self.gettimeout()
        if remaining is not None and remaining <= 0:
            raise socket.timeout("timed out")
        while True:
            try:
                return self._sock.send(data)
            except self._would_block_writing:
                self._wait(writing=True)
            except self._would_block_reading:  # TLS renegotiation
                self._wait(writing=False)

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self.send(view) :]


class _HandshakeDeadline:
    """Ends the opening of a WebSocket that outlives its deadline.

    websocket-client reads the handshake answer a byte at a time and applies
    the timeout to each read, so a server that trickles its answer is never
    timed out. This thread shuts the socket down at the deadline, which ends
    the read in progress; the opener then reports a timeout.
    """

    def __init__(self, ws: websocket.WebSocket, timeout: float) -> None:
        self.expired = False
        self._ws = ws
        self._timeout = timeout
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, name="nublado-handshake-deadline", daemon=True
        )

    def __enter__(self) -> _HandshakeDeadline:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        if self._done.wait(self._timeout):
            return
        self.expired = True
        # The socket exists only once the TCP (and TLS) connection is made;
        # until then websocket-client's own per-operation timeout applies.
        while not self._done.is_set():
            sock = self._ws.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                return
            self._done.wait(0.05)


def open_websocket(url: str, *, timeout: Optional[float], **options: Any) -> websocket.WebSocket:
    """Open a WebSocket, the handshake included, within ``timeout`` seconds.

    Parameters
    ----------
    url
        ``ws://`` or ``wss://`` URL.
    timeout
        Seconds for the whole opening, or `None` for no deadline.
    **options
        ``sslopt`` and ``skip_utf8_validation`` for the connection, the
        rest for websocket-client's ``connect``.

    Returns
    -------
    websocket.WebSocket
        The open connection.

    Raises
    ------
    websocket.WebSocketTimeoutException
        The deadline passed.
    websocket.WebSocketException
        Or `OSError`, `ValueError`: the opening failed, as websocket-client
        reports it (the caller turns these into its own exceptions).
    """
    import websocket

    ws = websocket.WebSocket(
        sslopt=options.pop("sslopt", None) or {},
        skip_utf8_validation=options.pop("skip_utf8_validation", False),
        enable_multithread=False,
    )
    ws.settimeout(timeout)
    if timeout is None:
        ws.connect(url, timeout=timeout, **options)  # type: ignore[no-untyped-call]
        return ws
    guard = _HandshakeDeadline(ws, timeout)
    try:
        with guard:
            ws.connect(url, timeout=timeout, **options)  # type: ignore[no-untyped-call]
    except Exception as e:
        if guard.expired:
            raise websocket.WebSocketTimeoutException("WebSocket opening timed out") from e
        raise
    if guard.expired:
        # Done just as the deadline struck: the socket is already shut.
        ws.shutdown()  # type: ignore[no-untyped-call]
        raise websocket.WebSocketTimeoutException("WebSocket opening timed out")
    return ws


def _poller(ws: websocket.WebSocket) -> Optional[select.poll]:
    # poll, unlike select, works for descriptors above FD_SETSIZE; where it
    # is missing (Windows) the prompt acknowledgements are simply skipped.
    if not hasattr(select, "poll") or ws.sock is None:
        return None
    poller = select.poll()
    poller.register(ws.sock, select.POLLIN)
    return poller


# The smallest timeout handed to the socket: zero would make it
# non-blocking, which websocket-client treats differently.
_MIN_TIMEOUT = 0.001
# Time allowed for the rest of a frame whose start is already in, when
# reading what arrived while idle.
_DRAIN_TIMEOUT = 1.0
# Frames read at most by one drain: a server that never stops sending must
# not keep the housekeeper from the other sockets.
_DRAIN_FRAMES = 100
_KEEPALIVE_SEND_TIMEOUT = 2.0


class KernelSocket:
    """One kernel WebSocket connection.

    Parameters
    ----------
    ws
        Open websocket-client connection to ``api/kernels/<id>/channels``.
    user
        User the connection is for (for exceptions).
    logger
        Logger to use.
    max_message_size
        Largest message accepted, in bytes, or `None`.
    acks
        How to acknowledge messages early while a reply is awaited (see
        `recv` and `AckPolicy`).
    keepalive_interval
        Seconds between unsolicited pong frames while idle, or `None` for no
        keepalive. jupyter_server closes a socket that has not answered its
        pings for a while, and websocket-client answers pings only while
        reading; a pong frame resets the server's timer. Unless `None`, the
        process's housekeeping thread (`~._housekeeping.Housekeeper`) also
        answers the server's pings while no call reads the socket.
    claimed
        Hold `io_lock` for the calling thread from the start (a socket
        opened again in the middle of a call).
    """

    def __init__(
        self,
        ws: websocket.WebSocket,
        *,
        user: str,
        logger: Logger,
        keepalive_interval: Optional[float],
        max_message_size: Optional[int] = None,
        acks: AckPolicy = DEFAULT_ACKS,
        claimed: bool = False,
    ) -> None:
        self._ws = ws
        self._user = user
        self._logger = logger
        self._max_size = max_message_size
        self._acks = acks
        self._acks_active = acks.active
        # An ACK for the next recv to send early before it waits (see recv).
        self._ack_owed = False
        # The socket below our buffering, for TCP_QUICKACK.
        self._raw_sock = ws.sock
        if ws.sock is not None and not isinstance(ws.sock, _DeadlineSocket):
            ws.sock = _DeadlineSocket(ws.sock)  # type: ignore[assignment]
        # Frames after the handshake are read and written here (_frames),
        # on the socket websocket-client opened.
        self._sock: Optional[_DeadlineSocket] = ws.sock  # type: ignore[assignment]
        self._frames = FrameReader(self._sock, max_message_size) if self._sock else None
        self._poll = _poller(ws)
        # What replies to execute took on this connection, and where the
        # one awaited began (see begin_reply).
        self._reply_floor = ReplyFloor()
        self._reply_start: Optional[int] = None
        self.subprotocol = ws.getsubprotocol()
        self.is_v1 = self.subprotocol == V1_SUBPROTOCOL
        # Held by the call that reads; the housekeeping thread stays away
        # then, since the reader answers the server's pings itself.
        # Reentrant: a call that gives up closes the socket it holds.
        self.io_lock = threading.RLock()
        # Whether the housekeeper's watch is off: a call took the socket
        # while it was watched, or it became readable while a call held it.
        # The housekeeper watches it again once idle (see release).
        self.parked = False
        # When the last call let the socket go (time.monotonic()).
        self.released_at = 0.0
        # Orders `parked` and the watch between the housekeeper and the call
        # that lets the socket go (see `release`).
        self.watch_lock = threading.Lock()
        self._fd = ws.sock.fileno() if ws.sock is not None else -1
        # websocket-client locks frame writes only when the connection was
        # made with enable_multithread; an interrupt from another thread, the
        # keepalive and the pongs recv sends for pings must never interleave.
        if not isinstance(getattr(ws, "lock", None), type(threading.Lock())):
            ws.lock = threading.Lock()
        # Set when the connection itself failed (reset, closed without a
        # close frame, closed with a code that invites a reconnect), as
        # opposed to a frame the client refused.
        self.dropped = False
        # Whether a message came on this connection (see KernelLink.reconnect).
        self.heard = False
        self._stop = threading.Event()
        self._aborted: Optional[NubladoError] = None
        # Whether the housekeeper watched the socket until the current call
        # took it (see drain); set by claim, cleared by release.
        self._watched = False
        if claimed:
            self.io_lock.acquire()
        self._housekept = keepalive_interval is not None
        if self._housekept:
            HOUSEKEEPER.add(self, keepalive_interval)

    def fileno(self) -> int:
        """Return the socket's file descriptor (-1 without a socket)."""
        return self._fd

    def claim(self) -> None:
        """Take `io_lock` for a call, and keep the housekeeper's watch off meanwhile.

        The call reads every frame itself; left armed, the watch would wake
        the housekeeping thread once per call only for it to find the socket
        in use (a thread switch per call, which adds up over many sessions).
        """
        self.io_lock.acquire()
        if self._housekept:
            self._watched = HOUSEKEEPER.disarm(self)

    def release(self) -> None:
        """Let go of `io_lock` after a call, and let the housekeeper watch again.

        The housekeeper re-arms its watch once the socket has been idle a
        moment (`._housekeeping.REARM_DELAY`), so that calls one after
        another leave the watch alone.
        """
        # The housekeeper's own drains while idle must read.
        self._watched = False
        if not self._housekept:
            self.io_lock.release()
            return
        # Under the watch lock, which the housekeeper holds while it finds
        # the socket busy and parks it: either it sees the socket free, or
        # this sees it parked. (Otherwise a socket parked just after the
        # check would stay unwatched while idle.)
        with self.watch_lock:
            self.released_at = time.monotonic()
            self.io_lock.release()
            parked = self.parked
        if parked:
            HOUSEKEEPER.hand_back(self)

    @property
    def connected(self) -> bool:
        """Whether the connection is still open."""
        return bool(self._ws.connected) and not self._stop.is_set()

    def _error(self, message: str, *, code: Optional[int] = None) -> NubladoWebSocketError:
        if self._aborted is not None:
            # The failure is the abort's doing: report that instead.
            raise self._aborted
        return NubladoWebSocketError(message, self._user, code=code)

    def abort(self, error: NubladoError) -> None:
        """End a read or write in flight from another thread, with ``error``.

        The socket is shut down under the blocked call, which then raises
        ``error``; so does every later read or write. Closing is left to
        the owner.
        """
        self._aborted = error
        self.cut()

    def _dropped(self, message: str, *, code: Optional[int] = None) -> NubladoWebSocketError:
        self.dropped = True
        error = self._error(message, code=code)
        error.dropped = True
        return error

    def send(self, msg: KernelMessage, timeout: Optional[float]) -> None:
        """Send one message, waiting at most ``timeout`` seconds.

        Raises
        ------
        NubladoWebSocketError
            The connection is closed or broken, or sending timed out.
        """
        # Whatever this frame is, the ACK of what came before rides it.
        self._ack_owed = False
        try:
            if self.is_v1:
                frame = encode_frame(OPCODE_BINARY, encode_v1(msg))
            else:
                frame = encode_frame(OPCODE_TEXT, encode_legacy(msg).encode())
        except ValueError as e:
            # Only JSON encoding raises it (a NaN in content).
            raise NubladoProtocolError(f"Cannot encode message: {e}", self._user) from e
        try:
            self._write(frame, None if timeout is None else max(timeout, _MIN_TIMEOUT))
        except socket.timeout as e:
            raise self._error("Timed out sending to the kernel") from e
        except OSError as e:
            raise self._dropped(f"Sending failed: {connection_failure(e)}") from e

    def _write(self, frame: bytes, timeout: Optional[float]) -> None:
        """Write one frame whole; frames from several threads never interleave."""
        sock = self._sock
        if sock is None or not self._ws.connected:
            raise ConnectionResetError("the connection is closed")
        with self._ws.lock:
            sock.settimeout(timeout)
            sock.sendall(frame)

    def recv(self, timeout: float, *, ack: bool = False) -> Optional[KernelMessage]:
        """Read one frame, waiting at most ``timeout`` seconds.

        With ``ack`` (used while a reply is awaited), a data frame leaves an
        early ACK owed: the next `recv` sends it before it waits, if no more
        data is waiting by then, as the session's `AckPolicy` says (a pong
        frame or ``TCP_QUICKACK``, while few calls are in flight). The
        kernel WebSocket leaves Nagle's algorithm on, so the server holds
        each small message until the previous one is acknowledged, and TCP
        delays that ACK by up to 40 ms (see `._acks`). Sent only when the
        reader is about to wait, it goes out only when a stall is possible:
        not during a burst of output (data waiting), not after the last
        message of a reply (no further `recv`), and not when a frame was
        sent since (`send`: the ACK rode that one).

        Returns
        -------
        KernelMessage or None
            The message, or `None` when the time passed or the frame was a
            control frame (ping or pong).

        Raises
        ------
        NubladoWebSocketError
            The server closed the connection or it broke.
        NubladoProtocolError
            The frame could not be decoded.
        """
        if self._ack_owed:
            self._ack_owed = False
            # The policy first: the idle check is a system call.
            if self._acks.due() and self._idle():
                self._ack_early()
        sock, frames = self._sock, self._frames
        if sock is None or frames is None:
            raise self._dropped("Connection closed unexpectedly (no close frame)")
        try:
            sock.settimeout(max(timeout, _MIN_TIMEOUT))
            opcode, data = frames.read()
        except socket.timeout:
            return None
        except FrameTooLargeError as e:
            # The rest of the frame is still on the wire, and reading it is
            # what the limit is for: drop the connection (no close
            # handshake, which would read on).
            self._ws.shutdown()  # type: ignore[no-untyped-call]
            raise self._error(
                f"Message of {e.size} bytes exceeds the limit of {self._max_size}"
            ) from None
        except FrameError as e:
            raise self._error(
                f"Connection failed: the server broke the WebSocket framing ({e})"
            ) from e
        except EOFError as e:
            raise self._dropped("Connection closed unexpectedly (no close frame)") from e
        except OSError as e:
            raise self._dropped(f"Connection lost: {connection_failure(e)}") from e
        if opcode == OPCODE_PING:
            # Answered at once, as RFC 6455 asks; the server's ping timeout
            # counts on it.
            self._control(OPCODE_PONG, bytes(data))
            return None
        if opcode == OPCODE_PONG:
            return None
        if opcode == OPCODE_CLOSE:
            # Answer the close, then report it.
            self._control(OPCODE_CLOSE, bytes(data[:2]))
            raise self._close_error(bytes(data))
        self.heard = True
        if ack and self._acks_active:
            self._ack_owed = True
        if self._max_size is not None and len(data) > self._max_size:
            raise self._error(f"Message of {len(data)} bytes exceeds the limit of {self._max_size}")
        if opcode == OPCODE_BINARY:
            # A server behind a proxy that lost the subprotocol reply may
            # still speak v1; its frames start with a small little-endian
            # count, legacy binary frames with a big-endian one.
            if self.is_v1 or data[:1] != b"\0":
                split = split_v1(data)
                # The frame's bytes go before the JSON is parsed: a large
                # output is then held twice at most, not three times.
                del data
                return split.parse()
            return decode_legacy(data)
        if opcode == OPCODE_TEXT:
            try:
                text = data.decode()
            except UnicodeDecodeError as e:
                raise NubladoProtocolError("Text frame is not UTF-8", self._user) from e
            return decode_legacy(text)
        return None

    def begin_reply(self, code: str) -> None:
        """Note that the reply to an ``execute_request`` for ``code`` is awaited from now.

        While the session's `AckPolicy` sends no early ACK (many calls in
        flight, or early ACKs off), the reads until the reply's learned
        floor of bytes has come wake once for all of it (see `._wakeups`).
        """
        sock = self._sock
        if sock is None:
            return
        self._reply_start = sock.position
        if self._acks_active and self._acks.due():
            return
        hint = self._reply_floor.hint(code)
        if hint is not None:
            sock.wake_after = sock.received + hint

    def end_reply(self, code: str, *, whole: bool) -> None:
        """Note that the awaited reply ended; a ``whole`` one teaches its size."""
        sock, start = self._sock, self._reply_start
        self._reply_start = None
        if sock is None:
            return
        sock.wake_after = 0
        if whole and start is not None:
            self._reply_floor.learn(sock.position - start, code)

    def drain(self) -> None:
        """Read whatever arrived while no call was reading; never raises.

        Called before a call starts: it answers the server's pings, drops
        stray messages no call awaits, and finds a connection that dropped
        while idle (`dropped`), so that the call reconnects before it sends
        rather than sending into a dead socket.

        Nothing to do when the housekeeper watched the socket until this
        call took it: it read what came, and whatever is still on its way
        the call reads and drops like any stray message. The check it saves
        is a system call per call, and with many sessions busy in threads
        each system call can hand the GIL to another thread and back. A
        socket whose last call ended a moment ago is not watched yet (see
        `release`) and is checked: one system call, where turning the watch
        on and off again would have cost two.
        """
        if self._watched:
            return
        for _ in range(_DRAIN_FRAMES):
            if not self._waiting():
                return
            try:
                self.recv(_DRAIN_TIMEOUT)
            except (NubladoWebSocketError, NubladoProtocolError):
                return

    def _waiting(self) -> bool:
        """Whether received bytes are known to be waiting (a frame, or EOF)."""
        sock = self._sock
        if sock is None or self._poll is None:
            return False
        pending = getattr(sock, "pending", None)
        if pending is not None and pending() > 0:
            return True
        return bool(self._poll.poll(0))

    def _idle(self) -> bool:
        """Whether no received byte is waiting in any buffer or the socket."""
        sock = self._sock
        if sock is None or self._poll is None:
            return False
        pending = getattr(sock, "pending", None)  # TLS: decrypted, unread
        if pending is not None and pending() > 0:
            return False
        return not self._poll.poll(0)

    def _close_error(self, data: bytes) -> NubladoWebSocketError:
        code: Optional[int] = None
        reason = ""
        if len(data) >= 2:
            (code,) = struct.unpack("!H", data[:2])
            reason = data[2:].decode(errors="replace")
        detail = f"code {code}" if code is not None else "no code"
        if reason:
            detail += f", {reason}"
        message = f"Server closed the connection ({detail})"
        if code is None or code in DROP_CLOSE_CODES:
            return self._dropped(message, code=code)
        return self._error(message, code=code)

    def _ack_early(self) -> None:
        """Acknowledge what was received, as the policy says."""
        if self._acks.method == "pong":
            self.pong()
        elif self._raw_sock is not None:
            quickack(self._raw_sock)

    def pong(self) -> None:
        """Send an unsolicited pong frame; errors are left for the next read."""
        self._control(OPCODE_PONG, b"")

    def _control(self, opcode: int, payload: bytes) -> None:
        # A control frame in the thread's current deadline; a failure shows
        # at the next read.
        with contextlib.suppress(OSError):
            self._write(encode_frame(opcode, payload), _KEEPALIVE_SEND_TIMEOUT)

    def keepalive(self) -> None:
        """Send the keepalive pong (by the housekeeper, holding `io_lock`)."""
        if self._ws.connected and not self._stop.is_set():
            self.pong()

    def cut(self) -> None:
        """Shut the connection down from any thread; never raises.

        A read in progress in another thread ends at once (with
        `NubladoWebSocketError`), as does every later read or send. The
        thread using the connection still calls `close` to release it.
        """
        self._stop.set()
        # Below TLS: SSLSocket.shutdown also drops the TLS state, which the
        # blocked reader may still be using (see _cancel.shutdown_socket).
        sock = self._ws.sock
        shutdown_socket(getattr(sock, "_sock", sock))

    def close(self, timeout: float = 1.0) -> None:
        """Stop the keepalive and close the connection.

        Waits at most ``timeout`` seconds for the server's close frame; never
        raises.
        """
        self._stop.set()
        if self._housekept:
            HOUSEKEEPER.remove(self)
        # Wait for a read the housekeeper may have in progress (bounded:
        # the rest of one frame); the calling thread may hold the lock.
        locked = self.io_lock.acquire(timeout=_DRAIN_TIMEOUT + 1.0)
        try:
            self._ws.close(timeout=timeout)
        except Exception:
            self._logger.debug("Error closing WebSocket", exc_info=True)
        finally:
            self._ws.shutdown()  # type: ignore[no-untyped-call]
            if locked:
                self.io_lock.release()
