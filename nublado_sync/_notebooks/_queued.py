"""Running a notebook's code cells queued at once, as JupyterLab's Run All does.

Cell by cell, each cell waits a full network round trip before the next is
sent: a 100-cell notebook over a 100 ms link spends 10 s waiting on the
network alone. Queued, every cell is sent at once and the kernel goes from
one to the next by itself; the results come back as each cell completes
and are written into the notebook in order, exactly as cell by cell would
write them.

What keeps the semantics the same:

- Stop at the first error: each cell is sent with ``stop_on_error``, so a
  failing cell makes ipykernel abort every request queued behind it; the
  aborted cells stay without outputs, as cell by cell never sends them.
  A cell allowed to fail is sent without it, and the next cell runs.
- Deadlines: a cell's deadline starts when the kernel starts that cell (its
  ``busy`` status), not when it was sent (`nublado_sync._pipeline`). A cell
  that runs past it is interrupted, which fails it and aborts the rest,
  and the session is closed, as cell by cell.
- ``input()``: requests go without stdin, so ``input()`` raises in the
  kernel, queued or not.

One difference remains, and only on a kernel that is slow to receive: the
kernel aborts the requests it holds when a cell fails, and a request still
on its way at that moment runs. A notebook's requests leave in one burst,
long before even a quick failure is reported, so this takes a very large
notebook on a slow link; should it happen, that cell's outputs are left out
of the notebook (as cell by cell would never have run it) and a warning
names it.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from .._exceptions import (
    NubladoExecutionError,
    NubladoExecutionTimeoutError,
    NubladoKernelDiedError,
)
from .._execution import OutputCallback
from .._logging import Logger, default_logger
from .._models import CodeContext, ExecutionResult
from .._pipeline import QueuedCell
from .._session import JupyterLabSession
from ._format import dump_notebook

__all__ = ["PlannedCell", "run_queued"]


@dataclass
class PlannedCell:
    """A code cell to run: where it is, what it runs, how to record it."""

    cell: Dict[str, Any]
    source: str
    context: CodeContext
    count: int
    allow_error: bool = False


def run_queued(
    session: JupyterLabSession,
    notebook: Dict[str, Any],
    cells: List[PlannedCell],
    *,
    record: Callable[[PlannedCell, ExecutionResult], None],
    cell_timeout: Callable[[], Optional[datetime.timedelta]],
    on_output: Optional[OutputCallback] = None,
    logger: Optional[Logger] = None,
) -> None:
    """Run the cells queued at once and record each result into ``notebook``.

    Parameters
    ----------
    session
        Open kernel session.
    notebook
        The notebook the cells belong to, filled in as results come.
    cells
        The code cells to run, in order.
    record
        Writes a cell's result into its cell.
    cell_timeout
        Gives the time allowed to a cell as it starts.
    on_output
        Called with each output as it arrives.
    logger
        Where a cell that ran past a failure is reported.

    Raises
    ------
    NubladoExecutionError
        A cell not allowed to fail failed; ``notebook`` is set on it.
    NubladoExecutionTimeoutError
        A cell ran past its deadline; ``notebook`` is set on it.
    NubladoKernelDiedError
        The kernel died in a cell; ``notebook`` is set on it.
    NubladoWebSocketError
        The connection failed.
    """
    if not cells:
        return
    log = logger or default_logger()
    failed: List[int] = []
    results: Dict[int, ExecutionResult] = {}

    def on_result(index: int, result: ExecutionResult) -> None:
        results[index] = result
        planned = cells[index]
        if failed:
            if result.status != "aborted":
                log.warning(
                    "A cell ran after an earlier cell failed: its request was on its way"
                    " to the kernel when the kernel aborted the queue; its outputs are"
                    " left out",
                    cell=planned.context.cell,
                    failed_cell=cells[failed[0]].context.cell,
                )
            return
        record(planned, result)
        if result.status != "ok" and not planned.allow_error:
            failed.append(index)

    queue = [
        QueuedCell(planned.source, planned.context, stop_on_error=not planned.allow_error)
        for planned in cells
    ]
    try:
        session._execute_queued(
            queue, cell_timeout=cell_timeout, on_output=on_output, on_result=on_result
        )
    except (NubladoExecutionTimeoutError, NubladoKernelDiedError) as e:
        current = cells[min(len(results), len(cells) - 1)]
        if not failed:
            if e.result is not None:
                record(current, e.result)
            else:
                current.cell["execution_count"] = current.count
        e.notebook = dump_notebook(notebook)
        raise
    if failed:
        planned, result = cells[failed[0]], results[failed[0]]
        raise NubladoExecutionError(
            session.username,
            code=planned.source,
            context=planned.context,
            error=result.error_text,
            status=result.status or "unknown",
            started_at=result.started_at,
            result=result,
            notebook=dump_notebook(notebook),
        )
