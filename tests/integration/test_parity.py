"""Parity with nbclient: the same notebooks through nbclient on a local kernel and through us.

Each notebook runs through nbclient (a local ipykernel, as papermill and
``jupyter nbconvert --execute`` run it) and through `execute_notebook` on a
real Jupyter server; the saved notebooks are compared cell by cell after
normalising what differs by nature (timestamps, cell ids, memory addresses,
file paths in tracebacks). The differences that remain on purpose are
listed in docs/notebooks.rst ("Parity with nbclient") and checked here.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Dict, List

import nbformat
import pytest

from nublado_sync import execute_notebook

from ..jupyter_servers import JupyterServer
from .conftest import lab
from .test_notebook_runner import code, notebook

nbclient = pytest.importorskip("nbclient")

pytestmark = pytest.mark.integration

NOTEBOOKS: Dict[str, Dict[str, Any]] = {
    "stream": notebook(
        code("a", "import sys\nprint('out')\nprint('err', file=sys.stderr)\nprint('out again')"),
        code("b", "for i in range(3):\n    print(i)"),
    ),
    "display": notebook(
        code("a", "from IPython.display import display, HTML, Markdown\ndisplay(HTML('<b>x</b>'))"),
        code("b", "display(Markdown('*y*'), metadata={'k': 1})\n6 * 7"),
    ),
    "errors": notebook(
        code("a", "x = 1"),
        code("b", "raise ValueError('expected')", "raises-exception"),
        code("c", "print(x)"),
    ),
    "tags": notebook(
        code("a", "y = 2", "parameters"),
        code("b", "raise SystemExit('skipped')", "skip-execution"),
        code("c", "   "),
        code("d", "y * 3"),
    ),
    "rich": notebook(
        code(
            "a",
            "class R:\n"
            "    def _repr_html_(self): return '<i>r</i>'\n"
            "    def _repr_json_(self): return {'a': [1, 2]}\n"
            "    def __repr__(self): return 'R()'\n"
            "R()",
        ),
        code(
            "b",
            "from IPython.display import Image\n"
            "Image(data=b'\\x89PNG\\r\\n\\x1a\\n', format='png')",
        ),
    ),
    "input": notebook(
        code("a", "try:\n    input('? ')\nexcept Exception as e:\n    print(type(e).__name__)")
    ),
    "clear_output": notebook(
        code(
            "a",
            "from IPython.display import clear_output\n"
            "print('gone')\nclear_output()\nprint('kept')",
        ),
        code("b", "print('waiting')\nclear_output(wait=True)\nprint('after')"),
    ),
    "update_display": notebook(
        code("a", "from IPython.display import display\nh = display('old', display_id='d')"),
        code("b", "h.update('new')\ndisplay('another', display_id='d')"),
    ),
    "long": notebook(
        code("a", "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.5)")
    ),
}

_ADDRESS = re.compile(r"0x[0-9a-f]+")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PATH = re.compile(r'File "?[^",\n]+"?, line')


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _normalise(node: Dict[str, Any]) -> List[Dict[str, Any]]:
    cells = []
    for cell in node["cells"]:
        if cell["cell_type"] != "code":
            continue
        outputs = []
        for output in cell.get("outputs", []):
            out = copy.deepcopy(dict(output))
            if out["output_type"] == "stream":
                out["text"] = _text(out["text"])
                # Consecutive chunks of one stream: one output (as JupyterLab saves).
                if (
                    outputs
                    and outputs[-1]["output_type"] == "stream"
                    and outputs[-1]["name"] == out["name"]
                ):
                    outputs[-1]["text"] += out["text"]
                    continue
            if out["output_type"] == "error":
                out["traceback"] = [
                    _PATH.sub("File X, line", _ANSI.sub("", t)) for t in out["traceback"]
                ]
            if "data" in out:
                out["data"] = {
                    k: _ADDRESS.sub("0x", _text(v)) if isinstance(v, (str, list)) else v
                    for k, v in out["data"].items()
                }
            outputs.append(out)
        timings = sorted((cell.get("metadata") or {}).get("execution", {}))
        cells.append(
            {"execution_count": cell.get("execution_count"), "outputs": outputs, "timings": timings}
        )
    return cells


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_same_as_nbclient(stock_server: JupyterServer, name: str) -> None:
    source = NOTEBOOKS[name]
    theirs_node = nbformat.from_dict(copy.deepcopy(source))
    nbclient.NotebookClient(theirs_node, kernel_name="python3", timeout=60).execute()
    theirs = _normalise(theirs_node)
    with lab(stock_server) as session:
        ours = _normalise(nbformat.reads(execute_notebook(session, source), as_version=4))
    assert len(ours) == len(theirs)
    for number, (mine, reference) in enumerate(zip(ours, theirs), start=1):
        assert mine == reference, f"{name}: code cell {number} differs"
