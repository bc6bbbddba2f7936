"""The scale scenario's figures and tables: many sessions from one process."""

from __future__ import annotations

import statistics
from typing import Any, Dict, List, Optional, Sequence, Tuple

from nublado_sync._acks import DEFAULT_ACKS

RNC = "rnc"
DASH = "\u2013"

# (result key, title, unit, scale, what "better" is: "higher" or "lower")
METRICS: Tuple[Tuple[str, str, str, float, str], ...] = (
    ("throughput_per_s", "Executions per second, all sessions together", "1/s", 1.0, "higher"),
    ("cpu_per_exec_s", "Client CPU time per execution", "µs", 1e6, "lower"),
    ("server_cpu_per_exec_s", "Server (jupyter_server) CPU time per execution", "µs", 1e6, "lower"),
    ("kernels_cpu_per_exec_s", "Kernels' CPU time per execution", "µs", 1e6, "lower"),
    ("open_all_s", "Time to open all sessions (kernels started and ready)", "s", 1.0, "lower"),
    ("close_all_s", "Time to close all sessions (sessions deleted)", "s", 1.0, "lower"),
    ("peak_rss_bytes", "Client peak RSS, the whole process", "MB", 1e-6, "lower"),
    ("library_threads", "Threads the client adds (beyond the callers' own)", "", 1.0, "lower"),
    (
        "idle_client_cpu_per_s",
        "Idle: client CPU time per second, all sessions open",
        "ms/s",
        1e3,
        "lower",
    ),
    (
        "idle_server_cpu_per_s",
        "Idle: server CPU time per second, all sessions open",
        "ms/s",
        1e3,
        "lower",
    ),
)


def _counts(raw: Dict[str, Any]) -> List[int]:
    return sorted(int(k.split("-", 1)[1]) for k in raw if k.startswith("scale-"))


def assemble(raw: Dict[str, Any], target: str = "default-direct") -> Optional[Dict[str, Any]]:
    """Medians (and samples) of every scale metric, per session count and client."""
    counts = _counts(raw)
    if not counts:
        return None
    table: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for count in counts:
        found: Dict[str, List[Dict[str, Any]]] = raw[f"scale-{count}"].get(target, {})
        per_client: Dict[str, Dict[str, Any]] = {}
        for client, results in found.items():
            entry: Dict[str, Any] = {"rounds": len(results)}
            for key, *_ in (*METRICS, ("client_cores",), ("server_cores",), ("kernels_cores",)):
                values = [r[key] for r in results if key in r]
                if values:
                    entry[key] = {"median": statistics.median(values), "samples": values}
            entry["reopened"] = sum(r.get("sessions_reopened", 0) for r in results)
            samples = [s for r in results for s in r.get("samples_s", [])]
            if samples:
                ordered = sorted(samples)
                entry["latency_median_s"] = statistics.median(ordered)
                entry["latency_p90_s"] = ordered[int(0.9 * (len(ordered) - 1))]
            per_client[client] = entry
        table[str(count)] = per_client
    return {"target": target, "sessions": counts, "table": table}


def _fmt(value: Optional[float]) -> str:
    if value is None:
        return DASH
    if float(value).is_integer() and abs(value) < 1000:
        return str(int(value))
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    if value == 0:
        return "0"
    return f"{value:.3g}"


def _value(entry: Dict[str, Any], key: str) -> Optional[float]:
    found = entry.get(key)
    if not found:
        return None
    value: float = found["median"]
    return value


def ratio(scale: Dict[str, Any], key: str, client: str, count: int) -> Optional[float]:
    """Median of ``client`` over median of rubin-nublado-client at ``count`` sessions."""
    row = scale["table"].get(str(count), {})
    ours, theirs = row.get(client), row.get(RNC)
    if not ours or not theirs:
        return None
    a, b = _value(ours, key), _value(theirs, key)
    if a is None or not b:
        return None
    return a / b


