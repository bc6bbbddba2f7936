"""Reconnect and resume: the kernel WebSocket drops, the call goes on.

A TCP proxy of ours sits between the client and a real server. The cell
under test prints, and the ``on_output`` callback (which runs in the
client's thread, before it reads on) takes the proxy down: every connection
reset, new ones refused. Files in a temporary directory order the rest: the
kernel prints the "gap" lines only once the connection is cut (and, on the
stock server, once the server buffers), and the proxy lets the client back
in only once the kernel has printed them. No sleep orders anything.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import psutil  # type: ignore[import-untyped,unused-ignore]
import pytest

from nublado_sync import (
    JupyterLabSessionManager,
    NubladoClient,
    NubladoImageByClass,
    NubladoKernelDiedError,
    NubladoOutputLostError,
    NubladoUsageError,
    NubladoWebSocketError,
    ReconnectPolicy,
)

from ..hub_testbed import TestHub
from ..jupyter_servers import JupyterServer
from ..log_capture import LogCapture
from ..tcp_proxy import TCPProxy, running_proxy
from .conftest import lab, seconds
from .test_batch import code

pytestmark = pytest.mark.integration

GAP_LINES = 50


def target(server: JupyterServer) -> Tuple[str, int]:
    host, port = server.url.split("//")[1].rstrip("/").split(":")
    return host, int(port)


@pytest.fixture
def proxy(server: JupyterServer) -> Iterator[TCPProxy]:
    with running_proxy(target(server)) as proxy:
        yield proxy


def proxied(server: JupyterServer, proxy: TCPProxy, **kwargs: Any) -> JupyterLabSessionManager:
    manager = lab(server, **kwargs)
    manager._api._base_url = proxy.url()
    return manager


def code_notebook(cells: List[Tuple[str, str]]) -> Dict[str, Any]:
    """A notebook of code cells, given as (id, source) pairs."""
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [code(cell_id, source) for cell_id, source in cells],
    }


def gap_cell(flags: Path, start: str = "") -> str:
    """A cell that prints before the cut, during the gap, and after it.

    With ``start``, the cell first waits for that flag file.
    """
    return textwrap.dedent(
        f"""
        import os, time
        def wait(name):
            while not os.path.exists(os.path.join({str(flags)!r}, name)):
                time.sleep(0.01)
        if {start!r}:
            wait({start!r})
        print('before', flush=True)
        wait('cut')
        for i in range({GAP_LINES}):
            print(f'gap {{i}}', flush=True)
        open(os.path.join({str(flags)!r}, 'printed'), 'w').close()
        wait('back')
        print('after', flush=True)
        """
    )


class Cutter:
    """The ``on_output`` callback that takes the proxy down at the first output."""

    def __init__(self, server: JupyterServer, proxy: TCPProxy, flags: Path) -> None:
        self.server = server
        self.proxy = proxy
        self.flags = flags
        self.manager: JupyterLabSessionManager | None = None
        self.outputs: List[Dict[str, Any]] = []

    def gate(self) -> bool:
        # Let the client back in once the kernel printed during the gap;
        # from then on the kernel may finish.
        if (self.flags / "printed").exists():
            (self.flags / "back").touch()
            return True
        return False

    def __call__(self, output: Dict[str, Any]) -> None:
        self.outputs.append(output)
        if len(self.outputs) > 1:
            return
        self.proxy.go_down(self.gate)
        if self.server.kind == "stock":
            # The kernel must print only once the server buffers for us.
            assert self.manager is not None
            key = f"Starting buffering for {self.manager.kernel_id}:"
            assert self.server.wait_for_log(key, 10), "the server never buffered"
        (self.flags / "cut").touch()


def test_cut_mid_cell(server: JupyterServer, proxy: TCPProxy, tmp_path: Path) -> None:
    expected = "before\n" + "".join(f"gap {i}\n" for i in range(GAP_LINES)) + "after\n"
    cutter = Cutter(server, proxy, tmp_path)
    logs = LogCapture()
    manager = proxied(server, proxy, logger=logs.logger())
    cutter.manager = manager
    with manager as session:
        lost: NubladoOutputLostError | None = None
        try:
            result = session.execute(gap_cell(tmp_path), on_output=cutter, timeout=seconds(60))
        except NubladoOutputLostError as e:
            lost = e
        if lost is not None:
            # The reply itself was lost (documents, reply sent in the gap).
            assert server.kind == "documents", lost
            assert lost.result is not None
            result = lost.result
        assert result.reconnects == 1
        if server.kind == "stock":
            # Replayed by the server: complete, and nothing twice.
            assert result.stdout == expected
            assert "".join(o["text"] for o in cutter.outputs) == expected
            assert not result.output_lost, logs.lines
            assert result.status == "ok"
        else:
            # Nothing kept: the loss is flagged, never silent, and nothing
            # arrived twice.
            assert result.output_lost
            assert result.stdout.startswith("before\n")
            assert "gap 0\n" not in result.stdout
            assert len(result.stdout) < len(expected)
        # The session goes on over the new connection.
        assert not session.closed
        assert session.run_python("print('still here')", timeout=seconds(30)) == "still here\n"
    events = [json.loads(line)["event"] for line in logs.lines]
    assert "Kernel WebSocket dropped, reconnecting" in events
    assert "Reconnected kernel WebSocket" in events


def test_idle_session_reconnects_on_next_call(server: JupyterServer, proxy: TCPProxy) -> None:
    with proxied(server, proxy) as session:
        assert session.run_python("x = 6 * 7; print(x)", timeout=seconds(30)) == "42\n"
        proxy.cut()
        # Same kernel: its state is still there.
        result = session.execute("print(x)", timeout=seconds(30))
        assert result.stdout == "42\n"
        assert not result.output_lost


def test_reconnect_gives_up_with_our_error(server: JupyterServer, proxy: TCPProxy) -> None:
    policy = ReconnectPolicy(max_attempts=3, first_delay=datetime.timedelta(seconds=0.05))
    with proxied(server, proxy, reconnect=policy) as session:
        session.run_python("pass", timeout=seconds(30))
        done = threading.Event()
        with pytest.raises(NubladoWebSocketError) as info:
            session.execute(
                "print('go', flush=True); import time; time.sleep(30)",
                on_output=lambda _: proxy.go_down(done.is_set),
                timeout=seconds(60),
            )
        assert "reconnecting failed after 3 attempt(s)" in str(info.value)
        assert proxy.refused == 3
        assert session.closed
        # Let the session's DELETE through.
        done.set()
    assert server.sessions() == []


@pytest.mark.parametrize("found", ["mid-cell", "idle"])
def test_a_lab_that_drops_every_new_connection_is_given_up_on(
    server: JupyterServer, proxy: TCPProxy, found: str
) -> None:
    # Each new connection is accepted and dropped before any message: the
    # attempts add up instead of starting over with each connection made,
    # whether the drop comes mid-cell or is found by the next call's send.
    policy = ReconnectPolicy(max_attempts=3, first_delay=datetime.timedelta(seconds=0.05))
    with proxied(server, proxy, reconnect=policy) as session:
        session.run_python("pass", timeout=seconds(30))
        proxy.drop_after_upgrade = True
        with pytest.raises(NubladoWebSocketError) as info:
            if found == "idle":
                proxy.cut()
                session.run_python("print('never')", timeout=seconds(60))
            else:
                session.execute(
                    "print('go', flush=True); import time; time.sleep(30)",
                    on_output=lambda _: proxy.cut(),
                    timeout=seconds(60),
                )
        message = str(info.value)
        assert "reconnecting failed after 3 attempt(s)" in message
        assert "dropped before the kernel sent anything" in message
        assert proxy.dropped_upgrades == 3
        assert session.closed
    assert server.sessions() == []


def test_no_reconnect_when_turned_off(server: JupyterServer, proxy: TCPProxy) -> None:
    with proxied(server, proxy, reconnect=None) as session:
        with pytest.raises(NubladoWebSocketError):
            session.execute(
                "print('go', flush=True); import time; time.sleep(30)",
                on_output=lambda _: proxy.cut(),
                timeout=seconds(60),
            )
        assert proxy.refused == 0
        assert session.closed


def test_a_kernel_the_lab_no_longer_has_ends_reconnecting_at_once(
    server: JupyterServer, proxy: TCPProxy
) -> None:
    # A second attempt would wait two minutes, past the call's deadline.
    policy = ReconnectPolicy(first_delay=seconds(120), max_delay=seconds(120))
    manager = proxied(server, proxy, reconnect=policy)
    with manager as session:
        session.run_python("pass", timeout=seconds(30))
        kernel = manager._kernel_id

        def gone(_: Any) -> None:
            # Shut down behind the session's back (as a kernel that died for
            # good is removed), and the connection cut. Frozen meanwhile:
            # the kernel's reply to the interrupt of its shutdown must not
            # reach the session before the cut (once in CI it did, and the
            # call ended with the KeyboardInterrupt instead).
            proxy.freeze()
            server.api("DELETE", f"api/kernels/{kernel}")
            proxy.cut()
            proxy.thaw()

        with pytest.raises(NubladoWebSocketError) as info:
            session.execute(
                "print('go', flush=True); import time; time.sleep(30)",
                on_output=gone,
                timeout=seconds(60),
            )
        message = str(info.value)
        assert f"The lab no longer has this session's kernel ({kernel})" in message
        assert "reconnecting is pointless" in message
        assert session.closed
    assert server.sessions() == []


def test_a_kernel_shut_down_under_a_call_is_reported_by_the_heartbeat(
    server: JupyterServer,
) -> None:
    # The server leaves the WebSocket open and silent: only the heartbeat
    # notices, and asking the lab tells why long before its 60 s timeout.
    # jupyter_client interrupts a kernel before shutting it down, and the
    # reply to that interrupt sometimes gets out before the channel goes
    # (a KeyboardInterrupt error, not a dead kernel).  The cell ignores
    # SIGINT so that the kernel dies without answering, as this test needs.
    manager = lab(server, heartbeat_interval=seconds(0.5))
    with manager as session:
        session.run_python("pass", timeout=seconds(30))
        kernel = manager._kernel_id
        with pytest.raises(NubladoKernelDiedError) as info:
            session.execute(
                "import signal, time;"
                " signal.signal(signal.SIGINT, signal.SIG_IGN);"
                " print('go', flush=True); time.sleep(30)",
                on_output=lambda _: server.api("DELETE", f"api/kernels/{kernel}"),
                timeout=seconds(50),
            )
        assert "The lab no longer has the kernel" in str(info.value)
        assert session.closed
    assert server.sessions() == []


def test_bad_policy_is_refused() -> None:
    with pytest.raises(NubladoUsageError):
        ReconnectPolicy(max_attempts=0)
    with pytest.raises(NubladoUsageError):
        ReconnectPolicy(jitter=2)
    with pytest.raises(NubladoUsageError):
        ReconnectPolicy(first_delay=-datetime.timedelta(seconds=1))


@pytest.mark.parametrize("reconnects", [None, "0"])
def test_the_command_rides_through_a_cut_unless_told_not_to(
    stock_server: JupyterServer, tmp_path: Path, reconnects: str | None
) -> None:
    flag = tmp_path / "cut"
    code = textwrap.dedent(
        f"""
        import os, time
        print('go', flush=True)
        while not os.path.exists({str(flag)!r}):
            time.sleep(0.01)
        print('done', flush=True)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUBLADO_")}
    env.update({"NUBLADO_TOKEN": stock_server.token, "NUBLADO_USER": "cli"})
    with running_proxy(target(stock_server)) as proxy:
        command = [sys.executable, "-m", "nublado_sync", "run", "--server-url", proxy.url()]
        command += ["--kernel", "lsst", "--timeout", "60", "-c", code]
        if reconnects is not None:
            command += ["--reconnects", reconnects]
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        ) as process:
            assert process.stdout is not None
            assert process.stdout.readline() == "go\n"
            proxy.cut()
            flag.touch()
            out, err = process.communicate(timeout=120)
    if reconnects is None:
        assert process.returncode == 0, err
        assert out == "done\n"
    else:
        assert process.returncode == 5, err
        assert out == ""
        assert "--reconnects" in err, err
    assert stock_server.sessions() == []


