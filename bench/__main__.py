"""Run the benchmark suite: ``python -m bench`` from the repository root.

Every competitor runs in its own subprocess (``bench/drivers/``), one
scenario per process, against the same servers on 127.0.0.1 and the same
``lsst`` kernelspec; this process only starts the servers, runs the drivers
one at a time, and writes the results (JSON), the docs page and the chart.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import inspect
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import _delay_proxy, _envs, _report, _servers
from ._paths import scrub_paths, shown_args

DRIVERS = _envs.BENCH / "drivers"
RESULTS = _envs.BENCH / "results"
DOCS_PAGE = _envs.REPO / "docs" / "benchmarks.rst"
CHART = _envs.REPO / "docs" / "_static" / "benchmarks.png"
DRIVER_TIMEOUT = 900.0

FULL: Dict[str, Any] = {
    "latency": {"warmup": 30, "runs": 300, "cpu_block": 30},
    "output": {"size": 50_000_000, "processes": 8},
    "prints": {"count": 200_000, "processes": 5},
    "session": {"reps": 3},
    "concurrent": {"threads": 8, "warmup": 5, "runs": 30},
    "import": {"reps": 8},
    "oneshot": {"reps": 3, "cold_reps": 15},
    "scale": {"sessions": [1, 8, 32, 64], "runs": 50, "warmup": 2, "idle_s": 5.0, "rounds": 2},
    "notebook": {"cells": 50, "rtt_ms": [0, 20, 50, 100], "reps": 3},
}
QUICK: Dict[str, Any] = {
    "latency": {"warmup": 3, "runs": 20, "cpu_block": 10},
    "output": {"size": 1_000_000, "processes": 1},
    "prints": {"count": 2_000, "processes": 1},
    "session": {"reps": 1},
    "concurrent": {"threads": 2, "warmup": 1, "runs": 5},
    "import": {"reps": 2},
    "oneshot": {"reps": 1, "cold_reps": 1},
    "scale": {"sessions": [2], "runs": 3, "warmup": 1, "idle_s": 0.2, "rounds": 1},
    # The smoke run measures the package as it comes only.
    "scale_reference_only": True,
    "notebook": {"cells": 5, "rtt_ms": [20], "reps": 1},
    # Two of the four targets still start both labs and a proxy.
    "latency_targets": ["default-direct", "nodelay-proxy"],
    # jupyter-kernel-client takes 10 s to close a session: latency only.
    "latency_only": ["jkc"],
}
SCENARIOS = (
    "latency",
    "output",
    "prints",
    "session",
    "concurrent",
    "scale",
    "notebook",
    "import",
    "oneshot",
)
# The clients the scale scenario compares: threads against tasks.
SCALE_CLIENTS = ("ns_pong", "ns_nopong", "nsbase_pong", "nsbase_nopong", "rnc")


def log(message: str) -> None:
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


@dataclass
class Client:
    key: str
    label: str
    python: str
    driver: str
    import_code: str
    extra: Dict[str, Any] = field(default_factory=dict)
    info: Dict[str, Any] = field(default_factory=dict)
    # Prepended to the driver's PYTHONPATH (the baseline's package).
    pythonpath: Optional[str] = None


def _native_pong_default() -> Optional[bool]:
    """The package's ``prompt_acks`` default, or `None` without the option."""
    import nublado_sync

    param = inspect.signature(nublado_sync.JupyterLabSession).parameters.get("prompt_acks")
    if param is None:
        return None
    return bool(param.default)


def _has_ack_policy() -> bool:
    """Whether the package has `AckPolicy` (early acks beyond the pong)."""
    import nublado_sync

    return "AckPolicy" in getattr(nublado_sync, "__all__", ())


