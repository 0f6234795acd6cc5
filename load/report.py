"""Reports of ``tunnelwatch load run``: rich tables (the runs, and the CPU time of each
component per run: see :mod:`load.cpu`), a JSON file and a self-contained HTML page with
embedded PNG charts (achieved vs offered rate, lag over time, detection latency).
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from load.cpu import verdict


def steps_of(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs of a report: the steps of a sweep, or the single run."""
    steps = report.get("steps")
    return list(steps) if isinstance(steps, list) else [report]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def table(report: dict[str, Any]) -> Table:
    t = Table(title=f"tunnelwatch load: {steps_of(report)[0]['scenario']}")
    for col in (
        "offered/s", "achieved/s", "senders", "sent", "lost", "max lag", "drained",
        "recall", "precision", "decoy hits", "latency p50 s", "latency max s",
    ):  # fmt: skip
        t.add_column(col, justify="right")
    for r in steps_of(report):
        t.add_row(
            f"{r['offered_rate']:.0f}",
            f"{r['achieved_rate']:.0f}",
            str(r["senders"]),
            str(r["sent"]),
            str(r["lost"]),
            "-" if r["max_lag"] is None else str(r["max_lag"]),
            "yes" if r["drained"] else "NO",
            _pct(r["recall"]),
            _pct(r["precision"]),
            str(len(r["decoy_hits"])),
            _s(r["latency_p50_s"]),
            _s(r["latency_max_s"]),
        )
    return t


def cpu_components(steps: list[dict[str, Any]]) -> list[str]:
    """The components measured in any of ``steps``, in the order they first appear."""
    names: dict[str, None] = {}
    for r in steps:
        for c in (r.get("cpu") or {}).get("components", []):
            names.setdefault(c["component"], None)
    return list(names)


def cpu_cell(c: dict[str, Any] | None) -> str:
    """``µs/msg · % of a core`` of one component in one run."""
    if c is None or c.get("cpu_s") is None:
        return "-"
    us = "-" if c["us_per_msg"] is None else f"{c['us_per_msg']:.1f}"
    pct = "-" if c["core_pct"] is None else f"{c['core_pct']:.0f}%"
    return f"{us} · {pct}"


def cpu_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The CPU table as text: header and one row per run (offered rate, wall seconds of
    the measurement, each component, their total, the machine's other processes and the
    busiest component)."""
    steps = steps_of(report)
    names = cpu_components(steps)
    head = ["offered/s", "window s", *names, "total", "others", "busiest"]
    rows = []
    for r in steps:
        cpu = r.get("cpu") or {}
        by_name = {c["component"]: c for c in cpu.get("components", [])}
        wall = cpu.get("wall_s")
        rows.append(
            [
                f"{r['offered_rate']:.0f}",
                "-" if wall is None else f"{wall:.1f}",
                *(cpu_cell(by_name.get(n)) for n in names),
                cpu_cell(cpu.get("total")),
                cpu_cell(cpu.get("others")),
                cpu.get("busiest") or "-",
            ]
        )
    return head, rows


def cpu_table(
    report: dict[str, Any],
    caption: str = (
        "first line sent → pipeline drained; senders: their own CPU while sending; "
        "others: the rest of the machine"
    ),
) -> Table | None:
    """CPU per component and run: µs of CPU (user+system) per message sent · % of one
    core over the run's wall time; None when no run measured it."""
    head, rows = cpu_rows(report)
    if len(head) == 5:  # no component in any run
        return None
    t = Table(
        title="CPU per component: µs per message sent · % of one core",
        caption=caption,
    )
    for col in head:
        t.add_column(col, justify="left" if col == "busiest" else "right")
    for row in rows:
        t.add_row(*row)
    return t


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    console.print(table(report))
    cpu = cpu_table(report)
    if cpu is not None:
        console.print(cpu)
    for r in steps_of(report):
        prefix = f"{r['offered_rate']:.0f} msg/s: " if report.get("sweep") else ""
        console.print(prefix + verdict(r.get("cpu") or {}), highlight=False, markup=False)
    if report.get("sweep"):
        rate = report["sustainable_rate"]
        shown = "none of the steps" if rate is None else f"{rate:.0f} msg/s"
        console.print(f"highest sustainable rate: {shown} (stopped by {report['stopped_by']})")


