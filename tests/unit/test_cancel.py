"""Stopping a client's blocking calls from another thread (upstream: cancelling the task).

Each test starts a call that would block for a minute in a thread, cancels
the client from the test's thread, and checks that the call ended at once
with NubladoCancelledError, that the usual clean-up ran (no lab session
left), and that later calls are refused without reaching the server.
"""

from __future__ import annotations

import datetime
import threading
import time
from typing import Any, Callable, List, Optional

import pytest

from nublado_sync import (
    NubladoCancelledError,
    NubladoClient,
    NubladoImageByClass,
)
from nublado_sync.testing import MockJupyter

from ..rogue_http import running_rogue_server

USER = "alice"
TOKEN = "token-of-alice-0d1e"
# What each blocked call would wait for without the cancellation.
BLOCKED = 60.0
# Generous: a cancelled call ends in milliseconds; this margin is for slow machines.
MARGIN = 10.0


def seconds(value: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=value)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


class Call:
    """A blocking call run in a thread of its own; keeps what it raised."""

    def __init__(self, target: Callable[[], Any]) -> None:
        self.error: Optional[BaseException] = None
        self.ended_at = 0.0
        self._target = target
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._target()
        except BaseException as e:
            self.error = e
        self.ended_at = time.monotonic()

    def join(self) -> BaseException:
        self._thread.join(BLOCKED + MARGIN)
        assert not self._thread.is_alive(), "the cancelled call did not end"
        assert self.error is not None, "the cancelled call returned"
        return self.error


@pytest.fixture
def mock() -> Any:
    with MockJupyter(users={USER: TOKEN}) as server:
        yield server


def test_http_request_in_flight() -> None:
    # A hub that never answers: the request would wait for its 60 s timeout.
    with running_rogue_server() as rogue:
        rogue.hang("/hub/home")
        client = NubladoClient(USER, TOKEN, hub_url=rogue.url, timeout=seconds(BLOCKED))
        call = Call(client.auth_to_hub)
        assert wait_until(lambda: rogue.paths() == ["/hub/home"])
        cancelled_at = time.monotonic()
        client.cancel()
        error = call.join()
        assert isinstance(error, NubladoCancelledError)
        assert call.ended_at - cancelled_at < MARGIN
        assert str(error) == "The call was cancelled (NubladoClient.cancel)"
        assert error.user == USER
        # Later calls are refused before anything is sent.
        with pytest.raises(NubladoCancelledError):
            client.is_lab_stopped()
        assert rogue.paths() == ["/hub/home"]
        client.close()


def test_close_from_another_thread() -> None:
    with running_rogue_server() as rogue:
        rogue.hang("/hub/home")
        client = NubladoClient(USER, TOKEN, hub_url=rogue.url, timeout=seconds(BLOCKED))
        call = Call(client.auth_to_hub)
        assert wait_until(lambda: rogue.paths() == ["/hub/home"])
        client.close()
        error = call.join()
        assert isinstance(error, NubladoCancelledError)
        assert "closed" in str(error)
        client.close()  # again: harmless


def test_spawn_progress_in_flight(mock: MockJupyter) -> None:
    mock.set_spawn_delay(BLOCKED)
    client = mock.client(USER)
    client.auth_to_hub()
    client.spawn_lab(NubladoImageByClass())
    progressing = threading.Event()
    call = Call(lambda: client.wait_for_spawn(on_progress=lambda _: progressing.set()))
    assert progressing.wait(MARGIN)
    cancelled_at = time.monotonic()
    client.cancel()
    assert isinstance(call.join(), NubladoCancelledError)
    assert call.ended_at - cancelled_at < MARGIN


def test_wait_for_lab_stopped(mock: MockJupyter) -> None:
    mock.set_delete_delay(BLOCKED)
    client = mock.client(USER)
    client.auth_to_hub()
    client.spawn_lab(NubladoImageByClass())
    client.wait_for_spawn(seconds(MARGIN))
    client.stop_lab()
    call = Call(lambda: client.wait_for_lab_stopped(seconds(BLOCKED)))
    # The lab stays listed (stopping) while the wait polls.
    assert not client.is_lab_stopped()
    cancelled_at = time.monotonic()
    client.cancel()
    assert isinstance(call.join(), NubladoCancelledError)
    assert call.ended_at - cancelled_at < MARGIN


def test_code_in_flight_and_session_deleted(mock: MockJupyter) -> None:
    mock.register_python_result("wait_for_it()", "done\n", delay=BLOCKED)
    client = mock.client(USER)
    client.auth_to_hub()
    client.spawn_lab(NubladoImageByClass())
    client.wait_for_spawn(seconds(MARGIN))
    outputs: List[str] = []

    def run() -> None:
        with client.lab_session() as session:
            outputs.append(session.run_python("print('ready')"))
            session.run_python("wait_for_it()")

    call = Call(run)
    assert wait_until(lambda: outputs == ["ready\n"])
    cancelled_at = time.monotonic()
    client.cancel()
    error = call.join()
    assert isinstance(error, NubladoCancelledError), repr(error)
    assert call.ended_at - cancelled_at < MARGIN
    # The usual clean-up ran on the way out: the session (and so its
    # kernel) was deleted although the client was cancelled.
    assert mock.get_sessions(USER) == []
    with pytest.raises(NubladoCancelledError), client.lab_session():
        pass
    assert mock.get_sessions(USER) == []


def test_cancel_before_any_call(mock: MockJupyter) -> None:
    client = mock.client(USER)
    client.cancel()
    client.cancel()
    with pytest.raises(NubladoCancelledError):
        client.auth_to_hub()
    with pytest.raises(NubladoCancelledError):
        client.lab_session().__enter__()
    assert mock.get_sessions(USER) == []
