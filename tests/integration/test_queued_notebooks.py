"""What the notebook runner promises of queued cells, against cell by cell.

Each notebook runs queued (the default) and cell by cell, each in a fresh
kernel; the saved notebooks, the exceptions and the hooks' calls must be
the same, failures, tags and deadlines included.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any, List, Optional, Tuple

import pytest

from nublado_sync import (
    NotebookCell,
    NubladoExecutionError,
    NubladoExecutionTimeoutError,
    execute_notebook,
)

from ..jupyter_servers import JupyterServer
from .conftest import lab, seconds
from .test_queued_cells import code, comparable, notebook

pytestmark = pytest.mark.integration

Call = Tuple[Any, ...]


class Outcome:
    """One run of a notebook: the saved notebook, the exception, the hooks' calls."""

    def __init__(self) -> None:
        self.notebook: Any = None
        self.error: Optional[BaseException] = None
        self.calls: List[Call] = []
        self.closed = False

    def on_cell_start(self, cell: NotebookCell) -> None:
        self.calls.append(("start", cell.number))

    def on_cell_complete(self, cell: NotebookCell) -> None:
        assert cell.result is not None
        self.calls.append(("complete", cell.number, cell.result.status))

    def on_cell_error(self, cell: NotebookCell) -> None:
        assert cell.result is not None
        self.calls.append(("error", cell.number, cell.result.ename))


def run(server: JupyterServer, nb: dict[str, Any], queue_cells: bool, **kwargs: Any) -> Outcome:
    outcome = Outcome()
    with lab(server) as session:
        try:
            text: Optional[str] = execute_notebook(
                session, nb, name="nb.ipynb", queue_cells=queue_cells, hooks=outcome, **kwargs
            )
        except (NubladoExecutionError, NubladoExecutionTimeoutError) as e:
            outcome.error = e
            text = e.notebook
        outcome.notebook = comparable(text)
        outcome.closed = session.closed
    return outcome


def run_both(server: JupyterServer, nb: dict[str, Any], **kwargs: Any) -> Tuple[Outcome, Outcome]:
    return run(server, nb, True, **kwargs), run(server, nb, False, **kwargs)


def texts(outcome: Outcome) -> List[str]:
    """Each code cell's standard output, as saved."""
    return [
        "".join(o["text"] for o in cell["outputs"] if o.get("name") == "stdout")
        for cell in outcome.notebook["cells"][1:]
    ]


def counts(outcome: Outcome) -> List[Optional[int]]:
    return [cell["execution_count"] for cell in outcome.notebook["cells"][1:]]


def test_allow_errors_runs_on_past_a_failure_in_the_middle(server: JupyterServer) -> None:
    nb = notebook(
        code("a", "print('before')"),
        code("b", "print('partial')\n1/0"),
        code("c", "print('after')"),
        code("d", "open('/nonexistent/dir/file')"),
        code("e", "print('last')"),
    )
    queued, one_by_one = run_both(server, nb, allow_errors=True)
    assert queued.error is None
    assert one_by_one.error is None
    assert queued.notebook == one_by_one.notebook
    assert queued.calls == one_by_one.calls
    assert texts(queued) == ["before\n", "partial\n", "after\n", "", "last\n"]
    assert counts(queued) == [1, 2, 3, 4, 5]
    cells = queued.notebook["cells"]
    assert cells[2]["outputs"][-1]["ename"] == "ZeroDivisionError"
    assert cells[4]["outputs"][-1]["ename"] == "FileNotFoundError"
    assert queued.calls == [
        ("start", 1),
        ("complete", 1, "ok"),
        ("start", 2),
        ("error", 2, "ZeroDivisionError"),
        ("complete", 2, "error"),
        ("start", 3),
        ("complete", 3, "ok"),
        ("start", 4),
        ("error", 4, "FileNotFoundError"),
        ("complete", 4, "error"),
        ("start", 5),
        ("complete", 5, "ok"),
    ]


TAGGED = notebook(
    code("ok", "x = 1\nprint('ok')"),
    code("expected", "print('raising')\nraise KeyError('expected')", tags=["raises-exception"]),
    code("skipped", "raise SystemExit('must not run')", tags=["skip-execution"]),
    # Tagged, yet it does not raise: nothing to hold against it.
    code("quiet", "print('no exception')", tags=["raises-exception"]),
    code("after", "print(x + 1)"),
    code("bad", "print('failing')\n1/0"),
    # Queued behind a failure not allowed: the kernel aborts them.
    code("never", "print('never')"),
    code("skipped2", "print('never either')", tags=["skip-execution"]),
    code("never2", "x = 'changed'"),
)


