"""Notebook parameters, injected the way papermill injects them.

A notebook run with parameters gets a new code cell tagged
``injected-parameters`` holding one Python assignment per parameter: right
after the cell tagged ``parameters`` (whose assignments are the defaults),
at the top when no cell has that tag, and in place of the injected cell of
an earlier run. The notebook's ``metadata.papermill`` records the values.
Output notebooks therefore look like papermill's, and papermill's tools
(and people used to them) read them as usual.

Only Python kernels are supported: the assignments are Python.
"""

from __future__ import annotations

import json
import keyword
import math
import uuid
from typing import Any, Dict, Iterable, List, Mapping, Tuple

from .._exceptions import NubladoUsageError

__all__ = [
    "INJECTED_TAG",
    "PARAMETERS_TAG",
    "check_parameters",
    "inject_parameters",
    "parameters_code",
    "read_parameters_file",
    "typed_value",
]

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"


def check_parameters(parameters: Mapping[str, Any]) -> Dict[str, Any]:
    """Check that parameters can be injected, and return them as a plain dict.

    Parameters
    ----------
    parameters
        Parameter names and values.

    Returns
    -------
    dict
        The same parameters.

    Raises
    ------
    NubladoUsageError
        A name is not a Python identifier (or is a keyword), or a value is
        not JSON data (None, bool, int, float, str, and lists and dicts of
        them), which the notebook's metadata could not record.
    """
    if not isinstance(parameters, Mapping):
        raise NubladoUsageError(
            f"parameters must be a mapping of names to values, not {type(parameters).__name__}"
        )
    checked: Dict[str, Any] = {}
    for name, value in parameters.items():
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise NubladoUsageError(f"Parameter name {name!r} is not a valid Python variable name")
        try:
            json.dumps(value, allow_nan=True)
        except (TypeError, ValueError):
            raise NubladoUsageError(
                f"Parameter {name} has a value of type {type(value).__name__}, which is not"
                " JSON data (use str, int, float, bool, None, or lists and dicts of them)"
            ) from None
        checked[name] = value
    return checked


def _string(value: str) -> str:
    # A double-quoted literal with backslashes, quotes, control and
    # non-ASCII characters escaped, as papermill writes strings.
    escaped = value.encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return f'"{escaped}"'


def _literal(value: Any) -> str:
    if value is None or isinstance(value, (bool, int)):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "float('nan')"
        if math.isinf(value):
            return "float('-inf')" if value < 0 else "float('inf')"
        return repr(value)
    if isinstance(value, dict):
        items = ", ".join(f"{_string(str(k))}: {_literal(v)}" for k, v in value.items())
        return f"{{{items}}}"
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(_literal(v) for v in value)}]"
    return _string(str(value))


def parameters_code(parameters: Mapping[str, Any]) -> str:
    """Return the source of the injected cell: one assignment per parameter.

    Parameters
    ----------
    parameters
        Checked parameters (see `check_parameters`).

    Returns
    -------
    str
        Python source, ``# Parameters`` and then ``name = value`` lines.
    """
    lines = ["# Parameters"]
    lines += [f"{name} = {_literal(value)}" for name, value in parameters.items()]
    return "\n".join(lines) + "\n"


def _tags(cell: Mapping[str, Any]) -> List[str]:
    metadata = cell.get("metadata")
    tags = metadata.get("tags") if isinstance(metadata, Mapping) else None
    return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []


def _first_tagged(cells: Iterable[Mapping[str, Any]], tag: str) -> int:
    for index, cell in enumerate(cells):
        if tag in _tags(cell):
            return index
    return -1


def _notebook_language(notebook: Mapping[str, Any]) -> str:
    metadata = notebook.get("metadata") or {}
    for key in ("kernelspec", "language_info"):
        entry = metadata.get(key)
        if isinstance(entry, Mapping):
            language = entry.get("language" if key == "kernelspec" else "name")
            if isinstance(language, str) and language:
                return language.lower()
    return "python"


