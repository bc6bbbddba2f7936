"""The notebook runner at nbclient parity, and parameters, on a real Jupyter server."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, List, Tuple

import nbformat
import pytest

from nublado_sync import (
    NotebookCell,
    NotebookHooks,
    NubladoExecutionError,
    NubladoExecutionTimeoutError,
    NubladoUsageError,
    execute_notebook,
)

from ..jupyter_servers import JupyterServer
from .conftest import lab, seconds
from .test_cli import nublado_sync, server_args, server_env

pytestmark = pytest.mark.integration


def code(cell_id: str, source: str, *tags: str) -> dict[str, Any]:
    return {
        "cell_type": "code",
        "id": cell_id,
        "metadata": {"tags": list(tags)} if tags else {},
        "execution_count": None,
        "outputs": [],
        "source": source,
    }


def notebook(*cells: dict[str, Any]) -> dict[str, Any]:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "lsst", "display_name": "LSST", "language": "python"}},
        "cells": [
            {"cell_type": "markdown", "id": "title", "metadata": {}, "source": "# Test"},
            *cells,
        ],
    }


PARAMETERISED = notebook(
    code("defaults", "date = '2026-01-01'\nband = 'r'\nvisits = 1", "parameters"),
    code("use", "print(date, band, visits * 2)"),
)


def test_parameters_injected_after_the_parameters_cell(stock_server: JupyterServer) -> None:
    with lab(stock_server) as session:
        executed = execute_notebook(
            session,
            PARAMETERISED,
            name="params.ipynb",
            parameters={"date": "2026-12-01", "visits": 21},
        )
    node = nbformat.reads(executed, as_version=4)
    nbformat.validate(node)
    ids = [c.get("id") for c in node.cells]
    assert ids[:2] == ["title", "defaults"]
    injected = node.cells[2]
    assert injected.metadata.tags == ["injected-parameters"]
    assert injected.source == '# Parameters\ndate = "2026-12-01"\nvisits = 21\n'
    assert node.metadata.papermill.parameters == {"date": "2026-12-01", "visits": 21}
    assert node.cells[3].outputs[0].text == "2026-12-01 r 42\n"
    assert [c.execution_count for c in node.cells[1:]] == [1, 2, 3]


def test_earlier_injected_cell_is_replaced(stock_server: JupyterServer) -> None:
    with lab(stock_server) as session:
        first = execute_notebook(session, PARAMETERISED, parameters={"band": "g"})
        second = execute_notebook(session, first, parameters={"band": "i"})
    node = nbformat.reads(second, as_version=4)
    injected = [c for c in node.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert [c.source for c in injected] == ['# Parameters\nband = "i"\n']
    assert node.cells[3].outputs[0].text == "2026-01-01 i 2\n"


def test_invalid_parameters_refused_before_any_cell(stock_server: JupyterServer) -> None:
    with lab(stock_server) as session:
        for bad in ({"not valid": 1}, {"class": 1}, {"when": object()}):
            with pytest.raises(NubladoUsageError):
                execute_notebook(session, PARAMETERISED, parameters=bad)
        # Nothing ran: the kernel's history is still empty.
        result = session.execute("1", store_history=True)
        assert result.execution_count == 1


class Recorder(NotebookHooks):
    def __init__(self) -> None:
        self.calls: List[Tuple[str, int, str]] = []

    def on_cell_start(self, cell: NotebookCell) -> None:
        self.calls.append(("start", cell.number, cell.label))

    def on_cell_complete(self, cell: NotebookCell) -> None:
        self.calls.append(("complete", cell.number, cell.label))

    def on_cell_error(self, cell: NotebookCell) -> None:
        assert cell.result is not None
        self.calls.append(("error", cell.number, str(cell.result.ename)))


TAGGED = notebook(
    code("ok", "x = 1"),
    code("expected", "raise KeyError('expected')", "raises-exception"),
    code("skipped", "raise SystemExit('must not run')", "skip-execution"),
    code("blank", "  \n"),
    code("after", "print(x + 1)"),
)


def test_tags_and_hooks(stock_server: JupyterServer) -> None:
    hooks = Recorder()
    with lab(stock_server) as session:
        executed = execute_notebook(session, TAGGED, name="tags.ipynb", hooks=hooks)
    node = nbformat.reads(executed, as_version=4)
    cells = {c.get("id"): c for c in node.cells}
    assert cells["expected"].outputs[0].ename == "KeyError"
    assert cells["skipped"].execution_count is None
    assert cells["skipped"].outputs == []
    assert cells["blank"].execution_count is None
    assert cells["after"].outputs[0].text == "2\n"
    assert [c.execution_count for c in (cells["ok"], cells["expected"], cells["after"])] == [
        1,
        2,
        3,
    ]
    assert hooks.calls == [
        ("start", 1, "cell 1 of 5 (id 'ok')"),
        ("complete", 1, "cell 1 of 5 (In [1], id 'ok')"),
        ("start", 2, "cell 2 of 5 (id 'expected')"),
        ("error", 2, "KeyError"),
        ("complete", 2, "cell 2 of 5 (In [2], id 'expected')"),
        ("start", 5, "cell 5 of 5 (id 'after')"),
        ("complete", 5, "cell 5 of 5 (In [3], id 'after')"),
    ]
    for cell in (cells["ok"], cells["after"]):
        timings = cell.metadata.execution
        assert set(timings) == {
            "iopub.status.busy",
            "iopub.execute_input",
            "shell.execute_reply",
            "iopub.status.idle",
        }
        assert all(value.endswith("Z") for value in timings.values())


def test_allow_errors_runs_every_cell(stock_server: JupyterServer) -> None:
    failing = notebook(code("bad", "1/0"), code("good", "print('still ran')"))
    errors: List[str] = []
    with lab(stock_server) as session:
        executed = execute_notebook(
            session,
            failing,
            allow_errors=True,
            on_cell_error=lambda cell: errors.append(cell.label),
        )
    node = nbformat.reads(executed, as_version=4)
    assert node.cells[1].outputs[0].ename == "ZeroDivisionError"
    assert node.cells[2].outputs[0].text == "still ran\n"
    assert errors == ["cell 1 of 2 (In [1], id 'bad')"]


def test_error_names_the_cell_as_a_person_sees_it(stock_server: JupyterServer) -> None:
    failing = notebook(code("first", "y = 2"), code("second", "y / 0"))
    with lab(stock_server) as session, pytest.raises(NubladoExecutionError) as info:
        execute_notebook(session, failing, name="analysis.ipynb")
    message = str(info.value)
    assert message.startswith(
        "tester: cell 2 (In [2], id 'second') of notebook analysis.ipynb failed"
    )
    # The traceback's "Cell In[2]" is the same cell.
    assert "Cell In[2], line 1" in message
    assert info.value.notebook is not None
    saved = nbformat.reads(info.value.notebook, as_version=4)
    assert saved.cells[2].outputs[-1].output_type == "error"
    assert saved.cells[2].execution_count == 2


def test_notebook_deadline(stock_server: JupyterServer) -> None:
    slow = notebook(*(code(f"c{i}", "import time\ntime.sleep(1)") for i in range(10)))
    started = time.monotonic()
    with lab(stock_server) as session, pytest.raises(NubladoExecutionTimeoutError) as info:
        execute_notebook(session, slow, timeout=seconds(2.5), cell_timeout=seconds(30))
    elapsed = time.monotonic() - started
    # The deadline plus a generous margin for the interrupt, the close and
    # the session's deletion on a loaded machine.
    assert elapsed < 2.5 + 10
    assert "The notebook's deadline of 2.50s passed in cell" in str(info.value)
    assert info.value.timeout == seconds(2.5)
    assert info.value.notebook is not None


DISPLAYS = notebook(
    code(
        "show",
        "from IPython.display import display, clear_output\n"
        "handle = display('first', display_id=True)\n"
        "print('gone')\n"
        "clear_output()\n"
        "print('kept')",
    ),
    code("update", "handle.update('updated')\nprint('waiting')\nclear_output(wait=True)\n'last'"),
)


def test_clear_output_and_update_display(stock_server: JupyterServer) -> None:
    with lab(stock_server) as session:
        executed = execute_notebook(session, DISPLAYS)
    node = nbformat.reads(executed, as_version=4)
    show, update = node.cells[1], node.cells[2]
    # The display was cleared with the rest, before the update came.
    assert [o.output_type for o in show.outputs] == ["stream"]
    assert show.outputs[0].text == "kept\n"
    # clear_output(wait=True) cleared "waiting" when the result came.
    assert [o.output_type for o in update.outputs] == ["execute_result"]
    assert update.outputs[0].data["text/plain"] == "'last'"


def test_update_display_reaches_an_earlier_cell(stock_server: JupyterServer) -> None:
    cells = notebook(
        code("show", "from IPython.display import display\nh = display('old', display_id='d1')"),
        code("update", "h.update('new')"),
    )
    with lab(stock_server) as session:
        node = nbformat.reads(execute_notebook(session, cells), as_version=4)
    assert node.cells[1].outputs[0].data["text/plain"] == "'new'"
    assert node.cells[2].outputs == []


# The command


def write(path: Path, content: dict[str, Any]) -> Path:
    path.write_text(json.dumps(content))
    return path


def test_command_parameters(stock_server: JupyterServer, tmp_path: Path) -> None:
    source = write(tmp_path / "params.ipynb", PARAMETERISED)
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"date": "from-file", "band": "file", "visits": 5}))
    out = tmp_path / "out.ipynb"
    done = nublado_sync(
        "run",
        str(source),
        *server_args(stock_server),
        "-f",
        str(params),
        "-p",
        "visits",
        "4",
        "-r",
        "band",
        "7",
        "--save-notebook",
        str(out),
        env=server_env(stock_server),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "from-file 7 8\n"
    node = nbformat.reads(out.read_text(), as_version=4)
    assert node.metadata.papermill.parameters == {"date": "from-file", "band": "7", "visits": 4}
    # Plain log lines without a terminal: which cell of how many (the
    # injected one counts), and how long it took.
    lines = done.stderr.splitlines()
    assert [
        line for line in lines if "Running cell" in line and "cell=3" in line and "of=3" in line
    ]
    assert [line for line in lines if "Cell finished" in line and "seconds=" in line]


BAD_INPUTS = [
    (["-p", "not-a-name", "1"], "valid Python variable name"),
    (["-p", "import", "1"], "valid Python variable name"),
    (["-f", "{params}"], "is not JSON"),
    (["-f", "{missing}"], "Cannot read the parameters file"),
]


@pytest.mark.parametrize(("extra", "expected"), BAD_INPUTS)
def test_command_refuses_bad_parameters_before_starting(
    stock_server: JupyterServer, tmp_path: Path, extra: List[str], expected: str
) -> None:
    source = write(tmp_path / "params.ipynb", PARAMETERISED)
    (tmp_path / "bad.json").write_text("{not json")
    extra = [a.format(params=tmp_path / "bad.json", missing=tmp_path / "none.json") for a in extra]
    done = nublado_sync(
        "run", str(source), *server_args(stock_server), *extra, env=server_env(stock_server)
    )
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    assert stock_server.sessions() == []
    assert stock_server.kernels() == []


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            notebook({"cell_type": "markdown", "id": "m", "metadata": {}, "source": "x"}),
            "no code cell",
        ),
        ({"nbformat": 3, "nbformat_minor": 0, "worksheets": [{"cells": []}]}, "nbformat 4"),
    ],
)
def test_command_refuses_bad_notebooks_before_starting(
    stock_server: JupyterServer, tmp_path: Path, content: dict[str, Any], expected: str
) -> None:
    source = write(tmp_path / "bad.ipynb", content)
    done = nublado_sync(
        "run", str(source), *server_args(stock_server), env=server_env(stock_server)
    )
    assert done.returncode == 2, done.stderr
    assert "bad.ipynb" in done.stderr
    assert expected in done.stderr
    assert stock_server.sessions() == []
    assert stock_server.kernels() == []


def test_command_parameters_need_a_notebook(stock_server: JupyterServer) -> None:
    done = nublado_sync(
        "run",
        "-c",
        "print(1)",
        "-p",
        "x",
        "1",
        *server_args(stock_server),
        env=server_env(stock_server),
    )
    assert done.returncode == 2
    assert "need a .ipynb notebook" in done.stderr


def test_command_takes_the_server_from_the_environment(
    stock_server: JupyterServer, tmp_path: Path
) -> None:
    source = write(tmp_path / "params.ipynb", PARAMETERISED)
    env = {**server_env(stock_server), "NUBLADO_SERVER_URL": stock_server.url}
    done = nublado_sync("run", str(source), "--kernel", "lsst", "-p", "band", "u", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "2026-01-01 u 2\n"
