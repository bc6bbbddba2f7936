"""Against real servers: failures leak nothing, resources stay flat, threads never cross.

- The failure matrix (socket open failure, exception in the body, timeout,
  kernel death, the server closing the socket, a real SIGINT to a child
  process running the client) leaves no session and no kernel on stock and
  documents servers (the ``server`` fixture checks after each test).
- Open/close cycles and thousands of executions keep the client's file
  descriptors and threads flat and its memory bounded.
- Sessions used from many threads at once, and clients of several hub users
  at once, each get exactly their own output; one session shared by two
  threads refuses the second with `NubladoUsageError`.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import psutil  # type: ignore[import-untyped,unused-ignore]
import pytest

from nublado_sync import (
    JupyterLabSession,
    NubladoClient,
    NubladoExecutionTimeoutError,
    NubladoImageByClass,
    NubladoKernelDiedError,
    NubladoUsageError,
    NubladoWebSocketError,
    open_lab_session,
)

from ..hub_testbed import TestHub
from ..jupyter_servers import JupyterServer
from ..rogue_kernel import closed_port, running_rogue_kernel
from ..tcp_proxy import TCPProxy, running_proxy
from .conftest import lab, seconds

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

# Measured figures, written out when NUBLADO_RELIABILITY_REPORT names a file
# (docs/reliability.rst quotes them).
FIGURES: Dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    path = os.environ.get("NUBLADO_RELIABILITY_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"leaks": FIGURES}) + "\n")


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def client_threads() -> List[threading.Thread]:
    """Live threads that are not a test server's."""
    return [
        t
        for t in threading.enumerate()
        if t.is_alive() and not t.name.startswith(("rogue-", "jupyter-server-log"))
    ]


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


def proxied(server: JupyterServer, proxy: TCPProxy, **kwargs: Any) -> Any:
    manager = lab(server, **kwargs)
    manager._api._base_url = proxy.url()
    return manager


def target(server: JupyterServer) -> Tuple[str, int]:
    host, port = server.url.split("//")[1].rstrip("/").split(":")
    return host, int(port)


# The failure matrix


def _socket_open_failure(server: JupyterServer) -> None:
    manager = lab(server)
    dead = closed_port()
    manager._api.channels_url = (  # type: ignore[method-assign]
        lambda kernel, client: f"ws://127.0.0.1:{dead}/api/kernels/{kernel}/channels"
    )
    with pytest.raises(NubladoWebSocketError), manager:
        pass


def _exception_in_body(server: JupyterServer) -> None:
    with pytest.raises(RuntimeError), lab(server) as session:
        session.run_python("x = 1")
        raise RuntimeError("user code failed")


def _timeout(server: JupyterServer) -> None:
    with lab(server) as session, pytest.raises(NubladoExecutionTimeoutError):
        session.run_python("import time; time.sleep(60)", timeout=seconds(1))


def _server_drops_socket(server: JupyterServer) -> None:
    with (
        running_proxy(target(server)) as proxy,
        proxied(server, proxy, reconnect=None) as session,
        pytest.raises(NubladoWebSocketError),
    ):
        session.execute(
            "print('go', flush=True); import time; time.sleep(60)",
            on_output=lambda _: proxy.cut(),
            timeout=seconds(30),
        )


def _server_sends_close(server: JupyterServer) -> None:
    with running_proxy(target(server)) as proxy, proxied(server, proxy, reconnect=None) as session:
        with pytest.raises(NubladoWebSocketError) as info:
            session.execute(
                "print('go', flush=True); import time; time.sleep(60)",
                on_output=lambda _: proxy.send_close_frame(1001, b"going away"),
                timeout=seconds(30),
            )
        assert info.value.code == 1001
        # Let the session's DELETE through again.
        proxy.thaw()


def _keyboard_interrupt_in_callback(server: JupyterServer) -> None:
    def interrupt(_: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), lab(server) as session:
        session.execute("print('x', flush=True); import time; time.sleep(60)", on_output=interrupt)


FAILURES: Dict[str, Callable[[JupyterServer], None]] = {
    "socket-open-failure": _socket_open_failure,
    "exception-in-body": _exception_in_body,
    "timeout": _timeout,
    "server-drops-socket": _server_drops_socket,
    "server-sends-close-frame": _server_sends_close,
    "keyboard-interrupt": _keyboard_interrupt_in_callback,
}


