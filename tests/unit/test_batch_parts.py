"""The batch runner's parts that need no server: finding notebooks, the JUnit report."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from xml.etree import ElementTree

import pytest

from nublado_sync import (
    BatchResult,
    CodeContext,
    ExecutionResult,
    NotebookOutcome,
    NotebookRun,
    NubladoExecutionError,
    NubladoExecutionTimeoutError,
    NubladoUsageError,
    NubladoWebSocketError,
    find_notebooks,
    junit_xml,
)

NOTEBOOK = json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []})


def test_find_notebooks_expands_directories(tmp_path: Path) -> None:
    names = ["b.ipynb", "a.ipynb", "sub/c.ipynb", ".hidden/d.ipynb"]
    names.append("sub/.ipynb_checkpoints/c-checkpoint.ipynb")
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(NOTEBOOK)
    (tmp_path / "notes.txt").write_text("")
    found = find_notebooks([tmp_path])
    assert [relative for relative, _ in found] == ["a.ipynb", "b.ipynb", "sub/c.ipynb"]
    assert find_notebooks([tmp_path / "sub" / "c.ipynb"]) == [
        ("c.ipynb", tmp_path / "sub" / "c.ipynb")
    ]
    with pytest.raises(NubladoUsageError, match="named twice"):
        find_notebooks([tmp_path, tmp_path / "a.ipynb"])
    with pytest.raises(NubladoUsageError, match=r"Not a \.ipynb"):
        find_notebooks([tmp_path / "notes.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(NubladoUsageError, match=r"No \.ipynb notebook"):
        find_notebooks([tmp_path / "empty"])


def _failed_run() -> NotebookRun:
    result = ExecutionResult(
        code="1/0",
        status="error",
        stdout="partial \x1b[1mbold\x1b[0m and a bell \x07\n",
        ename="ZeroDivisionError",
        evalue="division by zero",
        traceback=["\x1b[31mZeroDivisionError\x1b[0m: division by zero"],
    )
    error = NubladoExecutionError(
        "alice",
        code="1/0",
        context=CodeContext(notebook="dir/fail.ipynb", cell="boom", cell_number="2"),
        error="\x1b[31mZeroDivisionError\x1b[0m: division by zero",
        status="error",
        result=result,
    )
    return NotebookRun(
        1,
        "dir/fail.ipynb",
        Path("dir/fail.ipynb"),
        NotebookOutcome.FAILED,
        duration=datetime.timedelta(seconds=1.5),
        error=error,
    )


def test_junit_report() -> None:
    timeout = NubladoExecutionTimeoutError(
        "alice",
        code="sleep",
        timeout=datetime.timedelta(seconds=3),
        context=CodeContext(notebook="slow.ipynb", cell="sleepy", cell_number="4"),
    )
    runs = [
        NotebookRun(0, "ok.ipynb", None, NotebookOutcome.PASSED, duration=datetime.timedelta(2)),
        _failed_run(),
        NotebookRun(2, "slow.ipynb", None, NotebookOutcome.TIMED_OUT, error=timeout),
        NotebookRun(
            3,
            "gone.ipynb",
            None,
            NotebookOutcome.ERROR,
            error=NubladoWebSocketError("cut", "alice"),
        ),
        NotebookRun(4, "stopped.ipynb", None, NotebookOutcome.INTERRUPTED),
        NotebookRun(5, "later.ipynb", None, NotebookOutcome.NOT_RUN),
    ]
    started = datetime.datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=datetime.timezone.utc)
    text = junit_xml(BatchResult(runs, started, datetime.timedelta(seconds=10)))
    root = ElementTree.fromstring(text)  # the bell and colour codes are gone
    (suite,) = list(root)
    assert suite.attrib["timestamp"] == "2026-01-02T03:04:05"
    assert (suite.attrib["tests"], suite.attrib["failures"]) == ("6", "2")
    assert (suite.attrib["errors"], suite.attrib["skipped"]) == ("2", "1")
    cases = list(suite)
    assert cases[0].attrib == {
        "name": "ok.ipynb",
        "classname": "nublado-sync",
        "time": "172800.000",
    }
    failure = cases[1].find("failure")
    assert failure is not None
    assert cases[1].attrib["classname"] == "nublado-sync.dir"
    assert failure.attrib == {
        "message": "cell 2 (id boom): ZeroDivisionError: division by zero",
        "type": "ZeroDivisionError",
    }
    assert "\x1b" not in (failure.text or "")
    assert cases[1].findtext("system-out") == "partial bold and a bell \ufffd\n"
    slow = cases[2].find("failure")
    assert slow is not None
    assert slow.attrib["message"] == "cell 4 (id sleepy): timed out after 3s"
    gone = cases[3].find("error")
    assert gone is not None
    assert gone.attrib["type"] == "NubladoWebSocketError"
    stopped = cases[4].find("error")
    assert stopped is not None
    assert stopped.attrib["type"] == "Interrupted"
    assert cases[5].find("skipped") is not None
