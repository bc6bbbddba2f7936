"""Benchmark driver for the floor: jupyter_client's BlockingKernelClient over ZMQ.

It starts a kernel through the server's REST API (``POST api/kernels``) and
connects straight to the kernel's ZMQ sockets with the connection file the
server wrote into its runtime directory, so the kernel is one of the same
server's, with the same kernelspec, as the WebSocket clients'; only the
WebSocket and the server's relaying are left out.

Extra configuration key: ``runtime_dir``, the server's Jupyter runtime
directory (where ``kernel-<id>.json`` is).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Tuple

import _common
import jupyter_client
import requests
from jupyter_client.blocking import BlockingKernelClient


class ZMQClient(_common.Client):
    def __init__(self, config: Dict[str, Any]) -> None:
        self.url = config["url"].rstrip("/") + "/"
        self.headers = {"Authorization": f"token {config['token']}"}
        self.runtime_dir = Path(config["runtime_dir"])
        self.http = requests.Session()

    def open(self) -> Any:
        kernel_id, path = self.start_kernel()
        client = BlockingKernelClient()
        client.load_connection_file(str(path))
        # No heartbeat channel: its first beats go unanswered while a kernel
        # is still starting on a busy machine, and wait_for_ready then calls
        # the kernel dead. The WebSocket clients have no heartbeat either.
        client.start_channels(hb=False)
        client.wait_for_ready(timeout=60)
        return kernel_id, client

    def start_kernel(self) -> Tuple[str, Path]:
        """Start a kernel through the server; return its id and connection file."""
        response = self.http.post(
            self.url + "api/kernels",
            json={"name": _common.KERNEL},
            headers=self.headers,
            timeout=60,
        )
        response.raise_for_status()
        kernel_id = response.json()["id"]
        path = self.runtime_dir / f"kernel-{kernel_id}.json"
        deadline = time.monotonic() + 30
        while not path.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no connection file {path}")
            time.sleep(0.01)
        return kernel_id, path

    def delete_kernel(self, kernel_id: str) -> None:
        response = self.http.delete(
            self.url + f"api/kernels/{kernel_id}", headers=self.headers, timeout=60
        )
        response.raise_for_status()

    def run(self, handle: Any, code: str) -> str:
        parts = []

        def hook(msg: Dict[str, Any]) -> None:
            if msg["header"]["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
                parts.append(msg["content"]["text"])

        reply = handle[1].execute_interactive(
            code, store_history=False, output_hook=hook, timeout=_common.EXEC_TIMEOUT
        )
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"execution failed: {reply['content']}")
        return "".join(parts)

    def close(self, handle: Any) -> None:
        kernel_id, client = handle
        client.stop_channels()
        self.delete_kernel(kernel_id)

    def info(self) -> Dict[str, Any]:
        return {"version": jupyter_client.__version__, "protocol": "zmq"}


if __name__ == "__main__":
    _common.run_sync(ZMQClient)
