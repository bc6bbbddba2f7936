"""Start real ``jupyter_server`` processes on loopback for tests.

A server runs as a subprocess of the test process, in its own session (so
that it and anything in its process group can be signalled at once), with
token authentication, a temporary root directory and temporary Jupyter
configuration, data, runtime and IPython directories. The only configuration
kept from the environment is the virtual environment's sys-prefix
configuration, because that is where ``jupyter-server-documents`` enables
itself, as it does in the Rubin lab images.

Two kinds of server exist:

``stock``
    Plain ``jupyter_server``: the ``ZMQChannelsWebsocketConnection`` kernel
    WebSocket, which speaks the ``v1.kernel.websocket.jupyter.org``
    subprotocol when offered and the legacy JSON protocol otherwise.
``documents``
    The same server with the ``jupyter_server_documents`` extension on, which
    replaces the kernel WebSocket connection class and the session manager.

Notes on the servers' WebSocket keep-alive, found by reading jupyter_server
2.21 and tornado 6.6 and checked by the tests:

- The kernel WebSocket handler inherits ``ping_interval`` and
  ``ping_timeout`` from jupyter_server's ``WebSocketMixin``, which reads the
  tornado settings ``ws_ping_interval`` (default 30000) and
  ``ws_ping_timeout`` (default ``max(3 * interval, 30000)``), both in
  milliseconds. ``ServerApp.websocket_ping_interval`` and
  ``ServerApp.websocket_ping_timeout`` end up in the settings under other
  names that this handler never reads, so they have no effect on kernel
  WebSockets; this module therefore sets ``ws_ping_interval`` and
  ``ws_ping_timeout`` through ``ServerApp.tornado_settings``.
- Every interval the server checks the time since the last pong it received;
  if it exceeds the timeout it closes the socket (a close frame without a
  status code), otherwise it sends a ping. So the socket is closed at the
  first check after the timeout: 90 s with the defaults. Any pong frame
  resets the clock, including an unsolicited one; a ping from the client
  does not.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]
import requests

from . import rubin_execution as rubin
from .processes import (
    KERNEL_NAME,
    OutputReader,
    cookieless_session,
    is_alive,
    stop_group,
    wait_gone,
    write_kernelspec,
)

__all__ = ["KERNEL_NAME", "JupyterServer", "running_jupyter_server"]

START_TIMEOUT = 60.0
"""Seconds to wait for a server to report that it is running."""

STOP_TIMEOUT = 10.0
"""Seconds to wait for a server to exit after SIGTERM, before SIGKILL."""

_DOCUMENTS_EXTENSION = "jupyter_server_documents"

# Server extensions installed in the venv that the tests do not need. Turning
# them off cuts a start from about 1.8 s to about 0.6 s (jupyterlab and
# jupyter_lsp are the slow ones). jupyter_server_fileid stays on with the documents extension,
# whose session manager asks it for file ids, as in a Rubin lab.
_UNNEEDED_EXTENSIONS = (
    "jupyterlab",
    "jupyter_lsp",
    "jupyter_server_terminals",
    "jupyter_server_ydoc",
    "notebook_shim",
    # Installed only for its execution handler, which rubin_execution loads
    # alone: the package imports Rubin-only libraries.
    "rsp_jupyter_extensions",
)

# The server logs "Jupyter Server <version> is running at:" before it listens:
# it binds its port in the first IOLoop callback, after that line. Readiness
# therefore comes from this tiny server extension, whose start hook runs in a
# later IOLoop callback, once the port is bound, and logs the real URL (the
# server is started with port 0).
_READY_MODULE = "_jupyter_test_ready"
_READY_MARKER = "JUPYTER-TEST-SERVER-READY"
_READY_SOURCE = f'''"""Report that a test jupyter_server listens (written by tests)."""


def _jupyter_server_extension_points():
    return [{{"module": "{_READY_MODULE}"}}]


def _load_jupyter_server_extension(serverapp):
    pass


async def _start_jupyter_server_extension(serverapp):
    serverapp.log.info("{_READY_MARKER} %s", serverapp.connection_url)
'''
_READY_RE = re.compile(_READY_MARKER + r" (http://127\.0\.0\.1:\d+/)")


@dataclass
class JupyterServer:
    """A running test ``jupyter_server``.

    Parameters
    ----------
    url
        Base URL with a trailing slash, such as ``http://127.0.0.1:54321/``.
    token
        The server's authentication token, random per server.
    kind
        ``"stock"`` or ``"documents"``.
    pid
        Process id of the server (a session and process group leader).
    root_dir
        The server's root directory, where notebooks and files for it go.
    start_seconds
        How long the server took from launch to listening.
    """

    url: str
    token: str
    kind: str
    pid: int = field(default=0, repr=False)
    root_dir: Path = field(default=Path(), repr=False)
    start_seconds: float = field(default=0.0, repr=False)
    _log: OutputReader | None = field(default=None, repr=False)
    _http: requests.Session = field(default_factory=cookieless_session, repr=False)

    @property
    def ws_url(self) -> str:
        """Base URL for WebSockets (``ws://…/``)."""
        return "ws" + self.url[len("http") :]

    def log(self) -> str:
        """Return the server's output captured so far, for diagnostics.

        Returns
        -------
        str
            The server's combined stdout and stderr.
        """
        return self._log.text() if self._log else ""

    def wait_for_log(self, text: str, timeout: float = 10.0) -> bool:
        """Wait until the server logs a line containing ``text``.

        Parameters
        ----------
        text
            Text to look for.
        timeout
            Seconds to wait at most.

        Returns
        -------
        bool
            Whether it was logged in time.
        """
        return self._log.wait_for(text, timeout) if self._log else False

    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        """Make an authenticated request to the server.

        Parameters
        ----------
        method
            HTTP method, such as ``"GET"``.
        path
            Path relative to the base URL, such as ``"api/sessions"``.
        **kw
            Passed to `requests.Session.request`. Headers given here are added
            to the authorisation header; the timeout defaults to 30 s.

        Returns
        -------
        requests.Response
            The response, whatever its status.
        """
        headers = {"Authorization": f"token {self.token}"}
        headers.update(kw.pop("headers", None) or {})
        kw.setdefault("timeout", 30)
        return self._http.request(method, self.url + path.lstrip("/"), headers=headers, **kw)

    def _get_list(self, path: str) -> list[dict[str, Any]]:
        response = self.api("GET", path)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def sessions(self) -> list[dict[str, Any]]:
        """List the server's sessions (``GET api/sessions``).

        Returns
        -------
        list of dict
            The session models.
        """
        return self._get_list("api/sessions")

    def kernels(self) -> list[dict[str, Any]]:
        """List the server's kernels (``GET api/kernels``).

        Returns
        -------
        list of dict
            The kernel models.
        """
        return self._get_list("api/kernels")

    def delete_all(self) -> None:
        """Delete every session and every kernel.

        Raises
        ------
        RuntimeError
            If a session or kernel is still there afterwards.
        """
        for session in self.sessions():
            # The documents session manager answers 500 for some sessions
            # (notebook sessions without a name) and keeps them; deleting
            # their kernel below removes them as well.
            self.api("DELETE", f"api/sessions/{session['id']}")
        for kernel in self.kernels():
            response = self.api("DELETE", f"api/kernels/{kernel['id']}")
            if response.status_code not in (204, 404):
                response.raise_for_status()
        sessions, kernels = self.sessions(), self.kernels()
        if sessions or kernels:
            raise RuntimeError(
                f"{self.kind} server still has sessions {sessions} and"
                f" kernels {kernels} after deleting them all"
            )

    def descendants(self) -> list[psutil.Process]:
        """Return the live processes the server started, such as its kernels.

        Returns
        -------
        list of psutil.Process
            Processes below the server in the process tree, and kernels (with
            their own children) that it left behind when it died.
        """
        return _started_by(self.pid)


def _python_literal(value: object) -> str:
    """Format a value for a traitlets container option on the command line.

    traitlets parses a ``Dict`` option whose value is enclosed in braces with
    `ast.literal_eval`, so a Python literal is what it needs.
    """
    return repr(value)


def _environment(tmp: Path, token: str) -> dict[str, str]:
    """Build the server's environment, isolated from the user's Jupyter setup."""
    env = {
        key: value
        for key, value in os.environ.items()
        # Drop inherited Jupyter settings (a token, a port, directories, a
        # parent-kernel pid) that would leak into the test server.
        if not key.startswith(("JUPYTER_", "JPY_", "IPYTHON"))
    }
    env.update(
        {
            "JUPYTER_CONFIG_DIR": str(tmp / "config"),
            "JUPYTER_DATA_DIR": str(tmp / "data"),
            "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
            "JUPYTER_PATH": str(tmp / "path"),
            "IPYTHONDIR": str(tmp / "ipython"),
            # The token goes through the environment rather than the command
            # line, where any process listing would show it.
            "JUPYTER_TOKEN": token,
            "PYTHONUNBUFFERED": "1",
            # Where the readiness extension module is.
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(tmp / "pylib"), os.environ.get("PYTHONPATH")])
            ),
        }
    )
    return env


