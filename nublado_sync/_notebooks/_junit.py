"""The JUnit XML report of a batch of notebooks, for CI tools.

GitLab, GitHub Actions (through report actions) and Jenkins read the
format written by Ant's JUnit task; it has no formal standard, so this
writes the subset that the common schemas (Jenkins' ``junit-10.xsd`` and
the stricter Apache Ant one) agree on: one ``testsuite`` in a
``testsuites`` root, one ``testcase`` per notebook with a ``failure``
(a cell failed or timed out), an ``error`` (the session or connection
failed, or the batch was stopped) or a ``skipped`` (never started) child.
"""

from __future__ import annotations

import datetime
import os
import re
import socket
from pathlib import Path
from typing import Optional, Union
from xml.etree import ElementTree

from .._redact import strip_ansi
from ._batch import BatchResult, NotebookOutcome, NotebookRun

__all__ = ["junit_xml", "write_junit_xml"]

# Characters XML 1.0 forbids even when escaped: tracebacks carry ANSI
# escapes (stripped first) and cells may print any control character.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

_SUITE = "nublado-sync"


def _text(value: str) -> str:
    return _NOT_XML.sub("\ufffd", strip_ansi(value))


def _seconds(value: Optional[datetime.timedelta]) -> str:
    # xs:decimal: digits, no exponent.
    return f"{value.total_seconds():.3f}" if value is not None else "0.000"


def _timestamp(value: datetime.datetime) -> str:
    # The schemas want an ISO 8601 time without a zone: UTC, as ours are.
    utc = value.astimezone(datetime.timezone.utc)
    return utc.replace(tzinfo=None, microsecond=0).isoformat()


def _classname(run: NotebookRun) -> str:
    # Jenkins groups test cases by dotted class name, as packages.
    parent = Path(run.name).parent.as_posix().strip("./")
    return _SUITE + ("." + parent.replace("/", ".") if parent else "")


def _testcase(run: NotebookRun) -> ElementTree.Element:
    case = ElementTree.Element(
        "testcase",
        {
            "name": _text(run.name),
            "classname": _text(_classname(run)),
            "time": _seconds(run.duration),
        },
    )
    if run.path is not None:
        case.set("file", _text(str(run.path)))
    outcome = run.outcome
    if outcome is None or outcome is NotebookOutcome.PASSED:
        return case
    message = _text(run.message)
    if outcome is NotebookOutcome.NOT_RUN:
        ElementTree.SubElement(case, "skipped", {"message": message})
        return case
    error = run.error
    result = getattr(error, "result", None)
    kind = "failure" if outcome in (NotebookOutcome.FAILED, NotebookOutcome.TIMED_OUT) else "error"
    ename = getattr(result, "ename", None)
    if outcome is NotebookOutcome.INTERRUPTED:
        error_type = "Interrupted"
    elif ename:
        error_type = str(ename)
    else:
        error_type = type(error).__name__ if error is not None else kind
    child = ElementTree.SubElement(case, kind, {"message": message, "type": _text(error_type)})
    if outcome is not NotebookOutcome.INTERRUPTED and error is not None:
        child.text = _text(str(error))
    # The failed cell's own output, where CI tools show a test's output.
    stdout = getattr(result, "stdout", "")
    stderr = getattr(result, "stderr", "")
    if isinstance(stdout, str) and stdout:
        ElementTree.SubElement(case, "system-out").text = _text(stdout)
    if isinstance(stderr, str) and stderr:
        ElementTree.SubElement(case, "system-err").text = _text(stderr)
    return case


def junit_xml(result: BatchResult) -> str:
    """Render a batch's result as a JUnit XML report.

    Parameters
    ----------
    result
        What `run_notebooks` returned.

    Returns
    -------
    str
        The report: one test case per notebook, named by the notebook; a
        failed or timed-out notebook has a ``failure`` whose message names
        the cell and its error and whose text is the error report.
    """
    counts = result.counts()
    failures = counts[NotebookOutcome.FAILED.value] + counts[NotebookOutcome.TIMED_OUT.value]
    errors = counts[NotebookOutcome.ERROR.value] + counts[NotebookOutcome.INTERRUPTED.value]
    totals = {
        "tests": str(len(result.runs)),
        "failures": str(failures),
        "errors": str(errors),
        "skipped": str(counts[NotebookOutcome.NOT_RUN.value]),
        "time": _seconds(result.duration),
    }
    root = ElementTree.Element("testsuites", {"name": _SUITE, **totals})
    suite = ElementTree.SubElement(
        root,
        "testsuite",
        {
            "name": _SUITE,
            **totals,
            "timestamp": _timestamp(result.started_at),
            "hostname": _text(socket.gethostname() or "localhost"),
            "id": "0",
        },
    )
    for run in result.runs:
        suite.append(_testcase(run))
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(
        root, encoding="unicode"
    )


def write_junit_xml(result: BatchResult, path: Union[str, os.PathLike[str]]) -> None:
    """Write a batch's result as a JUnit XML report file.

    Parameters
    ----------
    result
        What `run_notebooks` returned.
    path
        File to write (replaced if it exists).

    Raises
    ------
    OSError
        The file could not be written.
    """
    Path(path).expanduser().write_text(junit_xml(result) + "\n", encoding="utf-8")
