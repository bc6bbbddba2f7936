"""What every benchmark driver shares (standard library only; Python 3.9+).

A driver is run as ``python <driver>.py`` with one JSON object on standard
input: ``{"scenario": ..., "url": ..., "token": ..., "params": {...}}`` plus
driver-specific keys. It runs that one scenario against one server and
prints one line ``BENCH-RESULT <json>`` on standard output (anything else
it prints is ignored). Each scenario runs in a fresh process, so the peak
RSS it reports belongs to that scenario alone.

A synchronous client implements `Client`; `run_sync` drives it through the
scenarios. The asynchronous client has its own loop (``rnc_driver.py``) with
the same scenarios and result keys.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional

KERNEL = "lsst"
RESULT_MARKER = "BENCH-RESULT "
# Deadline of one execution (the 50 MB output included), in seconds.
EXEC_TIMEOUT = 300.0


def read_config() -> Dict[str, Any]:
    config: Dict[str, Any] = json.loads(sys.stdin.read())
    return config


def emit(result: Dict[str, Any]) -> None:
    sys.stdout.write(RESULT_MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()


def cpu_seconds() -> float:
    """User plus system CPU time of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_bytes() -> int:
    """Current resident set size."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def os_threads() -> int:
    """Threads of this process, as the kernel counts them (not only Python's)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def _process_cpu(pid: int) -> float:
    """User plus system CPU seconds of one process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields 14 and 15 of stat(5); the split above starts at field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> List[int]:
    found: List[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return found


def server_cpu(pid: Optional[int]) -> Dict[str, float]:
    """CPU seconds so far of the server process and of its kernels (its children).

    Only kernels alive at both ends of an interval count correctly: the
    scale scenario reads it while every session's kernel is running.
    """
    if not pid:
        return {"server": 0.0, "kernels": 0.0}
    return {
        "server": _process_cpu(pid),
        "kernels": sum(_process_cpu(child) for child in _children(pid)),
    }


def cpu_delta(after: Dict[str, float], before: Dict[str, float]) -> Dict[str, float]:
    return {key: after[key] - before[key] for key in after}


def output_code(size: int) -> str:
    """Kernel code writing ``size`` characters to stdout (one line)."""
    return f"print('x' * {size - 1})"


def prints_code(count: int) -> str:
    """Kernel code printing ``count`` short lines."""
    return f"for _i in range({count}):\n    print(_i)"


def prints_length(count: int) -> int:
    return sum(len(str(i)) + 1 for i in range(count))


class Client:
    """One client library, synchronous. Handles are whatever ``open`` returns."""

    def open(self) -> Any:
        raise NotImplementedError

    def run(self, handle: Any, code: str) -> str:
        """Run code and return its standard output."""
        raise NotImplementedError

    def close(self, handle: Any) -> None:
        raise NotImplementedError

    def run_cells(self, handle: Any, cells: List[str]) -> List[str]:
        """Run a notebook's code cells in order; return each one's stdout.

        By default one after the other, each waiting for the previous one's
        reply (cell by cell).
        """
        return [self.run(handle, code) for code in cells]

    def info(self) -> Dict[str, Any]:
        """Facts about the client worth recording (versions, protocol, ...)."""
        return {}


def blocks(total: int, size: int) -> List[int]:
    """Split ``total`` runs into blocks of ``size`` (the last may be smaller)."""
    return [min(size, total - start) for start in range(0, total, size)]


def _timed_runs(client: Client, handle: Any, code: str, count: int) -> List[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        client.run(handle, code)
        samples.append(time.perf_counter() - start)
    return samples


def scenario_latency(client: Client, params: Dict[str, Any]) -> Dict[str, Any]:
    start = time.perf_counter()
    handle = client.open()
    opened = time.perf_counter()
    try:
        _timed_runs(client, handle, "pass", params["warmup"])
        samples: List[float] = []
        cpu_blocks: List[float] = []
        cpu0 = cpu_seconds()
        wall0 = time.perf_counter()
        for count in blocks(params["runs"], params.get("cpu_block", 30)):
            block_cpu = cpu_seconds()
            samples += _timed_runs(client, handle, "pass", count)
            cpu_blocks.append((cpu_seconds() - block_cpu) / count)
        wall = time.perf_counter() - wall0
        cpu = cpu_seconds() - cpu0
    finally:
        closing = time.perf_counter()
        client.close(handle)
        closed = time.perf_counter()
    return {
        "samples_s": samples,
        "cpu_per_exec_s": cpu / len(samples),
        "cpu_per_exec_blocks_s": cpu_blocks,
        "cpu_share": cpu / wall,
        "open_s": opened - start,
        "close_s": closed - closing,
    }


def scenario_output(client: Client, params: Dict[str, Any]) -> Dict[str, Any]:
    """Large output (``size``) or many prints (``count``), ``reps`` times."""
    if "size" in params:
        code, expected = output_code(params["size"]), params["size"]
    else:
        code, expected = prints_code(params["count"]), prints_length(params["count"])
    handle = client.open()
    try:
        client.run(handle, "pass")
        rss_before = rss_bytes()
        walls, cpus, lengths = [], [], []
        for _ in range(params["reps"]):
            cpu0 = cpu_seconds()
            wall0 = time.perf_counter()
            out = client.run(handle, code)
            walls.append(time.perf_counter() - wall0)
            cpus.append(cpu_seconds() - cpu0)
            lengths.append(len(out))
            del out
        peak = peak_rss_bytes()
    finally:
        client.close(handle)
    return {
        "wall_s": walls,
        "cpu_s": cpus,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": peak,
        "output_chars": lengths,
        "expected_chars": expected,
        "complete": all(n == expected for n in lengths),
    }


def scenario_session(client: Client, params: Dict[str, Any]) -> Dict[str, Any]:
    opens, firsts, closes = [], [], []
    for _ in range(params["reps"]):
        t0 = time.perf_counter()
        handle = client.open()
        t1 = time.perf_counter()
        try:
            client.run(handle, "pass")
            t2 = time.perf_counter()
        finally:
            t3 = time.perf_counter()
            client.close(handle)
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


def scenario_concurrent(client: Client, params: Dict[str, Any]) -> Dict[str, Any]:
    """``threads`` threads, each with its own session, run ``pass`` at once."""
    count = params["threads"]
    barrier = threading.Barrier(count + 1)
    samples: List[List[float]] = [[] for _ in range(count)]
    errors: List[str] = []

    def worker(index: int) -> None:
        handle = None
        try:
            handle = client.open()
            barrier.wait()
            _timed_runs(client, handle, "pass", params["warmup"])
            barrier.wait()
            samples[index] = _timed_runs(client, handle, "pass", params["runs"])
            barrier.wait()
        except BaseException:
            errors.append(traceback.format_exc())
            barrier.abort()
        finally:
            if handle is not None:
                try:
                    client.close(handle)
                except Exception:
                    errors.append(traceback.format_exc())

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(count)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    try:
        barrier.wait()
        opened = time.perf_counter()
        barrier.wait()
        cpu0 = cpu_seconds()
        run0 = time.perf_counter()
        barrier.wait()
        run_wall = time.perf_counter() - run0
        cpu = cpu_seconds() - cpu0
    except threading.BrokenBarrierError:
        for thread in threads:
            thread.join(60)
        raise RuntimeError("a worker failed:\n" + "\n".join(errors)) from None
    for thread in threads:
        thread.join(60)
    if errors:
        raise RuntimeError("a worker failed:\n" + "\n".join(errors))
    flat = [s for per in samples for s in per]
    return {
        "open_all_s": opened - start,
        "run_wall_s": run_wall,
        "executions": len(flat),
        "throughput_per_s": len(flat) / run_wall,
        "samples_s": flat,
        "cpu_per_exec_s": cpu / len(flat),
    }


def scale_result(
    *,
    sessions: int,
    runs: int,
    open_all_s: float,
    run_wall_s: float,
    close_all_s: float,
    run_cpu_s: float,
    run_server: Dict[str, float],
    idle_s: float,
    idle_cpu_s: float,
    idle_server: Dict[str, float],
    rss_before: int,
    threads_before: int,
    threads_open: int,
    threads_idle: int,
    caller_threads: int,
    samples: List[float],
) -> Dict[str, Any]:
    """The scale scenario's result, the same for every driver."""
    executions = sessions * runs
    peak = peak_rss_bytes()
    return {
        "sessions": sessions,
        "executions": executions,
        "open_all_s": open_all_s,
        "run_wall_s": run_wall_s,
        "close_all_s": close_all_s,
        "throughput_per_s": executions / run_wall_s,
        "cpu_per_exec_s": run_cpu_s / executions,
        "server_cpu_per_exec_s": run_server["server"] / executions,
        "kernels_cpu_per_exec_s": run_server["kernels"] / executions,
        # Cores kept busy while running: who is the limit.
        "client_cores": run_cpu_s / run_wall_s,
        "server_cores": run_server["server"] / run_wall_s,
        "kernels_cores": run_server["kernels"] / run_wall_s,
        "idle_s": idle_s,
        "idle_client_cpu_per_s": idle_cpu_s / idle_s if idle_s else 0.0,
        "idle_server_cpu_per_s": idle_server["server"] / idle_s if idle_s else 0.0,
        "idle_kernels_cpu_per_s": idle_server["kernels"] / idle_s if idle_s else 0.0,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": peak,
        "peak_rss_per_session_bytes": (peak - rss_before) / sessions,
        "threads_before": threads_before,
        "threads_open": threads_open,
        "threads_idle": threads_idle,
        "caller_threads": caller_threads,
        # Threads the client library added beyond the callers' own.
        "library_threads": max(threads_open, threads_idle) - threads_before - caller_threads,
        "samples_s": samples,
    }


def scenario_scale(client: Client, params: Dict[str, Any]) -> Dict[str, Any]:
    """``sessions`` threads, each with its own session and kernel, all at once.

    Phases, each started together (a barrier): open every session, a
    warm-up, ``runs`` executions of ``pass`` per session (measured), an idle
    spell of ``idle_s`` seconds with every session open (measured), close.
    """
    count = params["sessions"]
    server_pid = params.get("server_pid")
    barrier = threading.Barrier(count + 1, timeout=params.get("phase_timeout", 600))
    samples: List[List[float]] = [[] for _ in range(count)]
    errors: List[str] = []

    def worker(index: int) -> None:
        handle = None
        try:
            handle = client.open()
            barrier.wait()  # all open
            _timed_runs(client, handle, "pass", params["warmup"])
            barrier.wait()  # warm
            samples[index] = _timed_runs(client, handle, "pass", params["runs"])
            barrier.wait()  # run done
            barrier.wait()  # idle done
        except BaseException:
            errors.append(traceback.format_exc())
            barrier.abort()
        finally:
            if handle is not None:
                try:
                    client.close(handle)
                except Exception:
                    errors.append(traceback.format_exc())

    rss_before = rss_bytes()
    threads_before = os_threads()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(count)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    try:
        barrier.wait()
        open_all = time.perf_counter() - start
        threads_open = os_threads()
        barrier.wait()
        cpu0, server0, run0 = cpu_seconds(), server_cpu(server_pid), time.perf_counter()
        barrier.wait()
        run_wall = time.perf_counter() - run0
        run_cpu = cpu_seconds() - cpu0
        run_server = cpu_delta(server_cpu(server_pid), server0)
        idle_cpu0, idle_server0, idle0 = cpu_seconds(), server_cpu(server_pid), time.perf_counter()
        time.sleep(params["idle_s"])
        threads_idle = os_threads()
        idle_wall = time.perf_counter() - idle0
        idle_cpu = cpu_seconds() - idle_cpu0
        idle_server = cpu_delta(server_cpu(server_pid), idle_server0)
        closing = time.perf_counter()
        barrier.wait()
    except threading.BrokenBarrierError:
        for thread in threads:
            thread.join(60)
        raise RuntimeError("a worker failed:\n" + "\n".join(errors[:3])) from None
    for thread in threads:
        thread.join(120)
    close_all = time.perf_counter() - closing
    if errors:
        raise RuntimeError("a worker failed:\n" + "\n".join(errors[:3]))
    result = scale_result(
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
        caller_threads=count,
        samples=[s for per in samples for s in per],
    )
    # Sessions a driver opened again because their kernel died while
    # starting (a crowded lab); time to open all includes them.
    result["sessions_reopened"] = getattr(client, "reopened", 0)
    return result


def notebook_cells(count: int) -> List[str]:
    """The notebook scenario's cells: small ones, each printing one line."""
    return [f"x = {i}\nprint(x)" for i in range(count)]


def notebook_outputs(count: int) -> List[str]:
    return [f"{i}\n" for i in range(count)]


def scenario_notebook(client: Client, params: Dict[str, Any]) -> Dict[str, Any]:
    """Run a notebook of ``cells`` small cells ``reps`` times in one session."""
    cells = notebook_cells(params["cells"])
    handle = client.open()
    try:
        client.run(handle, "pass")
        walls, complete = [], True
        for _ in range(params["reps"]):
            start = time.perf_counter()
            outputs = client.run_cells(handle, cells)
            walls.append(time.perf_counter() - start)
            complete = complete and outputs == notebook_outputs(len(cells))
    finally:
        client.close(handle)
    return {"wall_s": walls, "cells": len(cells), "complete": complete}


def scenario_oneshot(client: Client, params: Dict[str, Any]) -> Dict[str, Any]:
    """Open, print(1), close: the caller times the whole process."""
    handle = client.open()
    try:
        out = client.run(handle, "print(1)")
    finally:
        client.close(handle)
    return {"output_ok": out == "1\n"}


SCENARIOS: Dict[str, Callable[[Client, Dict[str, Any]], Dict[str, Any]]] = {
    "latency": scenario_latency,
    "output": scenario_output,
    "session": scenario_session,
    "concurrent": scenario_concurrent,
    "scale": scenario_scale,
    "notebook": scenario_notebook,
    "oneshot": scenario_oneshot,
}


def run_sync(make_client: Callable[[Dict[str, Any]], Client]) -> None:
    """Read the configuration, run its scenario, print the result."""
    config = read_config()
    try:
        client = make_client(config)
        result = SCENARIOS[config["scenario"]](client, config.get("params", {}))
        result["client_info"] = client.info()
    except BaseException as e:
        emit({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
        sys.exit(1)
    emit(result)
