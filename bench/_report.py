"""Turn the drivers' raw results into figures, ratios and the docs page."""

from __future__ import annotations

import math
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from . import _report_notebook, _report_scale, _stats

ZMQ = "zmq"
DASH = "\u2013"  # en dash, for ranges
TIMES = "\u00d7"  # multiplication sign, for ratios
TARGET_TITLES = {
    "default-direct": "default lab, direct",
    "default-proxy": "default lab, through configurable-http-proxy",
    "nodelay-direct": "TCP_NODELAY lab, direct",
    "nodelay-proxy": "TCP_NODELAY lab, through configurable-http-proxy",
}
CLIENT_ORDER = (
    "ns_runner",
    "ns_cells",
    "ns_pong",
    "ns_full",
    "ns_nopong",
    "nsbase_pong",
    "nsbase_nopong",
    "rnc",
    "jkc",
    ZMQ,
    "nbclient",
    "cli",
    "script_ns",
    "script_rnc",
)
COLD_LABELS = {
    "cli": "nublado-sync CLI",
    "script_ns": "nublado_sync script",
    "script_rnc": "rubin-nublado-client script",
}


def _order(keys: Iterable[str]) -> List[str]:
    keys = list(keys)
    return sorted(keys, key=lambda k: (CLIENT_ORDER.index(k) if k in CLIENT_ORDER else 99, k))


def _results(raw: Dict[str, Any], scenario: str, target: str) -> Dict[str, List[Dict[str, Any]]]:
    found: Dict[str, List[Dict[str, Any]]] = raw.get(scenario, {}).get(target, {})
    return found


def _group(
    gid: str,
    section: str,
    title: str,
    unit: str,
    scale: float,
    rows: Mapping[str, Sequence[float]],
    reference: Optional[str],
    note: str = "",
) -> Optional[Dict[str, Any]]:
    """One table: per client, samples (in seconds or bytes) scaled to ``unit``."""
    rows = {k: list(v) for k, v in rows.items() if v}
    if not rows:
        return None
    out_rows: Dict[str, Any] = {}
    for key in _order(rows):
        samples = rows[key]
        entry: Dict[str, Any] = {"summary": _stats.summary([s * scale for s in samples])}
        entry["samples"] = [round(s * scale, 6) for s in samples]
        entry["ratio_to_nublado_sync"] = (
            _stats.ratio(samples, rows[reference]) if reference in rows else None
        )
        entry["ratio_to_zmq"] = _stats.ratio(samples, rows[ZMQ]) if ZMQ in rows else None
        out_rows[key] = entry
    return {
        "id": gid,
        "section": section,
        "title": title,
        "unit": unit,
        "note": note,
        "reference": reference,
        "rows": out_rows,
    }


