"""Server processes for the tests: their output, their kernelspec, their end.

Shared by `tests.jupyter_servers` (one ``jupyter_server``) and
`tests.hub_testbed` (a JupyterHub with its proxy, labs and kernels): both
start servers as subprocesses, drain their output, and must leave no
process behind, whatever state the server died in.
"""

from __future__ import annotations

import collections
import contextlib
import http.cookiejar
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import psutil  # type: ignore[import-untyped,unused-ignore]
import requests

__all__ = [
    "KERNEL_NAME",
    "OutputReader",
    "cookieless_session",
    "is_alive",
    "stop_group",
    "wait_gone",
    "write_kernelspec",
]

KERNEL_NAME = "lsst"
"""Name of the kernelspec the test servers offer (as Rubin labs do)."""

# Lines of server output kept for diagnostics.
_LOG_LINES = 20000


class OutputReader:
    """Drain a server's output in a thread and watch for readiness.

    The server's stdout and stderr share one pipe, which its children (a
    proxy, labs, kernels) may inherit. It is read until end of file so that
    it never fills up and blocks them, and the lines are kept for
    diagnostics.

    Parameters
    ----------
    stream
        The read end of the output pipe.
    ready_pattern
        A line matching it means the server runs; its first group, if any,
        becomes `found`.
    name
        Name of the reader thread.
    """

    def __init__(self, stream: IO[bytes], ready_pattern: re.Pattern[str], name: str) -> None:
        self._stream = stream
        self._pattern = ready_pattern
        self._lines: collections.deque[str] = collections.deque(maxlen=_LOG_LINES)
        self._lock = threading.Lock()
        self._grew = threading.Condition(self._lock)
        self.running = False
        self.found: str | None = None
        # Set once the server runs or the output has ended, whichever comes
        # first, so that a server dying at start does not cost the timeout.
        self.ready = threading.Event()
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for raw in iter(self._stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                with self._lock:
                    self._lines.append(line)
                    self._grew.notify_all()
                if not self.running:
                    match = self._pattern.search(line)
                    if match:
                        self.found = match.group(1) if match.groups() else None
                        self.running = True
                        self.ready.set()
        except (OSError, ValueError):
            # The pipe was closed under us during teardown.
            pass
        finally:
            self.finished.set()
            self.ready.set()

    def text(self) -> str:
        """Return the output captured so far.

        Returns
        -------
        str
            The captured lines, joined with newlines.
        """
        with self._lock:
            return "\n".join(self._lines)

    def wait_for(self, text: str, timeout: float) -> bool:
        """Wait until a line containing ``text`` has been read.

        Parameters
        ----------
        text
            Text to look for in each line.
        timeout
            Seconds to wait at most.

        Returns
        -------
        bool
            Whether such a line arrived in time.
        """
        with self._lock:
            return self._grew.wait_for(
                lambda: any(text in line for line in self._lines), timeout=timeout
            )

    def join(self, timeout: float) -> None:
        """Wait for the reader thread to end.

        Parameters
        ----------
        timeout
            Seconds to wait at most.
        """
        self._thread.join(timeout)


def cookieless_session() -> requests.Session:
    """Make an HTTP session that sends only what each call says.

    Token-authenticated answers may set login cookies; kept, they would
    authenticate later calls that mean to send a wrong token or none.
    """
    session = requests.Session()
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return session


def write_kernelspec(path_dir: Path) -> None:
    """Write the ``lsst`` kernelspec under a directory on ``JUPYTER_PATH``."""
    spec_dir = path_dir / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "LSST",
        "language": "python",
        "metadata": {"debugger": False},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))


def is_alive(proc: psutil.Process) -> bool:
    """Tell whether a process is running (zombies are dead)."""
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def wait_gone(
    procs: Sequence[psutil.Process],
    timeout: float,
    *,
    send: signal.Signals | None = None,
    groups: bool = False,
) -> list[psutil.Process]:
    """Wait for processes to exit, optionally signalling them first.

    Parameters
    ----------
    procs
        The processes.
    timeout
        Seconds to wait for them at most.
    send
        A signal to send them first.
    groups
        Send it to the process group too of each process that leads one (a
        kernel leads its own: its children go with it).

    Returns
    -------
    list of psutil.Process
        Those still running after the timeout.
    """
    if not hasattr(os, "pidfd_open"):
        alive = [proc for proc in procs if is_alive(proc)]
        for proc in alive:
            _signal(proc, send, groups)
        _, still = psutil.wait_procs(alive, timeout=timeout)
        return list(still)
    pidfds: dict[int, psutil.Process] = {}
    try:
        for proc in procs:
            pidfd = None
            try:
                # Orphans are not our children and cannot be waited for,
                # and PID 1 on some machines never reaps them, so they stay
                # zombies. A pidfd becomes readable when its process exits,
                # zombie or not; opened before the liveness check, it pins
                # the process that the check saw.
                pidfd = os.pidfd_open(proc.pid)
                if not is_alive(proc):
                    continue
                _signal(proc, send, groups)
                pidfds[pidfd] = proc
                pidfd = None
            except (psutil.Error, OSError):
                pass  # Gone already, or not ours to signal.
            finally:
                if pidfd is not None:
                    os.close(pidfd)
        deadline = time.monotonic() + timeout
        pending = list(pidfds)
        while pending and (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select(pending, [], [], left)
            pending = [fd for fd in pending if fd not in ready]
        return [pidfds[fd] for fd in pending]
    finally:
        for fd in pidfds:
            os.close(fd)


def _signal(proc: psutil.Process, send: signal.Signals | None, groups: bool) -> None:
    if send is None:
        return
    with contextlib.suppress(psutil.Error, OSError):
        leader = groups and os.getpgid(proc.pid) == proc.pid
        proc.send_signal(send)
        if leader:
            os.killpg(proc.pid, send)


def stop_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Stop a server started in a session of its own, SIGTERM then SIGKILL.

    SIGTERM to its process group lets the server stop what it started; what
    it leaves behind in other sessions (kernels, labs) is the caller's.
    """
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
