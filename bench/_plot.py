"""Draw the benchmark chart from the results JSON (runs in bench/.venvs/plot).

Usage: ``python bench/_plot.py RESULTS.json|- OUT.png``
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

TARGETS = [
    ("default-direct", "default lab\ndirect"),
    ("default-proxy", "default lab\nvia proxy"),
    ("nodelay-direct", "TCP_NODELAY lab\ndirect"),
    ("nodelay-proxy", "TCP_NODELAY lab\nvia proxy"),
]
ORDER = ["ns_pong", "ns_nopong", "rnc", "jkc", "zmq", "cli", "script_ns", "script_rnc"]
COLOURS = {
    "ns_pong": "#1f77b4",
    "ns_nopong": "#9ecae1",
    "rnc": "#ff7f0e",
    "jkc": "#2ca02c",
    "zmq": "#7f7f7f",
    "cli": "#9467bd",
    "script_ns": "#6baed6",
    "script_rnc": "#fdae6b",
}
RATIO_GROUPS = [
    ("cpu-per-exec", "CPU per\nexecution"),
    ("output-wall", "50 MB\nwall"),
    ("output-cpu", "50 MB\nCPU"),
    ("output-rss", "50 MB\npeak RSS"),
    ("prints-wall", "prints\nwall"),
    ("prints-rss", "prints\npeak RSS"),
    ("session-open", "session\nopen"),
    ("import", "import"),
    ("oneshot", "cold\none-shot"),
    ("cold-first", "cold run to\nfirst output\n(to the CLI)"),
    ("concurrent-throughput", "8 sessions\nthroughput"),
]


def main() -> None:
    source, out = sys.argv[1], sys.argv[2]
    if source == "-":
        results = json.load(sys.stdin)
    else:
        with open(source) as f:
            results = json.load(f)
    groups = {g["id"]: g for g in results["groups"]}
    labels = {k: v.get("label", k) for k, v in results["clients"].items()}
    ref = results.get("reference")

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 10.5), dpi=110)

    # Latency: median bars with p10-p90 whiskers, grouped by target.
    targets = [(k, t) for k, t in TARGETS if f"latency-{k}" in groups]
    keys = [k for k in ORDER if any(k in groups[f"latency-{t}"]["rows"] for t, _ in targets)]
    width = 0.8 / max(len(keys), 1)
    tops: list = []
    for i, key in enumerate(keys):
        xs, meds, lo, hi = [], [], [], []
        for j, (t, _) in enumerate(targets):
            entry = groups[f"latency-{t}"]["rows"].get(key)
            if entry is None:
                continue
            s = entry["summary"]
            xs.append(j + (i - (len(keys) - 1) / 2) * width)
            meds.append(s["median"])
            lo.append(s["median"] - s["p10"])
            hi.append(s["p90"] - s["median"])
        ax1.bar(
            xs,
            meds,
            width,
            yerr=[lo, hi],
            capsize=2,
            label=labels.get(key, key),
            color=COLOURS.get(key),
            error_kw={"elinewidth": 0.8},
        )
        tops += [m + h for m, h in zip(meds, hi)]
        for x, m, h in zip(xs, meds, hi):
            text = f"{m:.0f}" if m >= 10 else f"{m:.1f}"
            ax1.text(x, m + h + 0.5, text, ha="center", va="bottom", fontsize=7)
    ax1.set_xticks(range(len(targets)))
    ax1.set_xticklabels([t for _, t in targets])
    ax1.set_ylabel("ms (median, whiskers p10-p90)")
    ax1.set_title('Round trip of run_python("pass")')
    ax1.legend(fontsize=8, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    ax1.set_ylim(0, max([*tops, 1]) * 1.12)
    ax1.grid(axis="y", alpha=0.3)

    # Other figures: ratio of medians to nublado_sync, log scale, with CIs.
    params = results["meta"]["params"]
    size = f"{params['output']['size'] / 1e6:g} MB"
    count = f"{params['prints']['count'] / 1e3:g}k prints"
    threads = f"{params['concurrent']['threads']} sessions"
    present = [
        (g, t.replace("50 MB", size).replace("prints", count).replace("8 sessions", threads))
        for g, t in RATIO_GROUPS
        if g in groups
    ]
    extremes = []
    keys2 = [k for k in ORDER if k != ref and any(k in groups[g]["rows"] for g, _ in present)]
    width2 = 0.8 / max(len(keys2), 1)
    for i, key in enumerate(keys2):
        xs, vals, lo, hi = [], [], [], []
        for j, (g, _) in enumerate(present):
            entry = groups[g]["rows"].get(key)
            if key == groups[g].get("reference"):
                continue  # the group's own base (the CLI in the cold-run groups)
            ratio = entry and entry.get("ratio_to_nublado_sync")
            if not ratio:
                continue
            xs.append(j + (i - (len(keys2) - 1) / 2) * width2)
            vals.append(ratio["median"])
            ci = ratio.get("ci90") or [ratio["median"], ratio["median"]]
            lo.append(max(ratio["median"] - ci[0], 0))
            hi.append(max(ci[1] - ratio["median"], 0))
            extremes += [ci[0], ci[1], ratio["median"]]
        if not xs:
            continue  # a row with no ratio here (the CLI is its groups' base)
        ax2.bar(
            xs,
            vals,
            width2,
            yerr=[lo, hi],
            capsize=2,
            label=labels.get(key, key),
            color=COLOURS.get(key),
            error_kw={"elinewidth": 0.8},
        )
    ax2.axhline(1.0, color="black", linewidth=0.8)
    ax2.set_yscale("log")
    if extremes:
        ax2.set_ylim(min(*extremes, 1) / 1.6, max(*extremes, 1) * 2.5)
    ax2.set_xticks(range(len(present)))
    ax2.set_xticklabels([t for _, t in present], fontsize=8)
    ax2.set_ylabel(f"ratio to {labels.get(ref, 'nublado_sync')}")
    ax2.set_title(
        "Other figures as ratios to nublado_sync, the cold run to its command (median ratio,"
        " 90% CI; below 1 is better, except throughput)",
        fontsize=10,
    )
    ax2.legend(fontsize=8, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    ax2.grid(axis="y", alpha=0.3, which="both")

    meta = results["meta"]
    fig.suptitle(
        f"nublado_sync benchmarks, {meta.get('date', '')[:10]}, "
        f"{meta.get('machine', {}).get('cores')} cores"
        + (" (QUICK RUN)" if meta.get("quick") else ""),
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    main()
