"""Benchmark driver for the async rubin-nublado-client 16.1 (Python 3.13 venv).

Its `NubladoClient` finds the hub through Rubin service discovery and logs
in through JupyterHub, neither of which a plain jupyter_server has. The
driver therefore uses the client's own `JupyterLabSessionManager` and
`JupyterLabSession` (the code that creates the session, opens the kernel
WebSocket with ``websockets``, runs code and deletes the session) and hands
the manager a small stand-in for its internal ``JupyterAsyncClient`` that
maps ``user/<name>/api/...`` routes onto the server's ``api/...`` with an
``Authorization: token`` header, an ``httpx.AsyncClient`` (as the real one
uses) and ``websockets.connect`` with the arguments the real one passes.

Concurrency uses 8 sessions as 8 tasks on one event loop, the async way.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import traceback
from datetime import timedelta
from importlib.metadata import version
from typing import Any, Dict, List

import _common
import httpx
import structlog
import websockets
from rubin.nublado.client import JupyterLabSessionManager
from websockets.typing import Subprotocol

USER = "bench"
TIMEOUT = timedelta(seconds=_common.EXEC_TIMEOUT)


class LabShim:
    """What `JupyterLabSessionManager` calls on ``JupyterAsyncClient``."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/") + "/"
        self.headers = {"Authorization": f"token {token}"}
        self.client = httpx.AsyncClient(timeout=60)

    def _lab_url(self, route: str) -> str:
        prefix = f"user/{USER}/"
        if not route.startswith(prefix):
            raise ValueError(f"unexpected route {route}")
        return self.url + route[len(prefix) :]

    async def post(self, route: str, *, json: Any = None, **kwargs: Any) -> httpx.Response:
        response = await self.client.post(self._lab_url(route), json=json, headers=self.headers)
        response.raise_for_status()
        return response

    async def delete(self, route: str, **kwargs: Any) -> httpx.Response:
        response = await self.client.delete(self._lab_url(route), headers=self.headers)
        response.raise_for_status()
        return response

    async def open_websocket(
        self, route: str, *, open_timeout: timedelta, max_size: int | None
    ) -> Any:
        url = "ws" + self._lab_url(route)[len("http") :]
        return websockets.connect(
            url,
            subprotocols=[Subprotocol("v1.kernel.websocket.jupyter.org")],
            additional_headers=dict(self.headers),
            open_timeout=open_timeout.total_seconds(),
            max_size=max_size,
        )


class RNC:
    def __init__(self, config: Dict[str, Any]) -> None:
        self.lab = LabShim(config["url"], config["token"])
        # Debug logging off, as in a service configured at INFO.
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
        self.logger = structlog.get_logger("rubin.nublado.client")

    async def open(self) -> Any:
        manager = JupyterLabSessionManager(
            username=USER,
            jupyter_client=self.lab,  # type: ignore[arg-type]
            kernel_name=_common.KERNEL,
            max_websocket_size=None,
            logger=self.logger,
        )
        session = await manager.__aenter__()
        return manager, session

    async def run(self, handle: Any, code: str) -> str:
        result: str = await handle[1].run_python(code, timeout=TIMEOUT)
        return result

    async def close(self, handle: Any) -> None:
        await handle[0].__aexit__(None, None, None)

    def info(self) -> Dict[str, Any]:
        return {"version": version("rubin-nublado-client"), "protocol": "v1"}


