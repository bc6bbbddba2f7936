"""Running a notebook's code cells one by one in a kernel session.

Works on any Jupyter server: the cells go through the same kernel session
as `run_python`, and the outputs are written back into the notebook in
nbformat 4 shape, so the result can be saved and opened in JupyterLab.
"""

from __future__ import annotations

import datetime
from typing import Any, Dict, List, Mapping, Optional, Union

from .._exceptions import (
    NubladoExecutionError,
    NubladoExecutionTimeoutError,
    NubladoKernelDiedError,
)
from .._execution import OutputCallback
from .._models import CodeContext, ExecutionResult
from .._session import JupyterLabSession
from ._format import cell_source, dump_notebook, parse_notebook
from ._queued import PlannedCell, run_queued

__all__ = ["execute_notebook"]


def _cell_outputs(result: ExecutionResult, count: int) -> List[Dict[str, Any]]:
    outputs = [dict(output) for output in result.outputs]
    for output in outputs:
        if output["output_type"] == "execute_result":
            # store_history is off, so the kernel's own counter stays at 0;
            # number the cells as a notebook would.
            output["execution_count"] = count
    return outputs


def execute_notebook(
    session: JupyterLabSession,
    content: Union[str, bytes, Mapping[str, Any]],
    *,
    name: Optional[str] = None,
    cell_timeout: Optional[datetime.timedelta] = None,
    on_output: Optional[OutputCallback] = None,
    queue_cells: bool = True,
) -> str:
    """Run every code cell of a notebook, in order, and return it executed.

    Parameters
    ----------
    session
        Open kernel session to run the cells in.
    content
        Notebook as ``.ipynb`` text or parsed JSON; it is not modified.
    name
        Notebook name for error reports (`CodeContext.notebook`).
    cell_timeout
        Deadline of each cell; `None` for none.
    on_output
        Called with each output as it arrives.
    queue_cells
        Send every code cell at once, as JupyterLab's Run All does, so the
        kernel goes from one cell to the next without waiting for the
        network (the default); with `False`, send each cell when the one
        before it is done. The notebook comes out the same: the run stops
        at the first failing cell either way (the kernel aborts the cells
        queued behind it), and each cell's deadline starts when the kernel
        starts that cell. See :ref:`notebooks-queued`.

    Returns
    -------
    str
        The executed notebook, as ``.ipynb`` JSON text.

    Raises
    ------
    NubladoUsageError
        The content is not an nbformat 4 notebook.
    NubladoExecutionError
        A cell failed; its context names the notebook, cell id and number,
        and ``notebook`` holds the notebook executed up to and including
        that cell.
    NubladoExecutionTimeoutError
        A cell ran past ``cell_timeout``; ``notebook`` is set as above.
    NubladoWebSocketError
        The connection failed.
    """
    notebook = parse_notebook(content)
    # Outputs of an earlier run must not pass for this run's, in the cells
    # after a failure above all.
    cells: List[PlannedCell] = []
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        cell["outputs"] = []
        cell["execution_count"] = None
        count = len(cells) + 1
        context = CodeContext(
            notebook=name, cell=str(cell.get("id") or index), cell_number=str(count)
        )
        cells.append(PlannedCell(cell, cell_source(cell), context, count))
    if queue_cells:
        run_queued(
            session,
            notebook,
            cells,
            record=_record,
            cell_timeout=lambda: cell_timeout,
            on_output=on_output,
        )
        return dump_notebook(notebook)
    for planned in cells:
        try:
            result = session.execute(
                planned.source,
                planned.context,
                timeout=cell_timeout,
                on_output=on_output,
                raise_on_error=False,
            )
        except (NubladoExecutionTimeoutError, NubladoKernelDiedError) as e:
            if e.result is not None:
                _record(planned, e.result)
            planned.cell["execution_count"] = planned.count
            e.notebook = dump_notebook(notebook)
            raise
        _record(planned, result)
        if result.status != "ok":
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
    return dump_notebook(notebook)


def _record(planned: PlannedCell, result: ExecutionResult) -> None:
    planned.cell["outputs"] = _cell_outputs(result, planned.count)
    planned.cell["execution_count"] = planned.count
