"""The "Errors and what to do" section of docs/cli.rst shows what the command really says.

Each common mistake is made against real servers on 127.0.0.1 (a plain
Jupyter server, a closed port, a server that never answers), and the page's
included file, ``docs/cli_errors.inc``, must hold exactly what the command
printed and the exit status. After a change of wording, rewrite it with::

    NUBLADO_WRITE_DOCS=1 pytest tests/integration/test_docs_errors.py

Only what differs from run to run is replaced: the servers' ports, log
timestamps and durations.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List

import pytest

from ..jupyter_servers import JupyterServer
from ..rogue_http import running_rogue_server

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs"
INCLUDED = DOCS / "cli_errors.inc"

# Shown instead of the real, random addresses.
SHOWN_SERVER = "http://127.0.0.1:8888/"
SHOWN_CLOSED = "127.0.0.1:8000"
SHOWN_SILENT = "127.0.0.1:8081"
TOKEN = "a-token-the-server-accepts"  # a placeholder, replaced by the real one

FAILING_CHECK = """\
import json

counts = json.loads('{"visits": 3}')
print("visits:", counts["visits"])
print("errors:", counts["errors"])
"""


REPORT = json.dumps(
    {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {
                "cell_type": "code",
                "id": "report",
                "metadata": {},
                "source": "print('report')",
                "outputs": [],
                "execution_count": None,
            }
        ],
    }
)


@dataclass
class Mistake:
    """One mistake: how it is made and what to do about it."""

    title: str
    command: str
    advice: str
    env: Dict[str, str] = field(default_factory=dict)
    files: Dict[str, str] = field(default_factory=dict)


@dataclass
class Servers:
    """Where the mistakes are made."""

    server: JupyterServer
    closed_port: int
    silent_url: str

    def env(self) -> Dict[str, str]:
        # The hub settings of a cron job; the commands add what they need.
        return {
            "NUBLADO_HUB_URL": f"http://{SHOWN_CLOSED}/nb",
            "NUBLADO_USER": "alice",
            "NUBLADO_TOKEN": TOKEN,
        }

    def real(self, text: str) -> str:
        """Turn the shown addresses into the real ones."""
        return (
            text.replace(SHOWN_SERVER, self.server.url)
            .replace(SHOWN_CLOSED, f"127.0.0.1:{self.closed_port}")
            .replace(SHOWN_SILENT, self.silent_url.split("//")[1].rstrip("/"))
            .replace(TOKEN, self.server.token)
        )

    def shown(self, text: str) -> str:
        """Turn the real addresses into the shown ones."""
        text = text.replace(self.server.url, SHOWN_SERVER)
        text = text.replace(f"127.0.0.1:{self.closed_port}", SHOWN_CLOSED)
        text = text.replace(self.silent_url.split("//")[1].rstrip("/"), SHOWN_SILENT)
        text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", "2026-11-24T03:00:22.613067Z", text)
        text = re.sub(r"(seconds=)\d+(\.\d+)?", r"\g<1>3.9", text)
        return re.sub(
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "e5b213ae-9d27-43b3-8e0a-c7b7ec68defa",
            text,
        )


MISTAKES: List[Mistake] = [
    Mistake(
        "No token",
        "nublado-sync run -c 'print(6 * 7)'",
        "Set one of them. In a crontab, ``NUBLADO_TOKEN_FILE`` pointing at a file only its"
        " owner can read is the safest.",
        env={"NUBLADO_TOKEN": ""},
    ),
    Mistake(
        "A token file that is not there",
        "nublado-sync run --token-file token.txt -c 'print(6 * 7)'",
        "Check the path: a relative path is taken from the directory the command runs in"
        " (in cron, the home directory).",
    ),
    Mistake(
        "A token that is too short to be real",
        "NUBLADO_TOKEN=abc nublado-sync run -c 'print(6 * 7)'",
        "Something else than the token was given (a user name, a placeholder). Copy the"
        " whole token.",
    ),
    Mistake(
        "The hub is down, or the URL has a wrong host or port",
        f"nublado-sync status --hub-url http://{SHOWN_CLOSED}/nb --retries 0",
        "Check the URL, and that the hub is up (open it in a browser). Without"
        " ``--retries 0`` the command first retries for a while, logging each retry.",
    ),
    Mistake(
        "A URL that is not the hub's",
        f"nublado-sync run --hub-url {SHOWN_SERVER} -c 'print(6 * 7)'",
        "Give the hub's base URL, the one whose ``hub/home`` page shows the JupyterHub home."
        " A Jupyter server without a hub (here a plain ``jupyter server``) is run with"
        " ``--server-url`` instead.",
    ),
    Mistake(
        "A URL that is not http(s)",
        "nublado-sync status --hub-url data.example.org/nb",
        "Write the URL whole, with ``https://``.",
    ),
    Mistake(
        "A token the server refuses",
        f"NUBLADO_TOKEN=not-the-right-token nublado-sync run --server-url {SHOWN_SERVER}"
        " -c 'print(6 * 7)'",
        "Give a token of this server and user, that has not expired. A plain Jupyter server"
        " refuses an unknown token with an error about a missing ``_xsrf`` field, which the"
        " command recognises and reports as a refused token.",
    ),
    Mistake(
        "A server that does not answer",
        f"nublado-sync run --server-url http://{SHOWN_SILENT}/ --http-timeout 2 --retries 0"
        " -c 'print(6 * 7)'",
        "The server accepted the connection but sent nothing back in time: it is overloaded"
        " or stuck. Try again later; ``--http-timeout`` sets how long each answer may take.",
    ),
    Mistake(
        "A file that is not a notebook",
        f"nublado-sync run --server-url {SHOWN_SERVER} report.ipynb",
        "Nothing was started: the notebook is checked first. Check that the file is a"
        " notebook saved by Jupyter (nbformat 4).",
        files={"report.ipynb": "# a Python script, saved with the wrong name\nprint(1)\n"},
    ),
    Mistake(
        "Code that fails",
        f"nublado-sync run --server-url {SHOWN_SERVER} check.py",
        "The error names the file; the kernel's traceback shows the line. The exit status"
        " is 1, and the session was deleted.",
        files={"check.py": FAILING_CHECK},
    ),
    Mistake(
        "Code that runs past its deadline",
        f"nublado-sync run --server-url {SHOWN_SERVER} --timeout 1"
        " -c 'import time; time.sleep(60)'",
        "The kernel was interrupted and the session deleted. Give ``--timeout`` more"
        " seconds, or none.",
    ),
    Mistake(
        "A notebook output path in a directory that does not exist",
        f"nublado-sync run --server-url {SHOWN_SERVER} report.ipynb"
        " --save-notebook out/report.ipynb",
        "Nothing was started. Create the directory first.",
        files={"report.ipynb": REPORT},
    ),
]


def _run(mistake: Mistake, servers: Servers, cwd: Path) -> str:
    for name, text in mistake.files.items():
        (cwd / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUBLADO_")}
    env.update({k: servers.real(v) for k, v in servers.env().items()})
    env.update(mistake.env)
    # A shell runs the command as shown (it sets the VAR=value words).
    script = servers.real(mistake.command).replace(
        "nublado-sync", f"{sys.executable} -m nublado_sync", 1
    )
    done = subprocess.run(
        ["/bin/sh", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = servers.shown(done.stdout + done.stderr).rstrip("\n")
    lines = [f"$ {mistake.command}", *output.splitlines(), "$ echo $?", str(done.returncode)]
    return "\n".join(lines)


def _section(mistake: Mistake, transcript: str) -> str:
    body = "\n".join(f"   {line}".rstrip() for line in transcript.splitlines())
    return (
        f"{mistake.title}\n{'~' * len(mistake.title)}\n\n"
        f".. code-block:: console\n\n{body}\n\n{mistake.advice}\n"
    )


def render(servers: Servers, workdir: Callable[[str], Path]) -> str:
    """Make every mistake and return the included file's text."""
    header = (
        ".. Made by tests/integration/test_docs_errors.py, which checks that it is up to date:\n"
        ".. NUBLADO_WRITE_DOCS=1 pytest tests/integration/test_docs_errors.py rewrites it.\n\n"
    )
    sections = [
        _section(mistake, _run(mistake, servers, workdir(str(index))))
        for index, mistake in enumerate(MISTAKES)
    ]
    return header + "\n".join(sections)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_errors_page_shows_the_real_messages(stock_server: JupyterServer, tmp_path: Path) -> None:
    def workdir(name: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        return path

    with running_rogue_server() as silent:
        silent.hang("/api/sessions")
        silent.hang("/api/status")
        servers = Servers(stock_server, _closed_port(), silent.url)
        text = render(servers, workdir)
    assert stock_server.sessions() == []
    if os.environ.get("NUBLADO_WRITE_DOCS"):
        INCLUDED.write_text(text)
    current = INCLUDED.read_text() if INCLUDED.exists() else ""
    diff = "".join(
        difflib.unified_diff(
            current.splitlines(keepends=True),
            text.splitlines(keepends=True),
            str(INCLUDED),
            "what the command says now",
        )
    )
    assert not diff, f"docs/cli_errors.inc is out of date (see the module docstring):\n{diff}"