async def _timed_runs(client: RNC, handle: Any, code: str, count: int) -> List[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await client.run(handle, code)
        samples.append(time.perf_counter() - start)
    return samples


async def latency(client: RNC, params: Dict[str, Any]) -> Dict[str, Any]:
    start = time.perf_counter()
    handle = await client.open()
    opened = time.perf_counter()
    try:
        await _timed_runs(client, handle, "pass", params["warmup"])
        samples: List[float] = []
        cpu_blocks: List[float] = []
        cpu0 = _common.cpu_seconds()
        wall0 = time.perf_counter()
        for count in _common.blocks(params["runs"], params.get("cpu_block", 30)):
            block_cpu = _common.cpu_seconds()
            samples += await _timed_runs(client, handle, "pass", count)
            cpu_blocks.append((_common.cpu_seconds() - block_cpu) / count)
        wall = time.perf_counter() - wall0
        cpu = _common.cpu_seconds() - cpu0
    finally:
        closing = time.perf_counter()
        await client.close(handle)
        closed = time.perf_counter()
    return {
        "samples_s": samples,
        "cpu_per_exec_s": cpu / len(samples),
        "cpu_per_exec_blocks_s": cpu_blocks,
        "cpu_share": cpu / wall,
        "open_s": opened - start,
        "close_s": closed - closing,
    }


async def output(client: RNC, params: Dict[str, Any]) -> Dict[str, Any]:
    if "size" in params:
        code, expected = _common.output_code(params["size"]), params["size"]
    else:
        code = _common.prints_code(params["count"])
        expected = _common.prints_length(params["count"])
    handle = await client.open()
    try:
        await client.run(handle, "pass")
        rss_before = _common.rss_bytes()
        walls, cpus, lengths = [], [], []
        for _ in range(params["reps"]):
            cpu0 = _common.cpu_seconds()
            wall0 = time.perf_counter()
            out = await client.run(handle, code)
            walls.append(time.perf_counter() - wall0)
            cpus.append(_common.cpu_seconds() - cpu0)
            lengths.append(len(out))
            del out
        peak = _common.peak_rss_bytes()
    finally:
        await client.close(handle)
    return {
        "wall_s": walls,
        "cpu_s": cpus,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": peak,
        "output_chars": lengths,
        "expected_chars": expected,
        "complete": all(n == expected for n in lengths),
    }


async def session(client: RNC, params: Dict[str, Any]) -> Dict[str, Any]:
    opens, firsts, closes = [], [], []
    for _ in range(params["reps"]):
        t0 = time.perf_counter()
        handle = await client.open()
        t1 = time.perf_counter()
        try:
            await client.run(handle, "pass")
            t2 = time.perf_counter()
        finally:
            t3 = time.perf_counter()
            await client.close(handle)
            t4 = time.perf_counter()
        opens.append(t1 - t0)
        firsts.append(t2 - t1)
        closes.append(t4 - t3)
    return {
        "open_s": opens,
        "first_run_s": firsts,
        "open_to_first_result_s": [a + b for a, b in zip(opens, firsts)],
        "close_s": closes,
    }


async def concurrent(client: RNC, params: Dict[str, Any]) -> Dict[str, Any]:
    count = params["threads"]
    start = time.perf_counter()
    handles = await asyncio.gather(*(client.open() for _ in range(count)))
    opened = time.perf_counter()
    try:
        await asyncio.gather(*(_timed_runs(client, h, "pass", params["warmup"]) for h in handles))
        cpu0 = _common.cpu_seconds()
        run0 = time.perf_counter()
        per = await asyncio.gather(
            *(_timed_runs(client, h, "pass", params["runs"]) for h in handles)
        )
        run_wall = time.perf_counter() - run0
        cpu = _common.cpu_seconds() - cpu0
    finally:
        await asyncio.gather(*(client.close(h) for h in handles))
    flat = [s for samples in per for s in samples]
    return {
        "open_all_s": opened - start,
        "run_wall_s": run_wall,
        "executions": len(flat),
        "throughput_per_s": len(flat) / run_wall,
        "samples_s": flat,
        "cpu_per_exec_s": cpu / len(flat),
        "note": "tasks on one event loop",
    }


async def scale(client: RNC, params: Dict[str, Any]) -> Dict[str, Any]:
    """``sessions`` tasks on one event loop, each with its own session and kernel.

    The same phases as the synchronous drivers' (``_common.scenario_scale``).
    """
    count = params["sessions"]
    server_pid = params.get("server_pid")
    rss_before = _common.rss_bytes()
    threads_before = _common.os_threads()
    start = time.perf_counter()
    opened = await asyncio.gather(*(client.open() for _ in range(count)), return_exceptions=True)
    handles = [h for h in opened if not isinstance(h, BaseException)]
    try:
        failed = [h for h in opened if isinstance(h, BaseException)]
        if failed:
            raise failed[0]
        open_all = time.perf_counter() - start
        threads_open = _common.os_threads()
        await asyncio.gather(*(_timed_runs(client, h, "pass", params["warmup"]) for h in handles))
        cpu0 = _common.cpu_seconds()
        server0 = _common.server_cpu(server_pid)
        run0 = time.perf_counter()
        per = await asyncio.gather(
            *(_timed_runs(client, h, "pass", params["runs"]) for h in handles)
        )
        run_wall = time.perf_counter() - run0
        run_cpu = _common.cpu_seconds() - cpu0
        run_server = _common.cpu_delta(_common.server_cpu(server_pid), server0)
        idle_cpu0 = _common.cpu_seconds()
        idle_server0 = _common.server_cpu(server_pid)
        idle0 = time.perf_counter()
        await asyncio.sleep(params["idle_s"])
        threads_idle = _common.os_threads()
        idle_wall = time.perf_counter() - idle0
        idle_cpu = _common.cpu_seconds() - idle_cpu0
        idle_server = _common.cpu_delta(_common.server_cpu(server_pid), idle_server0)
    finally:
        closing = time.perf_counter()
        await asyncio.gather(*(client.close(h) for h in handles))
    close_all = time.perf_counter() - closing
    result = _common.scale_result(
        sessions=count,
        runs=params["runs"],
        open_all_s=open_all,
        run_wall_s=run_wall,
        close_all_s=close_all,
        run_cpu_s=run_cpu,
        run_server=run_server,
        idle_s=idle_wall,
        idle_cpu_s=idle_cpu,
        idle_server=idle_server,
        rss_before=rss_before,
        threads_before=threads_before,
        threads_open=threads_open,
        threads_idle=threads_idle,
        caller_threads=0,
        samples=[s for samples in per for s in samples],
    )
    result["note"] = "tasks on one event loop"
    return result


async def notebook(client: RNC, params: Dict[str, Any]) -> Dict[str, Any]:
    """Cell by cell, as with ``_common.scenario_notebook``."""
    cells = _common.notebook_cells(params["cells"])
    handle = await client.open()
    try:
        await client.run(handle, "pass")
        walls, complete = [], True
        for _ in range(params["reps"]):
            start = time.perf_counter()
            outputs = [await client.run(handle, code) for code in cells]
            walls.append(time.perf_counter() - start)
            complete = complete and outputs == _common.notebook_outputs(len(cells))
    finally:
        await client.close(handle)
    return {"wall_s": walls, "cells": len(cells), "complete": complete}


async def oneshot(client: RNC, params: Dict[str, Any]) -> Dict[str, Any]:
    handle = await client.open()
    try:
        out = await client.run(handle, "print(1)")
    finally:
        await client.close(handle)
    return {"output_ok": out == "1\n"}


SCENARIOS = {
    "latency": latency,
    "output": output,
    "session": session,
    "concurrent": concurrent,
    "scale": scale,
    "notebook": notebook,
    "oneshot": oneshot,
}


async def amain(config: Dict[str, Any]) -> Dict[str, Any]:
    client = RNC(config)
    try:
        result = await SCENARIOS[config["scenario"]](client, config.get("params", {}))
    finally:
        await client.lab.client.aclose()
    result["client_info"] = client.info()
    return result


def main() -> None:
    config = _common.read_config()
    try:
        result = asyncio.run(amain(config))
    except BaseException as e:
        _common.emit({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
        sys.exit(1)
    _common.emit(result)


if __name__ == "__main__":
    main()
