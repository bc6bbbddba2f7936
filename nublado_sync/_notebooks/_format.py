"""Reading and checking nbformat 4 notebooks, without nbformat itself.

The notebook stays the JSON document it was (plain dicts and lists), so
what is saved is what was read plus the outputs; nothing is validated
beyond what running it needs.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Dict, Mapping, Union

from .._exceptions import NubladoUsageError

__all__ = ["cell_source", "dump_notebook", "parse_notebook"]


def parse_notebook(content: Union[str, bytes, Mapping[str, Any]]) -> Dict[str, Any]:
    """Parse and check an nbformat 4 notebook.

    Parameters
    ----------
    content
        Notebook as ``.ipynb`` text or as already parsed JSON.

    Returns
    -------
    dict
        A deep copy of the notebook, safe to fill in.

    Raises
    ------
    NubladoUsageError
        It is not JSON, or not an nbformat 4 notebook.
    """
    if isinstance(content, (str, bytes)):
        try:
            notebook: Any = json.loads(content)
        except ValueError as e:
            raise NubladoUsageError(f"Notebook is not JSON: {e}") from None
    else:
        notebook = copy.deepcopy(dict(content))
    if not isinstance(notebook, dict):
        raise NubladoUsageError("Notebook is not a JSON object")
    version = notebook.get("nbformat")
    if version != 4:
        # Older notebooks keep their cells elsewhere ("worksheets"): say
        # what to do rather than that the cells are missing.
        raise NubladoUsageError(
            f"Notebook is nbformat {version!r}; only nbformat 4 notebooks are supported"
            " (JupyterLab, or jupyter nbconvert --to notebook, converts it)"
        )
    if not isinstance(notebook.get("cells"), list):
        raise NubladoUsageError("Notebook has no list of cells")
    for cell in notebook["cells"]:
        if not isinstance(cell, dict) or not isinstance(cell.get("cell_type"), str):
            raise NubladoUsageError("Notebook has a malformed cell")
    return notebook


def cell_source(cell: Mapping[str, Any]) -> str:
    """Return a cell's source as one string (nbformat allows a list of lines).

    Parameters
    ----------
    cell
        The cell.

    Returns
    -------
    str
        Its source text.
    """
    source = cell.get("source", "")
    if isinstance(source, list):
        return "".join(str(line) for line in source)
    return str(source)


def dump_notebook(notebook: Mapping[str, Any]) -> str:
    """Return a notebook as ``.ipynb`` text, indented as JupyterLab writes it.

    Parameters
    ----------
    notebook
        The notebook.

    Returns
    -------
    str
        Its JSON text.
    """
    return json.dumps(notebook, indent=1)
