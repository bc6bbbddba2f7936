"""The command's notebook options (``-p``, ``-r``, ``-f``) and its input check.

Kept out of ``_cli`` so that the command's notebook handling lives with
the runner; nothing here imports the session or the kernel protocol, so
the command checks its input before anything starts and stays quick to
load.
"""

from __future__ import annotations

import argparse
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .._exceptions import NubladoUsageError
from ._format import dump_notebook
from ._parameters import merge_parameters, read_parameters_file, typed_value
from ._plan import code_cells, prepare_notebook

__all__ = ["add_parameter_options", "checked_notebook", "parameters_from"]


def add_parameter_options(parser: argparse.ArgumentParser) -> None:
    """Add papermill's ``-p``, ``-r`` and ``-f`` options to the ``run`` command.

    Parameters
    ----------
    parser
        The ``run`` command's parser.
    """
    group = parser.add_argument_group("notebook parameters (injected as papermill injects them)")
    group.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUE"),
        dest="parameters",
        help="a parameter; VALUE is read as papermill reads it: True, False, None,"
        " an int or a float if it is one, else a string",
    )
    group.add_argument(
        "-r",
        "--parameter-raw",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUE"),
        dest="raw_parameters",
        help="a parameter whose VALUE stays a string",
    )
    group.add_argument(
        "-f",
        "--parameters-file",
        action="append",
        metavar="FILE",
        dest="parameter_files",
        help="a JSON file holding an object of parameters; -p and -r override it",
    )


def parameters_from(args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    """Return the parameters the options give, or `None` when none was given.

    Files come first, then ``-p``, then ``-r``: a later value wins, as in
    papermill.

    Parameters
    ----------
    args
        The parsed command line.

    Returns
    -------
    dict or None
        The checked parameters.

    Raises
    ------
    NubladoUsageError
        A file cannot be read or is not a JSON object, or a name is not a
        valid Python variable name.
    """
    files: Sequence[str] = getattr(args, "parameter_files", None) or []
    typed: Sequence[Sequence[str]] = getattr(args, "parameters", None) or []
    raw: Sequence[Sequence[str]] = getattr(args, "raw_parameters", None) or []
    if not (files or typed or raw):
        return None
    groups: List[List[Tuple[str, Any]]] = [list(read_parameters_file(f).items()) for f in files]
    groups.append([(name, typed_value(value)) for name, value in typed])
    groups.append([(name, value) for name, value in raw])
    return merge_parameters(*groups)


def checked_notebook(text: str, name: str, parameters: Optional[Dict[str, Any]] = None) -> str:
    """Check a notebook before anything starts, and return it ready to run.

    Parameters
    ----------
    text
        The notebook file's text.
    name
        The notebook's name.
    parameters
        Parameters to inject, or `None`.

    Returns
    -------
    str
        The notebook with the parameters injected and old outputs cleared.

    Raises
    ------
    NubladoUsageError
        It is not an nbformat 4 notebook, has no code cell to run, or a
        parameter is invalid.
    """
    notebook = prepare_notebook(text, parameters)
    if not code_cells(notebook, name):
        raise NubladoUsageError("The notebook has no code cell to run")
    return dump_notebook(notebook)