def assemble(
    *,
    raw: Dict[str, Any],
    clients: Dict[str, Dict[str, Any]],
    reference: Optional[str],
    meta: Dict[str, Any],
) -> Dict[str, Any]:
    """Build the results document: metadata, clients and the figure groups."""
    groups: List[Optional[Dict[str, Any]]] = []
    ms, us, mb = 1e3, 1e6, 1 / 1e6
    # Latency, per target. The ZMQ floor never goes through the WebSocket or
    # the proxy: the proxy tables reuse the same lab's direct ZMQ figures.
    for target, title in TARGET_TITLES.items():
        found = _results(raw, "latency", target)
        rows = {k: r[0]["samples_s"] for k, r in found.items()}
        lab = target.split("-")[0]
        zmq = _results(raw, "latency", f"{lab}-direct").get(ZMQ)
        if ZMQ not in rows and zmq and rows:
            rows[ZMQ] = zmq[0]["samples_s"]
        groups.append(
            _group(
                f"latency-{target}",
                "latency",
                f'run_python("pass") round trip, {title}',
                "ms",
                ms,
                rows,
                reference,
            )
        )
    found = _results(raw, "latency", "default-direct")
    groups.append(
        _group(
            "cpu-per-exec",
            "cpu",
            'Client CPU time per run_python("pass"), default lab, direct',
            "µs",
            us,
            {k: r[0]["cpu_per_exec_blocks_s"] for k, r in found.items()},
            reference,
            "User plus system time of the client process (all its threads), per"
            " execution, measured over blocks of consecutive runs; the spread is"
            " across blocks.",
        )
    )
    for scenario, what in (("output", "One large output"), ("prints", "Many small prints")):
        found = _results(raw, scenario, "default-direct")
        if not found:
            continue
        size = meta["params"][scenario].get("size") or meta["params"][scenario].get("count")
        label = (
            f"{size / 1e6:g} MB in one print" if scenario == "output" else f"{size:,} print() calls"
        )
        incomplete = [k for k, rs in found.items() if not all(r["complete"] for r in rs)]
        groups.append(
            _group(
                f"{scenario}-wall",
                scenario,
                f"{what} ({label}): wall time",
                "s",
                1.0,
                {k: [r["wall_s"][0] for r in rs] for k, rs in found.items()},
                reference,
                (
                    "Output INCOMPLETE for: " + ", ".join(incomplete) + "."
                    if incomplete
                    else "Every client received the whole output."
                ),
            )
        )
        groups.append(
            _group(
                f"{scenario}-cpu",
                scenario,
                f"{what} ({label}): client CPU time",
                "s",
                1.0,
                {k: [r["cpu_s"][0] for r in rs] for k, rs in found.items()},
                reference,
            )
        )
        groups.append(
            _group(
                f"{scenario}-rss",
                scenario,
                f"{what} ({label}): client peak RSS",
                "MB",
                mb,
                {k: [r["peak_rss_bytes"] for r in rs] for k, rs in found.items()},
                reference,
                "Peak resident set size of the client process over its whole life"
                " (one process per sample: start, open a session, one warm-up run,"
                " the measured run).",
            )
        )
        groups.append(
            _group(
                f"{scenario}-rss-growth",
                scenario,
                f"{what} ({label}): client peak RSS above its RSS before the run",
                "MB",
                mb,
                {
                    k: [r["peak_rss_bytes"] - r["rss_before_bytes"] for r in rs]
                    for k, rs in found.items()
                },
                reference,
                "What the output itself costs: the peak above the process's RSS before"
                " the run (its interpreter and libraries; for nublado_sync most of that is"
                " requests and the TLS libraries it loads). A client that turns a frame of"
                " N bytes into a str of N characters holds both at one moment, so no"
                " client goes below twice the output here."
                if scenario == "output"
                else "",
            )
        )
    found = _results(raw, "session", "default-direct")
    groups.append(
        _group(
            "session-open",
            "session",
            'Session open until the first run_python("pass") has returned',
            "s",
            1.0,
            {k: r[0]["open_to_first_result_s"] for k, r in found.items()},
            reference,
            "What ``open`` waits for differs (nublado_sync waits for the kernel to"
            " answer, rubin-nublado-client only for the WebSocket), so the first"
            " execution is included. Kernel start-up dominates.",
        )
    )
    groups.append(
        _group(
            "session-close",
            "session",
            "Session close (WebSocket closed and the session or kernel deleted)",
            "s",
            1.0,
            {k: r[0]["close_s"] for k, r in found.items()},
            reference,
        )
    )
    imports = raw.get("import", {})
    groups.append(
        _group(
            "import",
            "startup",
            "Import time (fresh interpreter importing the client, minus a bare one)",
            "ms",
            ms,
            {k: v["net_s"] for k, v in imports.items()},
            reference,
            "Each client in its own environment and interpreter (rubin-nublado-client"
            " on Python 3.13, the others on 3.11). ``import nublado_sync`` loads each"
            " module on first use; the row *all a session loads* imports up front"
            " requests, websocket-client and every module a hub session uses (structlog"
            " loads only when a message is logged).",
        )
    )
    found = _results(raw, "oneshot", "default-direct")
    groups.append(
        _group(
            "oneshot",
            "startup",
            "Cold one-shot: new process, import, open a session, print(1), close",
            "s",
            1.0,
            {k: [r["process_wall_s"] for r in rs] for k, rs in found.items()},
            reference,
            "Each benchmark driver as a fresh process (its start-up includes reading"
            " its configuration).",
        )
    )
    cold = raw.get("cold") or {}
    cold_note = (
        "``nublado-sync run --server-url URL --kernel lsst -c 'print(1)'`` against a"
        " running lab, and the equivalent scripts (bench/coldstart/): a fresh"
        " interpreter imports the client, creates a session, runs the code, writes"
        " its output as soon as it has it and deletes the session. The three take"
        " turns; ratios are to the command-line tool. The command sends the"
        " request that starts the kernel once requests is imported and loads the"
        " rest while the kernel starts; from that request to the first output"
        " every client waits about as long, for the server to start the kernel"
        " and answer, which is what keeps the ratio from going much lower."
    )
    for gid, field, what in (
        ("cold-first", "first_s", "to the first output"),
        ("cold-wall", "wall_s", "to the exit"),
    ):
        groups.append(
            _group(
                gid,
                "startup",
                f"Cold run of print(1), {what}",
                "s",
                1.0,
                {k: v[field] for k, v in cold.items()},
                "cli",
                cold_note if field == "first_s" else "",
            )
        )
    found = _results(raw, "concurrent", "default-direct")
    if found:
        threads = meta["params"]["concurrent"]["threads"]
        groups.append(
            _group(
                "concurrent-latency",
                "concurrent",
                f'run_python("pass") round trip with {threads} sessions running at once',
                "ms",
                ms,
                {k: r[0]["samples_s"] for k, r in found.items()},
                reference,
                f"{threads} threads, each with its own session and kernel, all running"
                " at once (rubin-nublado-client: as many tasks on one event loop).",
            )
        )
        groups.append(
            _group(
                "concurrent-throughput",
                "concurrent",
                f"Executions per second, all {threads} sessions together",
                "1/s",
                1.0,
                {k: [r[0]["throughput_per_s"]] for k, r in found.items()},
                reference,
            )
        )
        groups.append(
            _group(
                "concurrent-open",
                "concurrent",
                f"Opening {threads} sessions at once, until all are open",
                "s",
                1.0,
                {k: [r[0]["open_all_s"]] for k, r in found.items()},
                reference,
            )
        )
    for c in clients.values():
        c.setdefault("label", "")
    all_clients = dict(clients)
    for key in cold:
        all_clients[key] = {"label": COLD_LABELS.get(key, key), "command": cold[key]["command"]}
    if "ns_full" in imports:
        all_clients["ns_full"] = {"label": "nublado_sync, all a session loads"}
    return {
        "meta": meta,
        "reference": reference,
        "clients": all_clients,
        "scale": _report_scale.assemble(raw),
        "notebook": _report_notebook.assemble(raw),
        "groups": [g for g in groups if g is not None],
        "raw_extra": {"import": imports, "cold": cold},
    }


