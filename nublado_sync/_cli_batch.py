"""``nublado-sync run`` with many notebooks: the display and the reports.

The command-line side of `run_notebooks`: checks the batch options before
anything starts, shows progress (a live status line on a terminal, one
line per finished notebook otherwise), and writes the JSON summary and
the JUnit XML report. The exit status is the worst (highest) of the
notebooks' own statuses.

It lives with the other command-line modules, not in the notebook runner
package: it builds on `nublado_sync._cli` (exit codes, usage errors) and
writes to a terminal, while the runner package is library code that the
command line uses, never the reverse.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TextIO, Tuple

from ._cli import ExitCode, _exit_code, _interrupt_kind, _UsageError
from ._exceptions import NubladoUsageError
from ._logging import Logger
from ._notebooks._batch import (
    BatchResult,
    NotebookOutcome,
    NotebookRun,
    SessionOpener,
    load_jobs,
    run_notebooks,
)
from ._redact import strip_ansi

__all__ = ["check_batch_args", "run_batch"]

# How often the live status line is redrawn, so its clocks move.
_TICK = 1.0

_LABELS = {
    NotebookOutcome.PASSED: "PASSED",
    NotebookOutcome.FAILED: "FAILED",
    NotebookOutcome.TIMED_OUT: "TIMEOUT",
    NotebookOutcome.ERROR: "ERROR",
    NotebookOutcome.INTERRUPTED: "STOPPED",
    NotebookOutcome.NOT_RUN: "NOT RUN",
}


def check_batch_args(args: argparse.Namespace) -> None:
    """Refuse bad batch input before anything starts (the lab's spawn included).

    Raises
    ------
    _UsageError
        A file is not a notebook, or a report or notebook directory cannot
        be written.
    """
    if "-" in args.files:
        raise _UsageError("standard input (-) cannot be part of a batch of notebooks")
    try:
        load_jobs(args.files)
    except NubladoUsageError as e:
        raise _UsageError(e.message) from None
    if args.save_notebook is not None:
        target = args.save_notebook.expanduser()
        if target.exists() and not target.is_dir():
            raise _UsageError(f"--save-notebook must be a directory for many notebooks: {target}")
        _check_writable_dir(target, "--save-notebook")
    if args.junit_xml is not None:
        report = args.junit_xml.expanduser()
        if report.is_dir() or (report.exists() and not os.access(report, os.W_OK)):
            raise _UsageError(f"cannot write the JUnit report to {report}")
        _check_writable_dir(report.parent, "--junit-xml")


def _check_writable_dir(path: Path, option: str) -> None:
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise _UsageError(f"{option}: cannot write into {path}")


def _duration(value: Optional[datetime.timedelta]) -> str:
    if value is None:
        return "-"
    return _clock(value.total_seconds())


def _clock(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class _Display:
    """Progress of a batch, as lines on a stream.

    One line per finished notebook, and on a terminal a status line below
    them saying what runs, for how long.
    """

    def __init__(self, stream: TextIO, total: int) -> None:
        self._stream = stream
        self._live = stream.isatty()
        self._total = total
        self._running: Dict[int, Tuple[str, float]] = {}
        self._done: List[NotebookRun] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: Optional[threading.Thread] = None
        if self._live:
            self._ticker = threading.Thread(
                target=self._tick, name="nublado-batch-display", daemon=True
            )
            self._ticker.start()

    def __call__(self, run: NotebookRun) -> None:
        with self._lock:
            if run.outcome is None:
                self._running[run.index] = (run.name, time.monotonic())
            else:
                self._running.pop(run.index, None)
                self._done.append(run)
                self._write(self._line(run) + "\n")
            self._status()

    def close(self, result: BatchResult) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        counts = ", ".join(f"{n} {what}" for what, n in result.counts().items() if n)
        with self._lock:
            self._write(f"{len(result.runs)} notebooks in {_duration(result.duration)}: {counts}\n")

    def _line(self, run: NotebookRun) -> str:
        assert run.outcome is not None
        line = f"{_LABELS[run.outcome]:<8} {_duration(run.duration):>8}  {run.name}"
        if run.message:
            line += f": {run.message}"
        return strip_ansi(line) if not self._live else line

    def _write(self, text: str) -> None:
        if self._live:
            text = "\r\x1b[K" + text  # over the status line
        self._stream.write(text)
        self._stream.flush()

    def _status(self) -> None:
        if not self._live:
            return
        now = time.monotonic()
        failed = sum(1 for r in self._done if r.outcome is not NotebookOutcome.PASSED)
        text = (
            f"[{len(self._done)}/{self._total} done, {failed} failed, {len(self._running)} running]"
        )
        for name, since in self._running.values():
            text += f" {name} {_clock(now - since)};"
        width = shutil.get_terminal_size((100, 24)).columns - 1
        if len(text) > width:
            text = text[: max(width - 3, 0)] + "..."
        self._stream.write("\r\x1b[K" + text)
        self._stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(_TICK):
            with self._lock:
                self._status()


def _run_exit_code(run: NotebookRun, interrupted: Optional[BaseException]) -> ExitCode:
    outcome = run.outcome
    if outcome is NotebookOutcome.PASSED:
        return ExitCode.OK
    if outcome is NotebookOutcome.FAILED:
        return ExitCode.CODE_ERROR
    if outcome is NotebookOutcome.TIMED_OUT:
        return ExitCode.TIMEOUT
    if outcome is NotebookOutcome.ERROR and run.error is not None:
        return _exit_code(run.error)
    if isinstance(interrupted, KeyboardInterrupt):
        return _interrupt_kind(interrupted)[0]
    return ExitCode.INTERRUPTED


def _run_json(run: NotebookRun, interrupted: Optional[BaseException]) -> Dict[str, Any]:
    entry: Dict[str, Any] = {
        "name": run.name,
        "path": str(run.path) if run.path else None,
        "outcome": run.outcome.value if run.outcome else None,
        "exit_code": int(_run_exit_code(run, interrupted)),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "duration_seconds": run.duration.total_seconds() if run.duration else None,
        "notebook": str(run.saved_to) if run.saved_to else None,
    }
    if run.outcome is not NotebookOutcome.PASSED:
        error: Dict[str, Any] = {"message": run.message}
        if run.error is not None:
            error["type"] = type(run.error).__name__
        cell = run.failed_cell
        if cell is not None:
            error.update(cell=cell.cell, cell_number=cell.cell_number)
        result = getattr(run.error, "result", None)
        if getattr(result, "ename", None):
            error.update(ename=result.ename, evalue=result.evalue)  # type: ignore[union-attr]
        entry["error"] = error
    return entry


def run_batch(
    args: argparse.Namespace,
    logger: Logger,
    open_session: Callable[[Optional[str]], Any],
    report: Dict[str, Any],
) -> ExitCode:
    """Run the notebooks, show progress, write the reports; return the exit status.

    The reports are written, and ``report`` filled in, also when the batch
    is interrupted, before the interrupt goes on.
    """
    stream = sys.stderr if args.json else sys.stdout
    display = _Display(stream, len(load_jobs(args.files)))
    runs: Dict[int, NotebookRun] = {}

    def on_event(run: NotebookRun) -> None:
        if run.outcome is not None:
            runs[run.index] = run
        display(run)

    opener: SessionOpener = open_session
    started_at = datetime.datetime.now(tz=datetime.timezone.utc)
    began = time.monotonic()
    interrupted: Optional[BaseException] = None
    try:
        run_notebooks(
            args.files,
            opener,
            jobs=args.jobs or 2,
            cell_timeout=args.timeout,
            save_dir=args.save_notebook,
            on_event=on_event,
            logger=logger,
            queue_cells=not args.cell_by_cell,
        )
    except KeyboardInterrupt as e:
        interrupted = e
        raise
    finally:
        duration = datetime.timedelta(seconds=time.monotonic() - began)
        result = BatchResult([runs[i] for i in sorted(runs)], started_at, duration)
        if runs or interrupted is not None:
            display.close(result)
            _reports(args, result, interrupted, report)
    return ExitCode(max((_run_exit_code(r, None) for r in result.runs), default=ExitCode.OK))


def _reports(
    args: argparse.Namespace,
    result: BatchResult,
    interrupted: Optional[BaseException],
    report: Dict[str, Any],
) -> None:
    report.update(
        {
            "duration_seconds": result.duration.total_seconds(),
            "counts": result.counts(),
            "notebooks": [_run_json(run, interrupted) for run in result.runs],
        }
    )
    if args.junit_xml is not None:
        from ._notebooks._junit import write_junit_xml

        try:
            args.junit_xml.expanduser().parent.mkdir(parents=True, exist_ok=True)
            write_junit_xml(result, args.junit_xml)
        except OSError as e:
            # Checked before the start; a disk that filled up since is
            # reported without hiding the notebooks' own outcome.
            sys.stderr.write(f"cannot write the JUnit report {args.junit_xml}: {e.strerror}\n")