def make_clients(
    wanted: List[str],
    failures: List[Dict[str, Any]],
    pong_impl: str,
    baseline: Optional[str] = None,
) -> Dict[str, Client]:
    main_python = sys.executable
    clients: Dict[str, Client] = {}
    pong_tag = "" if pong_impl != "emulated" else ", emulated"
    # Since AckPolicy, the package's default acknowledges early by pong or
    # TCP_QUICKACK as the load allows; before it, prompt_acks meant a pong
    # always.
    acks = "early acks" if _has_ack_policy() else "pong"
    if "ns" in wanted:
        clients["ns_pong"] = Client(
            "ns_pong",
            f"nublado_sync ({acks}{pong_tag})",
            main_python,
            "nublado_sync_driver.py",
            "import nublado_sync",
            {"pong": True, "pong_impl": pong_impl},
        )
        clients["ns_nopong"] = Client(
            "ns_nopong",
            f"nublado_sync (no {acks})",
            main_python,
            "nublado_sync_driver.py",
            "import nublado_sync",
            {"pong": False, "pong_impl": pong_impl},
        )
    if "ns" in wanted and baseline:
        # The same scenarios on another checkout's package, for before and
        # after figures from one run.
        for key in ("ns_pong", "ns_nopong"):
            ours = clients[key]
            clients[key.replace("ns_", "nsbase_")] = Client(
                key.replace("ns_", "nsbase_"),
                # The baseline's option is read as its own version meant it.
                "nublado_sync baseline (" + ("pong)" if key == "ns_pong" else "no pong)"),
                ours.python,
                ours.driver,
                ours.import_code,
                dict(ours.extra),
                pythonpath=baseline,
            )
    optional: List[tuple[str, _envs.EnvSpec, str, str, str]] = [
        (
            "rnc",
            _envs.RNC,
            "rubin-nublado-client",
            "rnc_driver.py",
            "import rubin.nublado.client",
        ),
        (
            "jkc",
            _envs.JKC,
            "jupyter-kernel-client",
            "jkc_driver.py",
            "import jupyter_kernel_client",
        ),
    ]
    for key, spec, label, driver, import_code in optional:
        if key not in wanted:
            continue
        try:
            python = str(_envs.ensure(spec, log))
        except Exception as e:
            log(f"{label}: environment failed: {e}")
            failures.append({"client": key, "scenario": "install", "error": str(e)})
            continue
        clients[key] = Client(key, label, python, driver, import_code)
    if "zmq" in wanted:
        clients["zmq"] = Client(
            "zmq",
            "ZMQ floor (jupyter_client)",
            main_python,
            "zmq_driver.py",
            "from jupyter_client.blocking import BlockingKernelClient",
        )
    return clients


def _driver_env(client: Client) -> Optional[Dict[str, str]]:
    if client.pythonpath is None:
        return None
    old = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [client.pythonpath, old])))


def run_driver(
    client: Client, scenario: str, target: _servers.Target, params: Dict[str, Any]
) -> Dict[str, Any]:
    """Run one scenario in a fresh driver process; return its result.

    Raises
    ------
    RuntimeError
        The driver failed or printed no result.
    """
    config = {
        "scenario": scenario,
        "url": target.url,
        "token": target.token,
        "runtime_dir": target.runtime_dir,
        "params": params,
        **client.extra,
    }
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [client.python, str(DRIVERS / client.driver)],
            input=json.dumps(config),
            capture_output=True,
            text=True,
            timeout=DRIVER_TIMEOUT,
            cwd=DRIVERS,
            check=False,
            env=_driver_env(client),
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"driver timed out after {DRIVER_TIMEOUT:.0f} s") from None
    wall = time.perf_counter() - start
    result: Optional[Dict[str, Any]] = None
    for line in done.stdout.splitlines():
        if line.startswith("BENCH-RESULT "):
            result = json.loads(line[len("BENCH-RESULT ") :])
    if result is None:
        tail = "\n".join(done.stderr.splitlines()[-20:])
        raise RuntimeError(f"driver exited {done.returncode} without a result:\n{tail}")
    if "error" in result:
        raise RuntimeError(result["error"] + "\n" + result.get("traceback", ""))
    result["process_wall_s"] = wall
    if result.get("client_info"):
        client.info.update(result["client_info"])
    return result