def chp_processes(hub: TestHub) -> List[psutil.Process]:
    return [
        p for p in hub.processes() if any("configurable-http-proxy" in part for part in p.cmdline())
    ]


def test_proxy_restart_through_the_hub(hub: TestHub) -> None:
    # configurable-http-proxy killed while a cell runs; the hub notices
    # (every 5 s) and starts a new one, then gives it its routes again.
    deadline = 60.0
    with NubladoClient("carol", hub.tokens["carol"], hub_url=hub.url) as client:
        client.auth_to_hub()
        client.spawn_lab(NubladoImageByClass())
        client.wait_for_spawn(seconds(90))
        client.auth_to_lab()
        killed: List[int] = []

        def kill_proxy(_: Dict[str, Any]) -> None:
            if killed:
                return
            for proc in chp_processes(hub):
                killed.append(proc.pid)
                proc.kill()

        with client.lab_session() as session:
            start = time.monotonic()
            result = session.execute(
                "import time\nprint('go', flush=True)\ntime.sleep(6)\nprint('done')",
                on_output=kill_proxy,
                timeout=seconds(deadline),
            )
            elapsed = time.monotonic() - start
            assert killed, "no proxy process was found"
            assert result.reconnects >= 1
            # A stock lab kept what the kernel sent while the proxy was down.
            assert result.stdout == "go\ndone\n"
            assert not result.output_lost
            assert elapsed < deadline
        # The session's DELETE went through the new proxy: no kernel left.
        assert hub.lab_sessions("carol") == []
        assert [p.pid for p in chp_processes(hub)] != killed
        client.stop_lab()
        client.wait_for_lab_stopped(seconds(60))