# --------------------------------------------------------------------------- charts


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def charts(report: dict[str, Any]) -> dict[str, str]:
    """Base64 PNGs by title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = steps_of(report)
    out: dict[str, str] = {}

    fig, ax = plt.subplots(figsize=(7, 4))
    if len(steps) > 1:
        offered = [s["offered_rate"] for s in steps]
        ax.plot(offered, offered, "--", color="grey", label="offered")
        ax.plot(offered, [s["achieved_rate"] for s in steps], "o-", label="achieved (sent)")
        ax.plot(
            offered,
            [s["received"] / max(s["send_seconds"], 1e-6) for s in steps],
            "s-",
            label="reached syslog.raw",
        )
        ax.set_xlabel("offered rate (msg/s)")
    else:
        s = steps[0]
        pts = [p for p in s["lag_samples"] if p["t"] >= 0]
        times = [p["t"] for p in pts]
        rates = [0.0] + [
            (b["sent"] - a["sent"]) / max(b["t"] - a["t"], 1e-6) for a, b in itertools.pairwise(pts)
        ]
        ax.plot(times, rates, "o-", label="achieved (sent)")
        ax.axhline(s["offered_rate"], ls="--", color="grey", label="offered")
        ax.set_xlabel("seconds since start")
    ax.set_ylabel("msg/s")
    ax.set_title("Achieved vs offered rate")
    ax.legend()
    out["Achieved vs offered rate"] = _png(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for s in steps:
        pts = [p for p in s["lag_samples"] if p["lag"] is not None]
        ax.plot([p["t"] for p in pts], [p["lag"] for p in pts], label=f"{s['offered_rate']:.0f}/s")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("records behind")
    ax.set_title("Worker group lag")
    ax.legend()
    out["Consumer lag over time"] = _png(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    lat = [f["latency_s"] for s in steps for f in s["faults"] if f["latency_s"] is not None]
    if lat:
        ax.hist(lat, bins=min(20, max(5, len(lat) // 2)), color="tab:green")
    else:
        ax.text(0.5, 0.5, "no fault detected", ha="center", va="center")
    ax.set_xlabel("first fault line sent → incident seen (s)")
    ax.set_ylabel("faults")
    ax.set_title("Detection latency")
    out["Detection latency distribution"] = _png(fig)
    return out


def render_html(report: dict[str, Any]) -> str:
    steps = steps_of(report)
    rows = []
    for r in steps:
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(v))}</td>"
                for v in (
                    f"{r['offered_rate']:.0f}",
                    f"{r['achieved_rate']:.0f}",
                    r["sent"],
                    r["received"],
                    r["lost"],
                    r["max_lag"],
                    r["drained"],
                    _pct(r["recall"]),
                    _pct(r["precision"]),
                    len(r["decoy_hits"]),
                    _s(r["latency_p50_s"]),
                    _s(r["latency_max_s"]),
                )
            )
            + "</tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "offered/s", "achieved/s", "sent", "reached raw", "lost", "max lag", "drained",
            "recall", "precision", "decoy hits", "latency p50 s", "latency max s",
        )
    )  # fmt: skip
    figs = "".join(
        f'<figure><img class="chart" alt="{html.escape(title)}" '
        f'src="data:image/png;base64,{data}"><figcaption>{html.escape(title)}</figcaption>'
        "</figure>"
        for title, data in charts(report).items()
    )
    summary = ""
    if report.get("sweep"):
        rate = report["sustainable_rate"]
        shown = "none of the steps" if rate is None else f"{rate:.0f} msg/s"
        summary = (
            f"<p id=summary>Highest sustainable rate: <b>{shown}</b> "
            f"(stopped by {html.escape(str(report['stopped_by']))}).</p>"
        )
    cpu_head, cpu_body = cpu_rows(report)
    cpu_html = ""
    if len(cpu_head) > 5:
        cpu_html = (
            "<h2>CPU per component</h2><p>µs of CPU (user+system) per message sent · % of one "
            "core, from the first line sent until the pipeline drained (senders: their own "
            "CPU while sending; others: the rest of the machine).</p><table id=cpu><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in cpu_head)
            + "</tr>"
            + "".join(
                "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
                for row in cpu_body
            )
            + "</table>"
        )
    verdicts = "".join(
        "<li>"
        + html.escape(f"{r['offered_rate']:.0f} msg/s: " + verdict(r.get("cpu") or {}))
        + "</li>"
        for r in steps
    )
    cpu_html += f"<ul id=cpu-verdicts>{verdicts}</ul>"
    faults = "".join(
        f"<tr><td>{html.escape(f['id'])}</td><td>{html.escape(f['cause'])}</td>"
        f"<td>{html.escape(f['device'])}</td><td>{html.escape(str(f['peer']))}</td>"
        f"<td>{'yes' if f['detected'] else 'NO'}</td><td>{_s(f['latency_s'])}</td></tr>"
        for f in steps[-1]["faults"]
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>tunnelwatch load report: {html.escape(steps[0]["scenario"])}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }}
figure {{ display: inline-block; margin: 0.5em; }}
</style></head><body>
<h1>tunnelwatch load report</h1>
<p>Scenario <b>{html.escape(steps[0]["scenario"])}</b>, target
<code>{html.escape(steps[0]["target"])}</code>.</p>
{summary}
<table><tr>{head}</tr>{"".join(rows)}</table>
{cpu_html}
{figs}
<h2>Faults (last run)</h2>
<table><tr><th>id</th><th>cause</th><th>device</th><th>peer</th><th>detected</th>
<th>latency s</th></tr>{faults}</table>
</body></html>
"""


def write_reports(report: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """``report.json`` and ``report.html`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    js = directory / "report.json"
    js.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    page = directory / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    return js, page