class Runner:
    """Runs jobs, records their results and failures, and keeps servers clean."""

    def __init__(self, targets: Dict[str, _servers.Target]) -> None:
        self.targets = targets
        self.failures: List[Dict[str, Any]] = []
        self.raw: Dict[str, Any] = {}
        self.loads: List[float] = []

    def has(self, scenario: str, target_key: str, client_key: str) -> bool:
        return client_key in self.raw.get(scenario, {}).get(target_key, {})

    def job(
        self,
        client: Client,
        scenario: str,
        target_key: str,
        params: Dict[str, Any],
        store: Optional[str] = None,
    ) -> Optional[Dict[str, Any]]:
        target = self.targets[target_key]
        name = store or scenario
        log(f"{name:<10} {target_key:<15} {client.label}")
        load = os.getloadavg()[0]
        self.loads.append(load)
        try:
            result = run_driver(client, scenario, target, params)
            result["loadavg_1m_before"] = load
        except Exception as e:
            lines = [line for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
            log(f"  FAILED: {lines[0]}" + (f" ... {lines[-1].strip()}" if len(lines) > 1 else ""))
            self.failures.append(
                {"client": client.key, "scenario": name, "target": target_key, "error": str(e)}
            )
            result = None
        finally:
            with contextlib.suppress(Exception):
                target.server.delete_all()
        if result is not None:
            self.raw.setdefault(name, {}).setdefault(target_key, {}).setdefault(
                client.key, []
            ).append(result)
        return result


def measure_imports(clients: Dict[str, Client], reps: int) -> Dict[str, Any]:
    """Wall time of a fresh interpreter importing each client, minus a bare one."""

    def wall(python: str, code: str) -> float:
        start = time.perf_counter()
        subprocess.run([python, "-c", code], check=True, capture_output=True)
        return time.perf_counter() - start

    seen: Dict[str, str] = {}
    for client in clients.values():
        seen.setdefault(client.import_code + client.python, client.key)
    keys = list(dict.fromkeys(seen.values()))
    result: Dict[str, Any] = {
        key: {"import_s": [], "bare_s": [], "net_s": [], "code": clients[key].import_code}
        for key in keys
    }
    for key in keys:  # warm the page cache and the bytecode caches
        wall(clients[key].python, clients[key].import_code)
    for _ in range(reps):
        for key in keys:
            client = clients[key]
            bare = wall(client.python, "pass")
            full = wall(client.python, client.import_code)
            result[key]["bare_s"].append(bare)
            result[key]["import_s"].append(full)
            result[key]["net_s"].append(full - bare)
    log("imports measured")
    return result


FULL_IMPORT = (
    "import requests, websocket, nublado_sync._client, nublado_sync._session,"
    " nublado_sync._notebooks._runner"
)
COLDSTART = Path(__file__).resolve().parent / "coldstart"


def _first_output(command: List[str], env: Dict[str, str]) -> Tuple[float, float, bool]:
    """Seconds from process start to the first line on stdout, to the exit; output as expected."""
    start = time.perf_counter()
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    ) as process:
        assert process.stdout is not None
        line = process.stdout.readline()
        first = time.perf_counter() - start
        try:
            _, err = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            raise RuntimeError(f"{command[0]} did not exit within 120 s") from None
        wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:2])} exited {process.returncode}: {err.decode()[-2000:]}"
        )
    return first, wall, line.strip() == b"1"


def _shown(args: List[str]) -> List[str]:
    """Arguments as the results show them: repository paths relative, no machine paths."""
    paths = [Path(arg) for arg in args]
    return [
        str(path.relative_to(_envs.REPO))
        if path.is_absolute() and path.is_relative_to(_envs.REPO)
        else arg
        for arg, path in zip(args, paths)
    ]


def measure_cold_start(
    target: _servers.Target, commands: Dict[str, List[str]], reps: int
) -> Dict[str, Any]:
    """Cold runs of print(1) against a running lab: time to first output and to exit.

    Each command starts a fresh interpreter that opens a session, prints the
    output as soon as it has it and deletes the session. The commands take
    turns, in an order that rotates every round, so that load on the machine
    falls on all of them alike.
    """
    env = dict(os.environ, NUBLADO_TOKEN=target.token)
    result: Dict[str, Any] = {
        key: {"first_s": [], "wall_s": [], "output_ok": True, "command": _shown(cmd[1:2])}
        for key, cmd in commands.items()
    }
    keys = list(commands)
    for _ in range(1):  # warm the page cache and the bytecode caches
        for key in keys:
            _first_output(commands[key], env)
    for round_ in range(reps):
        shift = round_ % len(keys)
        for key in keys[shift:] + keys[:shift]:
            first, wall, ok = _first_output(commands[key], env)
            result[key]["first_s"].append(first)
            result[key]["wall_s"].append(wall)
            result[key]["output_ok"] = result[key]["output_ok"] and ok
    log("cold starts measured")
    return result


