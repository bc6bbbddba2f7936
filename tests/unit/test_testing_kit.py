"""nublado_sync.testing: the real client flow against MockJupyter.

No Jupyter is needed: every test runs NubladoClient's real code (HTTP
redirects, cookies, XSRF, the event stream, the kernel WebSocket with the
v1 framing) against the fake on 127.0.0.1.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
import requests
import websocket

from nublado_sync import (
    NotebookExecutionError,
    NotebookExecutionResult,
    NubladoClient,
    NubladoExecutionError,
    NubladoExecutionTimeoutError,
    NubladoImageByClass,
    NubladoImageByReference,
    NubladoImageByTag,
    NubladoImageClass,
    NubladoImageSize,
    NubladoRedirectError,
    NubladoSpawnError,
    NubladoSpawnTimeoutError,
    NubladoTimeoutError,
    NubladoWebError,
    NubladoWebSocketError,
)
from nublado_sync.testing import (
    MockJupyter,
    MockJupyterAction,
    MockJupyterExecutionParameters,
    MockJupyterState,
    _order,
    loopback_hosts,
    register_mock_jupyter,
)
from nublado_sync.testing import _websocket as ws_frames

# The fixture, as a user's conftest would enable it when the package's
# pytest11 entry point is not active (a no-op when it is).
pytest_plugins = ["nublado_sync.testing.pytest_plugin"]

TOKEN = "token-of-alice-7c1e"


def seconds(value: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=value)


@pytest.fixture
def mock() -> Iterator[MockJupyter]:
    with MockJupyter(users={"alice": TOKEN}) as server:
        yield server


def lab_client(mock: MockJupyter, user: str = "alice") -> NubladoClient:
    """A client whose lab is running and logged in."""
    client = mock.client(user, timeout=seconds(10))
    client.auth_to_hub()
    client.spawn_lab(NubladoImageByClass())
    client.wait_for_spawn(seconds(10))
    client.auth_to_lab()
    return client


def kernel_threads() -> List[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("mock-kernel-")]


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# The whole flow


def test_full_flow(mock: MockJupyter) -> None:
    mock.register_python_result("print(answer)", "42\n")
    mock.register_python_result("explode()", ValueError("some error"))
    assert mock.get_state("alice") is MockJupyterState.LOGGED_OUT
    with mock.client("alice") as client:
        client.auth_to_hub()
        assert mock.get_state("alice") is MockJupyterState.LOGGED_IN
        assert client.is_lab_stopped()

        client.spawn_lab(NubladoImageByClass(NubladoImageClass.LATEST_WEEKLY, debug=True))
        assert mock.get_state("alice") is MockJupyterState.SPAWN_PENDING
        assert mock.get_last_spawn_form("alice") == {
            "image_class": "latest-weekly",
            "size": "Large",
            "enable_debug": "true",
        }

        messages = list(client.watch_spawn_progress())
        assert [m.progress for m in messages] == [0, 50, 100]
        assert messages[-1].ready
        assert not any(m.ready for m in messages[:-1])
        assert mock.get_state("alice") is MockJupyterState.LAB_RUNNING
        assert not client.is_lab_stopped()
        # A running lab's progress is one ready event.
        assert [m.ready for m in client.watch_spawn_progress()] == [True]

        client.auth_to_lab()
        assert client.lab_url == mock.lab_url("alice")
        with client.lab_session("notebook.ipynb", kernel_name="lsst") as session:
            opened = mock.get_session("alice")
            assert opened is not None
            assert opened.kernel_name == "lsst"
            assert opened.name == "notebook.ipynb"
            assert opened.type == "console"
            assert session.protocol == "v1"

            assert session.run_python("print(answer)") == "42\n"
            with pytest.raises(NubladoExecutionError) as info:
                session.run_python("explode()")
            assert "ValueError" in str(info.value)
            assert "some error" in str(info.value)

            # Unregistered code runs for real, and variables persist.
            assert session.run_python("x = 6\ny = 7") == ""
            assert session.run_python("print(x * y)") == "42\n"
            assert mock.get_namespace("alice")["y"] == 7
            with pytest.raises(NubladoExecutionError) as info:
                session.run_python("print('before')\n1 / 0")
            assert info.value.result is not None
            assert info.value.result.stdout == "before\n"
            assert info.value.result.ename == "ZeroDivisionError"
            assert "1 / 0" in (info.value.error or "")
        assert mock.get_session("alice") is None

        client.stop_lab()
        assert client.is_lab_stopped()
        assert mock.get_state("alice") is MockJupyterState.LOGGED_IN


def test_executed_code_outputs(mock: MockJupyter) -> None:
    client = lab_client(mock)
    with client.lab_session() as session:
        result = session.execute(
            "import sys\nprint('out')\nprint('err', file=sys.stderr)\ndisplay('shown')\n6 * 7"
        )
        assert result.stdout == "out\n"
        assert result.stderr == "err\n"
        kinds = [o["output_type"] for o in result.outputs]
        assert kinds == ["stream", "stream", "display_data", "execute_result"]
        assert result.outputs[-1]["data"] == {"text/plain": "42"}

        failed = session.execute("input('name? ')", raise_on_error=False)
        assert failed.status == "error"
        assert failed.ename == "StdinNotImplementedError"

        syntax = session.execute("def (", raise_on_error=False)
        assert syntax.ename == "SyntaxError"

        # Namespaces belong to sessions.
        session.run_python("only_here = 1")
    with client.lab_session() as other:
        assert other.execute("'only_here' in globals()").outputs[-1]["data"] == {
            "text/plain": "False"
        }


def test_build_code_result(mock: MockJupyter, capsys: pytest.CaptureFixture[str]) -> None:
    mock.register_python_result("known", "answer\n")
    mock.register_python_result("broken", KeyError("k"))
    variables: Dict[str, Any] = {}
    assert mock.build_code_result("known", variables) == "answer\n"
    with pytest.raises(KeyError):
        mock.build_code_result("broken", variables)
    assert mock.build_code_result("import sys\na = 2\nprint('x', file=sys.stderr)", variables) == ""
    assert mock.build_code_result("print(a + 1)", variables) == "3\n"
    assert capsys.readouterr().err == "x\n"
    with pytest.raises(NameError):
        mock.build_code_result("undefined_name", {})


def test_registered_delay_and_timeout(mock: MockJupyter) -> None:
    mock.register_python_result("slow()", "finally\n", delay=seconds(0.3))
    mock.register_python_result("stuck()", "never\n", delay=30)
    client = lab_client(mock)
    with client.lab_session() as session:
        started = time.monotonic()
        assert session.run_python("slow()") == "finally\n"
        assert time.monotonic() - started >= 0.3

        started = time.monotonic()
        with pytest.raises(NubladoExecutionTimeoutError) as info:
            session.run_python("stuck()", timeout=seconds(0.5))
        assert time.monotonic() - started < 5
        assert "timed out" in str(info.value)
        assert session.closed
    # The interrupted kernel did not hold the lab up.
    with client.lab_session() as session:
        assert session.run_python("print('next')") == "next\n"


def test_timeout_interrupts_executed_code(mock: MockJupyter) -> None:
    client = lab_client(mock)
    with client.lab_session() as session:
        with pytest.raises(NubladoExecutionTimeoutError) as info:
            session.run_python(
                "print('started')\nn = 0\nwhile True:\n    n += 1", timeout=seconds(0.5)
            )
        assert info.value.output == "started\n"
    # Deleting the session stopped the busy kernel's thread.
    assert wait_until(lambda: not kernel_threads())


def test_kernel_answers_heartbeats_while_busy(mock: MockJupyter) -> None:
    # The client probes a silent kernel on the control channel; the mock
    # answers at once even while a long execution keeps the shell busy.
    mock.register_python_result("long()", "done\n", delay=1.0)
    client = lab_client(mock)
    with client.lab_session(
        heartbeat_interval=seconds(0.1), heartbeat_timeout=seconds(0.3)
    ) as session:
        assert session.run_python("long()") == "done\n"


def test_stop_leaves_no_threads() -> None:
    def mine() -> List[str]:
        # The client's own housekeeping thread is the client's business.
        threads = set(threading.enumerate()) - before
        return [t.name for t in threads if not t.name.startswith("nublado-housekeeping")]

    before = set(threading.enumerate())
    with MockJupyter(users={"alice": TOKEN}) as mock:
        client = lab_client(mock)
        session = client.lab_session().__enter__()
        session.run_python("x = 1")
        # Stopped with a session and its WebSocket still open.
    try:
        assert wait_until(lambda: not mine()), mine()
        with pytest.raises(NubladoWebSocketError):
            session.run_python("x")
    finally:
        session.close()
        client.close()


# Spawning and stopping


@pytest.mark.parametrize(
    ("image", "form"),
    [
        (NubladoImageByClass(), {"image_class": "recommended", "size": "Large"}),
        (
            NubladoImageByTag("w_2077_46", size=NubladoImageSize.Small),
            {"image_tag": "w_2077_46", "size": "Small"},
        ),
        (
            NubladoImageByReference("registry.example/sciplat-lab:w_2077_46"),
            {"image_list": "registry.example/sciplat-lab:w_2077_46", "size": "Large"},
        ),
    ],
)
def test_spawn_form(mock: MockJupyter, image: Any, form: Dict[str, str]) -> None:
    with mock.client("alice") as client:
        client.auth_to_hub()
        assert mock.get_last_spawn_form("alice") is None
        client.spawn_lab(image)
        assert mock.get_last_spawn_form("alice") == form


def test_spawn_delay(mock: MockJupyter) -> None:
    mock.set_spawn_delay(seconds(1.2))
    with mock.client("alice") as client:
        client.auth_to_hub()
        client.spawn_lab(NubladoImageByClass())
        with pytest.raises(NubladoSpawnTimeoutError) as info:
            client.wait_for_spawn(seconds(0.4))
        assert info.value.log == ["Server requested", "Spawning server..."]
        assert mock.get_state("alice") is MockJupyterState.SPAWN_PENDING
        with pytest.raises(NubladoWebError) as web:
            client.auth_to_lab()
        assert web.value.status == 424
        seen: List[str] = []
        client.wait_for_spawn(seconds(5), on_progress=lambda m: seen.append(m.message))
        assert seen[-1].startswith("Server ready")
        assert mock.get_state("alice") is MockJupyterState.LAB_RUNNING
        client.auth_to_lab()


def test_unwatched_spawn_stays_pending(mock: MockJupyter) -> None:
    # As in the async client's kit: only watching the progress readies a lab.
    with mock.client("alice") as client:
        client.auth_to_hub()
        client.spawn_lab(NubladoImageByClass())
        assert not client.is_lab_stopped()
        assert mock.get_state("alice") is MockJupyterState.SPAWN_PENDING
        with pytest.raises(NubladoWebError) as info:
            client.auth_to_lab()
        assert info.value.status == 424
        client.wait_for_spawn(seconds(10))
        assert mock.get_state("alice") is MockJupyterState.LAB_RUNNING
        client.auth_to_lab()


def test_spawn_delay_counts_from_the_first_progress_request(mock: MockJupyter) -> None:
    mock.set_spawn_delay(seconds(0.3))
    with mock.client("alice") as client:
        client.auth_to_hub()
        client.spawn_lab(NubladoImageByClass())
        # Longer than the delay passes with nobody watching (the hub lists a
        # server all along): the lab is still pending.
        with pytest.raises(NubladoTimeoutError):
            client.wait_for_lab_stopped(seconds(0.5))
        assert mock.get_state("alice") is MockJupyterState.SPAWN_PENDING
        # The async client's own delay test, which must hold every time.
        start = time.monotonic()
        client.wait_for_spawn(seconds(10))
        assert time.monotonic() - start >= 0.3
        assert mock.get_state("alice") is MockJupyterState.LAB_RUNNING


def test_delete_delay(mock: MockJupyter) -> None:
    mock.set_delete_delay(seconds(0.6))
    client = lab_client(mock)
    client.stop_lab()
    assert not client.is_lab_stopped()
    client.stop_lab()  # still stopping: accepted again
    client.wait_for_lab_stopped(seconds(5))
    assert client.is_lab_stopped()
    assert mock.get_state("alice") is MockJupyterState.LOGGED_IN
    client.stop_lab()  # already stopped: a no-op


def test_spawn_twice_is_refused(mock: MockJupyter) -> None:
    client = lab_client(mock)
    with pytest.raises(AssertionError, match="alice asked to spawn a lab while one is lab running"):
        client.spawn_lab(NubladoImageByClass())
    mock.check_order()  # the client raised it: nothing left to report
    # Without the kit in the process, the client sees the hub's answer.
    with hub_session(mock) as (http, xsrf):
        form = {"image_class": "recommended", "size": "Large", "_xsrf": xsrf}
        answer = http.post(mock.url + "hub/spawn", data=form, allow_redirects=False, timeout=5)
        assert answer.status_code == 400
    with pytest.raises(AssertionError, match="while one is lab running"):
        mock.check_order()
    mock.check_order()  # each is reported once


# Calls out of order fail the test, as in the async client's kit


def _spawn(client: NubladoClient) -> None:
    client.spawn_lab(NubladoImageByClass())


def _logged_in(mock: MockJupyter) -> NubladoClient:
    client = mock.client("alice", timeout=seconds(10))
    client.auth_to_hub()
    return client


def _stopped(mock: MockJupyter) -> NubladoClient:
    client = lab_client(mock)
    client.stop_lab()
    return client


def _stopping(mock: MockJupyter) -> NubladoClient:
    mock.set_delete_delay(seconds(30))
    return _stopped(mock)


@pytest.mark.parametrize(
    ("arrange", "call", "words"),
    [
        (
            lambda mock: mock.client("alice"),
            NubladoClient.is_lab_stopped,
            "called GET /nb/hub/api/users/alice before logging in to the hub",
        ),
        (
            lambda mock: mock.client("alice"),
            _spawn,
            "asked to spawn a lab before logging in",
        ),
        (
            lambda mock: mock.client("alice"),
            NubladoClient.wait_for_spawn,
            "before logging in to the hub",
        ),
        (_logged_in, NubladoClient.wait_for_spawn, "watched the spawn progress with no lab"),
        (_stopped, NubladoClient.wait_for_spawn, "watched the spawn progress with no lab"),
        (lab_client, _spawn, "asked to spawn a lab while one is lab running"),
        (_stopping, _spawn, "asked to spawn a lab while one is stopping"),
    ],
    ids=[
        "user-before-login",
        "spawn-before-login",
        "progress-before-login",
        "progress-before-spawn",
        "progress-after-stop",
        "spawn-while-running",
        "spawn-while-stopping",
    ],
)
def test_out_of_order_calls_raise_assertion_error(
    mock: MockJupyter,
    arrange: Callable[[MockJupyter], NubladoClient],
    call: Callable[[NubladoClient], Any],
    words: str,
) -> None:
    client = arrange(mock)
    state = mock.get_state("alice")
    with pytest.raises(AssertionError, match="MockJupyter: out-of-order call: alice") as info:
        call(client)
    assert words in str(info.value)
    assert TOKEN not in str(info.value)
    assert mock.get_state("alice") is state  # refused: nothing changed
    mock.check_order()  # raised in the client: not reported again
    client.close()


def test_enforce_order_off() -> None:
    # What a real hub does: its login is on the way to the spawn form.
    with MockJupyter(users={"alice": TOKEN}, enforce_order=False) as mock:
        with mock.client("alice") as client:
            with pytest.raises(NubladoWebError) as info:
                client.is_lab_stopped()
            assert info.value.status == 403
            client.spawn_lab(NubladoImageByClass())
            client.wait_for_spawn(seconds(10))
            assert mock.get_state("alice") is MockJupyterState.LAB_RUNNING
            with pytest.raises(NubladoWebError) as info:
                client.spawn_lab(NubladoImageByClass())
            assert info.value.status == 400
        mock.check_order()


def test_violations_no_client_raised_are_reported(mock: MockJupyter) -> None:
    bare = {"Authorization": f"Bearer {TOKEN}"}
    answer = requests.get(mock.url + "hub/api/users/alice", headers=bare, timeout=5)
    assert answer.status_code == 403  # what a real hub answers
    assert _order.VIOLATION_HEADER in answer.headers
    with pytest.raises(AssertionError, match="before logging in to the hub") as info:
        mock.check_order()
    assert "no client raised" in str(info.value)
    mock.check_order()


def test_a_mark_no_mock_made_is_ignored(mock: MockJupyter) -> None:
    # Only a violation a mock of this process recorded raises: no server
    # can make a client raise AssertionError by sending the header.
    response = requests.Response()
    response.status_code = 403
    response.headers[_order.VIOLATION_HEADER] = "0123456789abcdef"
    _order.observe(response)  # no exception
    bare = {"Authorization": f"Bearer {TOKEN}"}
    answer = requests.get(mock.url + "hub/api/users/alice", headers=bare, timeout=5)
    with pytest.raises(AssertionError):
        _order.observe(answer)
    _order.observe(answer)  # a mark is claimed once, then ignored
    mock.check_order()


def test_a_stopped_mock_raises_nothing_more() -> None:
    with MockJupyter(users={"alice": TOKEN}) as mock:
        bare = {"Authorization": f"Bearer {TOKEN}"}
        answer = requests.get(mock.url + "hub/api/users/alice", headers=bare, timeout=5)
    _order.observe(answer)
    with pytest.raises(AssertionError):
        mock.check_order()


def test_register_mock_jupyter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPERTOIRE_BASE_URL", "http://127.0.0.1:9/elsewhere")
    # Shaped like the async client's helper: a router is accepted and ignored.
    with register_mock_jupyter(object(), use_subdomains=True) as mock:
        assert mock.url.startswith("http://nublado.test:")
        token = mock.token_for("rachel")
        with NubladoClient("rachel", token) as client:  # found by discovery
            client.auth_to_hub()
            assert client.hub_url == mock.url
    assert mock.get_state("rachel") is MockJupyterState.LOGGED_IN
    assert os.environ["REPERTOIRE_BASE_URL"] == "http://127.0.0.1:9/elsewhere"
    # A test with its own discovery service keeps it.
    with register_mock_jupyter(set_repertoire_url=False) as mock:
        assert os.environ["REPERTOIRE_BASE_URL"] == "http://127.0.0.1:9/elsewhere"
        with mock.client("rachel") as client:
            client.auth_to_hub()
    # What no client raised fails the test at the end.
    with pytest.raises(AssertionError, match="before logging in"), register_mock_jupyter() as mock:
        bare = {"Authorization": f"Bearer {mock.token_for('rachel')}"}
        requests.get(mock.url + "hub/api/users/rachel", headers=bare, timeout=5)
    # An error of the test itself is not hidden by the check.
    with pytest.raises(KeyError), register_mock_jupyter() as mock:
        bare = {"Authorization": f"Bearer {mock.token_for('rachel')}"}
        requests.get(mock.url + "hub/api/users/rachel", headers=bare, timeout=5)
        raise KeyError("the test's own failure")


def test_create_mock_token(mock: MockJupyter) -> None:
    token = MockJupyter.create_mock_token("rachel")
    assert token.startswith("gt-")
    assert token != MockJupyter.create_mock_token("rachel")
    with NubladoClient("rachel", token, hub_url=mock.url) as client:
        client.auth_to_hub()
    assert mock.users["rachel"] == token
    assert mock.get_state("rachel") is MockJupyterState.LOGGED_IN
    with pytest.raises(ValueError, match="Unusable"):
        MockJupyter.create_mock_token("no/slash")
    # Not tokens of a user: no name, not base64, a name not allowed.
    for forged in ("gt-.0123abcd", "gt-!!!.0123abcd", "gt-bm8vc2xhc2g=.0123abcd"):
        with NubladoClient("rachel", forged, hub_url=mock.url) as client:
            with pytest.raises(NubladoWebError) as info:
                client.auth_to_hub()
            assert info.value.status == 403


def test_fail_adds_a_failure(mock: MockJupyter) -> None:
    client = mock.client("alice")
    mock.fail("alice", MockJupyterAction.SPAWN)
    mock.fail("alice", MockJupyterAction.USER)
    client.auth_to_hub()
    with pytest.raises(NubladoSpawnError):
        client.spawn_lab(NubladoImageByClass())
    with pytest.raises(NubladoWebError) as info:
        client.is_lab_stopped()
    assert info.value.status == 500
    client.close()


# Failures


def _open_session(client: NubladoClient) -> None:
    with client.lab_session():
        pass


def _notebook(client: NubladoClient) -> None:
    client.run_notebook(json.dumps({"cells": [], "nbformat": 4, "nbformat_minor": 5}))


@pytest.mark.parametrize(
    ("action", "ready", "call", "expected"),
    [
        (MockJupyterAction.LOGIN, False, NubladoClient.auth_to_hub, NubladoWebError),
        (MockJupyterAction.USER, False, NubladoClient.is_lab_stopped, NubladoWebError),
        (MockJupyterAction.SPAWN, False, _spawn, NubladoSpawnError),
        (MockJupyterAction.LAB, True, NubladoClient.auth_to_lab, NubladoWebError),
        (MockJupyterAction.CREATE_SESSION, True, _open_session, NubladoWebError),
        (MockJupyterAction.DELETE_LAB, True, NubladoClient.stop_lab, NubladoWebError),
        (MockJupyterAction.RUN_NOTEBOOK, True, _notebook, NubladoWebError),
    ],
)
def test_fail_on(
    mock: MockJupyter,
    action: MockJupyterAction,
    ready: bool,
    call: Callable[[NubladoClient], Any],
    expected: type,
) -> None:
    if ready:
        client = lab_client(mock)
    else:
        client = mock.client("alice")
        if action is not MockJupyterAction.LOGIN:
            client.auth_to_hub()
    mock.fail_on("alice", action)
    with pytest.raises(expected) as info:
        call(client)
    if isinstance(info.value, NubladoWebError):
        assert info.value.status == 500
    assert TOKEN not in str(info.value)
    # Clearing the failures lets the same step pass.
    mock.fail_on("alice", [])
    call(client)


def test_fail_on_progress(mock: MockJupyter) -> None:
    with mock.client("alice") as client:
        client.auth_to_hub()
        client.spawn_lab(NubladoImageByClass())
        mock.fail_on("alice", [MockJupyterAction.PROGRESS])
        with pytest.raises(NubladoSpawnError) as info:
            client.wait_for_spawn(seconds(5))
        assert info.value.log[-1] == "Spawn failed!"
        assert client.is_lab_stopped()


def test_fail_on_delete_session(mock: MockJupyter) -> None:
    client = lab_client(mock)
    # The client falls back to deleting the kernel, which removes both.
    mock.fail_on("alice", MockJupyterAction.DELETE_SESSION)
    with client.lab_session() as session:
        session.run_python("pass")
    assert mock.get_sessions("alice") == []
    # When that fails too, the session is reported as left behind.
    mock.fail_on("alice", [MockJupyterAction.DELETE_SESSION, MockJupyterAction.DELETE_KERNEL])
    with pytest.raises(NubladoWebError) as info, client.lab_session():
        pass
    assert info.value.status == 500
    assert len(mock.get_sessions("alice")) == 1


def test_fail_on_spawn_pending_page(mock: MockJupyter) -> None:
    # This client never loads the spawn-pending page, so its spawn works.
    mock.fail_on("alice", MockJupyterAction.SPAWN_PENDING)
    client = lab_client(mock)
    assert mock.get_state("alice") is MockJupyterState.LAB_RUNNING
    with hub_session(mock) as (http, _):
        answer = http.get(mock.url + "hub/spawn-pending/alice", allow_redirects=False)
        assert answer.status_code == 500
    client.close()


def test_redirect_loop(mock: MockJupyter) -> None:
    client = lab_client(mock)
    mock.set_redirect_loop(enabled=True)
    with pytest.raises(NubladoRedirectError) as info:
        client.auth_to_lab()
    assert "Redirect loop" in str(info.value)
    with pytest.raises(NubladoRedirectError):
        client.auth_to_hub()
    mock.set_redirect_loop(enabled=False)
    client.auth_to_hub()
    mock.set_redirect_loop(enabled=True)
    with pytest.raises(NubladoRedirectError):
        client.wait_for_spawn(seconds(5))


def test_unknown_token(mock: MockJupyter) -> None:
    with NubladoClient("alice", "not-a-token", hub_url=mock.url) as client:
        with pytest.raises(NubladoWebError) as info:
            client.auth_to_hub()
        assert info.value.status == 403
    assert mock.get_state("alice") is MockJupyterState.LOGGED_OUT


def test_users_are_kept_apart(mock: MockJupyter) -> None:
    lab_client(mock).close()
    with hub_session(mock, "mallory") as (http, xsrf):
        headers = {"Sec-Fetch-Mode": "same-origin", "X-XSRFToken": xsrf}
        answer = http.get(mock.url + "hub/api/users/alice", headers=headers, timeout=5)
        assert answer.status_code == 403
        answer = http.get(mock.lab_url("alice") + "lab", allow_redirects=False, timeout=5)
        assert answer.status_code == 403


# What the mock enforces, so that the client passing means something


class hub_session:  # noqa: N801 - used like a function
    """A raw requests session logged in to the hub, like a browser."""

    def __init__(self, mock: MockJupyter, user: str = "alice") -> None:
        self.mock = mock
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {mock.token_for(user)}"

    def __enter__(self) -> Tuple[requests.Session, str]:
        answer = self.http.get(self.mock.url + "hub/home", timeout=5)
        assert answer.status_code == 200
        xsrf = next(c.value for c in self.http.cookies if c.name == "_xsrf")
        return self.http, xsrf or ""

    def __exit__(self, *exc: object) -> None:
        self.http.close()


def test_hub_api_needs_xsrf(mock: MockJupyter) -> None:
    url = mock.url + "hub/api/users/alice"
    with hub_session(mock) as (http, xsrf):
        same_origin = {"Sec-Fetch-Mode": "same-origin"}
        assert http.get(url, headers=same_origin, timeout=5).status_code == 403
        wrong = {**same_origin, "X-XSRFToken": "wrong"}
        assert http.get(url, headers=wrong, timeout=5).status_code == 403
        right = {**same_origin, "X-XSRFToken": xsrf}
        assert http.get(url, headers=right, timeout=5).json()["servers"] == {}
        # The spawn form needs it even without Sec-Fetch-Mode.
        form = {"image_class": "recommended", "size": "Large"}
        answer = http.post(mock.url + "hub/spawn", data=form, allow_redirects=False, timeout=5)
        assert answer.status_code == 403
        answer = http.post(
            mock.url + "hub/spawn", data={**form, "_xsrf": xsrf}, allow_redirects=False, timeout=5
        )
        assert answer.status_code == 302
        assert answer.headers["Location"] == "/nb/hub/spawn-pending/alice"
    # No login cookie: the API refuses and pages redirect to the login.
    bare = {"Authorization": f"Bearer {TOKEN}"}
    assert requests.get(url, headers=bare, timeout=5).status_code == 403
    answer = requests.get(mock.url + "hub/spawn", headers=bare, allow_redirects=False, timeout=5)
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith("/nb/hub/login?next=")


def test_lab_api_needs_the_lab_xsrf(mock: MockJupyter) -> None:
    lab_client(mock).close()
    with hub_session(mock) as (http, hub_xsrf):
        assert http.get(mock.lab_url("alice") + "lab", timeout=5).status_code == 200
        cookies = {(c.name, c.path): c.value for c in http.cookies}
        lab_xsrf = cookies[("_xsrf", "/nb/user/alice/")]
        assert cookies[("_xsrf", "/nb/hub/")] == hub_xsrf != lab_xsrf
        url = mock.lab_url("alice") + "api/sessions"
        body = {"kernel": {"name": "lsst"}, "name": "", "path": "p", "type": "console"}
        for token in (None, hub_xsrf):
            headers = {"X-XSRFToken": token} if token else {}
            answer = http.post(url, json=body, headers=headers, allow_redirects=False, timeout=5)
            assert answer.status_code == 403
        answer = http.post(url, json=body, headers={"X-XSRFToken": lab_xsrf}, timeout=5)
        assert answer.status_code == 201
        session_id = answer.json()["id"]
        answer = http.delete(f"{url}/{session_id}", headers={"X-XSRFToken": lab_xsrf}, timeout=5)
        assert answer.status_code == 204


def test_expired_lab_login(mock: MockJupyter) -> None:
    client = lab_client(mock)
    mock.expire_lab_login("alice")
    # The lab answers with a redirect into OAuth; the client logs in again.
    with client.lab_session() as session:
        assert session.run_python("print('back')") == "back\n"


def test_api_tokens() -> None:
    with MockJupyter(users={"alice": TOKEN}, api_tokens=True) as tokens:
        bare = {"Authorization": f"Bearer {TOKEN}", "Sec-Fetch-Mode": "same-origin"}
        answer = requests.get(tokens.url + "hub/api/users/alice", headers=bare, timeout=5)
        assert answer.json()["name"] == "alice"
        client = lab_client(tokens)
        with client.lab_session() as session:
            assert session.run_python("print(1)") == "1\n"
        client.stop_lab()


class LegacyKernel:
    """A raw legacy-protocol (JSON text) WebSocket to a new kernel of alice's."""

    def __init__(self, mock: MockJupyter) -> None:
        url = mock.lab_url("alice") + "api/sessions"
        body = {"kernel": {"name": "lsst"}, "path": "p", "type": "console"}
        headers = {"Authorization": f"Bearer {TOKEN}"}
        kernel_id = requests.post(url, json=body, headers=headers, timeout=5).json()["kernel"]["id"]
        ws_url = mock.lab_url("alice").replace("http", "ws", 1)
        ws_url += f"api/kernels/{kernel_id}/channels"
        self.conn = websocket.create_connection(
            ws_url, header=[f"Authorization: Bearer {TOKEN}"], timeout=5
        )
        self._seen: Dict[Optional[str], Dict[str, Any]] = {}

    def execute(self, code: str) -> str:
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": "execute_request"}
        content = {"code": code, "stop_on_error": True}
        frame = {"channel": "shell", "header": header, "parent_header": {}, "metadata": {}}
        self.conn.send(json.dumps({**frame, "content": content}))
        return msg_id

    def replies(self, msg_id: str) -> Dict[str, Any]:
        """Contents by message type, up to the idle status."""
        seen = self._seen.setdefault(msg_id, {})
        while "idle" not in seen:
            frame = json.loads(self.conn.recv())
            parent = self._seen.setdefault(frame["parent_header"].get("msg_id"), {})
            content = frame["content"]
            if frame["header"]["msg_type"] == "status":
                parent[content["execution_state"]] = True
            else:
                parent[frame["header"]["msg_type"]] = content
        return seen


