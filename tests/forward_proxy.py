"""A real forward proxy on 127.0.0.1: proxy.py (PyPI), started by the test.

It forwards plain HTTP requests (``GET http://host/path``) and tunnels with
``CONNECT`` (how websocket-client reaches a WebSocket through a proxy), and
writes one access-log line per connection, which the tests read to see what
went through it.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .processes import stop_group

__all__ = ["ForwardProxy", "running_forward_proxy"]

START_TIMEOUT = 60.0
"""Seconds proxy.py may take to listen (it starts slowly on a loaded machine)."""


@dataclass
class ForwardProxy:
    """A running proxy.py.

    Parameters
    ----------
    url
        The proxy's URL, ``http://127.0.0.1:<port>``.
    log_path
        Its log file.
    """

    url: str
    log_path: Path

    def log(self) -> str:
        """Return the proxy's log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for(self, pattern: str, timeout: float = 10.0) -> bool:
        """Wait until a log line matches ``pattern``; tell whether one did.

        proxy.py logs a connection when it ends, a moment after the client
        closed it, so the log is polled for the line.
        """
        regex = re.compile(pattern)
        end = time.monotonic() + timeout
        while True:
            if regex.search(self.log()):
                return True
            if time.monotonic() > end:
                return False
            time.sleep(0.1)


@contextlib.contextmanager
def running_forward_proxy() -> Iterator[ForwardProxy]:
    """Run proxy.py on 127.0.0.1 for the duration of a block.

    Yields
    ------
    ForwardProxy
        The running proxy.

    Raises
    ------
    RuntimeError
        If it does not listen within `START_TIMEOUT` seconds.
    """
    tmp = Path(tempfile.mkdtemp(prefix="forward-proxy-"))
    port_file, log_file = tmp / "port", tmp / "proxy.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy",
            "--hostname",
            "127.0.0.1",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--num-acceptors",
            "1",
            "--num-workers",
            "1",
            "--threaded",
            "--log-level",
            "INFO",
            "--log-file",
            str(log_file),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        end = time.monotonic() + START_TIMEOUT
        # Polling for the port file: proxy.py writes it once it listens.
        while not (port_file.exists() and port_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"proxy.py did not start; its log:\n{log_file.read_text()}")
            time.sleep(0.1)
        port = int(port_file.read_text().strip())
        yield ForwardProxy(url=f"http://127.0.0.1:{port}", log_path=log_file)
    finally:
        stop_group(process, 10)  # type: ignore[arg-type]
        shutil.rmtree(tmp, ignore_errors=True)
