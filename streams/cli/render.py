"""Rich tables for people."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

_SEV_STYLE = {"critical": "bold red", "major": "red", "minor": "yellow", "warning": "cyan"}


def incident_table(records: Sequence[dict[str, Any]], console: Console | None = None) -> None:
    if console is None:
        import sys

        console = Console() if sys.stdout.isatty() else Console(width=160)
    if not records:
        console.print("[green]No VPN incidents found.[/green]")
        return
    table = Table(title=f"VPN incidents ({len(records)})", show_lines=True, expand=True)
    table.add_column("Device / peer", no_wrap=True)
    table.add_column("Cause", no_wrap=True)
    table.add_column("Conf.", justify="right")
    table.add_column("Status")
    table.add_column("First / last seen (UTC)", no_wrap=True)
    table.add_column("N", justify="right")
    table.add_column("Diagnosis and first action", ratio=1)
    for r in records:
        sev = r["severity"]
        table.add_row(
            f"{r['device']}\n{r['peer'] or '—'}",
            f"[{_SEV_STYLE.get(sev, '')}]{r['cause']}[/]\n{sev}",
            f"{r['confidence']:.2f}",
            r["status"],
            f"{r['first_seen'][:19].replace('T', ' ')}\n{r['last_seen'][:19].replace('T', ' ')}",
            str(r["count"]),
            f"{r['summary']}\n[dim]→ {r['recommended_actions'][0]}[/dim]",
        )
    console.print(table)
