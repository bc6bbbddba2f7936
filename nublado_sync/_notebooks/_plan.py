"""What a notebook run will do: the notebook prepared, and the cells it runs.

Everything here works on the notebook alone, with no session and no
kernel, so the command checks its input with it before anything starts
(and without importing the kernel protocol).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Union

from ._format import cell_source, parse_notebook
from ._parameters import inject_parameters

if TYPE_CHECKING:
    from .._models import ExecutionResult

__all__ = [
    "RAISES_EXCEPTION_TAG",
    "SKIP_EXECUTION_TAG",
    "CellHook",
    "NotebookCell",
    "NotebookHooks",
    "cell_tags",
    "code_cells",
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
        """The cell as a person finds it, such as ``cell 3 of 7 (In [5], id 'load')``."""
        details = []
        if self.execution_count is not None:
            details.append(f"In [{self.execution_count}]")
        if self.id:
            details.append(f"id {self.id!r}")
        extra = f" ({', '.join(details)})" if details else ""
        return f"cell {self.number} of {self.total}{extra}"


def cell_tags(cell: Mapping[str, Any]) -> List[str]:
    """Return a cell's tags (``metadata.tags``), ignoring malformed ones.

    Parameters
    ----------
    cell
        The cell.

    Returns
    -------
    list of str
        Its tags.
    """
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
        if cell_source(cell).strip() and SKIP_EXECUTION_TAG not in cell_tags(cell)
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


CellHook = Callable[[NotebookCell], None]
"""A per-cell hook: called with the `NotebookCell`."""


class NotebookHooks:
    """Per-cell hooks of a notebook run, as one object; subclass and override.

    Each method is called in the thread running the notebook; an exception
    it raises ends the run and propagates.
    """

    def on_cell_start(self, cell: NotebookCell) -> None:
        """Act before a code cell is sent to the kernel.

        Parameters
        ----------
        cell
            The cell about to run.
        """

    def on_cell_complete(self, cell: NotebookCell) -> None:
        """Act when a code cell's execution ended, failed or not.

        Not called when the run ends inside the cell (a timeout, a dead
        kernel, a broken connection).

        Parameters
        ----------
        cell
            The cell, with its outputs and ``result``.
        """

    def on_cell_error(self, cell: NotebookCell) -> None:
        """Act when a code cell raised, before `on_cell_complete`.

        Also for cells whose error is allowed (``allow_errors``, the
        ``raises-exception`` tag).

        Parameters
        ----------
        cell
            The cell, with its error output and ``result``.
        """
