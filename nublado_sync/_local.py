"""A private Jupyter server on 127.0.0.1, for running code with no Nublado at hand."""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, Iterator, List, Optional

from ._arguments import check_duration
from ._deadline import Deadline
from ._exceptions import NubladoError, NubladoTimeoutError, NubladoUsageError
from ._interrupts import deferred_interrupts
from ._logging import Logger, default_logger

__all__ = ["LocalJupyterServer", "local_jupyter_server"]

_RUNNING_AT = re.compile(r"(http://127\.0\.0\.1:\d+/)")
# How often readiness is checked once the server has printed its URL: it
# prints the URL just before it starts listening.
_READY_POLL = 0.05


class LocalJupyterServer:
    """A running private ``jupyter_server``.

    Attributes
    ----------
    url : str
        Base URL, such as ``http://127.0.0.1:40123/``.
    token : str
        Its random token.
    """

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token

    def __repr__(self) -> str:
        return f"LocalJupyterServer(url={self.url!r})"


class _OutputReader:
    """Drains the server's output (so its pipe never fills) and finds its URL."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: List[str] = []
        self.url: Optional[str] = None
        self.found = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            if self.url is None and "is running at" not in line:
                match = _RUNNING_AT.search(line)
                if match:
                    self.url = match.group(1)
                    self.found.set()
        self.found.set()

    def join(self) -> None:
        self._thread.join(timeout=5)

    def tail(self) -> str:
        return "\n".join(self.lines[-30:])


@contextlib.contextmanager
def local_jupyter_server(
    *,
    kernel_name: Optional[str] = None,
    timeout: datetime.timedelta = datetime.timedelta(seconds=60),
    logger: Optional[Logger] = None,
) -> Iterator[LocalJupyterServer]:
    """Run a private Jupyter server for the duration of a ``with`` block.

    The server listens on a free port of 127.0.0.1 only, with a random
    token, in a temporary runtime directory; it and its kernels are stopped
    afterwards. It needs ``jupyter_server`` and ``ipykernel``
    (``pip install nublado_sync[local]``).

    Parameters
    ----------
    kernel_name
        Default kernel; the server's own default (``python3``) when `None`.
    timeout
        How long the server may take to start.
    logger
        Logger to use.

    Yields
    ------
    LocalJupyterServer
        The running server.

    Raises
    ------
    NubladoUsageError
        jupyter_server is not installed, or ``timeout`` is not a positive
        `datetime.timedelta`.
    NubladoTimeoutError
        The server did not start in time.
    NubladoError
        The server exited while starting.
    """
    check_duration(timeout, "timeout")
    logger = logger or default_logger()
    try:
        import jupyter_server  # noqa: F401
    except ImportError:
        raise NubladoUsageError(
            "Local mode needs jupyter_server and ipykernel: pip install 'nublado_sync[local]'"
        ) from None
    token = secrets.token_urlsafe(32)
    env = dict(os.environ)
    # The token goes through the environment, not the command line, which
    # other users of the machine can read.
    env["JUPYTER_TOKEN"] = token
    command = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port=0",
        "--ServerApp.open_browser=False",
        f"--ServerApp.root_dir={os.getcwd()}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--ServerApp.allow_root=True")
    if kernel_name:
        command.append(f"--MappingKernelManager.default_kernel_name={kernel_name}")
    # Starting takes seconds: say so first, so that a run does not look
    # stuck (and an interrupt meanwhile has a visible context).
    logger.info("Starting local Jupyter server")
    started = time.monotonic()
    workdir: Optional[str] = None
    process: Optional[subprocess.Popen[bytes]] = None
    reader: Optional[_OutputReader] = None
    try:
        # A Ctrl-C inside Popen, after the fork, would lose the process
        # object and leave the server running (in its own session, which
        # the terminal's Ctrl-C does not reach): held until it is ours.
        with deferred_interrupts(logger, "the local Jupyter server's start"):
            workdir = tempfile.mkdtemp(prefix="nublado-sync-local-")
            env["JUPYTER_RUNTIME_DIR"] = os.path.join(workdir, "runtime")
            process = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            assert process.stdout is not None
            reader = _OutputReader(process.stdout)
        deadline = Deadline(timeout)
        reader.found.wait(deadline.remaining())
        if reader.url is None:
            if process.poll() is not None:
                raise NubladoError(f"Local Jupyter server exited:\n{reader.tail()}")
            raise NubladoTimeoutError("Local Jupyter server did not start in time")
        _wait_until_listening(reader.url, token, deadline)
        logger.info(
            "Started local Jupyter server",
            url=reader.url,
            seconds=round(time.monotonic() - started, 1),
        )
        yield LocalJupyterServer(reader.url, token)
    finally:
        if process is not None:
            _stop(process)
            if reader is not None:
                reader.join()
            if process.stdout is not None:
                process.stdout.close()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        logger.debug("Stopped local Jupyter server")


def _wait_until_listening(url: str, token: str, deadline: Deadline) -> None:
    import requests  # on first use, see _http

    with requests.Session() as http:
        while True:
            try:
                response = http.get(
                    url + "api/status",
                    headers={"Authorization": f"token {token}"},
                    timeout=deadline.bound(5.0) or 0.01,
                )
                if response.status_code == 200:
                    return
            except (requests.RequestException, OSError):
                pass
            if deadline.expired():
                raise NubladoTimeoutError("Local Jupyter server did not start in time")
            time.sleep(deadline.bound(_READY_POLL))


def _stop(process: subprocess.Popen[bytes]) -> None:
    # SIGTERM lets the server shut its kernels down; they run in their own
    # sessions, so only the server can reach them.
    if process.poll() is None:
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