# Rendering ---------------------------------------------------------------


def fmt(value: Optional[float]) -> str:
    """A number with three significant digits, or a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def fmt_ratio(entry: Optional[Dict[str, Any]], self_row: bool) -> str:
    if self_row:
        return "1"
    if not entry:
        return DASH
    text = f"{entry['median']:.2f}" if entry["median"] < 10 else f"{entry['median']:.1f}"
    if entry.get("ci90"):
        lo, hi = entry["ci90"]
        text += f" ({lo:.2f}{DASH}{hi:.2f})"
    return text


def _label(results: Dict[str, Any], key: str) -> str:
    label: str = results["clients"].get(key, {}).get("label") or key
    if key == results.get("reference"):
        label += " [ref]"
    return label


def _list_table(caption: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [f".. list-table:: {caption}", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        first = True
        for cell in row:
            lines.append(("   * - " if first else "     - ") + (cell or " "))
            first = False
    return "\n".join(lines) + "\n"


def _group_table(results: Dict[str, Any], group: Dict[str, Any]) -> str:
    reference = group.get("reference", results.get("reference"))
    base = "nublado_sync"
    if reference in COLD_LABELS:
        base = COLD_LABELS[reference]
    unit = group["unit"]
    header = [
        "Client",
        f"Median ({unit})",
        f"p90 ({unit})",
        f"Spread: p10{DASH}p90 ({unit})",
        f"{TIMES} {base} (90% CI)",
        f"{TIMES} ZMQ (90% CI)",
        "n",
    ]
    rows = []
    for key, entry in group["rows"].items():
        s = entry["summary"]
        spread = f"{fmt(s['p10'])}{DASH}{fmt(s['p90'])}" if s["n"] > 1 else f"{DASH}"
        rows.append(
            [
                _label(results, key),
                fmt(s["median"]),
                fmt(s["p90"]) if s["n"] > 1 else f"{DASH}",
                spread,
                fmt_ratio(entry.get("ratio_to_nublado_sync"), key == reference),
                fmt_ratio(entry.get("ratio_to_zmq"), key == ZMQ),
                str(s["n"]),
            ]
        )
    text = _list_table(group["title"], header, rows)
    if group.get("note"):
        text = group["note"] + "\n\n" + text
    return text


def _median(results: Dict[str, Any], gid: str, key: str) -> Optional[float]:
    for group in results["groups"]:
        if group["id"] == gid and key in group["rows"]:
            value: float = group["rows"][key]["summary"]["median"]
            return value
    return None


def _group_by_id(results: Dict[str, Any], gid: str) -> Optional[Dict[str, Any]]:
    for group in results["groups"]:
        if group["id"] == gid:
            found: Dict[str, Any] = group
            return found
    return None


def _glance_table(results: Dict[str, Any]) -> str:
    targets = [t for t in TARGET_TITLES if _group_by_id(results, f"latency-{t}")]
    keys: List[str] = []
    for t in targets:
        group = _group_by_id(results, f"latency-{t}")
        assert group is not None
        keys += [k for k in group["rows"] if k not in keys]
    rows = []
    for key in _order(keys):
        cells = [_label(results, key)]
        for t in targets:
            group = _group_by_id(results, f"latency-{t}")
            entry = group["rows"].get(key) if group else None
            if entry is None:
                cells.append(DASH)
            else:
                s = entry["summary"]
                direct = key == ZMQ and t.endswith("-proxy")
                cells.append(
                    f"{fmt(s['median'])} ({fmt(s['p90'])})" + (" [direct]" if direct else "")
                )
        rows.append(cells)
    header = ["Client", *(TARGET_TITLES[t] for t in targets)]
    return _list_table('Median (p90) round trip of run_python("pass"), ms', header, rows)


def _failure_cause(error: str) -> str:
    """The line of a recorded failure that says what went wrong.

    A driver's traceback ends with the exception that stopped it; a worker's
    failure shows as a broken barrier in the others, so that one is skipped.
    """
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    causes = [
        line
        for line in lines
        if re.match(r"^[\w.]+(Error|Exception): ", line) and "BrokenBarrierError" not in line
    ]
    return causes[-1] if causes else (lines[0] if lines else "?")


def _pong_table(results: Dict[str, Any]) -> Optional[str]:
    rows = []
    for target, title in TARGET_TITLES.items():
        group = _group_by_id(results, f"latency-{target}")
        if not group or "ns_pong" not in group["rows"] or "ns_nopong" not in group["rows"]:
            continue
        on = group["rows"]["ns_pong"]
        off = group["rows"]["ns_nopong"]
        ratio = _stats.ratio(on["samples"], off["samples"])
        rows.append(
            [
                title,
                f"{fmt(off['summary']['median'])} ({fmt(off['summary']['p90'])})",
                f"{fmt(on['summary']['median'])} ({fmt(on['summary']['p90'])})",
                fmt_ratio(ratio, False),
            ]
        )
    cpu = _group_by_id(results, "cpu-per-exec")
    if cpu and "ns_pong" in cpu["rows"] and "ns_nopong" in cpu["rows"]:
        on, off = cpu["rows"]["ns_pong"], cpu["rows"]["ns_nopong"]
        rows.append(
            [
                "client CPU per execution (µs), default lab, direct",
                fmt(off["summary"]["median"]),
                fmt(on["summary"]["median"]),
                fmt_ratio(_stats.ratio(on["samples"], off["samples"]), False),
            ]
        )
    if not rows:
        return None
    return _list_table(
        "nublado_sync without and with the pong after each message: median (p90), ms",
        ["Where", "No pong", "Pong", "Pong ÷ no pong (90% CI)"],
        rows,
    )


def _findings(results: Dict[str, Any]) -> List[str]:
    """Sentences generated from the numbers of this run."""
    out = []
    labels = {k: results["clients"].get(k, {}).get("label", k) for k in results["clients"]}
    d = {k: _median(results, "latency-default-direct", k) for k in labels}
    parts = [f"{labels[k]} {fmt(v)} ms" for k, v in d.items() if v is not None]
    if parts:
        out.append("Default lab, direct, median ``pass`` round trip: " + ", ".join(parts) + ".")
    n = {k: _median(results, "latency-nodelay-direct", k) for k in labels}
    parts = [f"{labels[k]} {fmt(v)} ms" for k, v in n.items() if v is not None and k != ZMQ]
    if parts:
        out.append("With ``TCP_NODELAY`` forced on in the lab: " + ", ".join(parts) + ".")
    p = {k: _median(results, "latency-default-proxy", k) for k in labels}
    parts = [f"{labels[k]} {fmt(v)} ms" for k, v in p.items() if v is not None and k != ZMQ]
    if parts:
        out.append("Default lab through configurable-http-proxy: " + ", ".join(parts) + ".")
    for scenario, what in (("output", "large output"), ("prints", "many prints")):
        wall = _group_by_id(results, f"{scenario}-wall")
        rss = _group_by_id(results, f"{scenario}-rss")
        if wall and rss:
            parts = [
                f"{labels.get(k, k)} {fmt(e['summary']['median'])} s and"
                f" {fmt(rss['rows'][k]['summary']['median'])} MB"
                for k, e in wall["rows"].items()
                if k in rss["rows"]
            ]
            out.append(f"The {what}, wall time and peak RSS: " + ", ".join(parts) + ".")
    wall = _group_by_id(results, "output-wall")
    jkc = wall and wall["rows"].get("jkc", {}).get("ratio_to_nublado_sync")
    if jkc and jkc["median"] > 5:
        out.append(
            "jupyter-kernel-client is slow on the large output because it speaks the"
            " legacy JSON protocol by default: text frames, which websocket-client checks"
            " for valid UTF-8 in pure Python (the v1 protocol's binary frames are not"
            " checked)."
        )
    imports = _group_by_id(results, "import")
    ref = results.get("reference")
    if imports and ref in imports["rows"]:
        parts = [
            f"{labels.get(k, k) if k != ref else '``nublado_sync``'}"
            f" {fmt(e['summary']['median'])} ms"
            for k, e in imports["rows"].items()
        ]
        out.append("Import time: " + ", ".join(parts) + ".")
    first = _group_by_id(results, "cold-first")
    if first and "cli" in first["rows"]:
        cli = first["rows"]["cli"]["summary"]
        text = (
            "A cold ``nublado-sync run --server-url URL -c 'print(1)'`` prints its output"
            f" {fmt(cli['median'])} s after it starts (p10{DASH}p90 {fmt(cli['p10'])}{DASH}"
            f"{fmt(cli['p90'])} s), interpreter start, session and kernel start included"
        )
        rnc = first["rows"].get("script_rnc")
        if rnc:
            ratio = _stats.ratio(first["rows"]["cli"]["samples"], rnc["samples"])
            rnc_median = fmt(rnc["summary"]["median"])
            text += (
                f"; the equivalent rubin-nublado-client script takes {rnc_median} s,"
                f" so the tool is at {fmt_ratio(ratio, False)}{TIMES} of it"
            )
        out.append(text + ".")
    throughput = _group_by_id(results, "concurrent-throughput")
    if throughput:
        threads = results["meta"]["params"]["concurrent"]["threads"]
        parts = [
            f"{labels.get(k, k)} {fmt(e['summary']['median'])}"
            for k, e in throughput["rows"].items()
        ]
        out.append(f"{threads} sessions at once, executions per second: " + ", ".join(parts) + ".")
    close = _group_by_id(results, "session-close")
    if close and "jkc" in close["rows"] and close["rows"]["jkc"]["summary"]["median"] > 5:
        out.append(
            f"jupyter-kernel-client takes {fmt(close['rows']['jkc']['summary']['median'])} s"
            " to close a session: its ``stop()`` joins its websocket-client thread, whose"
            " dispatcher notices the close only when its 10 s ``select`` times out."
        )
    scale = results.get("scale")
    if scale:
        out += _report_scale.findings(
            scale, {**labels, **scale.get("labels", {})}, results.get("reference")
        )
    notebook = results.get("notebook")
    if notebook:
        out += _report_notebook.findings(notebook, labels)
    machine = results["meta"].get("machine", {})
    load = machine.get("loadavg_jobs") or machine.get("loadavg")
    if load:
        out.append(
            f"The 1-minute load average ranged from {load[0]:.2f} to {load[1]:.2f} (taken"
            f" before each driver) on {machine.get('cores')} cores; the benchmark itself"
            " keeps about 1 busy, more in the concurrent scenario, and other work on"
            " the machine shows up as spread."
        )
    return out


def render_rst(results: Dict[str, Any], *, chart: str) -> str:
    meta = results["meta"]
    ref = results.get("reference")
    ref_label = results["clients"].get(ref, {}).get("label", "nublado_sync") if ref else f"{DASH}"
    title = "Benchmarks"
    lines = [
        ".. This page is generated by bench/run (bench/_report.py); edits are overwritten.",
        "",
        title,
        "=" * len(title),
        "",
        "How ``nublado_sync`` compares with the other ways to run code in a Jupyter"
        " kernel from Python, measured in one run, on the same servers and the same"
        " kernel: the asynchronous ``rubin-nublado-client``, the synchronous"
        " ``jupyter-kernel-client`` from PyPI, and the floor, ``jupyter_client``'s"
        " ``BlockingKernelClient`` talking ZMQ straight to the kernel (no WebSocket,"
        " no server in the path).",
        "",
        "Every figure is given with its spread and as a ratio to the same figure for"
        f" ``nublado_sync`` (the row marked [ref]: {ref_label}, the package's default)"
        " and for the ZMQ floor, from the same run. A ratio below 1 is faster or"
        " smaller than the reference. The interval after a ratio is a 90% bootstrap"
        " interval of the ratio of the medians.",
        "",
        "Regenerate this page, its chart and ``bench/results/latest.json`` with::",
        "",
        "   bench/run",
        "",
        "(``bench/run --quick`` is a smoke run of a few seconds per scenario;"
        " ``bench/run --help`` lists the options.)",
        "",
        "The run",
        "-------",
        "",
    ]
    machine = meta.get("machine", {})
    servers = meta.get("servers", {})
    clients = results["clients"]
    facts = [
        ("Date", meta.get("date", "")),
        ("Command", f"``{meta.get('command', 'bench/run')}``"),
        ("Duration", f"{meta.get('duration_s', 0) / 60:.1f} min"),
        (
            "Machine",
            f"{machine.get('cores')} cores ({machine.get('cpu')}), Linux {machine.get('kernel')}",
        ),
        (
            "Servers",
            ", ".join(f"{k} {v}" for k, v in servers.items() if v)
            + f", configurable-http-proxy {meta.get('configurable_http_proxy') or '?'}",
        ),
    ]
    for key in _order(clients):
        if key in COLD_LABELS or key == "ns_full":
            continue  # not clients of their own: see the cold-start line
        c = clients[key]
        extra = f", {c['protocol']} protocol" if c.get("protocol") else ""
        facts.append(
            (
                c.get("label", key),
                f"{c.get('version', '?')} on Python {c.get('python', '?')}{extra}",
            )
        )
    if meta.get("cold_start_package"):
        facts.append(
            (
                "Cold start",
                "the command and the nublado_sync script run on the package "
                + meta["cold_start_package"],
            )
        )
    pong_impl = meta.get("pong_impl")
    facts.append(
        (
            "Pong",
            "the package's ``prompt_acks`` option"
            if pong_impl == "native"
            else "emulated by the benchmark driver (the package had no option yet)",
        )
    )
    nodelay = meta.get("nodelay_confirmed")
    facts.append(
        (
            "TCP_NODELAY lab",
            "confirmed on every kernel WebSocket (the lab logged the socket option)"
            if nodelay
            else "NOT confirmed (see the failures)",
        )
    )
    for name, value in facts:
        lines += [f":{name}: {value}"]
    lines += ["", ".. image:: _static/" + chart, "   :alt: Benchmark chart", ""]
    findings = _findings(results)
    if findings:
        lines += ["In short", "--------", ""]
        lines += [f"- {f}" for f in findings]
        lines += [""]
    lines += ["Latency", "-------", ""]
    lines += [
        'Round trip of ``run_python("pass")`` (or the client\'s equivalent: send an'
        " ``execute_request``, wait for the ``execute_reply`` and the ``idle`` status),"
        f" {meta['params']['latency']['runs']} runs after"
        f" {meta['params']['latency']['warmup']} warm-up runs, one session per client"
        " and target. The default lab leaves Nagle's algorithm on its kernel"
        " WebSocket; the second lab forces ``TCP_NODELAY`` on. The ZMQ floor is"
        " measured straight to a kernel of each lab (the proxy is not in its path).",
        "",
        _glance_table(results),
    ]
    pong = _pong_table(results)
    if pong:
        lines += [
            "The cure for the delayed-ACK stall on the client side: an unsolicited"
            " pong frame after each message received while a reply is awaited, when"
            " nothing more is waiting to be read, gives the client's TCP stack a"
            " segment to carry its ACK at once.",
            "",
            pong,
        ]
    sections = [
        ("latency", None),
        ("cpu", "Client CPU time"),
        ("output", "Large output"),
        ("prints", "Many small prints"),
        ("session", "Opening and closing a session"),
        ("startup", "Import and cold start"),
        ("concurrent", "Concurrent sessions"),
    ]
    for section, heading in sections:
        groups = [g for g in results["groups"] if g["section"] == section]
        if not groups:
            continue
        if heading:
            lines += [heading, "-" * len(heading), ""]
        for group in groups:
            lines += [_group_table(results, group)]
    scale = results.get("scale")
    if scale:
        labels = {k: c.get("label", k) for k, c in results["clients"].items()}
        labels.update(scale.get("labels", {}))
        lines += _report_scale.render(
            scale, labels, CLIENT_ORDER, ref, meta["params"].get("scale", {})
        )
    notebook = results.get("notebook")
    if notebook:
        labels = {k: c.get("label", k) for k, c in results["clients"].items()}
        labels.update(notebook.get("labels", {}))
        lines += _report_notebook.render(notebook, labels, CLIENT_ORDER)
    lines += _method_notes(meta)
    failures = meta.get("failures") or []
    lines += ["Failures", "--------", ""]
    if failures:
        for f in failures:
            where = f" on {f['target']}" if f.get("target") else ""
            run = f" (``bench/results/{f['run']}``)" if f.get("run") else ""
            lines.append(
                f"- {f['client']}, {f['scenario']}{where}{run}:"
                f" ``{_failure_cause(f.get('error') or '')}``"
            )
    else:
        lines.append("None: every client ran every scenario.")
    lines.append("")
    return "\n".join(lines)


def _method_notes(meta: Dict[str, Any]) -> List[str]:
    params = meta["params"]
    return [
        "How it is measured",
        "------------------",
        "",
        "- One ``jupyter_server`` per lab on 127.0.0.1 (started by"
        " ``tests/jupyter_servers.py``: the ``lsst`` kernelspec, token authentication,"
        " the IOPub rate limit off), and one configurable-http-proxy (the npm one that"
        " JupyterHub runs) in front of each. ``TCP_NODELAY`` is forced on by a kernel"
        " WebSocket connection class that calls tornado's ``set_nodelay(True)``"
        " (``bench/serverext/_bench_nodelay.py``).",
        "- Each client runs in its own process (``bench/drivers/``), one scenario per"
        " process, one after the other; every session gets a new kernel of the same"
        " kernelspec.",
        "- ``rubin-nublado-client`` 16.1 needs Python 3.13 and a Rubin hub with service"
        " discovery; the driver uses its own ``JupyterLabSessionManager`` and"
        " ``JupyterLabSession`` with a stand-in for its internal HTTP client that maps"
        " its lab routes onto the plain server.",
        "- ``jupyter-kernel-client`` is used through its ``JupyterKernelClient``, with"
        " its defaults (the legacy JSON WebSocket protocol).",
        "- The ZMQ floor starts its kernel through the same server's REST API and"
        " reads the connection file from the server's runtime directory, then uses"
        " ``BlockingKernelClient.execute_interactive`` (heartbeat channel off, like"
        " the WebSocket clients). It is the floor of the path (no WebSocket, no"
        " server relaying), not of client overhead: ``jupyter_client`` signs and"
        " checks the HMAC of every message (the server does that for WebSocket"
        " clients), and its blocking calls each run its asyncio implementation to"
        " completion, so its CPU time per execution is higher.",
        f"- Large output: ``print('x' * {params['output']['size'] - 1})``, one message;"
        f" many prints: ``for i in range({params['prints']['count']}): print(i)``"
        " (the kernel batches them into stream messages). Each sample is a fresh"
        f" process ({params['output']['processes']} per client); every client's output"
        " was checked to arrive complete"
        " (``complete`` in the JSON).",
        "- CPU time is the client process's user plus system time (all threads);"
        " peak RSS is its ``ru_maxrss``.",
        "- Results, with every sample, are in ``bench/results/latest.json``.",
        "",
    ]


def targets_in(results: Dict[str, Any]) -> List[Tuple[str, str]]:
    return [(t, TARGET_TITLES[t]) for t in TARGET_TITLES if _group_by_id(results, f"latency-{t}")]
