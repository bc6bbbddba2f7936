"""A notebook's cells queued at once: the same notebooks as cell by cell."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from nublado_sync import (
    NubladoExecutionError,
    NubladoExecutionTimeoutError,
    execute_notebook,
    open_lab_session,
)

from ..jupyter_servers import JupyterServer
from ..tcp_proxy import running_proxy
from .conftest import lab, no_leftovers, seconds
from .test_leaks import target

pytestmark = pytest.mark.integration


def code(cell_id: str, source: str, **metadata: Any) -> dict[str, Any]:
    return {
        "cell_type": "code",
        "id": cell_id,
        "metadata": metadata,
        "execution_count": None,
        "outputs": [],
        "source": source,
    }


def notebook(*cells: dict[str, Any]) -> dict[str, Any]:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {"cell_type": "markdown", "id": "title", "metadata": {}, "source": "# Queued"},
            *cells,
        ],
    }


def comparable(text: Optional[str]) -> Any:
    """The notebook without what differs from run to run (times, traceback counters)."""
    assert text is not None
    nb = json.loads(text)
    for cell in nb["cells"]:
        cell.get("metadata", {}).pop("execution", None)
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                output["traceback"] = len(output["traceback"])
    return nb


def run_both(
    server: JupyterServer, nb: dict[str, Any], **kwargs: Any
) -> tuple[Any, Any, list[type[BaseException]]]:
    """Run a notebook queued and cell by cell, each in a fresh kernel."""
    texts = []
    errors: list[type[BaseException]] = []
    for queue_cells in (True, False):
        with lab(server) as session:
            try:
                text: Optional[str] = execute_notebook(
                    session, nb, name="nb.ipynb", queue_cells=queue_cells, **kwargs
                )
            except (NubladoExecutionError, NubladoExecutionTimeoutError) as e:
                text = e.notebook
                errors.append(type(e))
            texts.append(comparable(text))
    return texts[0], texts[1], errors


MIXED = notebook(
    code("a", "x = 6\nprint('six')"),
    code("b", "x * 7"),
    code("c", "from IPython.display import display, Markdown\ndisplay(Markdown('**b**'))"),
    code("d", "import sys\nprint('err', file=sys.stderr)\nx + 1"),
)


def test_passing_notebook_is_the_same(server: JupyterServer) -> None:
    queued, one_by_one, errors = run_both(server, MIXED)
    assert errors == []
    assert queued == one_by_one
    assert queued["cells"][2]["outputs"][0]["data"]["text/plain"] == "42"


def test_failing_notebook_is_the_same(server: JupyterServer) -> None:
    nb = notebook(
        code("a", "print('before')"),
        code("b", "print('partial')\n1/0"),
        # Queued behind the failure: the kernel aborts them.
        code("c", "print('never')"),
        code("d", "open('/nonexistent/never', 'w')"),
    )
    queued, one_by_one, errors = run_both(server, nb)
    assert errors == [NubladoExecutionError, NubladoExecutionError]
    assert queued == one_by_one
    assert queued["cells"][2]["outputs"][-1]["ename"] == "ZeroDivisionError"
    assert queued["cells"][3]["outputs"] == []
    assert queued["cells"][3]["execution_count"] is None


def test_failure_names_the_cell_and_session_stays_usable(server: JupyterServer) -> None:
    nb = notebook(code("a", "y = 1"), code("b", "1/0"), code("c", "y = 2"))
    with lab(server) as session:
        with pytest.raises(NubladoExecutionError) as info:
            execute_notebook(session, nb, name="nb.ipynb")
        assert info.value.context.cell == "b"
        assert info.value.context.cell_number == "2"
        # The aborted requests were all answered: the next call gets its own.
        assert session.run_python("print(y)") == "1\n"


def test_timeout_is_the_same_and_counts_from_the_cell_start(server: JupyterServer) -> None:
    # Each cell takes 0.4 s under a 2 s deadline: only a deadline counted
    # from each cell's own start lets all eight through (they were all
    # sent at once, 3.2 s of work ago for the last). Then a cell too slow.
    cells = [code(f"c{i}", "import time\ntime.sleep(0.4)\nprint('done')") for i in range(8)]
    cells.append(code("slow", "print('start', flush=True)\nimport time\ntime.sleep(60)"))
    cells.append(code("after", "print('never')"))
    began = time.monotonic()
    queued, one_by_one, errors = run_both(server, notebook(*cells), cell_timeout=seconds(2))
    assert errors == [NubladoExecutionTimeoutError, NubladoExecutionTimeoutError]
    assert queued == one_by_one
    assert [c["outputs"][0]["text"] for c in queued["cells"][1:9]] == ["done\n"] * 8
    assert queued["cells"][9]["outputs"][0]["text"] == "start\n"
    assert queued["cells"][10]["outputs"] == []
    # The slow cells were cut short: had they run their 60 s, the two runs
    # would have taken two minutes (the margin is for a loaded machine).
    assert time.monotonic() - began < 110


def test_cells_are_queued_before_the_first_one_ends(
    stock_server: JupyterServer, tmp_path: Path
) -> None:
    # The first cell waits for a file; the others are trivial. The file
    # is made only once the proxy has seen every cell's request go by, which
    # only happens when they are all sent at once.
    gate = tmp_path / "gate"
    cells = [
        code(
            "wait",
            "import pathlib, time\n"
            f"gate = pathlib.Path({str(gate)!r})\n"
            "end = time.monotonic() + 60\n"
            "while not gate.exists() and time.monotonic() < end:\n"
            "    time.sleep(0.05)\n"
            "assert gate.exists()",
        ),
        *(code(f"n{i}", f"{i} * 2") for i in range(10)),
    ]
    with (
        running_proxy(target(stock_server)) as proxy,
        # No heartbeat probes while the first cell waits: only requests count.
        open_lab_session(
            proxy.url(),
            stock_server.token,
            kernel_name="lsst",
            heartbeat_interval=seconds(600),
        ) as session,
    ):
        before = proxy.client_frames().get("binary", 0)
        outcome: list[Any] = []
        runner = run_in_thread(lambda: execute_notebook(session, notebook(*cells)), outcome)
        deadline = time.monotonic() + 60
        while proxy.client_frames().get("binary", 0) < before + 11:
            assert time.monotonic() < deadline, proxy.client_frames()
            assert runner.is_alive()
            time.sleep(0.02)
        gate.touch()
        runner.join(60)
    assert not runner.is_alive()
    executed = json.loads(outcome[0])
    assert executed["cells"][-1]["outputs"][0]["data"]["text/plain"] == "18"


def run_in_thread(work: Callable[[], Any], outcome: list[Any]) -> threading.Thread:
    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_cli_cell_by_cell_saves_the_same_notebook(
    stock_server: JupyterServer, tmp_path: Path
) -> None:
    from .test_cli import nublado_sync, server_args, server_env

    source = tmp_path / "nb.ipynb"
    source.write_text(json.dumps(notebook(code("a", "print(1)"), code("b", "1/0"), code("c", "2"))))
    saved = []
    for extra in ([], ["--cell-by-cell"]):
        out = tmp_path / f"out{len(saved)}.ipynb"
        result = nublado_sync(
            "run",
            *server_args(stock_server),
            str(source),
            "--save-notebook",
            str(out),
            *extra,
            env=server_env(stock_server),
        )
        assert result.returncode == 1, result.stderr
        saved.append(comparable(out.read_text()))
    assert saved[0] == saved[1]
    assert saved[0]["cells"][3]["outputs"] == []


def test_ctrl_c_stops_the_cells_queued_behind(server: JupyterServer, tmp_path: Path) -> None:
    # The first cell says it started and then runs long; Ctrl-C lands while
    # the client waits for it. The cells queued behind must never run, even
    # though the session's deletion (which interrupts the kernel again
    # before shutting it down) follows at once.
    started, ran = tmp_path / "started", tmp_path / "ran"
    cells = [
        code("long", f"open({str(started)!r}, 'w').close()\nimport time\ntime.sleep(60)"),
        *(code(f"after{i}", f"open({str(ran)!r} + '{i}', 'w').close()") for i in range(3)),
    ]
    main = threading.get_ident()

    def press_ctrl_c() -> None:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        signal.pthread_kill(main, signal.SIGINT)

    began = time.monotonic()
    presser = threading.Thread(target=press_ctrl_c, daemon=True)
    with (
        no_leftovers(server),
        pytest.raises(KeyboardInterrupt),
        lab(server) as session,
    ):
        presser.start()
        execute_notebook(session, notebook(*cells), name="nb.ipynb")
    presser.join(5)
    assert started.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["started"]
    # The long cell was interrupted, not waited for (60 s); the margin is
    # for a loaded machine.
    assert time.monotonic() - began < 45