@pytest.mark.parametrize("failure", list(FAILURES.values()), ids=list(FAILURES))
def test_failure_leaves_nothing(server: JupyterServer, failure: Callable[..., None]) -> None:
    server.sessions()  # warm the fixture's own connection before counting
    fds_before, threads_before = fds(), set(client_threads())
    failure(server)
    gc.collect()
    assert set(client_threads()) - threads_before == set()
    assert fds() <= fds_before
    # No session or kernel left: checked by the `server` fixture.


@pytest.mark.parametrize(
    "kind",
    [
        "stock",
        "documents",
    ],
)
def test_kernel_death_then_leave(request: pytest.FixtureRequest, kind: str) -> None:
    server: JupyterServer = request.getfixturevalue(f"{kind}_server")
    try:
        with lab(server) as session, pytest.raises(NubladoKernelDiedError):
            session.run_python("import os; os._exit(1)")
        assert wait_for_leftovers(server, 0) == ([], [])
    finally:
        server.delete_all()


CHILD = textwrap.dedent(
    """
    import datetime, logging, signal, sys
    sys.path.insert(0, {repo!r})

    # As in a terminal: a process started in the background by a
    # non-interactive shell inherits SIGINT ignored, and Python then installs
    # no KeyboardInterrupt handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import urllib3.connection

    # The package's own log on stderr, for the test's failure message.
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("nublado_sync").setLevel(logging.DEBUG)
    from nublado_sync import open_lab_session

    # Announce each request once it is on the wire, before its answer.
    _getresponse = urllib3.connection.HTTPConnection.getresponse
    def getresponse(self, *args, **kwargs):
        print("request sent", flush=True)
        return _getresponse(self, *args, **kwargs)
    urllib3.connection.HTTPConnection.getresponse = getresponse

    def show(output):
        print(output.get("text", ""), end="", flush=True)

    T = datetime.timedelta
    with open_lab_session(
        {url!r}, {token!r}, kernel_name="lsst", username="child", timeout=T(seconds=10)
    ) as session:
        session.execute(
            "print('started', flush=True); import time; time.sleep(120)", on_output=show
        )
    """
)


def run_child(server: JupyterServer, wait_for: str) -> str:
    """Run the client in a child process, SIGINT it once it printed ``wait_for``."""
    script = CHILD.format(repo=str(REPO), url=server.url, token=server.token)
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:
            if line == wait_for:
                break
        else:
            pytest.fail(f"the child ended without printing {wait_for!r}")
        child.send_signal(signal.SIGINT)
        try:
            # Cleanup is two DELETEs of at most 10 s each.
            _, stderr = child.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            _, stderr = child.communicate()
            pytest.fail(f"the client did not exit 30 s after SIGINT:\n{stderr[-4000:]}")
    assert child.returncode != 0
    assert server.token not in stderr
    return stderr


def test_sigint_to_child_while_running(server: JupyterServer) -> None:
    # The cell prints, then sleeps; Ctrl-C (a real SIGINT) ends the child,
    # whose session manager deletes the session on the way out.
    stderr = run_child(server, "started\n")
    assert "KeyboardInterrupt" in stderr
    assert (server.sessions(), server.kernels()) == ([], []), stderr[-4000:]
    # No session or kernel left: checked by the `server` fixture.


def wait_for_leftovers(server: JupyterServer, seconds_: float = 5.0) -> Tuple[list, list]:
    """Sessions and kernels that show up within a few seconds.

    A kernel the server was starting when the client vanished appears once
    it has started; there is nothing to wait on but the server's listing.
    """
    deadline = time.monotonic() + seconds_
    while True:
        found = (server.sessions(), server.kernels())
        if found != ([], []) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.mark.parametrize("kind", ["stock", "documents"])
def test_sigint_to_child_while_creating(request: pytest.FixtureRequest, kind: str) -> None:
    # The SIGINT lands while POST api/sessions waits for its answer: it is
    # held until the answer is in, then the new session is deleted.
    server: JupyterServer = request.getfixturevalue(f"{kind}_server")
    try:
        stderr = run_child(server, "request sent\n")
        assert "KeyboardInterrupt" in stderr
        # Whether the signal came before or after the answer, nothing stays.
        assert wait_for_leftovers(server) == ([], [])
    finally:
        server.delete_all()


