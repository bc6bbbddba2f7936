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
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    count = 0
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        count += 1
        context = CodeContext(
            notebook=name, cell=str(cell.get("id") or index), cell_number=str(count)
        )
        source = cell_source(cell)
        try:
            result = session.execute(
                source, context, timeout=cell_timeout, on_output=on_output, raise_on_error=False
            )
        except (NubladoExecutionTimeoutError, NubladoKernelDiedError) as e:
            if e.result is not None:
                cell["outputs"] = _cell_outputs(e.result, count)
            cell["execution_count"] = count
            e.notebook = dump_notebook(notebook)
            raise
        cell["outputs"] = _cell_outputs(result, count)
        cell["execution_count"] = count
        if result.status != "ok":
            raise NubladoExecutionError(
                session.username,
                code=source,
                context=context,
                error=result.error_text,
                status=result.status or "unknown",
                started_at=result.started_at,
                result=result,
                notebook=dump_notebook(notebook),
            )
    return dump_notebook(notebook)