def test_legacy_protocol_without_subprotocol() -> None:
    with MockJupyter(users={"alice": TOKEN}, api_tokens=True) as mock:
        lab_client(mock).close()
        kernel = LegacyKernel(mock)
        try:
            seen = kernel.replies(kernel.execute("print('legacy')"))
            assert seen["stream"] == {"name": "stdout", "text": "legacy\n"}
            assert seen["execute_reply"]["status"] == "ok"
        finally:
            kernel.conn.close()


def test_requests_queued_behind_an_error_are_aborted() -> None:
    with MockJupyter(users={"alice": TOKEN}, api_tokens=True) as mock:
        mock.register_python_result("fail_slowly()", RuntimeError("no"), delay=0.3)
        lab_client(mock).close()
        kernel = LegacyKernel(mock)
        try:
            first = kernel.execute("fail_slowly()")
            queued = kernel.execute("print('queued')")
            assert kernel.replies(first)["execute_reply"]["ename"] == "RuntimeError"
            assert kernel.replies(queued)["execute_reply"] == {"status": "aborted"}
            # Sent after the idle status: runs.
            later = kernel.replies(kernel.execute("print('later')"))
            assert later["execute_reply"]["status"] == "ok"
        finally:
            kernel.conn.close()


# Notebooks


def test_run_notebook(mock: MockJupyter) -> None:
    notebook = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    failing = {**notebook, "metadata": {"which": "failing"}}
    executed = json.dumps({**notebook, "metadata": {"executed": True}})
    error = NotebookExecutionError(
        name="ValueError", value="bad", message="cell 1 failed", traceback="Traceback..."
    )
    mock.register_notebook_result(json.dumps(notebook), NotebookExecutionResult(executed))
    mock.register_notebook_result(
        json.dumps(failing, indent=2), NotebookExecutionResult(executed, {"r": 1}, error)
    )
    client = lab_client(mock)
    assert mock.get_last_execution_parameters("alice") is None

    result = client.run_notebook(json.dumps(notebook))
    assert result == NotebookExecutionResult(executed)
    assert mock.get_last_notebook_kernel("alice") is None

    # Registered and submitted notebooks match by content, not formatting.
    result = client.run_notebook(json.dumps(failing), kernel_name="Custom")
    assert result.error == error
    assert result.resources == {"r": 1}
    assert mock.get_last_notebook_kernel("alice") == "Custom"

    other = json.dumps({**notebook, "metadata": {"other": 1}})
    result = client.run_notebook(other, kernel_name="lsst", clear_local_site_packages=True)
    assert result == NotebookExecutionResult(other)  # unregistered: as sent
    assert mock.get_last_execution_parameters("alice") == MockJupyterExecutionParameters(
        "lsst", clear_local_site_packages=True
    )


