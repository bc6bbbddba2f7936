"""Plain data returned by or passed to the client."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

__all__ = [
    "CodeContext",
    "ExecutionResult",
    "NotebookExecutionError",
    "NotebookExecutionResult",
    "SpawnProgressMessage",
]


@dataclass
class CodeContext:
    """Where a piece of code came from, for error reports.

    Every field is optional; an exception always carries a `CodeContext`,
    possibly an empty one.

    Parameters
    ----------
    node
        Kubernetes node the lab runs on.
    image
        Lab image the code runs in.
    notebook
        Name of the notebook the code comes from.
    cell
        Identifier of the notebook cell.
    cell_number
        Number of the cell within the notebook, as text.
    """

    node: Optional[str] = None
    image: Optional[str] = None
    notebook: Optional[str] = None
    cell: Optional[str] = None
    cell_number: Optional[str] = None


@dataclass
class ExecutionResult:
    """Everything one code execution produced.

    `~nublado_sync.JupyterLabSession.execute` returns it;
    `~nublado_sync.JupyterLabSession.run_python` returns
    only its ``stdout``. On a timeout the partial result seen so far is
    attached to the exception.

    Parameters
    ----------
    code
        The code that was executed.
    status
        ``execute_reply`` status: ``ok``, ``error`` or ``aborted``; empty when
        no reply arrived (a timeout, a dead kernel).
    stdout
        Everything the code wrote to standard output, in order.
    stderr
        Everything the code wrote to standard error, in order.
    outputs
        Every output in arrival order, in nbformat 4 output shape (dicts with
        ``output_type`` ``stream``, ``execute_result``, ``display_data`` or
        ``error``), ready to be stored in a notebook cell.
    execution_count
        Kernel execution counter of the request, if the kernel sent one.
    ename
        Exception class name when the code raised.
    evalue
        Exception value when the code raised.
    traceback
        Traceback lines when the code raised (with ANSI colour codes, as the
        kernel sent them).
    output_lost
        True when output may be missing: the server's IOPub rate limit
        replaced some with a notice, or the WebSocket dropped while the code
        ran and the server did not keep what the kernel sent meanwhile
        (``reconnects`` is then above zero). ``stdout``, ``stderr`` and
        ``outputs`` are then incomplete.
    started_at
        When the request was sent (UTC).
    finished_at
        When the result was complete (UTC).
    reconnects
        How many times the session reconnected its WebSocket while the
        code ran (see `ReconnectPolicy`).
    """

    code: str
    status: str = ""
    stdout: str = ""
    stderr: str = ""
    outputs: List[Dict[str, Any]] = field(default_factory=list)
    execution_count: Optional[int] = None
    ename: Optional[str] = None
    evalue: Optional[str] = None
    traceback: List[str] = field(default_factory=list)
    output_lost: bool = False
    started_at: Optional[datetime.datetime] = None
    finished_at: Optional[datetime.datetime] = None
    reconnects: int = 0

    @property
    def duration(self) -> Optional[datetime.timedelta]:
        """Time from sending the request to the complete result."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    @property
    def result(self) -> Optional[Dict[str, Any]]:
        """Mimebundle of the ``execute_result`` (the last expression's value).

        ``None`` when the cell produced no value.
        """
        for output in reversed(self.outputs):
            if output["output_type"] == "execute_result":
                data: Dict[str, Any] = output["data"]
                return data
        return None

    @property
    def displays(self) -> List[Dict[str, Any]]:
        """Mimebundles of every ``display_data`` output, in order."""
        return [o["data"] for o in self.outputs if o["output_type"] == "display_data"]

    @property
    def error_text(self) -> Optional[str]:
        """The traceback as one string, or ``None`` when nothing was raised."""
        if self.traceback:
            return "\n".join(self.traceback)
        if self.ename is None:
            return None
        return f"{self.ename}: {self.evalue}"


@dataclass(frozen=True)
class SpawnProgressMessage:
    """One event of a lab's spawn progress.

    Parameters
    ----------
    progress
        Percentage complete, 0 to 100.
    message
        What the spawner is doing.
    ready
        Whether the lab is ready (the last event of a successful spawn).
    failed
        Whether the spawn failed (the last event of a failed spawn).
    """

    progress: int
    message: str
    ready: bool
    failed: bool = False


@dataclass
class NotebookExecutionError:
    """A cell failure reported by the lab's notebook execution extension.

    Parameters
    ----------
    name
        Exception class name (``ename``).
    value
        Exception value (``evalue``).
    message
        The extension's error message (``err_msg``).
    traceback
        The traceback, as one string.
    """

    name: str
    value: str
    message: str
    traceback: str


@dataclass
class NotebookExecutionResult:
    """What the lab's notebook execution extension returned.

    Parameters
    ----------
    notebook
        The executed notebook (up to the failing cell on an error), as
        ``.ipynb`` text.
    resources
        Resources nbconvert returned with it.
    error
        The cell failure, or `None` when every cell ran.
    """

    notebook: str
    resources: Dict[str, Any] = field(default_factory=dict)
    error: Optional[NotebookExecutionError] = None
