"""The notebook runner's parts that need no kernel: parameters, plans, the progress display."""

from __future__ import annotations

import copy
import io
import json
from typing import Any, Dict, List

import pytest

from nublado_sync import NubladoUsageError
from nublado_sync._notebooks._options import checked_notebook
from nublado_sync._notebooks._parameters import (
    check_parameters,
    inject_parameters,
    parameters_code,
    read_parameters_file,
    typed_value,
)
from nublado_sync._notebooks._plan import NotebookCell, code_cells, prepare_notebook
from nublado_sync._notebooks._progress import CellProgress


def _code(source: str, *tags: str, cell_id: str = "") -> Dict[str, Any]:
    cell: Dict[str, Any] = {
        "cell_type": "code",
        "metadata": {"tags": list(tags)},
        "execution_count": None,
        "outputs": [],
        "source": source,
    }
    if cell_id:
        cell["id"] = cell_id
    return cell


def _notebook(*cells: Dict[str, Any], minor: int = 5) -> Dict[str, Any]:
    return {
        "nbformat": 4,
        "nbformat_minor": minor,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "cells": list(cells),
    }


VALUES: Dict[str, Any] = {
    "text": 'quote " backslash \\ newline \n tab \t unicode é',
    "number": 3,
    "ratio": 0.25,
    "flag": True,
    "nothing": None,
    "nan": float("nan"),
    "minus_inf": float("-inf"),
    "items": [1, "two", [3.5, None]],
    "mapping": {"a": 1, "b": {"c": False}},
}


def test_injected_values_are_python_that_reads_back() -> None:
    namespace: Dict[str, Any] = {}
    exec(parameters_code(VALUES), namespace)
    for name, value in VALUES.items():
        if name == "nan":
            assert namespace[name] != namespace[name]
        else:
            assert namespace[name] == value


@pytest.mark.parametrize(
    "layout",
    [
        "tagged",
        "untagged",
        "reinjected",
        "old-minor",
    ],
)
def test_injection_matches_papermill(layout: str) -> None:
    nbformat = pytest.importorskip("nbformat")
    parameterize = pytest.importorskip("papermill.parameterize")
    cells = [_code("# setup", cell_id="a"), _code("x = 1", "parameters", cell_id="b")]
    if layout == "untagged":
        cells[1]["metadata"]["tags"] = []
    if layout == "reinjected":
        cells.append(_code("x = 0", "injected-parameters", cell_id="c"))
    cells.append(_code("print(x)", cell_id="d"))
    source = _notebook(*cells, minor=4 if layout == "old-minor" else 5)
    if layout == "old-minor":
        for cell in source["cells"]:
            del cell["id"]
    values = {k: v for k, v in VALUES.items() if k != "nan"}  # nan != nan

    ours = copy.deepcopy(source)
    inject_parameters(ours, values)
    node = nbformat.from_dict(copy.deepcopy(source))
    node.metadata["papermill"] = {}
    theirs = json.loads(
        nbformat.writes(parameterize.parameterize_notebook(node, values, kernel_name="python3"))
    )

    def shape(notebook: Dict[str, Any]) -> List[Any]:
        return [
            (c["cell_type"], "".join(c["source"]), c["metadata"].get("tags"), "id" in c)
            for c in notebook["cells"]
        ]

    assert shape(ours) == shape(theirs)
    assert ours["nbformat_minor"] == theirs["nbformat_minor"]
    assert (
        ours["metadata"]["papermill"]["parameters"] == theirs["metadata"]["papermill"]["parameters"]
    )
    nbformat.validate(nbformat.from_dict(ours))


@pytest.mark.parametrize(
    "text", ["True", "False", "None", "12", "-3", "1.5", "1e3", "nan", "2026-12-01", "abc", ""]
)
def test_typed_values_as_papermill_reads_them(text: str) -> None:
    cli = pytest.importorskip("papermill.cli")
    ours, theirs = typed_value(text), cli._resolve_type(text)
    assert type(ours) is type(theirs)
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"1x": 1}, "'1x' is not a valid Python variable name"),
        ({"a-b": 1}, "not a valid Python variable name"),
        ({"lambda": 1}, "not a valid Python variable name"),
        ({"when": object()}, "Parameter when has a value of type object"),
        ([("a", 1)], "parameters must be a mapping"),
    ],
)
def test_invalid_parameters(parameters: Any, message: str) -> None:
    with pytest.raises(NubladoUsageError, match=message):
        check_parameters(parameters)


