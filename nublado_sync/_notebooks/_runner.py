"""Running a notebook's code cells one by one in a kernel session.

Works on any Jupyter server: the cells go through the same kernel session
as `run_python`, and the outputs are written back into the notebook in
nbformat 4 shape, as nbclient writes them, so the result can be saved and
opened in JupyterLab.
"""

from __future__ import annotations

import copy
import datetime
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple, Union

from .._deadline import Deadline
from .._exceptions import (
    NubladoExecutionError,
    NubladoExecutionTimeoutError,
    NubladoKernelDiedError,
    NubladoUsageError,
)
from .._execution import MessageCallback, OutputCallback
from .._logging import default_logger
from .._models import CodeContext, ExecutionResult
from .._pipeline import QueuedCell
from .._session import JupyterLabSession
from ._cells import CellRecorder, DisplayRegistry
from ._format import dump_notebook
from ._plan import (
    RAISES_EXCEPTION_TAG,
    CellHook,
    NotebookCell,
    NotebookHooks,
    cell_tags,
    code_cells,
    prepare_notebook,
)

__all__ = ["execute_notebook", "run_cells"]


def _hook(
    hooks: Optional[NotebookHooks], name: str, override: Optional[CellHook]
) -> Optional[CellHook]:
    if override is not None:
        return override
    method = getattr(hooks, name, None) if hooks is not None else None
    return method if callable(method) else None


def _timedelta(value: Optional[datetime.timedelta], name: str) -> Optional[datetime.timedelta]:
    if value is None:
        return None
    if not isinstance(value, datetime.timedelta):
        raise NubladoUsageError(f"{name} must be a datetime.timedelta, not {type(value).__name__}")
    if value.total_seconds() <= 0:
        raise NubladoUsageError(f"{name} must be positive, not {value}")
    return value


def execute_notebook(
    session: JupyterLabSession,
    content: Union[str, bytes, Mapping[str, Any]],
    *,
    name: Optional[str] = None,
    parameters: Optional[Mapping[str, Any]] = None,
    cell_timeout: Optional[datetime.timedelta] = None,
    timeout: Optional[datetime.timedelta] = None,
    allow_errors: bool = False,
    hooks: Optional[NotebookHooks] = None,
    on_cell_start: Optional[CellHook] = None,
    on_cell_complete: Optional[CellHook] = None,
    on_cell_error: Optional[CellHook] = None,
    on_output: Optional[OutputCallback] = None,
    queue_cells: bool = True,
) -> str:
    """Run every code cell of a notebook, in order, and return it executed.

    The cells run in the session's kernel, numbered in its history as
    JupyterLab and nbclient number them, and each cell's outputs,
    ``execution_count`` and ``metadata.execution`` timings are written into
    the notebook as nbclient writes them.

    Parameters
    ----------
    session
        Open kernel session to run the cells in.
    content
        Notebook as ``.ipynb`` text or parsed JSON; it is not modified.
    name
        Notebook name for error reports (`CodeContext.notebook`).
    parameters
        Values to inject before the run, as papermill injects them: a cell
        tagged ``injected-parameters`` after the cell tagged
        ``parameters``, and ``metadata.papermill``.
    cell_timeout
        Deadline of each cell; `None` for none.
    timeout
        Deadline of the whole notebook; `None` for none.
    allow_errors
        With `True`, a cell that raises does not end the run: its error
        output stays in the cell and the next cell runs, as nbclient's
        ``allow_errors``. A cell tagged ``raises-exception`` is allowed to
        raise in any case; cells tagged ``skip-execution`` never run.
    hooks
        An object with any of the methods of `NotebookHooks`.
    on_cell_start
        Called before each code cell runs (instead of ``hooks``' method).
    on_cell_complete
        Called after each code cell ran (instead of ``hooks``' method).
    on_cell_error
        Called when a code cell raised (instead of ``hooks``' method).
    on_output
        Called with each output as it arrives.

    Returns
    -------
    str
        The executed notebook, as ``.ipynb`` JSON text.

    Raises
    ------
    NubladoUsageError
        The content is not an nbformat 4 notebook, a parameter is invalid,
        or an argument has the wrong type; nothing ran.
    NubladoExecutionError
        A cell failed; its context names the notebook, the cell's 1-based
        position among the code cells (``cell_number``) and its id
        (``cell``), and ``notebook`` holds the notebook executed up to and
        including that cell.
    NubladoExecutionTimeoutError
        A cell ran past ``cell_timeout``, or the notebook past ``timeout``;
        ``notebook`` is set as above.
    NubladoKernelDiedError
        The kernel died in a cell; ``notebook`` is set as above.
    NubladoWebSocketError
        The connection failed.
    """
    cell_limit = _timedelta(cell_timeout, "cell_timeout")
    notebook_limit = _timedelta(timeout, "timeout")
    notebook = prepare_notebook(content, parameters)
    run_cells(
        session,
        notebook,
        name=name,
        cell_timeout=cell_limit,
        timeout=notebook_limit,
        allow_errors=allow_errors,
        on_cell_start=_hook(hooks, "on_cell_start", on_cell_start),
        on_cell_complete=_hook(hooks, "on_cell_complete", on_cell_complete),
        on_cell_error=_hook(hooks, "on_cell_error", on_cell_error),
        on_output=on_output,
        queue_cells=queue_cells,
    )
    return dump_notebook(notebook)


