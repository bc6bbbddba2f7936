"""Sphinx configuration for nublado_sync.

Build (nitpicky, warnings are errors)::

    python -m sphinx -W --keep-going -n -b html docs docs/_build/html
"""

from __future__ import annotations

import ast
import os
import sys
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging

# Document the package of this checkout, not an installed copy.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import nublado_sync

# -- Project -----------------------------------------------------------------

project = "nublado_sync"
author = "nublado_sync contributors"
copyright = "nublado_sync contributors"
release = nublado_sync.__version__
version = ".".join(release.split(".")[:2])

# -- General -----------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build"]
# The docstrings use single backticks for objects: `JupyterLabSession`.
default_role = "py:obj"
nitpicky = True

# -- autodoc and napoleon ----------------------------------------------------

autodoc_typehints = "description"
# Types only for what the docstring describes: exceptions that inherit
# NubladoError's constructor get no list of bare, undescribed parameters.
autodoc_typehints_description_target = "documented"
autodoc_member_order = "bysource"
autodoc_class_signature = "mixed"
autoclass_content = "class"
# Linked types show as "NubladoImageSize", not "nublado_sync._images.NubladoImageSize".
python_use_unqualified_type_names = True

napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = False

# Types that appear in signatures and docstrings but have no inventory here
# (no intersphinx: the documentation builds offline).
nitpick_ignore = [
    # Standard library.
    ("py:class", "datetime.datetime"),
    ("py:class", "datetime.timedelta"),
    ("py:obj", "True"),
    ("py:obj", "False"),
    ("py:obj", "datetime.timedelta"),
    ("py:class", "os.PathLike"),
    ("py:obj", "os.PathLike"),
    ("py:class", "pathlib.Path"),
    ("py:obj", "exec"),
    ("py:obj", "socket.getaddrinfo"),
    ("py:obj", "os.environ"),
    ("py:class", "os.PathLike"),
    ("py:obj", "socket.gethostbyname"),
    # websocket-client.
    ("py:class", "websocket.WebSocket"),
    # The testing kit's private request type (MockJupyter.handle).
    ("py:class", "nublado_sync.testing._server.Request"),
]

# -- HTML --------------------------------------------------------------------

html_theme = "alabaster"
html_title = f"nublado_sync {release}"
# custom.css: wide code blocks, and readable literals in the narrow sidebar.
html_static_path = ["_static"]
html_theme_options = {
    "description": "Synchronous client for JupyterLab kernels behind JupyterHub",
    "fixed_sidebar": True,
}


# -- Helpers -----------------------------------------------------------------

_logger = logging.getLogger(__name__)


def _check_public_api_documented(app: Sphinx, env: BuildEnvironment) -> None:
    """Warn about any name in ``nublado_sync.__all__`` that api.rst misses."""
    domain: Any = env.get_domain("py")
    missing = [
        name for name in nublado_sync.__all__ if f"nublado_sync.{name}" not in domain.objects
    ]
    if missing:
        _logger.warning(
            "nublado_sync.__all__ names missing from the API reference: %s",
            ", ".join(missing),
            location="api",
        )


def _drop_duplicate_rtype(
    app: Sphinx, domain: str, objtype: str, contentnode: nodes.Element
) -> None:
    """Drop the "Return type" field when "Returns" already names the type.

    With ``napoleon_use_rtype = False`` the Returns section carries the type
    inline ("str -- What the code wrote..."), and autodoc's description
    typehints would add a second, redundant "Return type: str" field.
    """
    if domain != "py":
        return
    for field_list in contentnode.findall(nodes.field_list):
        if field_list.parent is not contentnode:
            continue  # a nested object's fields are handled on its own
        names = {field[0].astext().split()[0] for field in field_list.children}
        if names & {"return", "returns"}:
            for field in list(field_list.children):
                if field[0].astext() == "rtype":
                    field_list.remove(field)


def _pep604(annotation: str) -> str:
    """Write ``Optional[X]`` as ``X | None`` and ``Union[A, B]`` as ``A | B``."""
    try:
        tree = ast.parse(annotation, mode="eval")
    except SyntaxError:
        return annotation

    class Rewrite(ast.NodeTransformer):
        def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
            self.generic_visit(node)
            name = node.value
            label = name.id if isinstance(name, ast.Name) else getattr(name, "attr", "")
            if label == "Optional":
                return ast.BinOp(node.slice, ast.BitOr(), ast.Constant(None))
            if label == "Union" and isinstance(node.slice, ast.Tuple):
                parts = node.slice.elts
                union = parts[0]
                for part in parts[1:]:
                    union = ast.BinOp(union, ast.BitOr(), part)
                return union
            return node

    return ast.unparse(Rewrite().visit(tree))


def _one_way_of_writing_types(app: Sphinx, *args: Any) -> None:
    """Write every recorded type hint the same way: ``str | None``.

    autodoc writes ``str | None`` for an annotation it can evaluate, and
    the source's own text (``Optional[str]``) for one naming a type that is
    imported for type checkers only.
    """
    document = getattr(app.env, "current_document", None)
    recorded = getattr(document, "autodoc_annotations", None)
    if recorded is None:  # Sphinx before 8.2
        recorded = app.env.temp_data.get("annotations", {})
    for hints in recorded.values():
        for key, value in hints.items():
            if "Optional[" in value or "Union[" in value:
                hints[key] = _pep604(value)


def setup(app: Sphinx) -> None:
    # After autodoc records the hints (priority 500), before they are merged.
    app.connect("autodoc-process-signature", _one_way_of_writing_types, priority=900)
    app.connect("env-check-consistency", _check_public_api_documented)
    # After autodoc merges the typehints into the description (priority 500).
    app.connect("object-description-transform", _drop_duplicate_rtype, priority=600)