# Subdomains and name resolution


def test_subdomains() -> None:
    original = socket.getaddrinfo
    with MockJupyter(users={"alice": TOKEN}, use_subdomains=True) as mock:
        assert mock.url == f"http://nublado.test:{mock.port}/nb/"
        assert socket.gethostbyname("alice.nublado.test") == "127.0.0.1"
        client = lab_client(mock)
        assert client.lab_url == f"http://alice.nublado.test:{mock.port}/nb/user/alice/"
        with client.lab_session() as session:
            assert session.run_python("print(1 + 1)") == "2\n"
        assert client.run_notebook('{"cells": []}').notebook == '{"cells": []}'
        client.stop_lab()
        assert client.is_lab_stopped()
    assert socket.getaddrinfo is original


def test_subdomains_need_a_host_name() -> None:
    with pytest.raises(ValueError, match="host name"):
        MockJupyter(use_subdomains=True, hub_host="127.0.0.1")


def test_loopback_hosts_nest() -> None:
    original = socket.getaddrinfo
    with loopback_hosts("one.test"):
        with loopback_hosts("two.test", "one.test"):
            assert socket.gethostbyname("a.two.test") == "127.0.0.1"
        assert socket.gethostbyname("b.one.test") == "127.0.0.1"
        assert socket.getaddrinfo("one.test", 80)[0][4][0] == "127.0.0.1"
        assert socket.gethostbyname("127.0.0.1") == "127.0.0.1"
    assert socket.getaddrinfo is original