def cold_start_commands(
    target: _servers.Target, clients: Dict[str, Client], installed: Optional[str]
) -> Dict[str, List[str]]:
    """The command-line tool, the equivalent nublado_sync script and the async one."""
    python = installed or sys.executable
    tool = str(Path(python).parent / "nublado-sync")
    commands = {
        "cli": [tool, "run", "--server-url", target.url, "--kernel", "lsst", "-c", "print(1)"],
        "script_ns": [python, str(COLDSTART / "oneshot_ns.py"), target.url],
    }
    if "rnc" in clients:
        commands["script_rnc"] = [
            clients["rnc"].python,
            str(COLDSTART / "oneshot_rnc.py"),
            target.url,
        ]
    return commands


def run_scale(runner: Runner, params: Dict[str, Any], clients: List[Client]) -> None:
    """Each session count, each client, ``rounds`` times, the order rotating.

    Results go under ``scale-<sessions>``; the drivers read the lab's CPU
    time (and its kernels') from ``/proc`` by the server's process id.
    """
    target = runner.targets["default-direct"]
    settings = {k: v for k, v in params.items() if k not in ("sessions", "rounds")}
    settings["server_pid"] = target.server.pid
    for count in params["sessions"]:
        for round_ in range(params["rounds"]):
            shift = round_ % max(len(clients), 1)
            for client in clients[shift:] + clients[:shift]:
                # Opening dozens of kernels at once on a small machine
                # sometimes fails (a kernel that dies while starting): such
                # a round is recorded as a failure and run once more, so
                # that each client keeps its number of rounds.
                for _attempt in range(2):
                    result = runner.job(
                        client,
                        "scale",
                        target.key,
                        {**settings, "sessions": count},
                        store=f"scale-{count}",
                    )
                    if result is not None:
                        break


def make_notebook_clients(
    clients: Dict[str, Client], args: argparse.Namespace
) -> Dict[str, Client]:
    """The notebook scenario's clients: nublado_sync's runner and cell by cell, the rest."""
    found: Dict[str, Client] = {}
    ref = clients.get(args.reference)
    if ref is not None:
        for key, label, mode in (
            ("ns_runner", "nublado_sync, notebook runner", "runner"),
            ("ns_cells", "nublado_sync, cell by cell", "cells"),
        ):
            found[key] = Client(
                key,
                label,
                ref.python,
                ref.driver,
                ref.import_code,
                {**ref.extra, "notebook_mode": mode},
            )
    if "rnc" in clients:
        found["rnc"] = clients["rnc"]
    if "nbclient" in args.clients:
        found["nbclient"] = Client(
            "nbclient",
            "nbclient over ZMQ, cell by cell",
            sys.executable,
            "nbclient_driver.py",
            "import nbclient",
        )
    return found


def run_notebooks(runner: Runner, params: Dict[str, Any], clients: List[Client]) -> None:
    """A notebook of small cells over links of each round trip, each client.

    The link is ``bench/_delay_proxy.py`` in front of the default lab (for
    the ZMQ client, in front of each of its kernel's ports). Results go
    under ``notebook``, one target per round trip (``link-<ms>``).
    """
    lab = runner.targets["default-direct"]
    port = int(lab.url.rstrip("/").rsplit(":", 1)[1])
    settings = {k: v for k, v in params.items() if k != "rtt_ms"}
    for index, rtt in enumerate(params["rtt_ms"]):
        one_way = rtt / 2000
        with _delay_proxy.delay_proxy_process(one_way, [("127.0.0.1", port)]) as ports:
            key = f"link-{rtt}"
            runner.targets[key] = _servers.Target(
                key,
                lab.lab,
                f"{rtt} ms link",
                f"http://127.0.0.1:{ports[0]}/",
                lab.token,
                lab.runtime_dir,
                lab.server,
            )
            try:
                shift = index % max(len(clients), 1)
                for client in clients[shift:] + clients[:shift]:
                    runner.job(client, "notebook", key, {**settings, "one_way_s": one_way})
            finally:
                del runner.targets[key]


