"""Many notebooks at once: the batch runner, its reports and its command line."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator
from xml.etree import ElementTree

import nbformat
import pytest

from nublado_sync import (
    JupyterLabSession,
    NotebookOutcome,
    NotebookRun,
    NubladoExecutionError,
    NubladoSessionClosedError,
    NubladoUsageError,
    run_notebooks,
    write_junit_xml,
)

from ..jupyter_servers import JupyterServer
from .conftest import lab, seconds
from .test_cli import CHILD_MAIN, nublado_sync, server_args, server_env

pytestmark = pytest.mark.integration


def code(cell_id: str, source: str) -> dict[str, Any]:
    return {
        "cell_type": "code",
        "id": cell_id,
        "metadata": {},
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
            {"cell_type": "markdown", "id": "title", "metadata": {}, "source": "# Batch"},
            *cells,
        ],
    }


def write(path: Path, nb: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb))
    return path


def barrier(directory: Path, name: str, parties: int) -> str:
    """Cell code that waits until ``parties`` notebooks reached it (60 s at most).

    Each notebook's kernel leaves a file and waits for the others' files, so
    the notebooks can only all pass if that many run at the same time.
    """
    return (
        "import pathlib, time\n"
        f"d = pathlib.Path({str(directory)!r})\n"
        f"(d / {name!r}).touch()\n"
        "end = time.monotonic() + 60\n"
        f"while len(list(d.iterdir())) < {parties} and time.monotonic() < end:\n"
        "    time.sleep(0.05)\n"
        f"assert len(list(d.iterdir())) >= {parties}, 'the others never came'\n"
    )


class CountingOpener:
    """Opens sessions on a server, counting how many are open at once."""

    def __init__(self, server: JupyterServer) -> None:
        self.server = server
        self.open = 0
        self.most = 0
        self.names: list[str] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[JupyterLabSession]:
        with lab(self.server, notebook_name=name) as session:
            with self._lock:
                self.open += 1
                self.most = max(self.most, self.open)
                self.names.append(name)
            try:
                yield session
            finally:
                with self._lock:
                    self.open -= 1


def mixed_batch(tmp_path: Path) -> list[Path]:
    """Two notebooks that pass, one that fails in its second cell, one too slow."""
    source = tmp_path / "in"
    return [
        write(source / "pass1.ipynb", notebook(code("a", "x = 6"), code("b", "x * 7"))),
        write(
            source / "fail.ipynb",
            notebook(
                code("ok", "print('before')"),
                code("boom", "print('partial')\n1/0"),
                code("never", "print('never')"),
            ),
        ),
        write(
            source / "sub" / "slow.ipynb",
            notebook(code("quick", "1"), code("sleepy", "import time\ntime.sleep(60)")),
        ),
        write(source / "pass2.ipynb", notebook(code("c", "print('two')"))),
    ]


def test_outcomes_saved_notebooks_and_junit(server: JupyterServer, tmp_path: Path) -> None:
    notebooks = mixed_batch(tmp_path)
    opener = CountingOpener(server)
    events: list[NotebookRun] = []
    out = tmp_path / "out"
    result = run_notebooks(
        [tmp_path / "in"],
        opener,
        jobs=2,
        cell_timeout=seconds(3),
        save_dir=out,
        on_event=events.append,
    )
    by_name = {Path(run.name).name: run for run in result.runs}
    assert [Path(run.name).name for run in result.runs] == [
        "fail.ipynb",
        "pass1.ipynb",
        "pass2.ipynb",
        "slow.ipynb",
    ]
    assert by_name["pass1.ipynb"].outcome is NotebookOutcome.PASSED
    assert by_name["pass2.ipynb"].outcome is NotebookOutcome.PASSED
    failed = by_name["fail.ipynb"]
    assert failed.outcome is NotebookOutcome.FAILED
    assert failed.failed_cell is not None
    assert failed.failed_cell.cell == "boom"
    assert failed.message == "cell 2 (id boom): ZeroDivisionError: division by zero"
    slow = by_name["slow.ipynb"]
    assert slow.outcome is NotebookOutcome.TIMED_OUT
    assert slow.message == "cell 2 (id sleepy): timed out after 3s"
    assert not result.ok
    assert result.counts()["passed"] == 2
    assert opener.most <= 2
    assert sorted(opener.names) == sorted(str(p) for p in notebooks)
    # Each notebook started and ended once, in the caller's thread.
    assert len(events) == 8
    assert sum(1 for e in events if e.outcome is None) == 4

    # Saved under their names relative to the directory given, as far as
    # they ran.
    assert failed.saved_to == out / "fail.ipynb"
    saved = nbformat.reads((out / "fail.ipynb").read_text(), as_version=4)
    nbformat.validate(saved)
    assert saved.cells[2].outputs[0].text == "partial\n"
    assert saved.cells[2].outputs[1].ename == "ZeroDivisionError"
    assert saved.cells[3].outputs == []
    assert (out / "sub" / "slow.ipynb").exists()
    passed = nbformat.reads((out / "pass1.ipynb").read_text(), as_version=4)
    assert passed.cells[2].outputs[0].data["text/plain"] == "42"

    report = tmp_path / "junit.xml"
    write_junit_xml(result, report)
    suite = check_junit(report)
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert len(cases) == 4
    failure = cases[str(tmp_path / "in" / "fail.ipynb")].find("failure")
    assert failure is not None
    assert failure.get("message") == "cell 2 (id boom): ZeroDivisionError: division by zero"
    assert failure.get("type") == "ZeroDivisionError"
    assert "\x1b" not in (failure.text or "")
    timeout = cases[str(tmp_path / "in" / "sub" / "slow.ipynb")].find("failure")
    assert timeout is not None
    assert "timed out" in (timeout.get("message") or "")
    assert cases[str(tmp_path / "in" / "pass1.ipynb")].find("failure") is None
    assert suite.get("failures") == "2"
    assert suite.get("tests") == "4"


def test_jobs_run_at_the_same_time(stock_server: JupyterServer, tmp_path: Path) -> None:
    # Four notebooks that can only pass two at a time, with two jobs.
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    first = [("a.ipynb", 1), ("b.ipynb", 1)]
    second = [("c.ipynb", 2), ("d.ipynb", 2)]
    notebooks = [
        (name, notebook(code("meet", barrier(meeting / str(round_), name, 2))))
        for name, round_ in first + second
    ]
    for round_ in (1, 2):
        (meeting / str(round_)).mkdir()
    opener = CountingOpener(stock_server)
    result = run_notebooks(notebooks, opener, jobs=2)
    assert [run.outcome for run in result.runs] == [NotebookOutcome.PASSED] * 4, [
        run.message for run in result.runs
    ]
    assert opener.most == 2
    assert stock_server.sessions() == []


def test_bad_input_is_refused_before_anything_starts(tmp_path: Path) -> None:
    good = write(tmp_path / "good.ipynb", notebook(code("a", "1")))
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{not json")
    opened: list[str] = []

    def opener(name: str) -> Any:
        opened.append(name)
        raise AssertionError("no session should be opened")

    with pytest.raises(NubladoUsageError, match=r"bad\.ipynb"):
        run_notebooks([good, bad], opener)
    with pytest.raises(NubladoUsageError, match="No such notebook"):
        run_notebooks([good, tmp_path / "missing.ipynb"], opener)
    with pytest.raises(NubladoUsageError, match="jobs"):
        run_notebooks([good], opener, jobs=0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write(tmp_path / "a" / "x.ipynb", notebook())
    write(tmp_path / "b" / "x.ipynb", notebook())
    with pytest.raises(NubladoUsageError, match="both be saved"):
        run_notebooks([tmp_path / "a" / "x.ipynb", tmp_path / "b" / "x.ipynb"], opener)
    assert opened == []


# The JUnit XML rules that GitLab, Jenkins (junit-10.xsd) and the Ant
# schema agree on, checked element by element.
_CHILDREN = {
    "testsuites": {"testsuite"},
    "testsuite": {"properties", "testcase", "system-out", "system-err"},
    "testcase": {"skipped", "error", "failure", "system-out", "system-err"},
}
_REQUIRED = {
    "testsuite": {"name", "tests", "failures", "errors", "time", "timestamp", "hostname"},
    "testcase": {"name", "classname", "time"},
    "failure": {"message", "type"},
    "error": {"message", "type"},
}


def check_junit(path: Path) -> ElementTree.Element:
    """Parse a JUnit report, check it against the schemas' rules, return its suite."""
    root = ElementTree.parse(path).getroot()
    assert root.tag == "testsuites"
    for element in root.iter():
        allowed = _CHILDREN.get(element.tag, set())
        for child in element:
            assert child.tag in allowed, f"{child.tag} inside {element.tag}"
        missing = _REQUIRED.get(element.tag, set()) - set(element.attrib)
        assert not missing, f"{element.tag} lacks {missing}"
        for name in ("time",):
            if name in element.attrib:
                float(element.attrib[name])  # xs:decimal
                assert "e" not in element.attrib[name].lower()
        for name in ("tests", "failures", "errors", "skipped"):
            if name in element.attrib:
                assert int(element.attrib[name]) >= 0
        if "timestamp" in element.attrib:
            # ISO 8601 without a time zone, as the schemas' pattern says.
            time.strptime(element.attrib["timestamp"], "%Y-%m-%dT%H:%M:%S")
    (suite,) = list(root)
    cases = list(suite.iter("testcase"))
    assert int(suite.attrib["tests"]) == len(cases)
    assert int(suite.attrib["failures"]) == sum(1 for c in cases if c.find("failure") is not None)
    assert int(suite.attrib["errors"]) == sum(1 for c in cases if c.find("error") is not None)
    assert int(suite.attrib.get("skipped", "0")) == sum(
        1 for c in cases if c.find("skipped") is not None
    )
    return suite


