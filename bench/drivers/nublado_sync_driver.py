"""Benchmark driver for nublado_sync (runs in the repository's .venv).

Extra configuration keys:

``pong``
    ``true`` to send an unsolicited pong frame after each message received
    while a reply is awaited, when nothing more is waiting to be read (the
    cure for the Nagle / delayed-ACK stall); ``false`` for none.
``pong_impl``
    ``"auto"`` (the package's ``prompt_acks`` option when it has one, the
    emulation below otherwise), ``"native"`` or ``"emulated"``.
``notebook_mode``
    How the notebook scenario runs its cells: ``"runner"`` hands the whole
    notebook to ``execute_notebook`` (the package's notebook runner),
    ``"cells"`` (the default) calls ``execute`` for one cell after another.

The emulation wraps ``KernelSocket.recv``: after a frame that decoded to a
message, if websocket-client holds no buffered bytes and the socket has none
readable, it sends ``pong(b"")``.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import json
import select
from typing import Any, Dict, List

import _common

import nublado_sync
from nublado_sync import _transport

TIMEOUT = datetime.timedelta(seconds=_common.EXEC_TIMEOUT)
# Sessions opened before a kernel that died while starting fails the run.
OPEN_ATTEMPTS = 2

try:
    from nublado_sync import _exceptions
except ImportError:  # a package laid out otherwise
    _exceptions = None  # type: ignore[assignment]


def _has_native_pong() -> bool:
    return "prompt_acks" in inspect.signature(nublado_sync.JupyterLabSession).parameters


def _install_emulated_pong() -> None:
    original = _transport.KernelSocket.recv

    def recv(self: Any, timeout: float, *args: Any, **kwargs: Any) -> Any:
        msg = original(self, timeout, *args, **kwargs)
        if msg is not None:
            ws = self._ws
            sock = ws.sock
            if sock is not None and not ws.frame_buffer.recv_buffer:
                readable, _, _ = select.select([sock], [], [], 0)
                if not readable:
                    with contextlib.suppress(Exception):
                        ws.pong(b"")
        return msg

    _transport.KernelSocket.recv = recv  # type: ignore[method-assign]


class NubladoSync(_common.Client):
    def __init__(self, config: Dict[str, Any]) -> None:
        self.url = config["url"]
        self.token = config["token"]
        pong = bool(config.get("pong", False))
        impl = config.get("pong_impl", "auto")
        native = _has_native_pong()
        if impl == "auto":
            impl = "native" if native else "emulated"
        if impl == "native" and not native:
            raise RuntimeError("this nublado_sync has no prompt_acks option")
        self.options: Dict[str, Any] = {}
        if native:
            # Set it either way: the package's default may be on.
            self.options["prompt_acks"] = pong and impl == "native"
        if pong and impl == "emulated":
            _install_emulated_pong()
        self.pong = pong
        self.pong_impl = impl if pong else "off"
        self.native_available = native
        self.protocol = None
        self.notebook_mode = config.get("notebook_mode", "cells")
        # Sessions opened again after their kernel died while starting.
        self.reopened = 0

    def open(self) -> Any:
        # A crowded lab can lose a kernel while it starts (many sessions
        # opened at once); the package names that KernelGoneError, and a
        # user opens a new session, as run_notebooks does. Packages from
        # before that error have no such name and are not retried.
        gone = getattr(_exceptions, "KernelGoneError", None) if _exceptions else None
        for attempt in range(1, OPEN_ATTEMPTS + 1):
            manager = nublado_sync.open_lab_session(
                self.url, self.token, kernel_name=_common.KERNEL, **self.options
            )
            try:
                session = manager.__enter__()
            except Exception as e:
                if gone is None or not isinstance(e, gone) or attempt == OPEN_ATTEMPTS:
                    raise
                self.reopened += 1
                continue
            self.protocol = session.protocol
            return manager, session
        raise AssertionError("unreachable")

    def run(self, handle: Any, code: str) -> str:
        return handle[1].run_python(code, timeout=TIMEOUT)

    def close(self, handle: Any) -> None:
        handle[0].__exit__(None, None, None)

    def run_cells(self, handle: Any, cells: List[str]) -> List[str]:
        if self.notebook_mode != "runner":
            return super().run_cells(handle, cells)
        notebook = {
            "nbformat": 4,
            "nbformat_minor": 5,
            "metadata": {},
            "cells": [
                {
                    "cell_type": "code",
                    "id": f"c{i}",
                    "metadata": {},
                    "source": code,
                    "outputs": [],
                    "execution_count": None,
                }
                for i, code in enumerate(cells)
            ],
        }
        done = json.loads(handle[1].execute_notebook(notebook, cell_timeout=TIMEOUT))
        return [
            "".join(
                "".join(o["text"]) if isinstance(o.get("text"), list) else o.get("text", "")
                for o in cell["outputs"]
                if o.get("output_type") == "stream" and o.get("name") == "stdout"
            )
            for cell in done["cells"]
        ]

    def info(self) -> Dict[str, Any]:
        return {
            "version": nublado_sync.__version__,
            "pong": self.pong,
            "pong_impl": self.pong_impl,
            "prompt_acks_option": self.native_available,
            "protocol": self.protocol,
            "notebook_mode": self.notebook_mode,
            "reopened": self.reopened,
        }


if __name__ == "__main__":
    _common.run_sync(NubladoSync)
