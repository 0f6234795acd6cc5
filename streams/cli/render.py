"""Rich tables for people, and device text made safe for a terminal.

Every string in an incident came from a device (host names, peers, evidence lines, and
the summaries built from them): a sender controls it. Before it reaches rich or a
terminal it goes through :func:`safe_text`, which shows control characters as visible
escapes, and it is handed to rich as :class:`rich.text.Text`, never as markup, so that
``[/]`` or ``[link=…]`` in a host name is printed as it is. The jsonl formats print the
records themselves (JSON escapes what needs escaping).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

_SEV_STYLE = {"critical": "bold red", "major": "red", "minor": "yellow", "warning": "cyan"}
#: Unicode categories shown as escapes: controls (C0, DEL, C1), format characters (bidi
#: overrides and isolates, zero-width characters), line and paragraph separators,
#: surrogates, private use and unassigned code points.
_UNSAFE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def safe_text(text: str) -> str:
    """``text`` with every character a terminal could act on (escape sequences, C1
    controls such as CSI, bidi controls, line separators) shown as a visible ``\\xNN`` /
    ``\\uNNNN`` escape; a backslash stays a backslash. Plain text is returned as is."""
    if text.isprintable():
        return text
    return "".join(
        _escape(ch) if ch != " " and unicodedata.category(ch) in _UNSAFE else ch for ch in text
    )


def _cell(*parts: str | tuple[str, str]) -> Text:
    """A table cell of device text (never parsed as markup): strings, or (text, style),
    each made safe; a part that is exactly a newline separates lines."""
    out = Text()
    for part in parts:
        if part == "\n":
            out.append("\n")
        elif isinstance(part, tuple):
            out.append(safe_text(part[0]), style=part[1])
        else:
            out.append(safe_text(part))
    return out


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
        sev = str(r["severity"])
        table.add_row(
            _cell(str(r["device"]), "\n", str(r["peer"] or "—")),
            _cell((str(r["cause"]), _SEV_STYLE.get(sev, "")), "\n", sev),
            f"{r['confidence']:.2f}",
            _cell(str(r["status"])),
            _cell(
                f"{r['first_seen'][:19].replace('T', ' ')}",
                "\n",
                f"{r['last_seen'][:19].replace('T', ' ')}",
            ),
            str(r["count"]),
            _cell(str(r["summary"]), "\n", (f"→ {r['recommended_actions'][0]}", "dim")),
        )
    console.print(table)