def run_all(
    args: argparse.Namespace, params: Dict[str, Any], clients: Dict[str, Client]
) -> Dict[str, Any]:
    scenarios = args.scenarios
    with _servers.running_targets(proxy=not args.no_proxy) as targets:
        log("servers: " + ", ".join(f"{k} {t.url}" for k, t in targets.items()))
        runner = Runner(targets)
        ref = clients.get(args.reference)
        if "latency" in scenarios:
            for target_key in [t for t in params.get("latency_targets") or targets if t in targets]:
                for client in clients.values():
                    if client.key != "zmq":
                        runner.job(client, "latency", target_key, params["latency"])
                # The ZMQ floor goes straight to the kernel: once per lab.
                lab_direct = target_key.split("-")[0] + "-direct"
                if "zmq" in clients and not runner.has("latency", lab_direct, "zmq"):
                    runner.job(clients["zmq"], "latency", lab_direct, params["latency"])
        others = {k: c for k, c in clients.items() if k not in params.get("latency_only", [])}
        # Both nublado_sync variants where the pong matters (many small
        # messages); the reference one elsewhere.
        ws_clients = [c for k, c in others.items() if k != "zmq"]
        main_keys = (args.reference, args.reference.replace("ns_", "nsbase_"), "rnc", "jkc")
        main_clients = [c for c in others.values() if c.key in main_keys]
        if "zmq" in others:
            main_clients.append(others["zmq"])
        for name, key in (("output", "size"), ("prints", "count")):
            if name not in scenarios:
                continue
            # The clients take turns, so that load on the machine falls on
            # all of them alike.
            for _ in range(params[name]["processes"]):
                for client in main_clients:
                    runner.job(
                        client,
                        "output",
                        "default-direct",
                        {key: params[name][key], "reps": 1},
                        store=name,
                    )
        if "session" in scenarios:
            for client in main_clients:
                runner.job(client, "session", "default-direct", params["session"])
        if "concurrent" in scenarios:
            for client in [*ws_clients, *([others["zmq"]] if "zmq" in others else [])]:
                runner.job(client, "concurrent", "default-direct", params["concurrent"])
        if "scale" in scenarios:
            keys = (args.reference,) if params.get("scale_reference_only") else SCALE_CLIENTS
            run_scale(runner, params["scale"], [c for c in ws_clients if c.key in keys])
        notebook_clients: Dict[str, Client] = {}
        if "notebook" in scenarios:
            notebook_clients = make_notebook_clients(clients, args)
            run_notebooks(runner, params["notebook"], list(notebook_clients.values()))
        if "oneshot" in scenarios:
            for client in main_clients:
                for _ in range(params["oneshot"]["reps"]):
                    runner.job(client, "oneshot", "default-direct", {})
            if ref is not None:
                try:
                    commands = cold_start_commands(
                        targets["default-direct"], clients, args.installed_python
                    )
                    runner.raw["cold"] = measure_cold_start(
                        targets["default-direct"], commands, params["oneshot"]["cold_reps"]
                    )
                except Exception as e:
                    runner.failures.append(
                        {
                            "client": "cli",
                            "scenario": "cold",
                            "target": "default-direct",
                            "error": str(e),
                        }
                    )
        if "import" in scenarios:
            # One nublado_sync row: both variants import the same package.
            importers = {
                k: c
                for k, c in clients.items()
                if not (k.startswith("ns_") and k != args.reference)
            }
            if args.reference in clients:
                # `import nublado_sync` loads its modules on first use; this
                # row loads up front all that a hub session uses.
                importers["ns_full"] = Client(
                    "ns_full",
                    "nublado_sync, all a session loads",
                    clients[args.reference].python,
                    "",
                    FULL_IMPORT,
                )
            runner.raw["import"] = measure_imports(importers, params["import"]["reps"])
        nodelay = _servers.nodelay_seen(targets["nodelay-direct"].server)
        return {
            "raw": runner.raw,
            "notebook_clients": notebook_clients,
            "failures": runner.failures,
            "targets": {k: {"lab": t.lab, "via": t.via} for k, t in targets.items()},
            "nodelay_confirmed": nodelay,
            "loads": runner.loads,
        }


def machine_facts() -> Dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def server_versions() -> Dict[str, Optional[str]]:
    py = sys.executable
    return {
        name: _envs.package_version(py, name)
        for name in ("jupyter_server", "ipykernel", "tornado", "pyzmq", "websocket-client")
    }


