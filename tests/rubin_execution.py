"""The Rubin notebook execution endpoint, for test labs.

Rubin labs serve ``POST user/<name>/rubin/execution`` from the
``rsp-jupyter-extensions`` package. Its package ``__init__`` imports every
Rubin handler, and those need Rubin-only libraries, so test servers load
its execution handler alone, from the installed file, through the small
server extension below (written into the server's Python path).
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTENSION_MODULE", "EXTENSION_SOURCE", "available"]

EXTENSION_MODULE = "_rubin_execution"

EXTENSION_SOURCE = '''"""Serve only the Rubin execution handler (written by the tests)."""

import importlib.util
import pathlib

from jupyter_server.utils import url_path_join


def _handler_class():
    spec = importlib.util.find_spec("rsp_jupyter_extensions")
    path = pathlib.Path(spec.submodule_search_locations[0]) / "handlers" / "execution.py"
    module_spec = importlib.util.spec_from_file_location("_rubin_execution_handler", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.ExecutionHandler


def _jupyter_server_extension_points():
    return [{"module": "_rubin_execution"}]


def _load_jupyter_server_extension(serverapp):
    web_app = serverapp.web_app
    web_app.settings.setdefault("rubinexecution", {})
    route = url_path_join(web_app.settings["base_url"], "rubin/execution")
    web_app.add_handlers(".*$", [(route, _handler_class())])
'''


def available() -> bool:
    """Whether rsp-jupyter-extensions is installed (without importing it)."""
    return importlib.util.find_spec("rsp_jupyter_extensions") is not None
