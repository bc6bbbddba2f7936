"""What a person reads when ``nublado-sync`` fails, its exit status, and what is left behind.

Each test makes one mistake a user makes (a closed port, a plain Jupyter
server given as the hub, a wrong token, a closed terminal...) against real
servers on 127.0.0.1, and checks the words on standard error, the exit
status, and that nothing is left running.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import IO, List

import psutil  # type: ignore[import-untyped,unused-ignore]
import pytest

from ..hub_testbed import TestHub
from ..jupyter_servers import JupyterServer
from ..rogue_http import running_rogue_server
from .test_cli import CHILD_MAIN, nublado_sync, server_args, server_env

pytestmark = pytest.mark.integration


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _hub_env(url: str) -> dict[str, str]:
    return {"NUBLADO_HUB_URL": url, "NUBLADO_USER": "alice", "NUBLADO_TOKEN": "token-of-alice"}


def test_closed_port_is_said_in_words() -> None:
    port = _closed_port()
    result = nublado_sync("status", "--retries", "1", env=_hub_env(f"http://127.0.0.1:{port}/nb"))
    assert result.returncode == 5
    # The retry is logged in the same words.
    assert f"reason='cannot connect to 127.0.0.1:{port}: connection refused'" in result.stderr
    assert result.stderr.splitlines()[-2:] == [
        f"Cannot connect to 127.0.0.1:{port}: connection refused"
        f" (GET http://127.0.0.1:{port}/nb/hub/home)",
        "Check --hub-url or NUBLADO_HUB_URL, and that the server is running and reachable.",
    ]
    assert "Errno" not in result.stderr


def test_plain_jupyter_server_as_hub(stock_server: JupyterServer) -> None:
    result = nublado_sync("run", "-c", "1", env=_hub_env(stock_server.url))
    assert result.returncode == 5
    lines = result.stderr.splitlines()
    assert lines[0] == (
        f"{stock_server.url} does not look like a JupyterHub: GET hub/home answered 404"
    )
    assert lines[-1].startswith("Check --hub-url or NUBLADO_HUB_URL: it is the hub's base URL")
    # The server's 404 page in one line, not the page.
    assert len(lines) <= 4
    assert "<" not in result.stderr
    assert stock_server.sessions() == []


def test_hub_that_never_answers() -> None:
    with running_rogue_server() as rogue:
        rogue.hang("/hub/home")
        result = nublado_sync("status", "--http-timeout", "1", env=_hub_env(rogue.url))
    host = rogue.url.split("//")[1].rstrip("/")
    assert result.returncode == 5
    assert result.stderr.startswith(f"Read timeout: no answer from {host} within 1s")
    assert "--http-timeout" in result.stderr
    assert "urllib3" not in result.stderr


def test_wrong_token_on_a_plain_server(stock_server: JupyterServer) -> None:
    env = server_env(stock_server)
    env["NUBLADO_TOKEN"] = "wrong-token-" + "0" * 20
    result = nublado_sync("run", *server_args(stock_server), "-c", "1", env=env)
    assert result.returncode == 5
    lines = result.stderr.splitlines()
    assert lines[0] == (
        f"Status 403 from POST {stock_server.url}api/sessions: the token was refused"
        " (wrong, expired, or for another user or server)"
    )
    assert lines[-1] == (
        "Check the token (--token-file, NUBLADO_TOKEN_FILE or NUBLADO_TOKEN):"
        " it must be valid for this server and user."
    )
    assert env["NUBLADO_TOKEN"] not in result.stderr
    assert stock_server.sessions() == []


def test_too_short_token_is_a_usage_error(stock_server: JupyterServer) -> None:
    env = server_env(stock_server)
    env["NUBLADO_TOKEN"] = "x"
    result = nublado_sync("run", *server_args(stock_server), "-c", "1", env=env)
    assert result.returncode == 2
    assert result.stderr == (
        "The token is 1 characters long: too short to be a valid token (at least 8)\n"
    )


def _readline_until(stream: IO[str], text: str) -> list[str]:
    seen = []
    for line in stream:
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"{text!r} never came; saw {seen}")


def _local_run(code: str, mark: str = "") -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUBLADO_")}
    # Inherited by every process the run starts: see _processes_marked.
    env["LOCAL_RUN_MARK"] = mark
    return subprocess.Popen(
        [sys.executable, "-c", CHILD_MAIN, "run", "--local", "-c", code],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sighup_stops_the_local_server_its_kernel_and_files() -> None:
    # A closed terminal sends SIGHUP: cleaned up as for SIGTERM.
    code = "print('started', flush=True)\nimport time\ntime.sleep(120)"
    with _local_run(code) as process:
        assert process.stdout is not None
        assert process.stdout.readline() == "started\n"
        started = psutil.Process(process.pid).children(recursive=True)
        servers = [p for p in started if "jupyter_server" in " ".join(p.cmdline())]
        assert len(servers) == 1
        runtime = Path(servers[0].environ()["JUPYTER_RUNTIME_DIR"])
        assert runtime.parent.is_dir()
        assert len(started) >= 2  # the server and its kernel
        process.send_signal(signal.SIGHUP)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 129, stderr
    assert "Hung up; the kernel was interrupted and the session deleted" in stderr
    _, alive = psutil.wait_procs(started, timeout=10)
    assert alive == []
    assert not runtime.parent.exists()


def _processes_marked(mark: str) -> List[str]:
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get("LOCAL_RUN_MARK") == mark:
                found.append(" ".join(proc.cmdline()))
    return found


def test_ctrl_c_while_the_local_server_starts() -> None:
    # The interrupt lands while the server process is being started (once,
    # in CI, inside Popen after the fork: the server was left running).
    mark = uuid.uuid4().hex
    with _local_run("print(1)", mark) as process:
        assert process.stderr is not None
        _readline_until(process.stderr, "Starting local Jupyter server")
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Interrupted before any code ran; the local Jupyter server was stopped" in stderr
    assert "kernel was interrupted" not in stderr
    assert "Traceback" not in stderr
    assert _processes_marked(mark) == []


def test_server_dying_mid_run_gives_one_line_warnings(tmp_path: Path) -> None:
    from ..jupyter_servers import running_jupyter_server

    code = "print('started', flush=True)\nimport time\ntime.sleep(120)"
    with running_jupyter_server() as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NUBLADO_")}
        env.update(server_env(server))
        with subprocess.Popen(
            [sys.executable, "-c", CHILD_MAIN, "run", *server_args(server), "-c", code],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as process:
            assert process.stdout is not None
            assert process.stdout.readline() == "started\n"
            # The server (and with its process group, the kernel) dies.
            os.killpg(server.pid, signal.SIGKILL)
            _, stderr = process.communicate(timeout=120)
    assert process.returncode == 5, stderr
    assert "Traceback" not in stderr
    warnings = [line for line in stderr.splitlines() if "[warning" in line]
    assert any("Could not delete lab session" in line for line in warnings), stderr
    assert all(len(line) < 400 for line in stderr.splitlines()), stderr


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("", "Notebook is not JSON: Expecting value: line 1 column 1 (char 0)"),
        (
            '{"nbformat": 3, "cells": []}',
            "Notebook is nbformat 3; only nbformat 4 notebooks are supported (JupyterLab, or"
            " jupyter nbconvert --to notebook, converts it)",
        ),
    ],
    ids=["not-json", "nbformat-3"],
)
def test_bad_notebook_refused_before_the_local_server_starts(
    tmp_path: Path, content: str, words: str
) -> None:
    path = tmp_path / "bad.ipynb"
    path.write_text(content)
    result = nublado_sync("run", "--local", str(path))
    assert result.returncode == 2
    assert result.stderr == f"cannot run {path}: {words}\n"


def test_bad_notebook_refused_before_a_lab_spawns(hub: TestHub, tmp_path: Path) -> None:
    path = tmp_path / "bad.ipynb"
    path.write_text("not a notebook")
    env = {"NUBLADO_HUB_URL": hub.url, "NUBLADO_USER": "carol"}
    env["NUBLADO_TOKEN"] = hub.tokens["carol"]
    assert nublado_sync("status", env=env).stdout == "stopped\n"
    result = nublado_sync("run", str(path), env=env)
    assert result.returncode == 2
    assert result.stderr.startswith(f"cannot run {path}: Notebook is not JSON")
    assert nublado_sync("status", env=env).stdout == "stopped\n"


def test_failing_file_is_named_not_echoed(stock_server: JupyterServer, tmp_path: Path) -> None:
    path = tmp_path / "long_check.py"
    path.write_text("".join(f"value_{n} = {n}\n" for n in range(200)) + "1 / 0\n")
    result = nublado_sync(
        "run", *server_args(stock_server), str(path), env=server_env(stock_server)
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"cli: running {path} failed\nError: ")
    assert "ZeroDivisionError" in result.stderr
    # IPython's traceback shows a few lines around the failure, not the file.
    assert "value_100 = 100" not in result.stderr
    assert len(result.stderr.splitlines()) < 20
    assert stock_server.sessions() == []


def test_rate_limit_warning_carries_the_whole_notice(rate_limited_server: JupyterServer) -> None:
    code = "for i in range(50):\n    print('y' * 100000)"
    result = nublado_sync(
        "run",
        *server_args(rate_limited_server),
        "-c",
        code,
        env=server_env(rate_limited_server),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if "[warning" in line]
    assert len(warnings) == 1
    # From its first word to its last, in one line.
    notice = re.search(r"notice='([^']*)'", warnings[0])
    assert notice is not None
    assert notice.group(1).startswith("IOPub data rate exceeded. ")
    assert notice.group(1).endswith("(secs)")
    assert "…" not in notice.group(1)
    assert rate_limited_server.sessions() == []


def test_wrong_token_on_the_hub(hub: TestHub) -> None:
    env = {"NUBLADO_HUB_URL": hub.url, "NUBLADO_USER": "alice"}
    env["NUBLADO_TOKEN"] = "wrong-token-" + "0" * 20
    result = nublado_sync("status", env=env)
    assert result.returncode == 5
    lines = result.stderr.splitlines()
    assert "the token was refused" in lines[0], result.stderr
    assert lines[-1].startswith("Check the token (--token-file")
    assert len(lines) <= 4
