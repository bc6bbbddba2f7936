"""Running a notebook's code cells one by one in a kernel session.

Works on any Jupyter server: the cells go through the same kernel session
as `run_python`, and the outputs are written back into the notebook in
nbformat 4 shape, as nbclient writes them, so the result can be saved and
opened in JupyterLab.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

from .._deadline import Deadline
from .._exceptions import (
    NubladoExecutionError,
    NubladoExecutionTimeoutError,
    NubladoKernelDiedError,
    NubladoUsageError,
)
from .._execution import OutputCallback
from .._models import CodeContext, ExecutionResult
from .._session import JupyterLabSession
from ._cells import CellRecorder, DisplayRegistry
from ._format import cell_source, dump_notebook, parse_notebook
from ._parameters import inject_parameters

__all__ = [
    "RAISES_EXCEPTION_TAG",
    "SKIP_EXECUTION_TAG",
    "CellHook",
    "NotebookCell",
    "NotebookHooks",
    "code_cells",
    "execute_notebook",
    "prepare_notebook",
]

RAISES_EXCEPTION_TAG = "raises-exception"
SKIP_EXECUTION_TAG = "skip-execution"


@dataclass
class NotebookCell:
    """One code cell of a notebook run, as the hooks see it.

    Parameters
    ----------
    cell
        The cell itself, in nbformat 4 shape; its ``outputs``,
        ``execution_count`` and ``metadata.execution`` fill in as it runs.
    index
        Position of the cell in the notebook, counting every cell from 0
        (nbclient's ``cell_index``).
    number
        Position among the notebook's code cells, counting from 1: what a
        person counts in JupyterLab.
    total
        Number of code cells in the notebook.
    notebook
        Name of the notebook, if one was given.
    result
        What the execution produced, once it ended.
    """

    cell: Dict[str, Any]
    index: int
    number: int
    total: int
    notebook: Optional[str] = None
    result: Optional[ExecutionResult] = field(default=None, repr=False)

    @property
    def id(self) -> Optional[str]:
        """The cell's ``id`` (nbformat 4.5), or `None`."""
        value = self.cell.get("id")
        return value if isinstance(value, str) and value else None

    @property
    def execution_count(self) -> Optional[int]:
        """The kernel's execution count for the cell (its ``In [n]``), once known."""
        value = self.cell.get("execution_count")
        return value if isinstance(value, int) else None

    @property
    def source(self) -> str:
        """The cell's code."""
        return cell_source(self.cell)

    @property
    def label(self) -> str:
        """The cell as a person finds it: ``cell 3 of 7 (In [5], id 'load')``."""
        details = []
        if self.execution_count is not None:
            details.append(f"In [{self.execution_count}]")
        if self.id:
            details.append(f"id {self.id!r}")
        extra = f" ({', '.join(details)})" if details else ""
        return f"cell {self.number} of {self.total}{extra}"


CellHook = Callable[[NotebookCell], None]
"""A per-cell hook: called with the `NotebookCell`."""


class NotebookHooks:
    """Per-cell hooks of a notebook run, as one object; subclass and override.

    Each method is called in the thread running the notebook; an exception
    it raises ends the run and propagates.
    """

    def on_cell_start(self, cell: NotebookCell) -> None:
        """Called before a code cell is sent to the kernel.

        Parameters
        ----------
        cell
            The cell about to run.
        """

    def on_cell_complete(self, cell: NotebookCell) -> None:
        """Called when a code cell's execution ended, failed or not.

        Not called when the run ends inside the cell (a timeout, a dead
        kernel, a broken connection).

        Parameters
        ----------
        cell
            The cell, with its outputs and ``result``.
        """

    def on_cell_error(self, cell: NotebookCell) -> None:
        """Called when a code cell raised, before `on_cell_complete`.

        Also for cells whose error is allowed (``allow_errors``, the
        ``raises-exception`` tag).

        Parameters
        ----------
        cell
            The cell, with its error output and ``result``.
        """


def _tags(cell: Mapping[str, Any]) -> List[str]:
    metadata = cell.get("metadata")
    tags = metadata.get("tags") if isinstance(metadata, Mapping) else None
    return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []


def code_cells(notebook: Mapping[str, Any], name: Optional[str] = None) -> List[NotebookCell]:
    """Return the code cells that a run executes, in order.

    Cells with only blank source and cells tagged ``skip-execution`` are
    left out, as nbclient leaves them out; ``number`` and ``total`` still
    count every code cell, so that they match what JupyterLab shows.

    Parameters
    ----------
    notebook
        A parsed notebook.
    name
        Notebook name for the cells' reports.

    Returns
    -------
    list of NotebookCell
        The cells to run.
    """
    code = [
        (index, cell)
        for index, cell in enumerate(notebook["cells"])
        if cell.get("cell_type") == "code"
    ]
    return [
        NotebookCell(cell=cell, index=index, number=number, total=len(code), notebook=name)
        for number, (index, cell) in enumerate(code, start=1)
        if cell_source(cell).strip() and SKIP_EXECUTION_TAG not in _tags(cell)
    ]


def prepare_notebook(
    content: Union[str, bytes, Mapping[str, Any]],
    parameters: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """Parse, parameterise and clear a notebook for a run; nothing runs.

    Everything that can be wrong with the input shows here, before any
    kernel is involved.

    Parameters
    ----------
    content
        Notebook as ``.ipynb`` text or parsed JSON; not modified.
    parameters
        Values to inject as papermill does, or `None`.

    Returns
    -------
    dict
        The notebook to run, with the outputs and execution counts of an
        earlier run cleared.

    Raises
    ------
    NubladoUsageError
        Not an nbformat 4 notebook, or invalid parameters.
    """
    notebook = parse_notebook(content)
    if parameters is not None:
        inject_parameters(notebook, parameters)
    # Outputs of an earlier run must not pass for this run's, in the cells
    # after a failure above all.
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return notebook


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
    start_hook = _hook(hooks, "on_cell_start", on_cell_start)
    complete_hook = _hook(hooks, "on_cell_complete", on_cell_complete)
    error_hook = _hook(hooks, "on_cell_error", on_cell_error)
    deadline = Deadline(notebook_limit)
    displays = DisplayRegistry()
    for run in code_cells(notebook, name):
        if start_hook is not None:
            start_hook(run)
        recorder = CellRecorder(run.cell, displays)
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
            or (result.status == "error" and RAISES_EXCEPTION_TAG in _tags(run.cell))
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
    return dump_notebook(notebook)


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
        f"The notebook's deadline of {limit.total_seconds():.02f}s passed"
        f" in {run.label}"
    )
    return error
