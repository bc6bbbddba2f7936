"""The nublado-sync command, run as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest

from ..jupyter_servers import JupyterServer

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def nublado_sync(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NUBLADO_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "nublado_sync", *args],
        env=full_env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def server_env(server: JupyterServer) -> dict[str, str]:
    return {"NUBLADO_TOKEN": server.token, "NUBLADO_USER": "cli"}


def server_args(server: JupyterServer) -> list[str]:
    return ["--server-url", server.url, "--kernel", "lsst"]


def test_local_code() -> None:
    result = nublado_sync("run", "--local", "-c", "print('hello'); 6 * 7")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello\n42\n"


def test_local_example_file() -> None:
    result = nublado_sync("run", "--local", str(EXAMPLES / "hello.py"))
    assert result.returncode == 0, result.stderr
    assert "1 + 2 + ... + 100 = 5050" in result.stdout


def test_code_from_stdin(stock_server: JupyterServer) -> None:
    result = nublado_sync(
        "run", *server_args(stock_server), "-", env=server_env(stock_server), stdin="print(2 + 2)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "4\n"
    assert stock_server.sessions() == []


def test_code_error_exit_status(stock_server: JupyterServer) -> None:
    result = nublado_sync(
        "run", *server_args(stock_server), "-c", "print('a')\n1/0", env=server_env(stock_server)
    )
    assert result.returncode == 1
    assert result.stdout == "a\n"
    assert "ZeroDivisionError" in result.stderr
    assert "\x1b[" not in result.stderr  # no colour codes when not on a terminal


def test_timeout_exit_status(stock_server: JupyterServer) -> None:
    result = nublado_sync(
        "run",
        *server_args(stock_server),
        "--timeout",
        "1",
        "-c",
        "import time; time.sleep(60)",
        env=server_env(stock_server),
    )
    assert result.returncode == 3
    assert "timed out" in result.stderr
    assert stock_server.sessions() == []


def test_json_mode(stock_server: JupyterServer) -> None:
    ok = nublado_sync(
        "run",
        *server_args(stock_server),
        "--json",
        "-c",
        "import sys; print('out'); print('err', file=sys.stderr); 'value'",
        env=server_env(stock_server),
    )
    assert ok.returncode == 0, ok.stderr
    report: dict[str, Any] = json.loads(ok.stdout)
    assert report["ok"] is True
    assert report["exit_code"] == 0
    assert report["stdout"] == "out\n"
    assert report["stderr"] == "err\n"
    assert report["result"] == "'value'"
    failed = nublado_sync(
        "run", *server_args(stock_server), "--json", "-c", "1/0", env=server_env(stock_server)
    )
    assert failed.returncode == 1
    report = json.loads(failed.stdout)
    assert report["ok"] is False
    assert report["error"]["ename"] == "ZeroDivisionError"
    assert report["error"]["type"] == "NubladoExecutionError"


def test_notebook_saved(stock_server: JupyterServer, tmp_path: Path) -> None:
    out = tmp_path / "out.ipynb"
    result = nublado_sync(
        "run",
        *server_args(stock_server),
        str(EXAMPLES / "hello.ipynb"),
        "--save-notebook",
        str(out),
        env=server_env(stock_server),
    )
    assert result.returncode == 0, result.stderr
    node = nbformat.reads(out.read_text(), as_version=4)
    nbformat.validate(node)
    assert node.cells[2].outputs[0].data["text/plain"] == "285"


def test_failing_notebook_saved_up_to_the_failure(
    stock_server: JupyterServer, tmp_path: Path
) -> None:
    source = json.loads((EXAMPLES / "hello.ipynb").read_text())
    source["cells"][1]["source"] = ["print('partial')\n", "1/0"]
    path = tmp_path / "bad.ipynb"
    path.write_text(json.dumps(source))
    out = tmp_path / "out.ipynb"
    result = nublado_sync(
        "run",
        *server_args(stock_server),
        str(path),
        "--save-notebook",
        str(out),
        env=server_env(stock_server),
    )
    assert result.returncode == 1
    assert "cell 1 (In [1], id 'compute') of notebook bad.ipynb failed" in result.stderr
    node = nbformat.reads(out.read_text(), as_version=4)
    assert node.cells[1].outputs[0].text == "partial\n"


@pytest.mark.parametrize(
    ("args", "env"),
    [
        ([], {}),  # no code
        (["-c", "1", "--timeout", "-1"], {}),  # bad timeout
        (["-c", "1"], {"NUBLADO_USER": "u"}),  # no token
        (["-c", "1"], {"NUBLADO_TOKEN": "t"}),  # no user
        (["-c", "1", "--token-file", "/nonexistent/token"], {"NUBLADO_USER": "u"}),
        (["-c", "1", "--server-url", "ftp://x/"], {"NUBLADO_TOKEN": "t"}),
        (["/nonexistent/file.py", "--local"], {}),
    ],
)
def test_usage_errors(args: list[str], env: dict[str, str]) -> None:
    result = nublado_sync("run", *args, env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr


def test_token_file(stock_server: JupyterServer, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(stock_server.token + "\n")
    result = nublado_sync(
        "run",
        *server_args(stock_server),
        "--token-file",
        str(token_file),
        "-c",
        "print('ok')",
        env={"NUBLADO_USER": "cli"},
    )
    assert result.returncode == 0, result.stderr
    assert stock_server.token not in result.stderr


# The child restores Python's SIGINT handler: a shell running this suite in
# the background makes its children ignore SIGINT, and Python then installs
# no KeyboardInterrupt handler.
CHILD_MAIN = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler);"
    " sys.argv[0] = 'nublado-sync'; runpy.run_module('nublado_sync', run_name='__main__')"
)


@pytest.mark.parametrize(
    ("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"]
)
def test_signal_interrupts_and_cleans_up(
    stock_server: JupyterServer, signum: int, status: int
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUBLADO_")}
    env.update(server_env(stock_server))
    code = "print('started', flush=True)\nimport time\ntime.sleep(120)"
    with subprocess.Popen(
        [sys.executable, "-c", CHILD_MAIN, "run", *server_args(stock_server), "-c", code],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        # The cell announces that it runs; then a real signal, as Ctrl-C or
        # kill sends it.
        assert process.stdout.readline() == "started\n"
        assert stock_server.sessions() != []
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == status, stderr
    assert stock_server.sessions() == []
    assert stock_server.kernels() == []


def test_unwritable_notebook_path_is_refused_before_running(tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "out.ipynb"
    result = nublado_sync(
        "run", "--local", str(EXAMPLES / "hello.ipynb"), "--save-notebook", str(target)
    )
    assert result.returncode == 2
    assert "cannot write" in result.stderr
    assert "Started local Jupyter server" not in result.stderr


def test_a_session_that_does_not_open_in_time_names_open_timeout(
    stock_server: JupyterServer,
) -> None:
    # 10 ms: no kernel starts and answers that fast.
    result = nublado_sync(
        "run",
        *server_args(stock_server),
        "--open-timeout",
        "0.01",
        "-c",
        "pass",
        env=server_env(stock_server),
    )
    assert result.returncode == 3, result.stderr
    assert "Timed out attempting to open WebSocket" in result.stderr
    assert "--open-timeout sets how long opening a session may take" in result.stderr
    assert stock_server.sessions() == []
    assert stock_server.kernels() == []