# The command line


def test_cli_batch_reports_and_worst_exit_status(
    stock_server: JupyterServer, tmp_path: Path
) -> None:
    mixed_batch(tmp_path)
    out = tmp_path / "out"
    report = tmp_path / "reports" / "junit.xml"
    result = nublado_sync(
        "run",
        *server_args(stock_server),
        str(tmp_path / "in"),
        "--jobs",
        "3",
        "--timeout",
        "3",
        "--save-notebook",
        str(out),
        "--junit-xml",
        str(report),
        "--json",
        env=server_env(stock_server),
    )
    # The worst of passed (0), failed (1) and timed out (3).
    assert result.returncode == 3, result.stderr
    summary = json.loads(result.stdout)
    assert summary["ok"] is False
    assert summary["exit_code"] == 3
    assert summary["counts"]["passed"] == 2
    entries = {Path(e["name"]).name: e for e in summary["notebooks"]}
    assert entries["fail.ipynb"]["exit_code"] == 1
    assert entries["fail.ipynb"]["error"]["cell"] == "boom"
    assert entries["fail.ipynb"]["error"]["ename"] == "ZeroDivisionError"
    assert entries["slow.ipynb"]["exit_code"] == 3
    assert entries["pass1.ipynb"]["notebook"] == str(out / "pass1.ipynb")
    assert (out / "sub" / "slow.ipynb").exists()
    check_junit(report)
    # With --json the progress lines go to stderr, one per notebook.
    assert sum(1 for line in result.stderr.splitlines() if line.startswith("FAILED")) == 1
    assert stock_server.sessions() == []