def _command(
    tmp: Path,
    *,
    documents: bool,
    legacy_protocol: bool,
    rate_limit: bool,
    ping_interval: float | None,
    ping_timeout: float | None,
    extra_args: Sequence[str],
    rubin_execution: bool = False,
) -> list[str]:
    """Build the server's command line."""
    extensions = dict.fromkeys(_UNNEEDED_EXTENSIONS, False)
    extensions[_DOCUMENTS_EXTENSION] = documents
    extensions["jupyter_server_fileid"] = documents
    extensions[_READY_MODULE] = True
    if rubin_execution:
        extensions[rubin.EXTENSION_MODULE] = True
    args = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--ServerApp.ip=127.0.0.1",
        # jupyter_server binds port 0 to learn a free port, then listens on it
        # (the same small race as probing one here), and it knows the real
        # port, which the readiness extension logs.
        "--ServerApp.port=0",
        "--ServerApp.port_retries=0",
        "--ServerApp.open_browser=False",
        "--ServerApp.allow_root=True",
        f"--ServerApp.root_dir={tmp / 'root'}",
        f"--MappingKernelManager.default_kernel_name={KERNEL_NAME}",
        # Command-line values win over the sys-prefix jupyter_server_config.d
        # files, which only fill in extensions not named here.
        f"--ServerApp.jpserver_extensions={_python_literal(extensions)}",
        # An extension that fails to load or start must fail the server, not
        # leave a "documents" server without the documents extension.
        "--ServerApp.reraise_server_extension_failures=True",
    ]
    if legacy_protocol:
        # An empty value selects the legacy protocol; None (the default)
        # picks v1 when the client offers it.
        args.append("--ZMQChannelsWebsocketConnection.kernel_ws_protocol=")
    if not rate_limit:
        args.append("--ZMQChannelsWebsocketConnection.limit_rate=False")
    tornado_settings: dict[str, float] = {}
    if ping_interval is not None:
        tornado_settings["ws_ping_interval"] = ping_interval * 1000
    if ping_timeout is not None:
        tornado_settings["ws_ping_timeout"] = ping_timeout * 1000
    if tornado_settings:
        args.append(f"--ServerApp.tornado_settings={_python_literal(tornado_settings)}")
    args.extend(extra_args)
    return args