def run_cells(
    session: JupyterLabSession,
    notebook: Dict[str, Any],
    *,
    name: Optional[str] = None,
    cell_timeout: Optional[datetime.timedelta] = None,
    timeout: Optional[datetime.timedelta] = None,
    allow_errors: bool = False,
    on_cell_start: Optional[CellHook] = None,
    on_cell_complete: Optional[CellHook] = None,
    on_cell_error: Optional[CellHook] = None,
    on_output: Optional[OutputCallback] = None,
    node: Callable[[Dict[str, Any]], Dict[str, Any]] = dict,
    queue_cells: bool = False,
) -> None:
    """Run a prepared notebook's code cells in place (see `execute_notebook`).

    For callers that keep the notebook object, such as the papermill
    engine: the cells are filled in where they are, and ``node`` makes each
    output and timings dict (papermill needs ``NotebookNode`` objects).

    Parameters
    ----------
    session
        Open kernel session.
    notebook
        A notebook from `prepare_notebook`, filled in place.
    name
        Notebook name for error reports.
    cell_timeout
        Deadline of each cell.
    timeout
        Deadline of the whole notebook.
    allow_errors
        Go on after a cell that raised.
    on_cell_start
        Hook before each cell.
    on_cell_complete
        Hook after each cell.
    on_cell_error
        Hook for a cell that raised.
    on_output
        Called with each output as it arrives.
    node
        Makes the dicts written into the notebook.
    queue_cells
        Send the cells queued at once (see `execute_notebook`).

    Raises
    ------
    NubladoExecutionError
        As `execute_notebook`.
    NubladoExecutionTimeoutError
        As `execute_notebook`.
    NubladoKernelDiedError
        As `execute_notebook`.
    NubladoWebSocketError
        As `execute_notebook`.
    """
    cell_limit, notebook_limit = cell_timeout, timeout
    start_hook, complete_hook, error_hook = on_cell_start, on_cell_complete, on_cell_error
    deadline = Deadline(notebook_limit)
    displays = DisplayRegistry()
    if queue_cells:
        _run_cells_queued(
            session,
            notebook,
            name=name,
            cell_limit=cell_limit,
            notebook_limit=notebook_limit,
            deadline=deadline,
            displays=displays,
            allow_errors=allow_errors,
            hooks=(start_hook, complete_hook, error_hook),
            on_output=on_output,
            node=node,
        )
        return
    for run in code_cells(notebook, name):
        if start_hook is not None:
            start_hook(run)
        recorder = CellRecorder(run.cell, displays, node)
        context = CodeContext(notebook=name, cell=run.id, cell_number=str(run.number))
        limit = _cell_deadline(cell_limit, deadline)
        if limit is not None and limit.total_seconds() <= 0:
            # The deadline passed between cells (in a hook, say).
            late = _notebook_timeout(session, run, context, notebook_limit, None)
            late.notebook = dump_notebook(notebook)
            raise late
        try:
            result = session.execute(
                run.source,
                context,
                timeout=limit,
                on_output=on_output,
                raise_on_error=False,
                store_history=True,
                on_message=recorder.on_message,
            )
        except NubladoExecutionTimeoutError as e:
            if notebook_limit is not None and deadline.expired():
                late = _notebook_timeout(session, run, context, notebook_limit, e)
                late.notebook = dump_notebook(notebook)
                raise late from e
            e.notebook = dump_notebook(notebook)
            raise
        except NubladoKernelDiedError as e:
            e.notebook = dump_notebook(notebook)
            raise
        run.result = result
        failed = result.status != "ok"
        if failed and error_hook is not None:
            error_hook(run)
        if complete_hook is not None:
            complete_hook(run)
        if failed and not (
            allow_errors
            or (result.status == "error" and RAISES_EXCEPTION_TAG in cell_tags(run.cell))
        ):
            raise NubladoExecutionError(
                session.username,
                code=run.source,
                context=context,
                error=result.error_text,
                status=result.status or "unknown",
                started_at=result.started_at,
                result=result,
                notebook=dump_notebook(notebook),
            )