def chp_version() -> Optional[str]:
    package = _envs.REPO / ".venv" / "chp" / "node_modules" / "configurable-http-proxy"
    with contextlib.suppress(OSError, ValueError):
        version: str = json.loads((package / "package.json").read_text())["version"]
        return version
    return None


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description=(
            "Benchmark nublado_sync against rubin-nublado-client, jupyter-kernel-client"
            " and jupyter_client over ZMQ, on real servers on 127.0.0.1."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=(
            "smoke run: tiny sizes and counts; writes bench/results/quick.json and no docs"
            " (as does any partial run)"
        ),
    )
    parser.add_argument("--out", type=Path, help="results JSON (default: results/latest.json)")
    parser.add_argument(
        "--extra",
        type=Path,
        action="append",
        default=[],
        help=(
            "with --render-only: take the scale and notebook sections from this results"
            " JSON of a partial run (repeatable)"
        ),
    )
    parser.add_argument(
        "--docs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="regenerate docs/benchmarks.rst and the chart (default: on, off with --quick)",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="regenerate the docs page and chart from the results JSON without running",
    )
    parser.add_argument(
        "--clients",
        default="ns,rnc,jkc,zmq,nbclient",
        help="comma-separated subset of ns,rnc,jkc,zmq,nbclient (default: all)",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--pong-impl",
        choices=("auto", "native", "emulated"),
        default="auto",
        help=(
            "how nublado_sync sends the pong: its prompt_acks option (native) or the"
            " driver's emulation; auto uses the option when the package has it"
        ),
    )
    parser.add_argument("--no-proxy", action="store_true", help="skip the proxy targets")
    parser.add_argument(
        "--scale-rounds", type=int, help="rounds of the scale scenario (default: 2)"
    )
    parser.add_argument(
        "--output-samples",
        type=int,
        help="processes (samples) per client for the large output and many prints",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help=(
            "also run nublado_sync from another checkout (its package imported from DIR),"
            " for before and after figures in one run"
        ),
    )
    parser.add_argument(
        "--scale-sessions",
        help="comma-separated session counts for the scale scenario (default: 1,8,32,64)",
    )
    args = parser.parse_args(argv)
    args.clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    complete = (
        set(args.clients) == {"ns", "rnc", "jkc", "zmq", "nbclient"}
        and set(args.scenarios) == set(SCENARIOS)
        and not args.no_proxy
        and args.pong_impl == "auto"
        and not args.scale_sessions
        and not args.baseline
        and not args.output_samples
        and not args.scale_rounds
    )
    if args.docs is None:
        # The page shows a complete run only, unless asked.
        args.docs = complete and not args.quick and args.out is None
    if args.out is None:
        args.out = RESULTS / ("latest.json" if complete and not args.quick else "quick.json")
    return args


def add_sections(results: Dict[str, Any], extra: Dict[str, Any], name: str) -> None:
    """Take the scale and notebook sections of another (partial) run into ``results``.

    Each section then says which run it comes from (its date and command).
    """
    meta = extra["meta"]
    origin = {"file": name, "date": meta.get("date"), "command": meta.get("command")}
    for section in ("scale", "notebook"):
        if extra.get(section):
            # That run's own names for its clients: what "nublado_sync" did
            # then is what its label says.
            labels = {k: c.get("label", k) for k, c in extra["clients"].items()}
            results[section] = {**extra[section], "origin": origin, "labels": labels}
            results["meta"]["params"][section] = meta["params"].get(section, {})
    # The large-output tables too, when that run measured them (more samples
    # than the full run takes, say); each says where it comes from.
    taken = {g["id"]: g for g in extra.get("groups", []) if g.get("section") == "output"}
    if taken:
        where = (
            f"From another run than the rest of this page: ``{origin['command']}`` on"
            f" {origin['date']} (``bench/results/{name}``)."
        )
        results["groups"] = [
            {**taken[g["id"]], "note": " ".join(filter(None, [where, taken[g["id"]].get("note")]))}
            if g["id"] in taken
            else g
            for g in results["groups"]
        ]
    for key, client in extra["clients"].items():
        results["clients"].setdefault(key, client)
    # Its failed runs too: they are why some figures have fewer rounds.
    results["meta"].setdefault("failures", []).extend(
        {**f, "run": name} for f in meta.get("failures", [])
    )


