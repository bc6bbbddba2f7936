"""The kernel session against real Jupyter servers, stock and documents."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import websocket

from nublado_sync import (
    AckPolicy,
    CodeContext,
    JupyterLabSession,
    NubladoExecutionError,
    NubladoExecutionTimeoutError,
    NubladoKernelDiedError,
    NubladoOutputLostError,
    NubladoSessionClosedError,
    NubladoUsageError,
    NubladoWebSocketError,
    _transport,
)
from nublado_sync._messages import execute_request

from ..jupyter_servers import JupyterServer
from ..tcp_proxy import running_proxy
from .conftest import lab, seconds

pytestmark = pytest.mark.integration

# A deadline test may end this long after its deadline: the interrupt and
# the close that follow a timeout each get at most 1 s.
DEADLINE_MARGIN = 3.0

CHATTY = "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.1)"


def test_output(server: JupyterServer) -> None:
    with lab(server) as session:
        assert session.protocol == "v1"
        assert session.run_python("print('héllo ✓ 🚀')") == "héllo ✓ 🚀\n"
        code = "import sys\nprint('out')\nprint('err', file=sys.stderr)\n'value'"
        assert session.run_python(code) == "out\n"
        # Variables persist between calls in one session.
        session.run_python("x = 41")
        assert session.run_python("print(x + 1)") == "42\n"


def test_large_and_many_outputs(server: JupyterServer) -> None:
    with lab(server) as session:
        out = session.run_python("print('x' * (5 * 1024 * 1024))")
        assert out == "x" * (5 * 1024 * 1024) + "\n"
        out = session.run_python("for i in range(20000):\n    print(i)")
        assert out == "".join(f"{i}\n" for i in range(20000))


def test_execute_structured(server: JupyterServer) -> None:
    seen: list[dict[str, Any]] = []
    code = (
        "import sys\n"
        "from IPython.display import display, HTML\n"
        "print('a')\n"
        "print('b', file=sys.stderr)\n"
        "display(HTML('<b>hi</b>'))\n"
        "6 * 7"
    )
    with lab(server) as session:
        result = session.execute(code, on_output=seen.append)
    assert result.status == "ok"
    assert result.stdout == "a\n"
    assert result.stderr == "b\n"
    assert result.result == {"text/plain": "42"}
    assert result.displays[0]["text/html"] == "<b>hi</b>"
    assert result.execution_count is not None  # 0: store_history is off
    assert result.duration is not None
    assert result.duration.total_seconds() > 0
    assert [o["output_type"] for o in seen] == [
        "stream",
        "stream",
        "display_data",
        "execute_result",
    ]


def test_error_with_traceback(server: JupyterServer) -> None:
    context = CodeContext(notebook="nb.ipynb", cell="c-1", cell_number="3")
    with lab(server) as session:
        with pytest.raises(NubladoExecutionError) as info:
            session.run_python("print('before')\n1/0", context)
        exc = info.value
        assert exc.status == "error"
        assert exc.code == "print('before')\n1/0"
        assert exc.context == context
        assert exc.started_at is not None
        assert exc.error is not None
        assert "ZeroDivisionError" in exc.error
        assert "\x1b[" not in str(exc)
        assert str(exc).startswith("tester: cell 3 (id 'c-1') of notebook nb.ipynb failed")
        assert exc.result is not None
        assert exc.result.stdout == "before\n"
        # The session is fine afterwards.
        assert session.run_python("print(1)") == "1\n"
        result = session.execute("1/0", raise_on_error=False)
        assert result.ename == "ZeroDivisionError"


def test_aborted(server: JupyterServer) -> None:
    # A request queued behind one that fails is aborted by the kernel.
    with lab(server) as session:
        failing = execute_request("import time; time.sleep(0.5); 1/0", session="x", username="t")
        session._link.socket.send(failing, 5)
        with pytest.raises(NubladoExecutionError) as info:
            session.run_python("print('never')")
        assert info.value.status == "aborted"
        assert "(status: aborted)" in str(info.value)
        assert session.run_python("print('after')") == "after\n"


def test_input_is_refused(server: JupyterServer) -> None:
    with lab(server) as session, pytest.raises(NubladoExecutionError) as info:
        session.run_python("input('name? ')", timeout=seconds(30))
    assert info.value.error is not None
    assert "StdinNotImplementedError" in info.value.error


def test_deadline_with_chatty_kernel(server: JupyterServer) -> None:
    timeout = 2.0
    with lab(server) as session:
        start = time.monotonic()
        with pytest.raises(NubladoExecutionTimeoutError) as info:
            session.run_python(CHATTY, timeout=seconds(timeout))
        elapsed = time.monotonic() - start
        assert timeout <= elapsed < timeout + DEADLINE_MARGIN
        exc = info.value
        assert exc.code == CHATTY
        assert exc.started_at is not None
        assert exc.timeout == seconds(timeout)
        # Partial output seen before the deadline is kept.
        assert exc.output.startswith("tick\n")
        assert exc.result is not None
        assert "Code execution timed out after 2.00s" in str(exc)
        assert session.closed
        with pytest.raises(NubladoSessionClosedError):
            session.run_python("print(1)")
    # The server lists no session or kernel of ours (checked by `server`).


def test_timeout_interrupts_the_kernel(stock_server: JupyterServer) -> None:
    # A bare session, no manager: the interrupt alone must free the kernel.
    session_model = stock_server.api(
        "POST",
        "api/sessions",
        json={"kernel": {"name": "lsst"}, "path": "bare", "type": "console"},
    ).json()
    kernel_id = session_model["kernel"]["id"]
    try:
        ws = websocket.create_connection(
            f"{stock_server.ws_url}api/kernels/{kernel_id}/channels",
            subprotocols=["v1.kernel.websocket.jupyter.org"],
            header=[f"Authorization: token {stock_server.token}"],
        )
        session = JupyterLabSession(username="bare", session_id=session_model["id"], socket=ws)
        with pytest.raises(NubladoExecutionTimeoutError):
            session.run_python("import time; time.sleep(600)", timeout=seconds(3))
        assert session.closed
        # A new connection to the same kernel gets an answer at once: the
        # sleep was interrupted, so nothing is queued ahead of it.
        ws = websocket.create_connection(
            f"{stock_server.ws_url}api/kernels/{kernel_id}/channels",
            subprotocols=["v1.kernel.websocket.jupyter.org"],
            header=[f"Authorization: token {stock_server.token}"],
        )
        with JupyterLabSession(username="bare", session_id=session_model["id"], socket=ws) as again:
            assert again.run_python("print('free')", timeout=seconds(10)) == "free\n"
    finally:
        stock_server.delete_all()


def test_kernel_death_is_reported_quickly(server: JupyterServer) -> None:
    with lab(server) as session:
        session.run_python("x = 1")
        start = time.monotonic()
        with pytest.raises(NubladoKernelDiedError) as info:
            session.run_python("import os; os._exit(1)")
        # With no deadline at all: the restart status (about 2.5 s), or the
        # heartbeat (3 s of silence) when a documents server's is missed.
        assert time.monotonic() - start < 9
        assert info.value.status == "dead"
        # The server restarted the kernel: usable again, state gone.
        assert not session.closed
        assert session.run_python("print('x' in globals())", timeout=seconds(60)) == "False\n"


def test_server_closes_socket_mid_call(stock_server: JupyterServer) -> None:
    host, port = stock_server.url.split("//")[1].rstrip("/").split(":")
    with running_proxy((host, int(port))) as proxy:
        # Reconnecting off: the drop itself is reported (test_reconnect.py
        # has the reconnects).
        manager = lab(stock_server, reconnect=None)
        manager._api._base_url = proxy.url()
        with manager as session:
            started = threading.Event()
            with pytest.raises(NubladoWebSocketError) as info:
                session.execute(
                    "print('started', flush=True)\nimport time; time.sleep(60)",
                    on_output=lambda _: (started.set(), proxy.send_close_frame(1011, b"bye")),
                    timeout=seconds(30),
                )
            assert info.value.code == 1011
            assert started.is_set()
            assert session.closed
            proxy.thaw()
    assert stock_server.sessions() == []


def test_connection_dropped_mid_call(stock_server: JupyterServer) -> None:
    host, port = stock_server.url.split("//")[1].rstrip("/").split(":")
    with running_proxy((host, int(port))) as proxy:
        # Reconnecting off: the drop itself is reported (test_reconnect.py
        # has the reconnects).
        manager = lab(stock_server, reconnect=None)
        manager._api._base_url = proxy.url()
        with manager as session, pytest.raises(NubladoWebSocketError):
            session.execute(
                "print('started', flush=True)\nimport time; time.sleep(60)",
                on_output=lambda _: proxy.cut(),
                timeout=seconds(30),
            )
    assert stock_server.sessions() == []


def test_silent_connection_detected_without_deadline(stock_server: JupyterServer) -> None:
    host, port = stock_server.url.split("//")[1].rstrip("/").split(":")
    with running_proxy((host, int(port))) as proxy:
        manager = lab(stock_server, heartbeat_interval=seconds(1), heartbeat_timeout=seconds(2))
        manager._api._base_url = proxy.url()
        with manager as session:
            start = time.monotonic()
            with pytest.raises(NubladoKernelDiedError) as info:
                session.execute(
                    "print('started', flush=True)\nimport time; time.sleep(60)",
                    on_output=lambda _: proxy.freeze(),
                )
            # heartbeat_interval + heartbeat_timeout, plus the margin.
            assert time.monotonic() - start < 3 + DEADLINE_MARGIN
            assert info.value.status == "unresponsive"
            proxy.thaw()
    assert stock_server.sessions() == []


def test_long_quiet_cell_is_not_mistaken_for_death(server: JupyterServer) -> None:
    # The heartbeat goes to the control channel, which a busy kernel answers.
    with lab(server, heartbeat_interval=seconds(0.5), heartbeat_timeout=seconds(3)) as session:
        out = session.run_python("import time; time.sleep(4); print('done')", timeout=seconds(30))
        assert out == "done\n"


def test_legacy_protocol(legacy_server: JupyterServer) -> None:
    with lab(legacy_server) as session:
        assert session.protocol == "legacy"
        assert session.run_python("print('legacy ✓')") == "legacy ✓\n"
        with pytest.raises(NubladoExecutionError):
            session.run_python("1/0")
        with pytest.raises(NubladoExecutionTimeoutError):
            session.run_python(CHATTY, timeout=seconds(1))
    assert legacy_server.sessions() == []
    assert legacy_server.kernels() == []


def test_idle_past_ping_timeout(short_ping_server: JupyterServer) -> None:
    idle = 3 * (1.0 + 2.0)  # three times the server's ping interval + timeout
    with lab(short_ping_server, keepalive_interval=seconds(0.5)) as session:
        session.run_python("pass")
        time.sleep(idle)  # the idleness under test, not synchronisation
        assert session.run_python("print('alive')", timeout=seconds(10)) == "alive\n"


def test_idle_without_keepalive_dies(short_ping_server: JupyterServer) -> None:
    # The control: without the keepalive the same idleness kills the socket,
    # so the test above shows the keepalive working.
    with lab(short_ping_server, keepalive_interval=None, reconnect=None) as session:
        session.run_python("pass")
        time.sleep(3 * (1.0 + 2.0))
        with pytest.raises(NubladoWebSocketError):
            session.run_python("print('alive')", timeout=seconds(10))
    assert short_ping_server.sessions() == []


def test_rate_limit_is_reported(rate_limited_server: JupyterServer) -> None:
    code = "for i in range(50):\n    print('y' * 100000)"
    with lab(rate_limited_server) as session:
        result = session.execute(code, timeout=seconds(60))
        assert result.output_lost
        assert result.stderr.startswith("IOPub data rate exceeded.")
        with pytest.raises(NubladoOutputLostError) as info:
            session.run_python(code, timeout=seconds(60))
        assert info.value.result is not None
    assert rate_limited_server.sessions() == []


def test_concurrent_use_is_refused(server: JupyterServer) -> None:
    with lab(server) as session:
        started = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                session.execute(
                    "print('go', flush=True); import time; time.sleep(2)",
                    on_output=lambda _: started.set(),
                    timeout=seconds(30),
                )
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        thread = threading.Thread(target=run)
        thread.start()
        assert started.wait(30)
        with pytest.raises(NubladoUsageError):
            session.run_python("print('second')")
        thread.join()
        assert errors == []


def test_cleanup_on_exception_in_body(server: JupyterServer) -> None:
    with pytest.raises(RuntimeError), lab(server) as session:
        session.run_python("x = 1")
        raise RuntimeError("user code failed")
    # Checked by the `server` fixture: nothing left.


def test_cleanup_on_keyboard_interrupt(server: JupyterServer) -> None:
    with pytest.raises(KeyboardInterrupt), lab(server) as session:
        session.execute(
            "print('x', flush=True); import time; time.sleep(60)",
            on_output=lambda _: (_ for _ in ()).throw(KeyboardInterrupt()),
        )
    assert session.closed


def test_cleanup_when_websocket_fails(server: JupyterServer) -> None:
    manager = lab(server)
    # Neither the token nor the login cookie the REST call earned.
    manager._api.websocket_headers = lambda: ["Authorization: token wrong"]  # type: ignore[method-assign]
    manager._api.websocket_cookie = lambda _: None  # type: ignore[method-assign]
    with pytest.raises(NubladoWebSocketError) as info, manager:
        pass
    assert info.value.code == 403
    assert "wrong" not in str(info.value)


def test_bad_arguments(server: JupyterServer) -> None:
    with lab(server) as session:
        with pytest.raises(NubladoUsageError):
            session.run_python(b"print(1)")  # type: ignore[arg-type]
        with pytest.raises(NubladoUsageError):
            session.run_python("print(1)", timeout=5)  # type: ignore[arg-type]
        with pytest.raises(NubladoUsageError):
            session.run_python("print(1)", timeout=seconds(-1))
        assert session.run_python("print(1)") == "1\n"


def test_interrupt_from_callback_and_other_thread(server: JupyterServer) -> None:
    code = "print('go', flush=True); import time; time.sleep(60)"
    with lab(server) as session:
        fired: list[bool] = []

        def interrupt_once(_: dict[str, Any]) -> None:
            if not fired:
                fired.append(True)
                session.interrupt()

        with pytest.raises(NubladoExecutionError) as info:
            session.execute(code, on_output=interrupt_once, timeout=seconds(30))
        assert info.value.error is not None
        assert "KeyboardInterrupt" in info.value.error
        assert session.run_python("print('still here')") == "still here\n"

        started = threading.Event()
        timer = threading.Thread(target=lambda: (started.wait(30), session.interrupt()))
        timer.start()
        with pytest.raises(NubladoExecutionError):
            session.execute(code, on_output=lambda _: started.set(), timeout=seconds(30))
        timer.join()
        assert session.run_python("print('and here')") == "and here\n"


@pytest.mark.parametrize(
    "prompt_acks",
    [True, False, AckPolicy(method="quickack")],
    ids=["default", "off", "quickack"],
)
def test_prompt_ack_pongs_only_while_a_reply_is_awaited(
    stock_server: JupyterServer, prompt_acks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # TCP_QUICKACK calls are counted in the library, pongs on the wire by a
    # proxy in front of the real server.
    quickacks = []
    real_quickack = _transport.quickack
    monkeypatch.setattr(_transport, "quickack", lambda s: (quickacks.append(1), real_quickack(s)))
    host, port = stock_server.url.split("//")[1].rstrip("/").split(":")
    with running_proxy((host, int(port))) as proxy:
        manager = lab(stock_server, prompt_acks=prompt_acks)
        manager._api._base_url = proxy.url()
        with manager as session:
            # Opening waits for the readiness probe's reply: acknowledged too.
            after_open = proxy.client_frames().get("pong", 0)
            session.run_python("pass")
            after_pass = proxy.client_frames().get("pong", 0)
            quickacks_after_pass = len(quickacks)
            # One 4 MB stream message arrives in many TCP segments; it is
            # acknowledged as one message, not once per segment read.
            out = session.run_python("import sys; sys.stdout.write('x' * 4_000_000)")
            after_big = proxy.client_frames().get("pong", 0)
            assert len(out) == 4_000_000
    if prompt_acks is True:
        # One call in flight: under the default limit, so pongs.
        assert after_open >= 1
        assert after_pass > after_open
        # "pass" brings four messages (busy, execute_input, execute_reply,
        # idle); a pong goes out only before waiting for more, so never
        # after the last one.
        assert after_pass - after_open <= 3
        # busy, execute_input, the stream (maybe split by the kernel),
        # execute_reply, idle: about a dozen messages at most.
        assert 1 <= after_big - after_pass <= 12
        assert quickacks == []
    elif prompt_acks is False:
        assert after_big == 0
        assert quickacks == []
    else:
        # The system call instead of the pong, as sparingly.
        assert after_big == 0
        # The probe at opening (about three messages), then "pass" (four).
        assert 1 <= quickacks_after_pass <= 8
        assert 1 <= len(quickacks) - quickacks_after_pass <= 12
    assert stock_server.sessions() == []