def _cell_deadline(
    cell_limit: Optional[datetime.timedelta], deadline: Deadline
) -> Optional[datetime.timedelta]:
    remaining = deadline.remaining()
    if remaining is None:
        return cell_limit
    left = datetime.timedelta(seconds=max(remaining, 0.0))
    return left if cell_limit is None else min(cell_limit, left)


def _notebook_timeout(
    session: JupyterLabSession,
    run: NotebookCell,
    context: CodeContext,
    limit: Optional[datetime.timedelta],
    cause: Optional[NubladoExecutionTimeoutError],
) -> NubladoExecutionTimeoutError:
    assert limit is not None
    error = NubladoExecutionTimeoutError(
        session.username,
        code=run.source,
        timeout=limit,
        context=context,
        started_at=cause.started_at if cause is not None else None,
        result=cause.result if cause is not None else None,
    )
    error.message = (
        f"The notebook's deadline of {limit.total_seconds():.02f}s passed in {run.label}"
    )
    return error


def _allowed_to_fail(run: NotebookCell, allow_errors: bool) -> bool:
    return allow_errors or RAISES_EXCEPTION_TAG in cell_tags(run.cell)


def _segments(runs: List[NotebookCell], allow_errors: bool, bounded: bool) -> List[Tuple[int, int]]:
    """Split the queue after each cell allowed to fail, when the run has a deadline.

    A cell allowed to fail goes without ``stop_on_error``, so when it is
    interrupted at its deadline the kernel goes on with the cells queued
    behind it, which cell by cell would never have sent: those wait until
    it is over. Without a deadline nothing interrupts it, and one queue
    does.
    """
    if not bounded:
        return [(0, len(runs))]
    segments: List[Tuple[int, int]] = []
    first = 0
    for index, run in enumerate(runs):
        if _allowed_to_fail(run, allow_errors):
            segments.append((first, index + 1))
            first = index + 1
    if first < len(runs):
        segments.append((first, len(runs)))
    return segments


def _shifted_result(
    on_result: Callable[[int, ExecutionResult], None], first: int
) -> Callable[[int, ExecutionResult], None]:
    return lambda index, result: on_result(first + index, result)


def _shifted_start(on_start: Callable[[int], None], first: int) -> Callable[[int], None]:
    return lambda index: on_start(first + index)