def _new_cell_id(taken: Iterable[str]) -> str:
    used = set(taken)
    while True:
        cell_id = uuid.uuid4().hex[:8]
        if cell_id not in used:
            return cell_id


def inject_parameters(notebook: Dict[str, Any], parameters: Mapping[str, Any]) -> None:
    """Inject parameters into a parsed notebook, in place, as papermill does.

    Parameters
    ----------
    notebook
        A parsed nbformat 4 notebook (see `parse_notebook`).
    parameters
        Parameter names and values.

    Raises
    ------
    NubladoUsageError
        A parameter is invalid (see `check_parameters`), or the notebook's
        kernel is not a Python one.
    """
    values = check_parameters(parameters)
    language = _notebook_language(notebook)
    if language != "python":
        raise NubladoUsageError(
            f"Parameters can be injected only into Python notebooks; this one is {language}"
        )
    cells: List[Dict[str, Any]] = notebook["cells"]
    # nbformat 4.5 gives every cell an id; papermill upgrades the notebook
    # to it before injecting, and so does this.
    if not isinstance(notebook.get("nbformat_minor"), int) or notebook["nbformat_minor"] < 5:
        notebook["nbformat_minor"] = 5
    ids = [c["id"] for c in cells if isinstance(c.get("id"), str)]
    for cell in cells:
        if not isinstance(cell.get("id"), str):
            cell["id"] = _new_cell_id(ids)
            ids.append(cell["id"])
    injected: Dict[str, Any] = {
        "cell_type": "code",
        "execution_count": None,
        "id": _new_cell_id(ids),
        "metadata": {"tags": [INJECTED_TAG]},
        "outputs": [],
        "source": parameters_code(values),
    }
    earlier = _first_tagged(cells, INJECTED_TAG)
    defaults = _first_tagged(cells, PARAMETERS_TAG)
    if earlier >= 0:
        cells[earlier] = injected
    elif defaults >= 0:
        cells.insert(defaults + 1, injected)
    else:
        cells.insert(0, injected)
    metadata = notebook.setdefault("metadata", {})
    record = metadata.get("papermill")
    if not isinstance(record, dict):
        record = metadata["papermill"] = {
            "default_parameters": {},
            "environment_variables": {},
            "version": None,
        }
    record["parameters"] = values


def typed_value(text: str) -> Any:
    """Read a command-line value as papermill's ``-p`` reads it.

    ``True``, ``False`` and ``None`` become those values, text that Python
    reads as an ``int`` or a ``float`` becomes one, and anything else stays
    a string (use ``-r`` to keep ``1`` a string).

    Parameters
    ----------
    text
        The value as typed.

    Returns
    -------
    object
        The value.
    """
    constants = {"True": True, "False": False, "None": None}
    if text in constants:
        return constants[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def read_parameters_file(path: str) -> Dict[str, Any]:
    """Read parameters from a JSON file holding one object.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    dict
        Its names and values.

    Raises
    ------
    NubladoUsageError
        The file cannot be read, is not JSON, or is not a JSON object.
    """
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise NubladoUsageError(f"Cannot read the parameters file {path}: {reason}") from None
    try:
        values = json.loads(text)
    except ValueError as e:
        raise NubladoUsageError(f"The parameters file {path} is not JSON: {e}") from None
    if not isinstance(values, dict):
        raise NubladoUsageError(
            f"The parameters file {path} must hold a JSON object of names and values,"
            f" not {type(values).__name__}"
        )
    return check_parameters(values)


def merge_parameters(*groups: Iterable[Tuple[str, Any]]) -> Dict[str, Any]:
    """Merge parameter groups in order; a later value wins, as in papermill.

    Parameters
    ----------
    *groups
        Name and value pairs.

    Returns
    -------
    dict
        The merged, checked parameters.

    Raises
    ------
    NubladoUsageError
        A name or value is invalid (see `check_parameters`).
    """
    merged: Dict[str, Any] = {}
    for group in groups:
        for name, value in group:
            merged[name] = value
    return check_parameters(merged)