# Several users at once


def test_users_in_parallel(mock: MockJupyter) -> None:
    errors: List[BaseException] = []
    outputs: Dict[str, str] = {}

    def run(user: str) -> None:
        try:
            client = lab_client(mock, user)
            with client.lab_session() as session:
                session.run_python(f"me = {user!r}")
                time.sleep(0.05)
                outputs[user] = session.run_python("print(me)")
            client.stop_lab()
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(f"user{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert outputs == {f"user{i}": f"user{i}\n" for i in range(4)}


def test_add_user_and_tokens(mock: MockJupyter) -> None:
    token = mock.add_user("bob")
    assert mock.users == {"alice": TOKEN, "bob": token}
    assert mock.token_for("bob") == token
    with pytest.raises(ValueError, match="another user"):
        mock.add_user("carol", token)
    with pytest.raises(ValueError, match="Unusable"):
        mock.add_user("no/slash")
    with pytest.raises(RuntimeError):
        _ = MockJupyter().url


# The fixture, used as a user would


def test_fixture(mock_jupyter: MockJupyter) -> None:
    mock_jupyter.register_python_result("print(secret)", "shh\n")
    token = mock_jupyter.add_user("rubin")
    # REPERTOIRE_BASE_URL leads a client made without hub_url to the mock.
    with NubladoClient("rubin", token) as client:
        client.auth_to_hub()
        client.spawn_lab(NubladoImageByClass())
        client.wait_for_spawn()
        client.auth_to_lab()
        with client.lab_session() as session:
            assert session.run_python("print(secret)") == "shh\n"


USER_TEST = """
import pytest
import requests

from nublado_sync import NubladoClient, NubladoImageByClass


def test_default(mock_jupyter):
    with mock_jupyter.client("alice") as client:
        client.auth_to_hub()
        client.spawn_lab(NubladoImageByClass())
        client.wait_for_spawn()
        client.auth_to_lab()
        with client.lab_session() as session:
            assert session.run_python("print(6 * 7)") == "42\\n"


@pytest.mark.mock_jupyter(use_subdomains=True, users={"bob": "t0ken-for-bob"})
def test_marker(mock_jupyter):
    assert mock_jupyter.url.startswith("http://nublado.test:")
    with NubladoClient("bob", "t0ken-for-bob") as client:
        client.auth_to_hub()


def test_out_of_order_outside_the_client(mock_jupyter):
    # As a client in another process would: only the fixture can tell.
    bare = {"Authorization": "Bearer " + mock_jupyter.token_for("carol")}
    answer = requests.get(mock_jupyter.url + "hub/api/users/carol", headers=bare, timeout=5)
    assert answer.status_code == 403
"""


def test_plugin_in_a_fresh_pytest(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(USER_TEST)
    answer = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "nublado_sync.testing.pytest_plugin",
            "--strict-markers",
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert answer.returncode == 1, answer.stdout + answer.stderr
    assert "3 passed, 1 error" in answer.stdout
    assert "ERROR at teardown of test_out_of_order_outside_the_client" in answer.stdout
    assert "carol called GET /nb/hub/api/users/carol before logging in" in answer.stdout


# WebSocket framing


def test_accept_key_rfc6455_example() -> None:
    assert ws_frames.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200_000])
