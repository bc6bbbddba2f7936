"""Public names of a package, imported on first use (PEP 562).

A cron job starts cold and a test run loads every installed pytest plugin:
importing a package should not import all of its modules. A package lists
where each public name lives; its ``__getattr__`` imports that module when
the name is first asked for.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, List, Mapping, Tuple

__all__ = ["attach"]


def attach(
    package: str, exports: Mapping[str, str]
) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """Make a package's ``__getattr__`` and ``__dir__``.

    Parameters
    ----------
    package
        The package's ``__name__``.
    exports
        For each public name, the submodule that defines it (``"_client"``).

    Returns
    -------
    tuple
        The ``__getattr__`` and ``__dir__`` functions for the package.
    """

    def getattr_(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        # Found once: later lookups are plain attribute reads.
        setattr(sys.modules[package], name, value)
        return value

    def dir_() -> List[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return getattr_, dir_
