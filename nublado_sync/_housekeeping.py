"""One thread that looks after every idle kernel WebSocket of the process.

A session's socket needs care while no call reads it: the server's pings
must be answered (websocket-client answers them only while reading) or the
server closes the socket after its ping timeout, a pong now and then keeps
proxies that count silence from dropping it, and a drop should be noticed
before the next call sends into a dead socket. One thread does this for all
sessions: a heap of keepalive times and, where the platform has ``epoll``,
a readiness watch on every socket.

Sharing a socket with the caller's thread without racing its reads rests
on two rules. The thread touches a socket only while holding its
``io_lock``, taken without waiting (a call holds it for its whole length,
and reads and answers pings itself). And each socket is watched one event
at a time (``EPOLLONESHOT``): an event that finds the socket in use parks
it, with no system call, and the call re-arms the watch when it lets the
socket go. A call that takes an idle socket turns the watch off itself
(parks it), so that the thread is not woken for every call. A parked
socket is thus never reported again while in use, and never forgotten once
idle. Parking and re-arming are ordered by each socket's own
``watch_lock``, not by one lock of the thread's: every call of every
session passes through them, and a lock shared by all would make busy
threads queue behind each other's system calls.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import select
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

if TYPE_CHECKING:
    from ._transport import KernelSocket

__all__ = ["HOUSEKEEPER", "Housekeeper"]

_HAS_EPOLL = hasattr(select, "epoll")
_WATCH = (select.EPOLLIN | select.EPOLLONESHOT) if _HAS_EPOLL else 0
# A socket in use: no readiness events. One-shot still, since epoll reports
# a hang-up or an error even unasked, and must not report it over and over.
_OFF = select.EPOLLONESHOT if _HAS_EPOLL else 0


class Housekeeper:
    """The shared housekeeping thread; started with the first socket, ended with the last."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: Dict[int, KernelSocket] = {}
        # The socket each watched descriptor belongs to (the newest, should
        # a closed socket's number be reused before it was removed).
        self._by_fd: Dict[int, KernelSocket] = {}
        self._thread: Optional[threading.Thread] = None
        self._epoll: Optional[Any] = None
        self._wake_r: Optional[socket.socket] = None
        self._wake_w: Optional[socket.socket] = None
        # (due, tiebreak, socket id, interval): the next keepalive pongs.
        self._timers: List[Tuple[float, int, int, float]] = []
        self._order = itertools.count()

    @property
    def thread(self) -> Optional[threading.Thread]:
        """The thread while any socket is registered."""
        return self._thread

    def add(self, sock: KernelSocket, keepalive: Optional[float]) -> None:
        """Look after ``sock`` from now on, pinging every ``keepalive`` seconds."""
        with self._lock:
            self._members[id(sock)] = sock
            if sock.fileno() >= 0:
                self._by_fd[sock.fileno()] = sock
            if keepalive is not None and keepalive > 0:
                due = time.monotonic() + keepalive
                heapq.heappush(self._timers, (due, next(self._order), id(sock), keepalive))
            if self._thread is None:
                self._start()
            sock.parked = False
            self._watch(sock, register=True)
            self._wake()

    def remove(self, sock: KernelSocket) -> None:
        """Stop looking after ``sock``; the thread ends with the last socket."""
        with self._lock, sock.watch_lock:
            if self._members.pop(id(sock), None) is None:
                return
            if self._by_fd.get(sock.fileno()) is sock:
                del self._by_fd[sock.fileno()]
            if self._epoll is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._epoll.unregister(sock.fileno())
            thread = self._thread if not self._members else None
            self._wake()
        if thread is None or thread is threading.current_thread():
            return
        # Wait for the thread to end, unless another session came along
        # meanwhile and keeps it going.
        while thread.is_alive():
            thread.join(0.1)
            with self._lock:
                if self._members:
                    return

    def disarm(self, sock: KernelSocket) -> bool:
        """Stop watching ``sock`` while a call holds it; `rearm` watches it again.

        Returns
        -------
        bool
            Whether the socket was watched until now: anything that came
            while it was idle has been read here, unless its event is still
            on its way.
        """
        # The socket's own lock (see the module docstring): the watch change
        # is a system call, which lets go of the GIL.
        with sock.watch_lock:
            if sock.parked or id(sock) not in self._members:
                return False
            sock.parked = True
            self._watch(sock, register=False, events=_OFF)
            return self._epoll is not None

    def rearm(self, sock: KernelSocket) -> None:
        """Watch ``sock`` again after a call released it (if an event parked it)."""
        with sock.watch_lock:
            if not sock.parked or id(sock) not in self._members:
                return
            sock.parked = False
            self._watch(sock, register=False)

    # The thread

    def _start(self) -> None:
        if _HAS_EPOLL:
            self._epoll = select.epoll()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        if self._epoll is not None:
            self._epoll.register(self._wake_r.fileno(), select.EPOLLIN)
        self._thread = threading.Thread(target=self._run, name="nublado-housekeeping", daemon=True)
        self._thread.start()

    def _watch(self, sock: KernelSocket, *, register: bool, events: int = _WATCH) -> None:
        # Called with the socket's watch lock held (and for a new socket the
        # housekeeper's), so that it is not removed meanwhile.
        epoll = self._epoll
        fd = sock.fileno()
        if epoll is None or fd < 0:
            return
        with contextlib.suppress(OSError, ValueError):
            if register:
                epoll.register(fd, events)
            else:
                epoll.modify(fd, events)

    def _wake(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._members:
                    self._finish()
                    return
                timeout = self._next_timeout()
                epoll, wake_r = self._epoll, self._wake_r
            if epoll is not None:
                events = epoll.poll(timeout)
            else:
                events = []
                assert wake_r is not None
                select.select([wake_r], [], [], timeout)
            for fd, _ in events:
                if wake_r is not None and fd == wake_r.fileno():
                    with contextlib.suppress(OSError):
                        wake_r.recv(4096)
                    continue
                self._readable(fd)
            self._keepalives()

    def _finish(self) -> None:
        # Called with the lock held, once no socket is left.
        if self._epoll is not None:
            self._epoll.close()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._epoll = self._wake_r = self._wake_w = None
        self._timers.clear()
        self._by_fd.clear()
        self._thread = None

    def _next_timeout(self) -> float:
        if not self._timers:
            return 3600.0
        return max(self._timers[0][0] - time.monotonic(), 0.0)

    def _readable(self, fd: int) -> None:
        with self._lock:
            sock = self._by_fd.get(fd)
        if sock is None:
            return
        with sock.watch_lock:
            if id(sock) not in self._members:
                return
            # Decided under the lock that `KernelSocket.release` takes: a
            # call that lets the socket go either sees it parked, or finds
            # it free here.
            if not sock.io_lock.acquire(blocking=False):
                sock.parked = True
                return
        try:
            sock.drain()
        finally:
            sock.io_lock.release()
        if sock.connected and not sock.dropped:
            with sock.watch_lock:
                # Not when a call took the socket meanwhile (it disarmed
                # the watch; letting go re-arms it).
                if id(sock) in self._members and not sock.parked:
                    self._watch(sock, register=False)

    def _keepalives(self) -> None:
        now = time.monotonic()
        due: List[Tuple[KernelSocket, float]] = []
        with self._lock:
            while self._timers and self._timers[0][0] <= now:
                _, _, key, interval = heapq.heappop(self._timers)
                sock = self._members.get(key)
                if sock is None:
                    continue
                due.append((sock, interval))
                heapq.heappush(self._timers, (now + interval, next(self._order), key, interval))
        for sock, _ in due:
            # Skip a beat rather than wait while a call reads: its reads
            # answer the server's pings themselves.
            if sock.io_lock.acquire(blocking=False):
                try:
                    sock.keepalive()
                finally:
                    sock.io_lock.release()


HOUSEKEEPER = Housekeeper()
"""The process's one housekeeper."""
