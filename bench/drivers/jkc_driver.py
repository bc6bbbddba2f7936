"""Benchmark driver for jupyter-kernel-client (PyPI), synchronous, WebSocket.

Its high-level `JupyterKernelClient` starts a kernel with ``POST api/kernels``
(no session), connects with websocket-client in a background thread and
collects nbformat-style outputs; the driver joins the ``stdout`` stream
outputs into one string, as ``run_python`` returns. Its defaults are kept:
the legacy JSON WebSocket protocol (it offers the v1 subprotocol only when
asked) and the token in the WebSocket URL.
"""

from __future__ import annotations

import logging
from typing import Any, Dict

import _common
import jupyter_kernel_client
from jupyter_kernel_client import JupyterKernelClient


class JKC(_common.Client):
    def __init__(self, config: Dict[str, Any]) -> None:
        self.url = config["url"].rstrip("/")
        self.token = config["token"]
        logging.getLogger().setLevel(logging.WARNING)

    def open(self) -> Any:
        client = JupyterKernelClient(server_url=self.url, token=self.token)
        client.log.setLevel(logging.WARNING)
        client.start(name=_common.KERNEL)
        return client

    def run(self, handle: Any, code: str) -> str:
        reply = handle.execute(code, store_history=False, timeout=_common.EXEC_TIMEOUT)
        if reply["status"] != "ok":
            raise RuntimeError(f"execution failed: {reply}")
        return "".join(
            out["text"]
            for out in reply["outputs"]
            if out["output_type"] == "stream" and out["name"] == "stdout"
        )

    def close(self, handle: Any) -> None:
        handle.stop()

    def info(self) -> Dict[str, Any]:
        return {"version": jupyter_kernel_client.__version__, "protocol": "legacy"}


if __name__ == "__main__":
    _common.run_sync(JKC)
