"""One housekeeping thread for every idle session: threads, sockets, pings.

Many sessions would need many kernels, which a 2-core machine starts
slowly; the WebSocket side is what the housekeeping thread looks after, so
here one kernel serves many WebSockets, each its own `JupyterLabSession`
(as a caller who opens the socket itself would make one), on a server that
pings every 2 s and closes a socket that has not answered for 4 s.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import threading
import time
import uuid
from typing import Iterator, List, Tuple

import pytest
import websocket

from nublado_sync import JupyterLabSession, NubladoWebSocketError
from nublado_sync._housekeeping import Housekeeper
from nublado_sync._transport import KernelSocket

from ..jupyter_servers import JupyterServer, running_jupyter_server
from .conftest import lab, seconds

pytestmark = pytest.mark.integration

PING_INTERVAL = 2.0
PING_TIMEOUT = 4.0
IDLE = 13.0
"""Seconds idle: three of the server's ping timeouts and then some."""
SESSIONS = 50


@pytest.fixture(scope="module")
def pinging_server() -> Iterator[JupyterServer]:
    with running_jupyter_server(ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT) as server:
        yield server


def housekeepers() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "nublado-housekeeping" and t.is_alive()]


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextlib.contextmanager
def sessions_on_one_kernel(
    server: JupyterServer, count: int, **options: object
) -> Iterator[Tuple[JupyterLabSession, List[JupyterLabSession]]]:
    """One managed session and ``count - 1`` more WebSockets to its kernel."""
    extra: List[JupyterLabSession] = []
    # Unsolicited pongs only every minute: surviving the 4 s ping timeout
    # is the ping answers' doing.
    options.setdefault("keepalive_interval", datetime.timedelta(seconds=60))
    manager = lab(server, **options)
    with manager as first:
        kernel = manager.kernel_id
        try:
            for _ in range(count - 1):
                url = f"{server.ws_url}api/kernels/{kernel}/channels?session_id={uuid.uuid4().hex}"
                ws = websocket.create_connection(
                    url,
                    header={"Authorization": f"token {server.token}"},
                    subprotocols=["v1.kernel.websocket.jupyter.org"],
                    timeout=30,
                )
                extra.append(
                    JupyterLabSession(
                        username="tester",
                        session_id="extra",
                        socket=ws,
                        **options,  # type: ignore[arg-type]
                    )
                )
            yield first, extra
        finally:
            for session in extra:
                session.close()


def test_idle_sessions_share_one_thread_and_answer_pings(pinging_server: JupyterServer) -> None:
    threads_before = threading.active_count()
    fds_before = fd_count()
    with sessions_on_one_kernel(pinging_server, SESSIONS) as (first, extra):
        every = [first, *extra]
        # N sessions: N WebSockets, one HTTP connection, and the
        # housekeeper's epoll and wake-up pair; one thread for them all.
        assert fd_count() - fds_before <= SESSIONS + 4
        assert threading.active_count() - threads_before <= 1
        assert len(housekeepers()) == 1
        start = time.monotonic()
        time.sleep(IDLE)  # the idleness under test, not synchronisation
        idle = time.monotonic() - start
        assert idle >= IDLE
        for number, session in enumerate(every):
            out = session.run_python(f"print({number})", timeout=seconds(30))
            assert out == f"{number}\n", f"session {number} after {idle:.1f} s idle"
        assert threading.active_count() - threads_before <= 1
    # Closing the last session ends the thread.
    assert housekeepers() == []
    assert threading.active_count() == threads_before
    # Nothing left open (an earlier test's socket may have been collected meanwhile).
    assert fd_count() <= fds_before


def test_without_housekeeping_idle_sessions_die(pinging_server: JupyterServer) -> None:
    # The control: the same server closes sockets nobody answers for.
    with sessions_on_one_kernel(pinging_server, 3, keepalive_interval=None, reconnect=None) as (
        first,
        extra,
    ):
        assert housekeepers() == []
        time.sleep(IDLE)  # the idleness under test
        for session in [first, *extra]:
            with pytest.raises(NubladoWebSocketError):
                session.run_python("print('alive')", timeout=seconds(10))


def test_a_call_on_a_watched_socket_starts_without_a_check(
    stock_server: JupyterServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The housekeeper read whatever came while the socket was idle, so a
    # call starts without asking the socket (a system call per call). A
    # socket nobody watched is still checked before each call, as is one
    # whose last call ended a moment ago (not watched again yet).
    checks: List[bool] = []
    real_waiting = KernelSocket._waiting

    def waiting(self: KernelSocket) -> bool:
        checks.append(True)
        return real_waiting(self)

    monkeypatch.setattr(KernelSocket, "_waiting", waiting)
    with lab(stock_server) as session:
        for number in range(3):
            assert watched_again(session._link.socket)
            assert session.run_python(f"print({number})") == f"{number}\n"
        assert checks == []
        session.run_python("pass")
        assert checks == [True]
    with lab(stock_server, keepalive_interval=None) as session:
        for number in range(3):
            assert session.run_python(f"print({number})") == f"{number}\n"
    assert len(checks) >= 3


def test_a_socket_parked_as_its_call_ends_is_watched_again(stock_server: JupyterServer) -> None:
    # The housekeeper parks a socket it finds in use; the call that lets it
    # go must then see it parked and watch it again, or the idle socket
    # would go unwatched (pings unanswered) until its next call. Here the
    # test plays the housekeeper: it holds the socket's watch lock while the
    # call lets go, and parks the socket it still finds in use.
    with lab(stock_server) as session:
        sock = session._link.socket
        claimed, go, released = threading.Event(), threading.Event(), threading.Event()

        def call() -> None:
            sock.claim()
            claimed.set()
            go.wait(5)
            sock.release()
            released.set()

        caller = threading.Thread(target=call)
        caller.start()
        assert claimed.wait(5)
        with sock.watch_lock:
            go.set()
            # Wrong code would let go within this bound; right code waits
            # for the lock however long it takes.
            assert not released.wait(0.5)
            assert not sock.io_lock.acquire(blocking=False)  # still in use
            sock.parked = True
        caller.join(5)
        assert released.is_set()
        # Handed back: the housekeeper watches it again once it has been
        # idle a moment (REARM_DELAY).
        assert watched_again(sock)
        assert session.run_python("print(1)") == "1\n"


def watched_again(sock: KernelSocket, timeout: float = 10.0) -> bool:
    """Whether the housekeeper re-arms the socket's watch within ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while sock.parked:
        if time.monotonic() > end:
            return False
        time.sleep(0.01)  # polling a condition, with a deadline
    return True


def test_calls_one_after_another_leave_the_watch_alone(
    stock_server: JupyterServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Turning the watch off when a call takes the socket and on when it
    # lets go costs two system calls per call. A session that runs one call
    # after another keeps it off, and the socket is watched again once idle.
    changes: List[int] = []
    real_watch = Housekeeper._watch

    def watch(self: Housekeeper, sock: KernelSocket, **kwargs: object) -> None:
        changes.append(sock.fileno())
        real_watch(self, sock, **kwargs)  # type: ignore[arg-type]

    calls = 10
    with lab(stock_server) as session:
        sock = session._link.socket
        monkeypatch.setattr(Housekeeper, "_watch", watch)
        for number in range(calls):
            assert session.run_python(f"print({number})") == f"{number}\n"
        # Re-arming after every call would have made 2 * calls changes.
        assert len(changes) < calls
        assert watched_again(sock)
        assert session.run_python("print('again')") == "again\n"
