"""Waking once per reply while no early ACK is due, against real labs (see ``_wakeups``)."""

from __future__ import annotations

import collections
import pathlib
import socket
from typing import Any, Counter, Dict, Optional

import pytest

from nublado_sync import AckPolicy, JupyterLabSession, _transport

from ..jupyter_servers import JupyterServer
from .conftest import lab, no_leftovers, seconds

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "SO_RCVLOWAT"), reason="no SO_RCVLOWAT on this platform"
)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> Counter[Any]:
    """Count the hinted waits by outcome, and the ordinary waits to read."""
    counts: Counter[Any] = collections.Counter()
    hinted = _transport.wait_for_bytes

    def count_hinted(sock: socket.socket, count: int, timeout: float) -> Optional[bool]:
        came = hinted(sock, count, timeout)
        counts["hinted", came] += 1
        return came

    ordinary = _transport._DeadlineSocket._wait

    def count_ordinary(self: _transport._DeadlineSocket, writing: bool) -> None:
        counts["ordinary", writing] += 1
        ordinary(self, writing)

    monkeypatch.setattr(_transport, "wait_for_bytes", count_hinted)
    monkeypatch.setattr(_transport._DeadlineSocket, "_wait", count_ordinary)
    return counts


def _floor(session: JupyterLabSession) -> Optional[int]:
    return session._link.socket._reply_floor._floor


def test_a_reply_wakes_the_reader_once_when_no_ack_is_due(
    server: JupyterServer, waits: Counter[Any]
) -> None:
    with no_leftovers(server), lab(server, prompt_acks=AckPolicy.off()) as session:
        # The first reply teaches the floor.
        assert session.run_python("print(1)") == "1\n"
        assert _floor(session) is not None
        waits.clear()
        for n in range(5):
            assert session.run_python(f"print({n})") == f"{n}\n"
    # Each reply (busy, the input, the stream, the reply, idle) was waited
    # for once, as a whole.
    assert waits["hinted", True] == 5
    assert waits["hinted", False] == 0
    assert waits["ordinary", False] <= 5


def test_with_acks_due_the_reader_wakes_per_message(
    server: JupyterServer, waits: Counter[Any]
) -> None:
    # One call in flight, under the default limit: early ACKs need the
    # reader awake after each message.
    with no_leftovers(server), lab(server) as session:
        for _ in range(3):
            session.run_python("pass")
    assert not any(key[0] == "hinted" for key in waits)


def test_a_reply_below_the_floor_costs_one_bounded_wait(
    stock_server: JupyterServer, waits: Counter[Any]
) -> None:
    with no_leftovers(stock_server), lab(stock_server, prompt_acks=False) as session:
        session.run_python("pass")
        learned = _floor(session)
        assert learned is not None
        # A floor no reply reaches, as if learned from a reply padded by a
        # message that was not its own.
        session._link.socket._reply_floor._floor = 50_000
        waits.clear()
        assert session.run_python("pass") == ""
        assert waits["hinted", False] == 1
        # Learned again from the reply that undercut it.
        assert _floor(session) == learned
        waits.clear()
        session.run_python("pass")
        assert waits["hinted", True] == 1


def test_output_reaches_the_callback_while_the_cell_runs(
    stock_server: JupyterServer, tmp_path: pathlib.Path
) -> None:
    # The cell goes on only once the callback has seen its first line: a
    # reader that waited for the whole reply's bytes before reading would
    # leave it waiting until the deadline.
    flag = tmp_path / "seen"
    code = (
        "import os, time\n"
        "print('waiting', flush=True)\n"
        f"while not os.path.exists({str(flag)!r}):\n"
        "    time.sleep(0.01)\n"
        "print('done')\n"
    )
    with no_leftovers(stock_server), lab(stock_server, prompt_acks=False) as session:
        session.run_python("pass")
        assert _floor(session) is not None
        seen = []

        def on_output(output: Dict[str, Any]) -> None:
            seen.append(output.get("text"))
            flag.touch()

        result = session.execute(code, on_output=on_output, timeout=seconds(60))
    assert result.stdout == "waiting\ndone\n"
    assert seen[0] == "waiting\n"