def test_tags_and_hooks_are_the_same(stock_server: JupyterServer) -> None:
    queued, one_by_one = run_both(stock_server, TAGGED)
    for outcome in (queued, one_by_one):
        assert isinstance(outcome.error, NubladoExecutionError)
        assert outcome.error.context is not None
        assert outcome.error.context.cell == "bad"
    assert queued.notebook == one_by_one.notebook
    assert queued.calls == one_by_one.calls
    assert texts(queued) == [
        "ok\n",
        "raising\n",
        "",
        "no exception\n",
        "2\n",
        "failing\n",
        "",
        "",
        "",
    ]
    assert counts(queued) == [1, 2, None, 3, 4, 5, None, None, None]
    assert queued.notebook["cells"][2]["outputs"][-1]["ename"] == "KeyError"
    assert queued.notebook["cells"][6]["outputs"][-1]["ename"] == "ZeroDivisionError"
    assert queued.calls == [
        ("start", 1),
        ("complete", 1, "ok"),
        ("start", 2),
        ("error", 2, "KeyError"),
        ("complete", 2, "error"),
        ("start", 4),
        ("complete", 4, "ok"),
        ("start", 5),
        ("complete", 5, "ok"),
        ("start", 6),
        ("error", 6, "ZeroDivisionError"),
        ("complete", 6, "error"),
    ]


def test_input_fails_the_same(stock_server: JupyterServer) -> None:
    # Requests go without standard input: input() raises in the kernel.
    nb = notebook(
        code("a", "print('asking')"),
        code("ask", "name = input('name? ')"),
        code("after", "print('never')"),
    )
    queued, one_by_one = run_both(stock_server, nb)
    for outcome in (queued, one_by_one):
        assert isinstance(outcome.error, NubladoExecutionError)
        assert outcome.error.context is not None
        assert outcome.error.context.cell == "ask"
    assert queued.notebook == one_by_one.notebook
    assert queued.calls == one_by_one.calls
    assert queued.notebook["cells"][2]["outputs"][-1]["ename"] == "StdinNotImplementedError"
    assert counts(queued) == [1, 2, None]
    assert queued.calls[-2:] == [
        ("error", 2, "StdinNotImplementedError"),
        ("complete", 2, "error"),
    ]


def waiting_cell(flags: Path) -> str:
    """A cell that waits until interrupted, and says so in a file."""
    return textwrap.dedent(
        f"""
        import pathlib, time
        flags = pathlib.Path({str(flags)!r})
        print('waiting', flush=True)
        try:
            end = time.monotonic() + 60
            while not (flags / 'never').exists() and time.monotonic() < end:
                time.sleep(0.05)
        except KeyboardInterrupt:
            (flags / 'interrupted').touch()
            raise
        """
    )


# Allowed to fail, the interrupted cell does not make the kernel abort the
# cells behind it: with a deadline they must not be queued behind it.
@pytest.mark.parametrize("allow_errors", [False, True])
def test_notebook_deadline_mid_run(
    server: JupyterServer, tmp_path: Path, allow_errors: bool
) -> None:
    limit = 3.0
    outcomes = []
    # One notebook (the paths are in its sources) for both runs; the
    # second starts once the first's flag is gone.
    flags = tmp_path
    nb = notebook(
        code("first", "print('first')"),
        code("wait", waiting_cell(flags)),
        code("rest", f"import pathlib\npathlib.Path({str(flags)!r}, 'ran').touch()"),
        code("last", "print('never')"),
    )
    for queue_cells in (True, False):
        started = time.monotonic()
        with lab(server) as session:
            with pytest.raises(NubladoExecutionTimeoutError) as info:
                execute_notebook(
                    session,
                    nb,
                    name="nb.ipynb",
                    timeout=seconds(limit),
                    allow_errors=allow_errors,
                    queue_cells=queue_cells,
                )
            elapsed = time.monotonic() - started
            # The deadline, plus a generous margin for starting the kernel,
            # the interrupt and the close on a loaded machine.
            assert elapsed < limit + 30
            error = info.value
            message = str(error)
            assert message.startswith("tester: cell 2 (id 'wait') of notebook nb.ipynb timed out")
            assert f"The notebook's deadline of {limit:.2f}s passed in cell 2 of 4" in message
            assert error.timeout == seconds(limit)
            assert error.context is not None
            assert error.context.cell == "wait"
            # The kernel was interrupted: the waiting cell says so (it may
            # take the kernel a moment after the call has returned).
            interrupted = flags / "interrupted"
            end = time.monotonic() + 30
            while not interrupted.exists():
                assert time.monotonic() < end, "the kernel was never interrupted"
                time.sleep(0.05)
            assert session.closed
            outcome = Outcome()
            outcome.notebook = comparable(error.notebook)
            outcomes.append(outcome)
            interrupted.unlink()
        # The rest never ran, even as the kernel was shut down (which
        # interrupts it again) right after the call.
        assert not (flags / "ran").exists()
    queued, one_by_one = outcomes
    assert queued.notebook == one_by_one.notebook
    assert texts(queued) == ["first\n", "waiting\n", "", ""]
    assert counts(queued) == [1, 2, None, None]
    # Nothing left behind: the server fixture checks sessions and kernels.