def test_queued_notebook_survives_a_cut(stock_server: JupyterServer, tmp_path: Path) -> None:
    # The cells go queued at once; the second cell's first output takes the
    # proxy down; that cell prints through the gap and finishes once the
    # client is back, the stock server replaying what it buffered. The
    # second cell starts printing only once the client has the first cell's
    # reply: the server forwards shell and iopub separately, so the second
    # cell's output can overtake that reply, which the cut would then lose
    # before the server buffers (the client reports that as lost output).
    from nublado_sync import NotebookCell, execute_notebook

    flags = tmp_path / "flags"
    flags.mkdir()
    cells = [
        ("one", "x = 6"),
        ("gap", gap_cell(flags, start="one done")),
        ("three", "print('three')"),
        ("four", "x * 7"),
    ]
    nb = code_notebook(cells)
    results: List[Any] = []

    def completed(cell: NotebookCell) -> None:
        results.append(cell.result)
        (flags / "one done").touch()

    with running_proxy(target(stock_server)) as proxy:
        cutter = Cutter(stock_server, proxy, flags)
        manager = proxied(stock_server, proxy)
        cutter.manager = manager
        with manager as session:
            executed = json.loads(
                execute_notebook(
                    session,
                    nb,
                    on_output=cutter,
                    on_cell_complete=completed,
                    cell_timeout=seconds(60),
                    queue_cells=True,
                )
            )
            assert session._link.reconnects == 1
            assert sum(result.reconnects for result in results) >= 1
            # Every output saved, each once.
            texts = [
                "".join(o["text"] for o in cell["outputs"] if o["output_type"] == "stream")
                for cell in executed["cells"]
            ]
            gap = "before\n" + "".join(f"gap {i}\n" for i in range(GAP_LINES)) + "after\n"
            assert texts == ["", gap, "three\n", ""]
            assert executed["cells"][3]["outputs"][0]["data"]["text/plain"] == "42"
            assert [c["execution_count"] for c in executed["cells"]] == [1, 2, 3, 4]
            # The call let go of the new socket: another thread (the
            # housekeeper's) can take it.
            taken: List[bool] = []

            def take() -> None:
                lock = session._link.socket.io_lock
                taken.append(lock.acquire(blocking=False))
                if taken[-1]:
                    lock.release()

            other = threading.Thread(target=take)
            other.start()
            other.join(30)
            assert taken == [True]
            # The session goes on over the new connection.
            assert not session.closed
            assert session.run_python("print('still here')", timeout=seconds(30)) == "still here\n"
    assert stock_server.sessions() == []


