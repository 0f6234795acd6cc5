"""``tunnelwatch replay``: send an archive to a receiver or to Kafka, keeping its pace.

Records come from the archive's framing (:func:`streams.core.framing.iter_records`) in
order; each is due when its event time (read by :class:`~streams.core.parse.Parser`),
scaled by ``speed``, has passed since the start (see :mod:`.pacing`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from streams.core.event import Event
from streams.core.framing import iter_records
from streams.core.parse import Parser
from streams.shell.archive import open_archive
from streams.shell.replay.pacing import Pacer, schedule
from streams.shell.replay.sinks import Sink, open_sink

__all__ = ["Pacer", "ReplayResult", "Sink", "open_sink", "replay", "schedule", "timed_records"]


@dataclass(frozen=True, slots=True)
class ReplayResult:
    lines: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.lines / self.seconds if self.seconds > 0 else 0.0


def timed_records(
    files: Sequence[str], year: int | None, *, parse: bool = True
) -> Iterator[tuple[str, float | None]]:
    """Every record of ``files`` in order with its event time (None when unparsed, or
    always when ``parse`` is false: at maximum speed the times are not needed).

    Raises :class:`~streams.errors.InputError` for a missing or unreadable file.
    """
    for name in files:
        with open_archive(name) as (stream, mtime):
            # Unstamped lines of a capture are paced from the file's time, not 1970.
            parser = Parser(
                year=year, reference_ts=None if year is not None else mtime, context_ts=mtime
            )
            for record in iter_records(stream):
                if not parse:
                    yield record, None
                    continue
                out = parser.parse(record)
                yield record, out.ts if isinstance(out, Event) else None


def _total_bytes(files: Sequence[str]) -> int | None:
    total = 0
    for name in files:
        if name == "-" or name.endswith(".gz"):
            return None
        try:
            total += os.path.getsize(name)
        except OSError:
            return None
    return total


def replay(
    files: Sequence[str],
    sink: Sink,
    speed: float | None,
    year: int | None = None,
    pacer: Pacer | None = None,
    progress: bool | None = None,
) -> ReplayResult:
    """Send every record of ``files`` to ``sink`` at ``speed`` (None: as fast as possible)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    pacer = pacer or Pacer()
    console = Console(stderr=True)
    show = console.is_terminal if progress is None else progress
    total = _total_bytes(files)
    sent = 0
    started = time.monotonic()
    columns = (
        TextColumn("[bold]replay[/]"),
        BarColumn(),
        MofNCompleteColumn() if total is None else TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("{task.fields[lines]} lines"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=not show, transient=False) as bar:
        task = bar.add_task("replay", total=total, lines=0)
        done_bytes = 0
        for record, due in schedule(timed_records(files, year, parse=speed is not None), speed):
            if speed is not None and pacer.ahead(due) > 0:
                sink.flush()
                pacer.wait(due)
            sink.send(record)
            sent += 1
            done_bytes += len(record) + 1
            if sent % 1000 == 0:
                bar.update(task, completed=done_bytes, lines=sent)
        sink.flush()
        bar.update(task, completed=total if total is not None else done_bytes, lines=sent)
    return ReplayResult(sent, time.monotonic() - started)


def print_summary(result: ReplayResult, target: str) -> None:
    print(
        f"replayed {result.lines} lines to {target} in {result.seconds:.2f} s "
        f"({result.rate:,.0f} lines/s)",
        file=sys.stdout,
        flush=True,
    )