def _started_by(pid: int) -> list[psutil.Process]:
    """Find the live processes a server started, even if it has died.

    Parameters
    ----------
    pid
        The server's process id.

    Returns
    -------
    list of psutil.Process
        Its descendants, plus every process whose environment names it as the
        parent of a kernel: jupyter_client sets ``JPY_PARENT_PID`` for each
        kernel, and the kernel's own children inherit it. That finds kernels
        that were orphaned (reparented away from the server) when the server
        was killed. Zombies are left out.
    """
    found: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.Error):
        for proc in psutil.Process(pid).children(recursive=True):
            found[proc.pid] = proc
    marker = str(pid)
    for proc in psutil.process_iter(["environ"]):
        # Processes of other users, and zombies, have no readable environ.
        environ = proc.info.get("environ") or {}
        if environ.get("JPY_PARENT_PID") == marker:
            found.setdefault(proc.pid, proc)
    return [proc for proc in found.values() if is_alive(proc)]


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a server, its kernels and everything else it started."""
    # jupyter_client starts every kernel in a session of its own, so killing
    # the server's process group does not reach the kernels. Note them first,
    # while they are still the server's children.
    started = _started_by(process.pid)
    stop_group(process, STOP_TIMEOUT)
    # Whatever is left: kernels the server could not stop, or orphaned when
    # it died, and their children.
    survivors = {p.pid: p for p in started if is_alive(p)}
    for proc in _started_by(process.pid):
        survivors.setdefault(proc.pid, proc)
    if survivors:
        wait_gone(list(survivors.values()), 5, send=signal.SIGKILL, groups=True)


@contextlib.contextmanager
def running_jupyter_server(
    *,
    documents: bool = False,
    legacy_protocol: bool = False,
    rate_limit: bool = False,
    ping_interval: float | None = None,
    ping_timeout: float | None = None,
    extra_args: Sequence[str] = (),
    rubin_execution: bool = False,
) -> Iterator[JupyterServer]:
    """Run a ``jupyter_server`` on 127.0.0.1 for the duration of a block.

    Parameters
    ----------
    documents
        Turn the ``jupyter_server_documents`` extension on (it is forced off
        otherwise).
    legacy_protocol
        Make the stock kernel WebSocket ignore the ``v1`` subprotocol and
        speak JSON text frames. Not possible with ``documents``, whose
        WebSocket speaks only ``v1``.
    rate_limit
        Keep jupyter_server's IOPub rate limit (1 MB/s and 1000 messages/s
        over 3 s); off by default. The limits can be changed through
        ``extra_args``, such as
        ``--ZMQChannelsWebsocketConnection.iopub_data_rate_limit=1e5``. The
        documents WebSocket never limits.
    ping_interval
        Seconds between the server's WebSocket pings and pong checks
        (default 30; 0 turns pings and the timeout off).
    ping_timeout
        Seconds without a pong after which a check closes the WebSocket
        (default ``max(3 * ping_interval, 30)``).
    extra_args
        More command-line options for the server.
    rubin_execution
        Serve the Rubin notebook execution endpoint (``rubin/execution``);
        needs ``rsp-jupyter-extensions`` installed.

    Yields
    ------
    JupyterServer
        The running server.

    Raises
    ------
    ValueError
        If both ``documents`` and ``legacy_protocol`` are requested.
    RuntimeError
        If the server does not report that it is running within 60 s, or
        exits first; the message holds its output.
    """
    if documents and legacy_protocol:
        raise ValueError("the documents kernel WebSocket has no legacy protocol")
    kind = "documents" if documents else "stock"
    token = secrets.token_hex(24)
    tmp = Path(tempfile.mkdtemp(prefix=f"jupyter-{kind}-"))
    process: subprocess.Popen[bytes] | None = None
    reader: OutputReader | None = None
    server: JupyterServer | None = None
    try:
        for name in ("config", "data", "runtime", "ipython", "root", "path", "pylib"):
            (tmp / name).mkdir()
        write_kernelspec(tmp / "path")
        (tmp / "pylib" / f"{_READY_MODULE}.py").write_text(_READY_SOURCE)
        if rubin_execution:
            (tmp / "pylib" / f"{rubin.EXTENSION_MODULE}.py").write_text(rubin.EXTENSION_SOURCE)
        command = _command(
            tmp,
            documents=documents,
            legacy_protocol=legacy_protocol,
            rate_limit=rate_limit,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            extra_args=extra_args,
            rubin_execution=rubin_execution,
        )
        started = time.monotonic()
        process = subprocess.Popen(
            command,
            cwd=tmp / "root",
            env=_environment(tmp, token),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Its own session: one killpg reaches the server and its helpers.
            start_new_session=True,
        )
        assert process.stdout is not None
        reader = OutputReader(process.stdout, _READY_RE, "jupyter-server-log")
        reader.ready.wait(START_TIMEOUT)
        if reader.found is None:
            why = "exited" if reader.finished.is_set() else "did not start"
            raise RuntimeError(
                f"{kind} jupyter_server {why} within {START_TIMEOUT:.0f} s"
                f" (exit status {process.poll()}); its output:\n{reader.text()}"
            )
        server = JupyterServer(
            url=reader.found,
            token=token,
            kind=kind,
            pid=process.pid,
            root_dir=tmp / "root",
            start_seconds=time.monotonic() - started,
            _log=reader,
        )
        yield server
    finally:
        if server is not None:
            server._http.close()
        if process is not None:
            _stop(process)
            if reader is not None:
                # The reader sees end of file once every process holding the
                # pipe has exited. Closing the pipe under a blocked readline
                # would wait for that readline, so only close it afterwards.
                reader.join(5)
            if process.stdout is not None and (reader is None or reader.finished.is_set()):
                process.stdout.close()
        shutil.rmtree(tmp, ignore_errors=True)