class BackOnReconnect(LogCapture):
    """Log lines kept; the "back" flag touched once the session reconnected.

    The cell under test then prints its last line and ends only once the
    client is connected again, so its reply is never lost with the gap.
    """

    def __init__(self, flags: Path) -> None:
        super().__init__()
        self.flags = flags

    def msg(self, message: str) -> None:
        super().msg(message)
        if json.loads(message)["event"] == "Reconnected kernel WebSocket":
            (self.flags / "back").touch()

    debug = info = warning = warn = error = critical = exception = msg


def test_a_queued_cell_says_whether_the_cut_cost_it_output(
    server: JupyterServer, tmp_path: Path
) -> None:
    # Three queued cells; the second one's first output takes the proxy
    # down, and the kernel prints through the gap. The stock server replays
    # what it kept: nothing is lost. jupyter-server-documents keeps
    # nothing: the second cell's result says its output is incomplete, and
    # only its result (the cells before and after lost nothing).
    from nublado_sync import NotebookCell, execute_notebook

    flags = tmp_path / "flags"
    flags.mkdir()
    cells = [
        ("one", "print('one')"),
        ("gap", gap_cell(flags, start="one done")),
        ("three", "print('three')"),
    ]
    nb = code_notebook(cells)
    results: List[Any] = []

    def completed(cell: NotebookCell) -> None:
        results.append(cell.result)
        (flags / "one done").touch()

    logs = BackOnReconnect(flags)
    with running_proxy(target(server)) as proxy:
        cutter = Cutter(server, proxy, flags)
        manager = proxied(server, proxy, logger=logs.logger())
        cutter.manager = manager
        # The proxy lets the client back once the gap is printed; the
        # kernel goes on once the client is back (not at the gate).
        cutter.gate = (flags / "printed").exists  # type: ignore[method-assign]
        with manager as session:
            execute_notebook(
                session,
                nb,
                on_output=lambda output: cutter(output) if results else None,
                on_cell_complete=completed,
                cell_timeout=seconds(60),
                queue_cells=True,
            )
            assert session._link.reconnects == 1
    gap = "before\n" + "".join(f"gap {i}\n" for i in range(GAP_LINES)) + "after\n"
    assert [result.stdout for result in results][::2] == ["one\n", "three\n"]
    assert [result.output_lost for result in results] == [
        False,
        server.kind == "documents",
        False,
    ], logs.lines
    if server.kind == "stock":
        assert results[1].stdout == gap
    else:
        assert results[1].stdout == "before\nafter\n"
    assert server.sessions() == []