def render(results: Dict[str, Any], log_fn: Callable[[str], None] = log) -> None:
    DOCS_PAGE.write_text(_report.render_rst(results, chart=CHART.name))
    log(f"wrote {DOCS_PAGE.relative_to(_envs.REPO)}")
    try:
        plot_python = _envs.ensure(_envs.PLOT, log_fn)
        CHART.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [str(plot_python), str(_envs.BENCH / "_plot.py"), "-", str(CHART)],
            input=json.dumps(results),
            text=True,
            check=True,
        )
        log(f"wrote {CHART.relative_to(_envs.REPO)}")
    except Exception as e:
        log(f"chart failed: {e}")
        raise


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    # Unwinds the servers' context managers, so no lab or kernel is left.
    raise SystemExit(128 + signum)


def main(argv: Optional[List[str]] = None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    args = parse_args(argv)
    if args.render_only:
        results = json.loads(args.out.read_text())
        for extra in args.extra:
            add_sections(results, json.loads(extra.read_text()), extra.name)
        render(results)
        return 0
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    params = dict(QUICK if args.quick else FULL)
    if args.scale_rounds:
        params["scale"] = {**params["scale"], "rounds": args.scale_rounds}
    if args.output_samples:
        for name in ("output", "prints"):
            params[name] = {**params[name], "processes": args.output_samples}
    if args.scale_sessions:
        counts = [int(n) for n in args.scale_sessions.split(",") if n.strip()]
        params["scale"] = {**params["scale"], "sessions": counts}
    failures: List[Dict[str, Any]] = []
    native_default = _native_pong_default()
    pong_impl = args.pong_impl
    if pong_impl == "auto":
        pong_impl = "native" if native_default is not None else "emulated"
    # The nublado_sync row the ratios are taken to: the package as it comes.
    args.reference = "ns_pong" if (native_default and pong_impl == "native") else "ns_nopong"
    clients = make_clients(args.clients, failures, pong_impl, args.baseline)
    args.installed_python = None
    if not args.quick and "ns" in args.clients and "oneshot" in args.scenarios:
        # Cold starts are timed on the package as users install it; the smoke
        # run saves the install and uses the repository's .venv.
        try:
            args.installed_python = str(
                _envs.ensure(_envs.NS, log, stamp_extra=_envs.source_digest())
            )
        except Exception as e:
            log(f"installed nublado_sync environment failed, using .venv: {e}")
            failures.append({"client": "cli", "scenario": "install", "error": str(e)})
    if args.docs:
        try:
            _envs.ensure(_envs.PLOT, log)
        except Exception as e:
            log(f"matplotlib environment failed, no chart: {e}")
    run = run_all(args, params, clients)
    duration = time.monotonic() - started
    results = _report.assemble(
        raw=run["raw"],
        clients={
            k: {
                "label": c.label,
                "python": _envs.python_version(c.python),
                **c.info,
            }
            for k, c in {**run["notebook_clients"], **clients}.items()
        },
        reference=args.reference if args.reference in clients else None,
        meta={
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "duration_s": duration,
            "quick": args.quick,
            "params": params,
            "machine": {
                **machine_facts(),
                "loadavg": [load_start, os.getloadavg()[0]],
                "loadavg_jobs": [min(run["loads"] or [0]), max(run["loads"] or [0])],
            },
            "servers": server_versions(),
            "configurable_http_proxy": chp_version(),
            "targets": run["targets"],
            "nodelay_confirmed": run["nodelay_confirmed"],
            "pong_impl": pong_impl,
            "cold_start_package": (
                "installed from the repository (bench/.venvs/ns, not editable)"
                if args.installed_python
                else "the repository's .venv (editable install)"
            ),
            "prompt_acks_option": native_default is not None,
            "prompt_acks_default": native_default,
            "failures": [
                {**f, "error": scrub_paths(f["error"], args.baseline)}
                for f in failures + run["failures"]
            ],
            "command": " ".join(["bench/run", *shown_args(argv)]),
        },
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    log(f"wrote {args.out} ({duration:.0f} s)")
    if args.docs:
        render(results)
    for failure in results["meta"]["failures"]:
        log(
            f"FAILED {failure['client']} {failure['scenario']}: "
            f"{failure['error'].splitlines()[0] if failure['error'] else ''}"
        )
    return 1 if results["meta"]["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
