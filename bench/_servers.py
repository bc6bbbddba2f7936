"""The servers a benchmark run measures against, all on 127.0.0.1.

- ``default``: a stock jupyter_server (``tests/jupyter_servers.py``) with the
  ``lsst`` kernel and the IOPub rate limit off, as the integration tests run
  it. Its kernel WebSocket leaves Nagle's algorithm on.
- ``nodelay``: the same, with ``TCP_NODELAY`` forced on every kernel
  WebSocket by a kernel WebSocket connection class
  (``bench/serverext/_bench_nodelay.py``, selected with
  ``ServerApp.kernel_websocket_connection_class``).
- For each, a configurable-http-proxy 5 (the npm one, as JupyterHub runs it)
  with the lab as its default target, for the "through the proxy" figures.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Optional

import requests

from ._envs import BENCH, REPO

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.jupyter_servers import JupyterServer, running_jupyter_server

SERVEREXT = BENCH / "serverext"
NODELAY_CLASS = "_bench_nodelay.NoDelayConnection"
NODELAY_MARKER = "BENCH-NODELAY kernel WebSocket TCP_NODELAY="


@dataclass
class Target:
    """One URL the clients are pointed at."""

    key: str  # "default-direct", ...
    lab: str  # "default" or "nodelay"
    via: str  # "direct" or "proxy"
    url: str
    token: str
    runtime_dir: str
    server: JupyterServer


def find_chp() -> Optional[str]:
    local = REPO / ".venv" / "chp" / "node_modules" / ".bin" / "configurable-http-proxy"
    if local.exists():
        return str(local)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def running_chp(chp: str, target_url: str, token: str) -> Iterator[str]:
    """Run configurable-http-proxy in front of ``target_url``; yield its URL."""
    port, api_port = _free_port(), _free_port()
    env = dict(os.environ, CONFIGPROXY_AUTH_TOKEN=secrets.token_hex(16))
    log = open(os.devnull, "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [
            chp,
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--api-ip",
            "127.0.0.1",
            "--api-port",
            str(api_port),
            "--default-target",
            target_url.rstrip("/"),
            "--log-level",
            "error",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"configurable-http-proxy exited ({process.returncode})")
            try:
                answer = requests.get(
                    url + "api/status", headers={"Authorization": f"token {token}"}, timeout=5
                )
                if answer.status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("configurable-http-proxy did not start in 30 s")
            time.sleep(0.1)
        yield url
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def _runtime_dir(server: JupyterServer) -> str:
    # running_jupyter_server keeps every Jupyter directory beside root/.
    return str(server.root_dir.parent / "runtime")


@contextlib.contextmanager
def _pythonpath(extra: Path) -> Iterator[None]:
    """Put a directory on PYTHONPATH while servers are started.

    The servers' environment keeps PYTHONPATH (after their own entries).
    """
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra), old]))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


@contextlib.contextmanager
def running_targets(*, proxy: bool = True) -> Iterator[Dict[str, Target]]:
    """Start both labs (and their proxies); yield the targets by key."""
    chp = find_chp() if proxy else None
    if proxy and chp is None:
        raise RuntimeError(
            "configurable-http-proxy not found in .venv/chp (scripts/test installs it)"
        )
    with contextlib.ExitStack() as stack:
        default = stack.enter_context(running_jupyter_server())
        with _pythonpath(SERVEREXT):
            nodelay = stack.enter_context(
                running_jupyter_server(
                    extra_args=[f"--ServerApp.kernel_websocket_connection_class={NODELAY_CLASS}"]
                )
            )
        targets: Dict[str, Target] = {}
        for lab, server in (("default", default), ("nodelay", nodelay)):
            runtime = _runtime_dir(server)
            targets[f"{lab}-direct"] = Target(
                f"{lab}-direct", lab, "direct", server.url, server.token, runtime, server
            )
            if chp is not None:
                url = stack.enter_context(running_chp(chp, server.url, server.token))
                targets[f"{lab}-proxy"] = Target(
                    f"{lab}-proxy", lab, "proxy", url, server.token, runtime, server
                )
        yield targets


def nodelay_seen(server: JupyterServer) -> Optional[bool]:
    """What the nodelay lab logged for its kernel WebSockets, if anything."""
    values = [
        line.split(NODELAY_MARKER, 1)[1].strip()
        for line in server.log().splitlines()
        if NODELAY_MARKER in line
    ]
    if not values:
        return None
    return all(v not in ("0", "") for v in values)
