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
it, with no system call. A call that takes an idle socket turns the watch
off itself (parks it), so that the thread is not woken for every call.
When the call lets the socket go, the thread re-arms the watch once the
socket has stayed idle for ``REARM_DELAY``: a session that runs one call
after another then changes the watch not at all, where re-arming at once
would cost two system calls per call, each handing the GIL to another
thread and back. A parked socket is thus never reported again while in
use, and never forgotten once idle. Parking and handing a socket back are
ordered by each socket's own ``watch_lock``, not by one lock of the
thread's: every call of every session passes through them, and a lock
shared by all would make busy threads queue behind each other's system
calls.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import itertools
import select
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Deque, Dict, List, Optional, Tuple

if TYPE_CHECKING:
    from ._transport import KernelSocket

__all__ = ["HOUSEKEEPER", "REARM_DELAY", "Housekeeper"]

_HAS_EPOLL = hasattr(select, "epoll")
_WATCH = (select.EPOLLIN | select.EPOLLONESHOT) if _HAS_EPOLL else 0
# A socket in use: no readiness events. One-shot still, since epoll reports
# a hang-up or an error even unasked, and must not report it over and over.
_OFF = select.EPOLLONESHOT if _HAS_EPOLL else 0

REARM_DELAY = 0.1
"""Seconds a socket a call let go stays idle before its watch is re-armed.

Long enough to span the gap between one call and the next, short against
any server's ping timeout (seconds): what arrives meanwhile waits for the
watch, or for the next call, which reads it."""


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
        # Sockets calls let go while parked, to re-arm once idle: appended
        # by the calls' threads without a lock (a deque's append is atomic),
        # taken by the thread, which keeps those still too recently used.
        self._handed_back: Deque[KernelSocket] = collections.deque()
        self._to_rearm: Dict[int, KernelSocket] = {}
        # Whether the thread is waking every REARM_DELAY to re-arm; while it
        # is not, a socket handed back wakes it.
        self._sweeping = False

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
        """Stop watching ``sock`` while a call holds it; `hand_back` has it watched again.

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

    def hand_back(self, sock: KernelSocket) -> None:
        """Watch ``sock`` again once idle for `REARM_DELAY`, after a call let it go parked.

        Makes no system call unless the thread must be woken for it.
        """
        self._handed_back.append(sock)
        # After the append: the thread clears the flag before it looks at
        # the queue a last time, so either it sees the socket or this sees
        # the flag down.
        if not self._sweeping:
            self._wake()

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
                if self._sweeping:
                    timeout = min(timeout, REARM_DELAY)
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
            self._rearm_idle()
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
        self._handed_back.clear()
        self._to_rearm.clear()
        self._sweeping = False
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

    def _rearm_idle(self) -> None:
        """Re-arm the watch of sockets handed back and idle for `REARM_DELAY`."""
        while self._handed_back:
            sock = self._handed_back.popleft()
            self._to_rearm[id(sock)] = sock
        now = time.monotonic()
        for key, sock in list(self._to_rearm.items()):
            with sock.watch_lock:
                if self._members.get(key) is not sock or not sock.parked:
                    del self._to_rearm[key]
                    continue
                if not sock.io_lock.acquire(blocking=False):
                    # In a call again: letting go hands it back anew.
                    del self._to_rearm[key]
                    continue
                try:
                    if now - sock.released_at < REARM_DELAY:
                        continue  # used a moment ago: likely again soon
                    del self._to_rearm[key]
                    sock.parked = False
                    self._watch(sock, register=False)
                finally:
                    sock.io_lock.release()
        if self._to_rearm:
            self._sweeping = True
            return
        # Down first, then a last look (see hand_back).
        self._sweeping = False
        if self._handed_back:
            self._sweeping = True

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