def _origin(section: Dict[str, Any]) -> List[str]:
    """A line naming the run a section comes from, when not the page's own."""
    origin = section.get("origin")
    if not origin:
        return []
    return [
        f"From another run than the rest of this page: ``{origin['command']}`` on"
        f" {origin['date']} (``bench/results/{origin['file']}``).",
        "",
    ]


def _list_table(caption: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [f".. list-table:: {caption}", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        for i, cell in enumerate(row):
            lines.append(("   * - " if i == 0 else "     - ") + (cell or " "))
    return "\n".join(lines) + "\n"


def _clients(scale: Dict[str, Any], order: Sequence[str]) -> List[str]:
    seen: List[str] = []
    for row in scale["table"].values():
        seen += [k for k in row if k not in seen]
    return sorted(seen, key=lambda k: (order.index(k) if k in order else 99, k))


def findings(scale: Dict[str, Any], labels: Dict[str, str], reference: Optional[str]) -> List[str]:
    """Sentences on the goals: throughput, client CPU, threads."""
    if not reference:
        return []
    out = []
    counts = scale["sessions"]
    parts = []
    for count in counts:
        t = ratio(scale, "throughput_per_s", reference, count)
        c = ratio(scale, "cpu_per_exec_s", reference, count)
        if t is not None and c is not None:
            parts.append(f"{count}: {t:.2f}{chr(215)} and {c:.2f}{chr(215)}")
    if parts:
        out.append(
            f"Many sessions from one process, {labels.get(reference, reference)} against"
            " rubin-nublado-client, executions per second and client CPU per execution"
            " (ratios of medians, by session count): " + "; ".join(parts) + "."
        )
    threads = []
    for count in counts:
        entry = scale["table"].get(str(count), {}).get(reference)
        if entry and _value(entry, "library_threads") is not None:
            threads.append(f"{_fmt(_value(entry, 'library_threads'))} at {count}")
    if threads:
        out.append(
            f"Threads {labels.get(reference, reference)} adds beyond the callers' own: "
            + ", ".join(threads)
            + "."
        )
    return out


def _acks_note(labels: Dict[str, str], clients: Sequence[str]) -> List[str]:
    """What the nublado_sync variants acknowledge, when the run has ``AckPolicy``."""
    if not any("early acks" in labels.get(c, "") for c in clients):
        return []
    return [
        "nublado_sync (early acks) is the package's default ``AckPolicy``: a pong frame"
        " after a message when more of the reply is awaited and nothing more has arrived,"
        f" while at most {DEFAULT_ACKS.max_calls} calls of the process are in flight;"
        " above that, no ACK, and each call is woken once for its whole reply rather than"
        " once per message (``SO_RCVLOWAT``, see :ref:`early-acks`)."
        " nublado_sync (no early acks) is ``prompt_acks=False``, woken once per reply at"
        " any load. The baseline, where"
        " present, is the package before ``AckPolicy``, whose pong went out at any load.",
        "",
    ]


def _reopened_note(
    scale: Dict[str, Any], labels: Dict[str, str], clients: Sequence[str]
) -> List[str]:
    """Which clients opened sessions again after a kernel died while starting."""
    notes = []
    for client in clients:
        counts = [
            f"{entry['reopened']} at {n}"
            for n in scale["sessions"]
            for entry in [scale["table"].get(str(n), {}).get(client) or {}]
            if entry.get("reopened")
        ]
        if counts:
            notes.append(f"{labels.get(client, client)}: {', '.join(counts)} sessions")
    if not notes:
        return []
    return [
        "A crowded lab sometimes loses a kernel while it starts. The nublado_sync driver"
        " then opens a new session once, as ``run_notebooks`` does, and its time to open"
        " all includes that; sessions opened again, over all rounds: " + "; ".join(notes) + ".",
        "",
    ]


def render(
    scale: Dict[str, Any],
    labels: Dict[str, str],
    order: Sequence[str],
    reference: Optional[str],
    params: Dict[str, Any],
) -> List[str]:
    """The section's lines of reStructuredText."""
    counts = scale["sessions"]
    clients = _clients(scale, order)
    header = ["Client", *(f"{n} session{'s' if n > 1 else ''}" for n in counts)]
    lines = [
        "Many sessions",
        "-------------",
        "",
        *_origin(scale),
        f"{', '.join(str(n) for n in counts)} sessions at once from one process, each with"
        " its own kernel on the default lab (direct): nublado_sync with one thread per"
        " session (the caller's), rubin-nublado-client with one task per session on one"
        f" event loop. Every session runs ``pass`` {params.get('runs')} times after"
        f" {params.get('warmup')} warm-up runs, then all sit idle for"
        f" {params.get('idle_s')} s, then all close; each client and count"
        f" {params.get('rounds')} times, a fresh process each time, the order of the clients"
        " rotating. Figures are medians over those rounds. The lab's CPU time (the"
        " ``jupyter_server`` process) and its kernels' (its child processes) are read from"
        " ``/proc`` over the measured runs. The machine has 2 cores and was shared with"
        " other work: compare the clients within a column, not across runs.",
        "",
        *_acks_note(labels, clients),
        *_reopened_note(scale, labels, clients),
    ]
    for key, title, unit, factor, better in METRICS:
        rows = []
        for client in clients:
            cells = [labels.get(client, client) + (" [ref]" if client == reference else "")]
            for n in counts:
                entry = scale["table"].get(str(n), {}).get(client)
                value = _value(entry, key) if entry else None
                cells.append(_fmt(None if value is None else value * factor))
            rows.append(cells)
        if reference and RNC in clients and key not in ("library_threads",):
            cells = [f"{labels.get(reference, reference)} {chr(247)} rubin-nublado-client"]
            for n in counts:
                r = ratio(scale, key, reference, n)
                cells.append(DASH if r is None else f"{r:.2f}")
            rows.append(cells)
        caption = (
            f"{title} ({unit}; {better} is better)" if unit else f"{title} ({better} is better)"
        )
        lines += [_list_table(caption, header, rows)]
    if len(counts) > 1:
        base = counts[0]
        rows = []
        for client in clients:
            cells = [labels.get(client, client)]
            first = scale["table"].get(str(base), {}).get(client)
            for n in counts[1:]:
                entry = scale["table"].get(str(n), {}).get(client)
                a = _value(entry, "peak_rss_bytes") if entry else None
                b = _value(first, "peak_rss_bytes") if first else None
                cells.append(DASH if a is None or b is None else _fmt((a - b) / (n - base) / 1e6))
            rows.append(cells)
        lines += [
            f"What one more session costs in client memory: the peak RSS at N sessions less"
            f" the peak at {base}, divided by the sessions added (the interpreter and"
            " libraries, loaded once, drop out).",
            "",
            _list_table(
                "Client peak RSS per added session (MB; lower is better)",
                ["Client", *(f"{n} sessions" for n in counts[1:])],
                rows,
            ),
        ]
    rows = []
    for client in clients:
        cells = [labels.get(client, client)]
        for n in counts:
            entry = scale["table"].get(str(n), {}).get(client)
            if not entry:
                cells.append(DASH)
                continue
            parts = [_value(entry, k) for k in ("client_cores", "server_cores", "kernels_cores")]
            cells.append(" / ".join(_fmt(p) for p in parts))
        rows.append(cells)
    lines += [
        "Where the limit is: cores kept busy during the measured runs by the client, the"
        " lab's server process and its kernels together (client / server / kernels; the"
        " machine has 2). A Python process runs Python code on one core at a time, so a"
        " client or a server near 1 is the limit; a sum near 2 means the machine is.",
        "",
        _list_table("Cores busy while running: client / server / kernels", header, rows),
    ]
    return lines
