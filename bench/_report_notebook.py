"""The notebook scenario's figures and tables: a notebook of small cells over a slow link."""

from __future__ import annotations

import statistics
from typing import Any, Dict, List, Optional, Sequence

DASH = "\u2013"
RUNNER = "ns_runner"


def _rtts(raw: Dict[str, Any]) -> List[int]:
    return sorted(int(k.split("-", 1)[1]) for k in raw.get("notebook", {}))


def assemble(raw: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Per round trip and client: the wall times, their median, completeness."""
    rtts = _rtts(raw)
    if not rtts:
        return None
    table: Dict[str, Dict[str, Any]] = {}
    cells = None
    for rtt in rtts:
        row: Dict[str, Any] = {}
        for client, results in raw["notebook"][f"link-{rtt}"].items():
            walls = [w for r in results for w in r["wall_s"]]
            cells = results[0]["cells"]
            row[client] = {
                "samples": walls,
                "median": statistics.median(walls),
                "complete": all(r["complete"] for r in results),
            }
        table[str(rtt)] = row
    return {"rtt_ms": rtts, "cells": cells, "table": table}


def _fmt(value: Optional[float]) -> str:
    if value is None:
        return DASH
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


def goal_ratio(notebook: Dict[str, Any], client: str, rtt: int) -> Optional[float]:
    """Wall time over (the same client's time with no delay + one round trip)."""
    base = notebook["table"].get("0", {}).get(client)
    entry = notebook["table"].get(str(rtt), {}).get(client)
    if not base or not entry:
        return None
    ratio: float = entry["median"] / (base["median"] + rtt / 1000)
    return ratio


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


def _clients(notebook: Dict[str, Any], order: Sequence[str]) -> List[str]:
    seen: List[str] = []
    for row in notebook["table"].values():
        seen += [k for k in row if k not in seen]
    return sorted(seen, key=lambda k: (order.index(k) if k in order else 99, k))


def findings(notebook: Dict[str, Any], labels: Dict[str, str]) -> List[str]:
    rtts = [r for r in notebook["rtt_ms"] if r]
    if not rtts:
        return []
    worst = rtts[-1]
    row = notebook["table"].get(str(worst), {})
    parts = [f"{labels.get(k, k)} {_fmt(e['median'])} s" for k, e in row.items()]
    return [
        f"A notebook of {notebook['cells']} small cells over a link with a {worst} ms round"
        " trip: " + ", ".join(parts) + "."
    ]


def render(notebook: Dict[str, Any], labels: Dict[str, str], order: Sequence[str]) -> List[str]:
    rtts = notebook["rtt_ms"]
    clients = _clients(notebook, order)
    header = ["Client", *(f"{r} ms" for r in rtts)]
    rows = []
    incomplete = []
    for client in clients:
        cells = [labels.get(client, client)]
        for rtt in rtts:
            entry = notebook["table"].get(str(rtt), {}).get(client)
            if entry and not entry["complete"]:
                incomplete.append(labels.get(client, client))
            cells.append(
                DASH
                if not entry
                else f"{_fmt(entry['median'])} ({_fmt(min(entry['samples']))}"
                f"{DASH}{_fmt(max(entry['samples']))})"
            )
        rows.append(cells)
    lines = [
        "A notebook over a slow link",
        "---------------------------",
        "",
        *_origin(notebook),
        f"A notebook of {notebook['cells']} small code cells (``x = i; print(x)``) run in"
        " one session, over a link that adds a fixed delay each way: a TCP proxy on"
        " 127.0.0.1 (``bench/_delay_proxy.py``, in a process of its own) in front of the"
        " default lab, for the WebSocket clients, and in front of each of the kernel's"
        " ports for nbclient (which talks ZMQ). The round trip it adds is in the column"
        " head; 0 ms is the proxy alone. *Notebook runner* is ``execute_notebook``;"
        " *cell by cell* calls ``execute`` for one cell after the other, as"
        " rubin-nublado-client's ``run_python`` loop and nbclient (``jupyter nbconvert"
        " --execute``, papermill) do. Each time is one whole notebook, after a warm-up"
        " execution; every cell's output was checked"
        + (f" (INCOMPLETE for: {', '.join(sorted(set(incomplete)))})." if incomplete else ".")
        + " The machine has 2 cores and was shared with other work.",
        "",
        _list_table(f"Wall time of the whole notebook, median (min{DASH}max), s", header, rows),
    ]
    rows = []
    for client in clients:
        cells = [labels.get(client, client)]
        for rtt in rtts[1:]:
            ratio = goal_ratio(notebook, client, rtt)
            cells.append(DASH if ratio is None else f"{ratio:.2f}")
        rows.append(cells)
    if len(rtts) > 1 and "0" in notebook["table"]:
        lines += [
            "How far each client is from a wall time independent of the cell count: the"
            " time over the link divided by its own time without delay plus one round"
            " trip. 1 is the floor; the notebook runner's goal is at most 1.2. Cell by"
            f" cell, it grows with the round trip times the {notebook['cells']} cells.",
            "",
            _list_table(
                "Wall time ÷ (wall time without delay + one round trip)",
                ["Client", *(f"{r} ms" for r in rtts[1:])],
                rows,
            ),
        ]
    return lines