def test_frame_round_trip(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    data = ws_frames.encode_frame(ws_frames.OP_BINARY, payload, mask=b"\x01\x02\x03\x04")
    offset = 0

    def read(n: int) -> bytes:
        nonlocal offset
        chunk = data[offset : offset + n]
        offset += n
        return chunk

    frame = ws_frames.read_frame(read)
    assert frame is not None
    assert (frame.fin, frame.opcode, frame.masked, frame.payload) == (True, 2, True, payload)
    assert ws_frames.read_frame(read) is None


class _Pair:
    """A ServerWebSocket on one end of a socket pair, a raw client on the other."""

    def __init__(self) -> None:
        self.server_sock, self.client = socket.socketpair()
        self.client.settimeout(5)
        self.reader = self.server_sock.makefile("rb")
        self.ws = ws_frames.ServerWebSocket(self.reader.read, self.server_sock.sendall)

    def send(
        self, opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bool = True
    ) -> None:
        key: Optional[bytes] = b"\x0a\x0b\x0c\x0d" if mask else None
        self.client.sendall(ws_frames.encode_frame(opcode, payload, fin=fin, mask=key))

    def read(self) -> ws_frames.Frame:
        frame = ws_frames.read_frame(self._read_exact)
        assert frame is not None
        return frame

    def _read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.client.recv(n - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def close(self) -> None:
        self.reader.close()
        self.server_sock.close()
        self.client.close()


def test_server_websocket_fragments_pings_and_close() -> None:
    pair = _Pair()
    try:
        pair.send(ws_frames.OP_TEXT, b"hel", fin=False)
        pair.send(ws_frames.OP_PING, b"are you there")
        pair.send(ws_frames.OP_CONTINUATION, b"lo")
        assert pair.ws.receive() == (ws_frames.OP_TEXT, b"hello")
        pong = pair.read()
        assert (pong.opcode, pong.payload, pong.masked) == (
            ws_frames.OP_PONG,
            b"are you there",
            False,
        )
        pair.ws.send_binary(b"\x00\x01")
        assert pair.read().payload == b"\x00\x01"
        pair.send(ws_frames.OP_CLOSE, struct.pack("!H", 1000) + b"bye")
        assert pair.ws.receive() is None
        assert (pair.ws.close_code, pair.ws.close_reason) == (1000, "bye")
        answer = pair.read()
        assert answer.opcode == ws_frames.OP_CLOSE
        assert answer.payload[:2] == struct.pack("!H", 1000)
    finally:
        pair.close()


def test_server_websocket_refuses_unmasked_frames() -> None:
    pair = _Pair()
    try:
        pair.send(ws_frames.OP_BINARY, b"x", mask=False)
        assert pair.ws.receive() is None
        answer = pair.read()
        assert answer.opcode == ws_frames.OP_CLOSE
        assert struct.unpack("!H", answer.payload[:2]) == (ws_frames.CLOSE_PROTOCOL_ERROR,)
        with pytest.raises(ws_frames.WebSocketClosedError):
            pair.ws.send_binary(b"late")
    finally:
        pair.close()


def test_handshake_headers() -> None:
    request = {
        "Upgrade": "websocket",
        "Connection": "keep-alive, Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Protocol": "other, v1.kernel.websocket.jupyter.org",
    }
    headers, chosen = ws_frames.handshake_headers(
        request, subprotocols=["v1.kernel.websocket.jupyter.org"]
    )
    assert chosen == "v1.kernel.websocket.jupyter.org"
    assert ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") in headers
    with pytest.raises(ws_frames.WebSocketError) as info:
        ws_frames.handshake_headers({**request, "Sec-WebSocket-Version": "8"})
    assert info.value.code == 426


def test_output_reaches_its_cell_when_stdout_was_replaced_under_a_running_cell(
    mock: MockJupyter, tmp_path: Path
) -> None:
    # A test runner puts its own capture into sys.stdout between two tests,
    # while a cell of an earlier test may still be running: the next cell's
    # output must still come back to its caller, not land in the capture.
    flag = tmp_path / "go"
    waiting = (
        "import os, time\n"
        f"while not os.path.exists({str(flag)!r}):\n"
        "    time.sleep(0.01)\n"
        "print('first')\n"
    )
    client = lab_client(mock)
    with client, client.lab_session() as first, client.lab_session() as second:
        results: List[str] = []
        runner = threading.Thread(
            target=lambda: results.append(first.run_python(waiting, timeout=seconds(30)))
        )
        runner.start()
        try:
            assert wait_until(lambda: sys.stdout.__class__.__name__ == "_ProxyStream")
            captured = sys.stdout
            try:
                sys.stdout = _Capture()
                assert second.run_python("print(6 * 7)", timeout=seconds(10)) == "42\n"
                assert sys.stdout.getvalue() == ""  # type: ignore[attr-defined]
            finally:
                flag.touch()
                runner.join(30)
                replaced = sys.stdout
                sys.stdout = captured
            assert isinstance(replaced, _Capture)
        finally:
            flag.touch()
            runner.join(30)
        assert results == ["first\n"]


class _Capture(io.StringIO):
    """Stands in for a test runner's capture of sys.stdout."""
