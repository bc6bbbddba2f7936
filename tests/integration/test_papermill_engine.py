"""papermill's --engine nublado against a real Jupyter server and the real test hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import nbformat
import pytest

from nublado_sync import NubladoClient, NubladoExecutionTimeoutError

from ..hub_testbed import TestHub
from ..jupyter_servers import JupyterServer
from .test_notebook_runner import code, notebook

papermill = pytest.importorskip("papermill")

pytestmark = pytest.mark.integration

PARAMETERISED = notebook(
    code("defaults", "date = '2026-01-01'\nvisits = 1", "parameters"),
    code("use", "print(date, visits * 2)"),
)


def run_papermill(*args: str, env: Dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NUBLADO_")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "papermill", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def server_env(server: JupyterServer) -> Dict[str, str]:
    return {"NUBLADO_SERVER_URL": server.url, "NUBLADO_TOKEN": server.token}


def write(path: Path, content: Dict[str, Any]) -> Path:
    path.write_text(json.dumps(content))
    return path


def test_papermill_command_runs_in_the_server(stock_server: JupyterServer, tmp_path: Path) -> None:
    source = write(tmp_path / "in.ipynb", PARAMETERISED)
    out = tmp_path / "out.ipynb"
    done = run_papermill(
        str(source),
        str(out),
        "--engine",
        "nublado",
        "-k",
        "lsst",
        "-p",
        "date",
        "2026-12-01",
        "-p",
        "visits",
        "21",
        env=server_env(stock_server),
    )
    assert done.returncode == 0, done.stderr
    node = nbformat.reads(out.read_text(), as_version=4)
    nbformat.validate(node)
    assert node.metadata.papermill.parameters == {"date": "2026-12-01", "visits": 21}
    assert node.cells[2].metadata.tags == ["injected-parameters"]
    use = node.cells[3]
    assert use.outputs[0].text == "2026-12-01 42\n"
    assert use.execution_count == 3
    assert use.metadata.papermill.status == "completed"
    assert use.metadata.papermill.duration is not None
    assert set(use.metadata.execution) >= {"iopub.status.busy", "shell.execute_reply"}
    assert node.metadata.papermill.duration is not None
    # papermill's own progress bar, fed by the engine.
    assert "Executing: 100%" in done.stderr
    assert stock_server.sessions() == []
    assert stock_server.kernels() == []


def test_papermill_failure_keeps_the_error_in_its_cell(
    stock_server: JupyterServer, tmp_path: Path
) -> None:
    failing = notebook(code("ok", "x = 1"), code("bad", "x / 0"), code("never", "print('no')"))
    source = write(tmp_path / "in.ipynb", failing)
    out = tmp_path / "out.ipynb"
    done = run_papermill(
        str(source), str(out), "--engine", "nublado", "-k", "lsst", env=server_env(stock_server)
    )
    assert done.returncode == 1
    assert "PapermillExecutionError" in done.stderr
    assert "ZeroDivisionError" in done.stderr
    node = nbformat.reads(out.read_text(), as_version=4)
    bad = next(c for c in node.cells if c.get("id") == "bad")
    assert bad.outputs[-1].output_type == "error"
    assert bad.metadata.papermill.status == "failed"
    never = next(c for c in node.cells if c.get("id") == "never")
    assert never.outputs == []
    assert never.execution_count is None
    assert stock_server.kernels() == []


def test_papermill_execution_timeout(stock_server: JupyterServer, tmp_path: Path) -> None:
    slow = notebook(code("slow", "import time\ntime.sleep(60)"))
    with pytest.raises(NubladoExecutionTimeoutError):
        papermill.execute_notebook(
            write(tmp_path / "in.ipynb", slow),
            tmp_path / "out.ipynb",
            engine_name="nublado",
            kernel_name="lsst",
            execution_timeout=2,
            progress_bar=False,
            server_url=stock_server.url,
            token=stock_server.token,
        )
    node = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert node.cells[1].metadata.papermill.status == "failed"
    assert stock_server.kernels() == []


def test_papermill_engine_spawns_and_stops_a_lab(hub: TestHub, tmp_path: Path) -> None:
    token = hub.tokens["carol"]
    with NubladoClient("carol", token, hub_url=hub.url) as client:
        client.auth_to_hub()
        assert client.is_lab_stopped()
    try:
        result = papermill.execute_notebook(
            write(tmp_path / "in.ipynb", PARAMETERISED),
            tmp_path / "out.ipynb",
            parameters={"visits": 4},
            engine_name="nublado",
            kernel_name="lsst",
            progress_bar=False,
            hub_url=hub.url,
            user="carol",
            token=token,
            stop="spawned",
        )
        assert result.cells[3].outputs[0].text == "2026-01-01 8\n"
        with NubladoClient("carol", token, hub_url=hub.url) as client:
            client.auth_to_hub()
            assert client.is_lab_stopped()
    finally:
        hub.stop_all()


def test_papermill_bad_settings_refused_before_starting(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="stop must be 'never', 'spawned' or 'always'"):
        papermill.execute_notebook(
            write(tmp_path / "in.ipynb", PARAMETERISED),
            tmp_path / "out.ipynb",
            engine_name="nublado",
            progress_bar=False,
            server_url="http://127.0.0.1:9/",
            token="a-token-that-is-long-enough",
            stop="sometimes",
        )


def test_papermill_engine_local_server(tmp_path: Path) -> None:
    result = papermill.execute_notebook(
        write(tmp_path / "in.ipynb", PARAMETERISED),
        tmp_path / "out.ipynb",
        parameters={"date": "local"},
        engine_name="nublado",
        kernel_name="python3",
        progress_bar=False,
        local=True,
    )
    assert result.cells[3].outputs[0].text == "local 2\n"