def test_cli_batch_lines_without_a_terminal(stock_server: JupyterServer, tmp_path: Path) -> None:
    a = write(tmp_path / "a.ipynb", notebook(code("a", "print('from a')")))
    b = write(tmp_path / "b.ipynb", notebook(code("b", "1/0")))
    result = nublado_sync(
        "run", *server_args(stock_server), str(a), str(b), env=server_env(stock_server)
    )
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith(("PASSED", "FAILED"))
    failed = next(line for line in lines if line.startswith("FAILED"))
    assert failed.endswith(f"{b}: cell 1 (id b): ZeroDivisionError: division by zero")
    assert lines[2].startswith("2 notebooks in ")
    assert "1 passed, 1 failed" in lines[2]
    assert "\x1b" not in result.stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--jobs", "0"], "at least 1"),
        (["-"], "standard input"),
        (["--save-notebook", "FILE"], "must be a directory"),
        (["NOTEBOOK_PY"], "Not a .ipynb"),
    ],
)
def test_cli_batch_usage_errors(tmp_path: Path, extra: list[str], message: str) -> None:
    a = write(tmp_path / "a.ipynb", notebook(code("a", "1")))
    b = write(tmp_path / "b.ipynb", notebook(code("b", "2")))
    (tmp_path / "file").write_text("")
    (tmp_path / "code.py").write_text("print(1)")
    extra = [
        {"FILE": str(tmp_path / "file"), "NOTEBOOK_PY": str(tmp_path / "code.py")}.get(x, x)
        for x in extra
    ]
    result = nublado_sync(
        "run", "--server-url", "http://127.0.0.1:9/", str(a), str(b), *extra,
        env={"NUBLADO_TOKEN": "t"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"]
)
def test_cli_batch_signal_stops_everything(
    stock_server: JupyterServer, tmp_path: Path, signum: int, status: int
) -> None:
    started, after = tmp_path / "started", tmp_path / "after"
    started.mkdir()
    after.mkdir()
    for name in ("a", "b", "c"):
        write(
            tmp_path / "in" / f"{name}.ipynb",
            notebook(
                code(
                    "wait",
                    f"import pathlib, time\npathlib.Path({str(started / name)!r}).touch()\n"
                    "time.sleep(120)",
                ),
                # Queued behind the long cell: the stop must keep it from running.
                code("after", f"pathlib.Path({str(after / name)!r}).touch()"),
            ),
        )
    report, saved = tmp_path / "junit.xml", tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUBLADO_")}
    env.update(server_env(stock_server))
    args = [str(tmp_path / "in"), "--jobs", "2", "--junit-xml", str(report), "--json"]
    args += ["--save-notebook", str(saved)]
    with subprocess.Popen(
        [sys.executable, "-c", CHILD_MAIN, "run", *server_args(stock_server), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        # Two notebooks are running their long cell (each leaves a file):
        # then a real signal, as Ctrl-C or kill sends it.
        deadline = time.monotonic() + 60
        while len(list(started.iterdir())) < 2 and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.05)
        assert len(list(started.iterdir())) == 2
        began = time.monotonic()
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=60)
    # Every session is deleted well before the cells' two minutes.
    assert time.monotonic() - began < 30
    assert process.returncode == status, stderr
    assert stock_server.sessions() == []
    assert stock_server.kernels() == []
    summary = json.loads(stdout)
    outcomes = sorted(entry["outcome"] for entry in summary["notebooks"])
    assert outcomes == ["interrupted", "interrupted", "not run"]
    assert {entry["exit_code"] for entry in summary["notebooks"]} == {status}
    suite = check_junit(report)
    assert suite.get("errors") == "2"
    assert suite.get("skipped") == "1"
    # The kernels were given time to answer the interrupt: the notebooks
    # in flight are saved as far as they ran, the interrupted cell with its
    # KeyboardInterrupt, and the cell queued behind it never ran.
    assert list(after.iterdir()) == []
    interrupted = sorted(p.name for p in started.iterdir())
    assert sorted(p.name for p in saved.iterdir()) == [f"{name}.ipynb" for name in interrupted]
    for name in interrupted:
        cells = nbformat.reads((saved / f"{name}.ipynb").read_text(), as_version=4).cells
        wait, queued = cells[1], cells[2]
        assert [o.get("ename") for o in wait.outputs] == ["KeyboardInterrupt"]
        assert queued.outputs == []
        assert queued.execution_count is None


def long_call_in_a_thread(
    session: JupyterLabSession,
) -> tuple[threading.Thread, list[BaseException]]:
    """Start a two-minute cell in another thread; return once it runs.

    Returns the thread and the list that receives what the call raised.
    """
    errors: list[BaseException] = []
    # The first output says the kernel runs the cell.
    started = threading.Event()

    def run() -> None:
        try:
            session.execute(
                "print('started', flush=True)\nimport time\ntime.sleep(120)",
                on_output=lambda output: started.set(),
            )
        except BaseException as e:
            errors.append(e)

    worker = threading.Thread(target=run)
    worker.start()
    assert started.wait(60)
    return worker, errors


def test_abort_from_another_thread_ends_the_call(server: JupyterServer) -> None:
    with lab(server) as session:
        worker, errors = long_call_in_a_thread(session)
        began = time.monotonic()
        session.abort()
        worker.join(30)
        # Ended by the cut, not by the two-minute cell or a heartbeat.
        assert not worker.is_alive()
        assert time.monotonic() - began < 10
        assert [type(e) for e in errors] == [NubladoSessionClosedError]
        assert session.closed
        with pytest.raises(NubladoSessionClosedError):
            session.run_python("1")
        session.abort()  # again: nothing happens


def test_abort_with_grace_lets_the_call_read_the_interrupt(server: JupyterServer) -> None:
    with lab(server) as session:
        worker, errors = long_call_in_a_thread(session)
        began = time.monotonic()
        session.abort(grace=datetime.timedelta(seconds=30))
        # abort returned once the call had the kernel's answer, well within
        # the grace (30 s) and before the cell's two minutes.
        assert time.monotonic() - began < 25
        worker.join(30)
        assert not worker.is_alive()
        assert [type(e) for e in errors] == [NubladoExecutionError]
        error = errors[0]
        assert isinstance(error, NubladoExecutionError)
        assert error.result is not None
        assert error.result.ename == "KeyboardInterrupt"
        assert error.result.stdout == "started\n"
        assert session.closed
        assert "closed (aborted)" in repr(session)
        with pytest.raises(NubladoSessionClosedError):
            session.run_python("1")
        session.abort(grace=datetime.timedelta(seconds=30))  # again: at once
        assert time.monotonic() - began < 25


def test_abort_refuses_a_bad_grace(stock_server: JupyterServer) -> None:
    with lab(stock_server) as session:
        with pytest.raises(NubladoUsageError, match="grace"):
            session.abort(grace=3)  # type: ignore[arg-type]
        assert not session.closed
        assert session.run_python("print(1)") == "1\n"


def test_abort_from_the_call_own_callback_cuts_at_once(stock_server: JupyterServer) -> None:
    # The call cannot read the kernel's answers while its callback waits, so
    # waiting out the grace there would only delay the end.
    grace = datetime.timedelta(seconds=60)
    with lab(stock_server) as session:
        began = time.monotonic()
        with pytest.raises(NubladoSessionClosedError):
            session.execute(
                "print('started', flush=True)\nimport time\ntime.sleep(120)",
                on_output=lambda output: session.abort(grace=grace),
            )
        # Well before the grace (60 s) and the cell's two minutes.
        assert time.monotonic() - began < 30
        assert session.closed


def test_a_callback_that_calls_its_own_session_is_told_why(stock_server: JupyterServer) -> None:
    refused: list[NubladoUsageError] = []

    def call_again(output: dict[str, Any]) -> None:
        try:
            session.run_python("1")
        except NubladoUsageError as e:
            refused.append(e)

    with lab(stock_server) as session:
        assert session.execute("print('x')", on_output=call_again).stdout == "x\n"
        assert len(refused) == 1
        assert "callback" in str(refused[0])
        # The call that refused it let the session go: the next call runs.
        assert session.run_python("print(2)") == "2\n"


def test_cli_batch_live_status_on_a_terminal(stock_server: JupyterServer, tmp_path: Path) -> None:
    import pty

    a = write(tmp_path / "a.ipynb", notebook(code("a", "print('a')")))
    b = write(tmp_path / "b.ipynb", notebook(code("b", "1/0")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUBLADO_")}
    env.update(server_env(stock_server))
    leader, follower = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "nublado_sync", "run", *server_args(stock_server), str(a), str(b)],
        env=env,
        stdout=follower,
        stderr=subprocess.PIPE,
    ) as process:
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            chunks.append(chunk)
        process.wait(60)
    os.close(leader)
    screen = b"".join(chunks).decode()
    assert process.returncode == 1
    # The status line, redrawn in place, then the lines of finished notebooks.
    assert "\r\x1b[K[0/2 done, 0 failed, " in screen
    assert "running]" in screen
    assert "\r\x1b[KFAILED" in screen
    assert "2 notebooks in " in screen