# Resources stay flat


def test_open_close_cycles_rogue() -> None:
    # The client's side of a session's life, many times over, against the
    # fake server (milliseconds a cycle): the same code as with a real lab.
    cycles, warmup = 300, 20
    with running_rogue_kernel("not-a-token") as rogue:

        def cycle() -> None:
            with lab_rogue(rogue.url) as session:
                assert session.run_python("print('x')") == "x\n"

        for _ in range(warmup):
            cycle()
        gc.collect()
        before = (fds(), len(client_threads()), rss())
        start = time.monotonic()
        for _ in range(cycles):
            cycle()
        elapsed = time.monotonic() - start
        gc.collect()
        after = (fds(), len(client_threads()), rss())
        assert rogue.live_sessions() == []
    FIGURES["rogue_cycles"] = {
        "cycles": cycles,
        "seconds": round(elapsed, 2),
        "fds": [before[0], after[0]],
        "threads": [before[1], after[1]],
        "rss_growth_mb": round((after[2] - before[2]) / 2**20, 2),
    }
    assert after[0] <= before[0]
    assert after[1] <= before[1]
    assert after[2] - before[2] < 20 * 2**20


def lab_rogue(url: str) -> Any:
    return open_lab_session(url, "not-a-token", timeout=seconds(5))


@pytest.mark.parametrize("kind", ["stock", "documents"])
def test_open_close_cycles_real(request: pytest.FixtureRequest, kind: str) -> None:
    server: JupyterServer = request.getfixturevalue(f"{kind}_server")
    cycles = 12  # a kernel start each, about a second
    server.sessions()
    with lab(server) as session:  # warm-up
        session.run_python("pass")
    gc.collect()
    before = (fds(), len(client_threads()), rss())
    start = time.monotonic()
    for _ in range(cycles):
        with lab(server) as session:
            assert session.run_python("print('x')") == "x\n"
    elapsed = time.monotonic() - start
    gc.collect()
    after = (fds(), len(client_threads()), rss())
    FIGURES[f"{kind}_cycles"] = {
        "cycles": cycles,
        "seconds": round(elapsed, 2),
        "fds": [before[0], after[0]],
        "threads": [before[1], after[1]],
        "rss_growth_mb": round((after[2] - before[2]) / 2**20, 2),
    }
    assert after[0] <= before[0]
    assert after[1] <= before[1]
    assert after[2] - before[2] < 20 * 2**20
    assert server.sessions() == []
    assert server.kernels() == []


@pytest.mark.parametrize("kind", ["stock", "documents"])
def test_many_executions_on_one_session(request: pytest.FixtureRequest, kind: str) -> None:
    server: JupyterServer = request.getfixturevalue(f"{kind}_server")
    executions, warmup = 1000, 50
    with lab(server) as session:
        for i in range(warmup):
            session.run_python(f"print({i})")
        gc.collect()
        before = (fds(), len(client_threads()), rss())
        start = time.monotonic()
        for i in range(executions):
            assert session.run_python(f"print({i})") == f"{i}\n"
        elapsed = time.monotonic() - start
        gc.collect()
        after = (fds(), len(client_threads()), rss())
    FIGURES[f"{kind}_executions"] = {
        "executions": executions,
        "seconds": round(elapsed, 2),
        "ms_each": round(1000 * elapsed / executions, 1),
        "fds": [before[0], after[0]],
        "threads": [before[1], after[1]],
        "rss_growth_mb": round((after[2] - before[2]) / 2**20, 2),
    }
    assert after[0] <= before[0]
    assert after[1] <= before[1]
    assert after[2] - before[2] < 20 * 2**20
    assert server.sessions() == []


# Concurrency


MARKER_CODE = "for i in range({n}):\n    print('{marker}', i)"


def expected_output(marker: str, n: int) -> str:
    return "".join(f"{marker} {i}\n" for i in range(n))