def _run_cells_queued(
    session: JupyterLabSession,
    notebook: Dict[str, Any],
    *,
    name: Optional[str],
    cell_limit: Optional[datetime.timedelta],
    notebook_limit: Optional[datetime.timedelta],
    deadline: Deadline,
    displays: DisplayRegistry,
    allow_errors: bool,
    hooks: Tuple[Optional[CellHook], Optional[CellHook], Optional[CellHook]],
    on_output: Optional[OutputCallback],
    node: Callable[[Dict[str, Any]], Dict[str, Any]],
) -> None:
    """Run the cells queued at once (see `nublado_sync._pipeline`).

    The notebook comes out as cell by cell: a cell not allowed to fail goes
    with ``stop_on_error``, so the kernel aborts the cells behind it, and
    whatever those aborted cells received (a recorder made as they started,
    before the failure was known) is put back as it was.
    """
    start_hook, complete_hook, error_hook = hooks
    runs = list(code_cells(notebook, name))
    if not runs:
        return
    contexts = [CodeContext(notebook=name, cell=r.id, cell_number=str(r.number)) for r in runs]
    recorders: Dict[int, CellRecorder] = {}
    before: Dict[int, Dict[str, Any]] = {}
    failed: List[int] = []
    results: List[ExecutionResult] = []

    # A queued cell can go busy before the cell ahead of it is complete (its
    # reply and the next cell's status travel on different channels), so
    # start hooks are held back until the previous cell's hooks have run:
    # callers see start, complete, start, complete, as cell by cell. What a
    # cell receives before its start is announced waits, so its hook sees
    # the cell as a cell-by-cell run shows it: no outputs, no count yet.
    started: Set[int] = set()
    completed: Set[int] = set()
    next_start = [0]
    held: Dict[int, List[Dict[str, Any]]] = {}

    def announce_starts() -> None:
        while True:
            index = next_start[0]
            if index not in started or (index > 0 and index - 1 not in completed):
                return
            next_start[0] += 1
            if start_hook is not None and not failed:
                start_hook(runs[index])
            for msg in held.pop(index, []):
                record(index, msg)

    def on_start(index: int) -> None:
        if failed:
            return
        cell = runs[index].cell
        before[index] = copy.deepcopy(
            {key: cell[key] for key in ("outputs", "execution_count", "metadata") if key in cell}
        )
        recorders[index] = CellRecorder(cell, displays, node)
        started.add(index)
        announce_starts()

    def record(index: int, msg: Dict[str, Any]) -> None:
        recorder = recorders.get(index)
        if recorder is not None and not (failed and index > failed[0]):
            recorder.on_message(msg)

    def message_to(index: int) -> MessageCallback:
        def on_message(msg: Dict[str, Any]) -> None:
            if index >= next_start[0]:
                held.setdefault(index, []).append(msg)
            else:
                record(index, msg)

        return on_message

    def on_result(index: int, result: ExecutionResult) -> None:
        results.append(result)
        announce_starts()
        try:
            report(index, result)
        finally:
            completed.add(index)
            announce_starts()

    def report(index: int, result: ExecutionResult) -> None:
        run = runs[index]
        if failed:
            if result.status != "aborted":
                session_logger.warning(
                    "A cell ran after an earlier cell failed: its request was on its way"
                    " to the kernel when the kernel aborted the queue; its outputs are"
                    " left out",
                    cell=run.id,
                )
            return
        run.result = result
        failed_here = result.status != "ok"
        if failed_here and error_hook is not None:
            error_hook(run)
        if complete_hook is not None:
            complete_hook(run)
        if failed_here and not (result.status == "error" and _allowed_to_fail(run, allow_errors)):
            failed.append(index)

    def restore_after_failure() -> None:
        if not failed:
            return
        for index, saved in before.items():
            if index > failed[0]:
                cell = runs[index].cell
                for key in ("outputs", "execution_count", "metadata"):
                    cell.pop(key, None)
                cell.update(saved)

    session_logger = default_logger()
    queue = [
        QueuedCell(
            run.source,
            context,
            stop_on_error=not _allowed_to_fail(run, allow_errors),
            store_history=True,
            on_message=message_to(index),
        )
        for index, (run, context) in enumerate(zip(runs, contexts))
    ]
    bounded = cell_limit is not None or notebook_limit is not None
    try:
        for first, end in _segments(runs, allow_errors, bounded):
            if failed:
                break
            session._execute_queued(
                queue[first:end],
                cell_timeout=lambda: _cell_deadline(cell_limit, deadline),
                on_output=on_output,
                on_result=_shifted_result(on_result, first),
                on_start=_shifted_start(on_start, first),
            )
    except NubladoExecutionTimeoutError as e:
        restore_after_failure()
        current = min(len(results), len(runs) - 1)
        if notebook_limit is not None and deadline.expired():
            late = _notebook_timeout(session, runs[current], contexts[current], notebook_limit, e)
            late.notebook = dump_notebook(notebook)
            raise late from e
        e.notebook = dump_notebook(notebook)
        raise
    except NubladoKernelDiedError as e:
        restore_after_failure()
        e.notebook = dump_notebook(notebook)
        raise
    restore_after_failure()
    if failed:
        run, result = runs[failed[0]], results[failed[0]]
        raise NubladoExecutionError(
            session.username,
            code=run.source,
            context=contexts[failed[0]],
            error=result.error_text,
            status=result.status or "unknown",
            started_at=result.started_at,
            result=result,
            notebook=dump_notebook(notebook),
        )