def test_parameters_only_for_python_notebooks() -> None:
    notebook = _notebook(_code("x <- 1"))
    notebook["metadata"]["kernelspec"]["language"] = "R"
    with pytest.raises(NubladoUsageError, match="only into Python notebooks; this one is r"):
        inject_parameters(notebook, {"x": 2})


def test_parameters_file(tmp_path: Any) -> None:
    good = tmp_path / "good.json"
    good.write_text('{"band": "r", "visits": [1, 2]}')
    assert read_parameters_file(str(good)) == {"band": "r", "visits": [1, 2]}
    bad = tmp_path / "bad.json"
    bad.write_text("band: r")
    with pytest.raises(NubladoUsageError, match=r"bad.json is not JSON"):
        read_parameters_file(str(bad))
    listed = tmp_path / "list.json"
    listed.write_text("[1]")
    with pytest.raises(NubladoUsageError, match="must hold a JSON object"):
        read_parameters_file(str(listed))
    with pytest.raises(NubladoUsageError, match=r"Cannot read the parameters file .*none\.json"):
        read_parameters_file(str(tmp_path / "none.json"))


def test_plan_counts_every_code_cell_and_skips_like_nbclient() -> None:
    notebook = prepare_notebook(
        _notebook(
            {"cell_type": "markdown", "metadata": {}, "source": "# title"},
            _code("a = 1", cell_id="one"),
            _code("   ", cell_id="blank"),
            _code("b = 2", "skip-execution", cell_id="skipped"),
            _code("c = 3", cell_id="three"),
        )
    )
    runs = code_cells(notebook, "n.ipynb")
    assert [(r.index, r.number, r.total, r.id) for r in runs] == [
        (1, 1, 4, "one"),
        (4, 4, 4, "three"),
    ]
    assert runs[0].label == "cell 1 of 4 (id 'one')"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "Notebook is not JSON"),
        ('{"nbformat": 3, "worksheets": []}', "Notebook is nbformat 3; only nbformat 4"),
        (json.dumps(_notebook()), "The notebook has no code cell to run"),
    ],
)
def test_checked_notebook_names_the_file(content: str, message: str) -> None:
    with pytest.raises(NubladoUsageError, match=message):
        checked_notebook(content, "x.ipynb")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Log:
    def __init__(self) -> None:
        self.lines: List[Any] = []

    def bind(self, **_: Any) -> _Log:
        return self

    def info(self, event: str, **kw: Any) -> None:
        self.lines.append((event, kw))

    debug = warning = error = info


def _cell(number: int, cell_id: str = "") -> NotebookCell:
    cell = _code("x", cell_id=cell_id)
    return NotebookCell(cell=cell, index=number, number=number, total=3, notebook="n.ipynb")


def test_progress_on_a_terminal_shows_cell_and_time() -> None:
    now = [100.0]
    stream = _Terminal()
    progress = CellProgress(_Log(), stream, clock=lambda: now[0])
    written: List[str] = []
    echo = progress.wrap_output(lambda output: written.append(stream.getvalue()))
    assert echo is not None
    try:
        progress.on_cell_start(_cell(2, "load"))
        now[0] += 12.4
        assert progress.line() == "[cell 2/3] running 12s  id 'load'"
        echo({"output_type": "stream", "name": "stdout", "text": "hi\n"})
        # The status line was erased before the output was written.
        assert written[0].endswith("\r\x1b[K")
        now[0] += 3600
        assert progress.line() == "[cell 2/3] running 1h00m  id 'load'"
        progress.on_cell_complete(_cell(2, "load"))
        assert progress.line() == ""
    finally:
        progress.close()
    assert "[cell 2/3] running" in stream.getvalue()
    assert stream.getvalue().endswith("\r\x1b[K")


def test_progress_without_a_terminal_logs_lines() -> None:
    log = _Log()
    stream = io.StringIO()
    progress = CellProgress(log, stream, clock=lambda: 5.0)
    progress.on_cell_start(_cell(1))
    progress.on_cell_complete(_cell(1))
    progress.close()
    assert stream.getvalue() == ""
    assert [event for event, _ in log.lines] == ["Running cell", "Cell finished"]
    assert log.lines[0][1] == {"cell": 1, "of": 3, "notebook": "n.ipynb"}
    assert log.lines[1][1]["seconds"] == 0.0