@pytest.mark.parametrize("kind", ["stock", "documents"])
def test_threads_with_own_sessions_get_own_output(
    request: pytest.FixtureRequest, kind: str
) -> None:
    server: JupyterServer = request.getfixturevalue(f"{kind}_server")
    threads, rounds, lines = 8, 3, 2000
    barrier = threading.Barrier(threads)
    results: Dict[int, List[str]] = {}
    errors: List[BaseException] = []

    def work(index: int) -> None:
        marker = f"thread{index}-{os.urandom(4).hex()}"
        try:
            with lab(server, username=f"t{index}") as session:
                barrier.wait(60)  # every thread runs at once
                outputs = [
                    session.run_python(MARKER_CODE.format(n=lines, marker=marker))
                    for _ in range(rounds)
                ]
            results[index] = [marker, *outputs]
        except BaseException as e:
            errors.append(e)
            barrier.abort()

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(180)
    assert errors == []
    assert len(results) == threads
    for marker, *outputs in results.values():
        for output in outputs:
            assert output == expected_output(marker, lines)
    assert server.sessions() == []
    assert server.kernels() == []


def race(session: JupyterLabSession, marker: str) -> Dict[int, Any]:
    """Two threads call one session at the same moment; return what each got."""
    barrier = threading.Barrier(2)
    outcomes: Dict[int, Any] = {}

    def call(index: int) -> None:
        barrier.wait(30)
        try:
            outcomes[index] = session.run_python(
                MARKER_CODE.format(n=500, marker=marker) + "\nimport time; time.sleep(0.5)",
                timeout=seconds(30),
            )
        except BaseException as e:
            outcomes[index] = e

    threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes


def test_shared_session_refuses_second_thread(server: JupyterServer) -> None:
    # One runs, the other is refused at once; the runner's output is whole.
    with lab(server) as session:
        for attempt in range(3):
            marker = f"shared{attempt}"
            outcomes = race(session, marker)
            refused = [o for o in outcomes.values() if isinstance(o, NubladoUsageError)]
            ran = [o for o in outcomes.values() if isinstance(o, str)]
            assert len(refused) == 1, outcomes
            assert ran == [expected_output(marker, 500)]
            assert "one thread at a time" in str(refused[0])
        assert session.run_python("print('still fine')") == "still fine\n"


def test_hub_users_concurrently(hub: TestHub) -> None:
    # Three users, each with a client in its own thread, through the whole
    # flow at once: each sees its own lab and its own output only.
    users = ["alice", "bob", "carol"]
    results: Dict[str, Any] = {}
    errors: Dict[str, BaseException] = {}

    def flow(user: str) -> None:
        marker = f"{user}-{os.urandom(4).hex()}"
        try:
            with NubladoClient(user, hub.tokens[user], hub_url=hub.url) as client:
                client.auth_to_hub()
                client.spawn_lab(NubladoImageByClass())
                client.wait_for_spawn(seconds(120))
                client.auth_to_lab()
                with client.lab_session() as session:
                    who = session.run_python("import os; print(os.environ['JUPYTERHUB_USER'])")
                    out = session.run_python(MARKER_CODE.format(n=2000, marker=marker))
                    # A failure inside the block must not leave the session.
                    with pytest.raises(NubladoExecutionTimeoutError):
                        session.run_python("import time; time.sleep(60)", timeout=seconds(1))
                with pytest.raises(RuntimeError), client.lab_session() as session:
                    raise RuntimeError("body failed")
                results[user] = (who, marker, out, hub.lab_sessions(user))
                client.stop_lab()
                client.wait_for_lab_stopped(seconds(60))
        except BaseException as e:
            errors[user] = e

    try:
        threads = [threading.Thread(target=flow, args=(u,)) for u in users]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert errors == {}
        for user in users:
            who, marker, out, left = results[user]
            assert who == f"{user}\n"
            assert out == expected_output(marker, 2000)
            assert left == []
    finally:
        hub.stop_all()


def test_fd_and_threads_after_hub_clients(hub: TestHub) -> None:
    # Clients that only log in, many times: nothing accumulates.
    def once() -> None:
        with NubladoClient("bob", hub.tokens["bob"], hub_url=hub.url) as client:
            client.auth_to_hub()
            assert client.is_lab_stopped()

    once()
    gc.collect()
    fds_before, threads_before = fds(), len(client_threads())
    for _ in range(30):
        once()
    gc.collect()
    assert fds() <= fds_before
    assert len(client_threads()) <= threads_before
