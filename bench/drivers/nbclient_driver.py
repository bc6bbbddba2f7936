"""Benchmark driver for nbclient, cell by cell, over ZMQ through the delay proxy.

nbclient runs a notebook the way ``jupyter nbconvert --execute`` and
papermill do: each code cell's ``execute_request`` waits for the previous
cell's reply and ``idle`` status. Here it talks ZMQ to a kernel of the
benchmark's lab (started through the server's REST API, as the ZMQ floor
does), with every one of the kernel's ports behind ``bench/_delay_proxy.py``,
so it crosses the same simulated link as the WebSocket clients.

Extra configuration: ``runtime_dir`` (the server's runtime directory), and
``one_way_s`` in the parameters, the link's delay in each direction.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import _common
import nbclient
import nbformat
import zmq_driver
from jupyter_client.asynchronous import AsyncKernelClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import _delay_proxy

CHANNELS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


class Handle:
    def __init__(self, kernel_id: str) -> None:
        self.kernel_id = kernel_id
        self.stack = contextlib.ExitStack()
        self.loop = asyncio.new_event_loop()
        self.kc: Any = None
        self.runner: Any = None


class NbclientCells(zmq_driver.ZMQClient):
    def __init__(self, config: Dict[str, Any]) -> None:
        super().__init__(config)
        self.one_way = float(config.get("params", {}).get("one_way_s", 0.0))

    def open(self) -> Any:
        kernel_id, path = self.start_kernel()
        handle = Handle(kernel_id)
        try:
            info = json.loads(path.read_text())
            host = info["ip"]
            ports = handle.stack.enter_context(
                _delay_proxy.delay_proxy_process(
                    self.one_way, [(host, info[name]) for name in CHANNELS]
                )
            )
            info.update(zip(CHANNELS, ports))
            handle.loop.run_until_complete(self._connect(handle, info))
        except BaseException:
            self._close(handle)
            raise
        return handle

    async def _connect(self, handle: Handle, info: Dict[str, Any]) -> None:
        kc = AsyncKernelClient()
        kc.load_connection_info(info)
        kc.start_channels(hb=False)  # as the ZMQ floor: see zmq_driver
        await kc.wait_for_ready(timeout=60)
        handle.kc = kc
        handle.runner = nbclient.NotebookClient(
            nbformat.v4.new_notebook(), kernel_name=_common.KERNEL, timeout=600
        )
        handle.runner.kc = kc

    def run(self, handle: Any, code: str) -> str:
        return self.run_cells(handle, [code])[0]

    def run_cells(self, handle: Any, cells: List[str]) -> List[str]:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
        runner = handle.runner
        runner.nb = nb

        async def execute() -> None:
            for index, cell in enumerate(nb.cells):
                await runner.async_execute_cell(cell, index)

        handle.loop.run_until_complete(execute())
        return [
            "".join(
                o.get("text", "")
                for o in cell.outputs
                if o.output_type == "stream" and o.name == "stdout"
            )
            for cell in nb.cells
        ]

    def _close(self, handle: Handle) -> None:
        try:
            if handle.kc is not None:
                handle.kc.stop_channels()
            handle.loop.close()
            handle.stack.close()
        finally:
            self.delete_kernel(handle.kernel_id)

    def close(self, handle: Any) -> None:
        self._close(handle)

    def info(self) -> Dict[str, Any]:
        return {"version": nbclient.__version__, "protocol": "zmq"}


if __name__ == "__main__":
    _common.run_sync(NbclientCells)
