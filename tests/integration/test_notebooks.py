"""Notebooks: client-side cell by cell, and the Rubin execution extension."""

from __future__ import annotations

import copy
import json
from typing import Any

import nbformat
import pytest

from nublado_sync import (
    NotebookExecutionResult,
    NubladoClient,
    NubladoExecutionError,
    NubladoExecutionTimeoutError,
    NubladoUsageError,
)

from ..jupyter_servers import JupyterServer
from .conftest import lab, seconds

pytestmark = pytest.mark.integration


def code(cell_id: str, source: str) -> dict[str, Any]:
    return {
        "cell_type": "code",
        "id": cell_id,
        "metadata": {},
        "execution_count": None,
        "outputs": [],
        "source": source.splitlines(keepends=True),
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


PASSING = notebook(
    code("setup", "import sys\nx = 21\nprint('to stdout')\nprint('to stderr', file=sys.stderr)"),
    code("value", "x * 2"),
    code(
        "display",
        "from IPython.display import display, Markdown\ndisplay(Markdown('**bold**'))",
    ),
)


def test_client_side_passing(server: JupyterServer) -> None:
    with lab(server) as session:
        executed = session.execute_notebook(json.dumps(PASSING), name="passing.ipynb")
    node = nbformat.reads(executed, as_version=4)
    nbformat.validate(node)
    cells = node.cells
    assert cells[0].cell_type == "markdown"
    assert [c.execution_count for c in cells[1:]] == [1, 2, 3]
    setup = cells[1].outputs
    assert [(o.output_type, o.name, o.text) for o in setup] == [
        ("stream", "stdout", "to stdout\n"),
        ("stream", "stderr", "to stderr\n"),
    ]
    assert cells[2].outputs[0].output_type == "execute_result"
    assert cells[2].outputs[0].data["text/plain"] == "42"
    assert cells[2].outputs[0].execution_count == 2
    assert cells[3].outputs[0].output_type == "display_data"
    assert cells[3].outputs[0].data["text/markdown"] == "**bold**"


def test_client_side_stops_at_failing_cell(server: JupyterServer) -> None:
    failing = notebook(
        code("one", "print('ran')"),
        code("two", "raise ValueError('middle cell')"),
        code("three", "print('never')"),
    )
    with lab(server) as session, pytest.raises(NubladoExecutionError) as info:
        session.execute_notebook(failing, name="failing.ipynb")
    exc = info.value
    assert exc.context.notebook == "failing.ipynb"
    assert exc.context.cell == "two"
    assert exc.context.cell_number == "2"
    assert str(exc).startswith("tester: cell 2 (In [2], id 'two') of notebook failing.ipynb failed")
    assert "ValueError: middle cell" in str(exc)
    assert exc.notebook is not None
    node = nbformat.reads(exc.notebook, as_version=4)
    nbformat.validate(node)
    assert node.cells[1].outputs[0].text == "ran\n"
    assert node.cells[2].outputs[0].output_type == "error"
    assert node.cells[2].outputs[0].ename == "ValueError"
    assert node.cells[3].outputs == []
    assert node.cells[3].execution_count is None
    # The input notebook is untouched.
    assert failing["cells"][1]["outputs"] == []


def test_client_side_cell_timeout(server: JupyterServer) -> None:
    slow = notebook(code("fast", "print(1)"), code("slow", "import time\ntime.sleep(60)"))
    with lab(server) as session:
        with pytest.raises(NubladoExecutionTimeoutError) as info:
            session.execute_notebook(slow, name="slow.ipynb", cell_timeout=seconds(2))
        assert session.closed
    assert info.value.context.cell == "slow"
    assert info.value.notebook is not None
    nbformat.validate(nbformat.reads(info.value.notebook, as_version=4))


def test_client_side_bad_notebooks(server: JupyterServer) -> None:
    with lab(server) as session:
        for bad in ("not json", "[]", json.dumps({"nbformat": 3, "cells": []})):
            with pytest.raises(NubladoUsageError):
                session.execute_notebook(bad)
        assert session.run_python("print('fine')") == "fine\n"


def rubin_client(server: JupyterServer) -> NubladoClient:
    # The server's root plays the hub: the client's lab URL is root/user/alice/.
    root = server.url.split("/user/")[0].rstrip("/") + "/"
    return NubladoClient("alice", server.token, hub_url=root)


def test_extension_passing(rubin_lab_server: JupyterServer) -> None:
    with rubin_client(rubin_lab_server) as client:
        result = client.run_notebook(json.dumps(PASSING), kernel_name="lsst")
    assert isinstance(result, NotebookExecutionResult)
    assert result.error is None
    node = nbformat.reads(result.notebook, as_version=4)
    assert node.cells[2].outputs[0].data["text/plain"] == "42"


def test_extension_reports_cell_failure(rubin_lab_server: JupyterServer) -> None:
    failing = copy.deepcopy(PASSING)
    failing["cells"][2]["source"] = ["1/0"]
    with rubin_client(rubin_lab_server) as client:
        result = client.run_notebook(json.dumps(failing), kernel_name="lsst")
    assert result.error is not None
    assert result.error.name == "ZeroDivisionError"
    assert "1/0" in result.error.message
    assert "ZeroDivisionError" in result.error.traceback
    node = nbformat.reads(result.notebook, as_version=4)
    assert node.cells[1].outputs  # ran before the failure
    # nbconvert's kernel is gone with the request.
    assert rubin_lab_server.api("GET", "user/alice/api/kernels").json() == []


def test_extension_with_parameters(rubin_lab_server: JupyterServer) -> None:
    parameterised = notebook(
        {
            "cell_type": "code",
            "id": "defaults",
            "metadata": {"tags": ["parameters"]},
            "execution_count": None,
            "outputs": [],
            "source": "band = 'r'",
        },
        code("use", "print(band)"),
    )
    with rubin_client(rubin_lab_server) as client:
        result = client.run_notebook(
            json.dumps(parameterised), kernel_name="lsst", parameters={"band": "z"}
        )
        with pytest.raises(NubladoUsageError, match="valid Python variable name"):
            client.run_notebook(json.dumps(parameterised), parameters={"1x": 1})
    assert result.error is None
    node = nbformat.reads(result.notebook, as_version=4)
    assert node.cells[2].metadata.tags == ["injected-parameters"]
    assert node.cells[3].outputs[0]["text"] == "z\n"
    assert node.metadata.papermill.parameters == {"band": "z"}
