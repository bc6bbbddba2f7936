"""Collection rules for the whole suite."""

from __future__ import annotations

import importlib.util
from typing import List

import pytest

# The integration suite starts real servers; its packages come with the
# ``test`` extra. With only ``unit`` installed, running ``pytest`` skips it
# and says so, instead of failing to collect it.
_INTEGRATION_NEEDS = ["psutil", "nbformat", "jupyter_server", "jupyterhub", "ipykernel"]
_MISSING = [name for name in _INTEGRATION_NEEDS if importlib.util.find_spec(name) is None]

collect_ignore: List[str] = ["integration"] if _MISSING else []


def pytest_report_header(config: pytest.Config) -> List[str]:
    if not _MISSING:
        return []
    return [
        f"tests/integration skipped: {', '.join(_MISSING)} not installed"
        " (pip install -e '.[test]' installs them)"
    ]
