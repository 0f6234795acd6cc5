"""``make bench``'s tables of ``tunnelwatch analyze`` by header shape and by fleet size.

- :func:`shape_table`: one row per header shape found in the conformance corpus
  (``tests/data/corpus``) and the golden cases (``tests/golden``), named by
  :func:`load.shapes.shape_of`, plus :data:`load.shapes.EXTRA_SHAPES` (shapes seen in
  the field that the corpus lacks): lines/s of ``analyze`` on an archive of that shape
  (bodies outside the catalog), native and Python paths, in this process, per second of
  this process's CPU time (on a shared machine the wall time measures the neighbours).
- :func:`fleet_table`: lines/s and peak RSS of ``tunnelwatch analyze`` (a child process)
  on 1M lines of one message spread over 1k, 10k and 100k devices, and the steady rate
  (what 1M more lines over the same fleet cost: a line once every device is known).
- :func:`soak`: peak RSS of ``tunnelwatch analyze`` with 100k devices and 10k incidents
  open at the end of the archive.

Speed targets are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from load import shapes
from load.bench_analyze import Run, measure
from streams.cli.analyze import analyze_with_path
from streams.core import native

ROOT = Path(__file__).resolve().parent.parent
SHAPE_SOURCES = (ROOT / "tests" / "data" / "corpus", ROOT / "tests" / "golden")
#: lines/s the native path should reach on every shape (issue 12).
SHAPE_TARGET = 300_000
FLEET_SIZES = (1_000, 10_000, 100_000)
START = 1_709_596_800.0  # 2024-03-05T00:00:00Z


@dataclass(frozen=True)
class ShapeRow:
    shape: str
    corpus_lines: int  # tagged lines of this shape in the corpus and golden inputs
    native: float | None  # lines/s; None when the extension is not built
    python: float
    native_path: str


def _time_analyze(path: Path, mode: str, year: int) -> tuple[float, str, int]:
    """CPU seconds, path and line count of ``analyze_with_path`` on ``path`` in this
    process, with ``TUNNELWATCH_NATIVE=mode``."""
    old = os.environ.get(native.ENV)
    os.environ[native.ENV] = mode
    try:
        t0 = time.process_time()
        _, parser, path_used = analyze_with_path(
            argparse.Namespace(files=[str(path)], year=year, device=None)
        )
        seconds = time.process_time() - t0
    finally:
        if old is None:
            del os.environ[native.ENV]
        else:
            os.environ[native.ENV] = old
    return seconds, path_used, parser.stats.records


def shape_table(
    out: Path, lines: int, *, extra: Iterable[str] = shapes.EXTRA_SHAPES
) -> list[ShapeRow]:
    """Time ``analyze`` on an archive of each shape (see the module documentation)."""
    found = shapes.shapes_in(shapes.corpus_lines(SHAPE_SOURCES))
    for s in extra:
        found.setdefault(s, 0)
    have_native = native.load() is not None
    rows: list[ShapeRow] = []
    path = out / "shape.log"
    for shape, count in sorted(found.items(), key=lambda kv: (-kv[1], kv[0])):
        path.write_text("\n".join(shapes.shape_archive(shape, lines)) + "\n")
        nat: float | None = None
        used = "python"
        if have_native:
            secs, used, n = _time_analyze(path, "1", 2024)
            nat = n / secs
        secs, _, n = _time_analyze(path, "0", 2024)
        rows.append(ShapeRow(shape, count, nat, n / secs, used))
    path.unlink(missing_ok=True)
    return rows


def print_shape_table(rows: Sequence[ShapeRow], lines: int) -> None:
    print(f"== tunnelwatch analyze by header shape ({lines:,} lines each, lines per CPU-s) ==")
    print(
        "shapes of the tagged lines of tests/data/corpus and tests/golden (corpus = lines "
        "of that shape there; 0 = a field shape the corpus lacks)"
    )
    print(f"{'header shape':44}{'corpus':>7}{'native/s':>11}{'python/s':>10}{'x':>6}")
    below = 0
    for r in rows:
        nat = f"{r.native:,.0f}" if r.native is not None else "-"
        ratio = f"{r.native / r.python:.1f}" if r.native is not None else "-"
        mark = ""
        if r.native is not None and r.native < SHAPE_TARGET:
            below += 1
            mark = "  < target"
        print(f"{r.shape[:43]:44}{r.corpus_lines:>7}{nat:>11}{r.python:>10,.0f}{ratio:>6}{mark}")
    nats = [r.native for r in rows if r.native is not None]
    if nats:
        print(
            f"{len(rows)} shapes; native: min {min(nats):,.0f}, max {max(nats):,.0f} lines/s; "
            f"{below} below the target of {SHAPE_TARGET:,}"
        )


def fleet_archive(path: Path, lines: int, devices: int) -> None:
    """``lines`` lines of one message (an ASA connection build, outside the catalog) spread
    round-robin over ``devices`` devices, 1 ms of event time apart."""
    with open(path, "w") as f:
        chunk: list[str] = []
        for i in range(lines):
            t = START + i / 1000
            tm = time.gmtime(int(t))
            chunk.append(
                f"<166>Mar {tm.tm_mday:02d} 2024 {tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} "
                f"fw-{i % devices} : %ASA-6-302013: Built inbound TCP connection {i} for "
                "outside:198.51.100.7/443 (198.51.100.7/443) to inside:10.0.0.9/51515 "
                "(10.0.0.9/51515)\n"
            )
            if len(chunk) >= 65536:
                f.write("".join(chunk))
                chunk.clear()
        f.write("".join(chunk))


@dataclass(frozen=True)
class FleetRun:
    """``analyze`` on ``lines`` lines over ``devices`` devices, and on twice as many
    (the same fleet, the same round-robin): what the second half cost is the cost of a
    line once every device is known, without the process's start and without each
    device's first line."""

    devices: int
    run: Run
    double: Run | None

    def steady_rate(self, lines: int) -> float:
        """Lines per CPU-second of the second half (0: not measured)."""
        if self.double is None or self.double.returncode or self.run.returncode:
            return 0.0
        extra = self.double.cpu_seconds - self.run.cpu_seconds
        return lines / extra if extra > 0 else 0.0


def fleet_table(
    tw: str,
    out: Path,
    lines: int,
    sizes: Sequence[int] = FLEET_SIZES,
    *,
    steady: bool = True,
    repeat: int = 3,
) -> list[FleetRun]:
    """``tunnelwatch analyze`` on ``lines`` lines over each fleet size (and, ``steady``,
    on ``2 * lines``): of ``repeat`` rounds, each running every archive once, the run of
    least CPU of each (this box's speed drifts by 20% and more from one minute to the
    next: rounds spread the drift over every size alike)."""
    counts = (lines, 2 * lines) if steady else (lines,)
    archives: dict[tuple[int, int], Path] = {}
    for devices in sizes:
        for n in counts:
            archives[(devices, n)] = path = out / f"fleet-{devices}-{n}.log"
            fleet_archive(path, n, devices)
    best: dict[tuple[int, int], Run] = {}
    try:
        for round_ in range(max(repeat, 1)):
            for (devices, n), path in archives.items():
                cmd = [tw, "analyze", "--format", "jsonl", "--year", "2024", str(path)]
                print(f"running (round {round_ + 1}/{repeat}): {' '.join(cmd)}")
                run = measure(cmd, out / f"fleet-{devices}.jsonl", out / f"fleet-{devices}.err")
                was = best.get((devices, n))
                if was is None or (run.returncode, run.cpu_seconds) < (
                    was.returncode,
                    was.cpu_seconds,
                ):
                    best[(devices, n)] = run
    finally:
        for path in archives.values():
            path.unlink(missing_ok=True)
    return [FleetRun(d, best[(d, lines)], best[(d, 2 * lines)] if steady else None) for d in sizes]


def print_fleet_table(runs: Sequence[FleetRun], lines: int) -> None:
    print(f"== tunnelwatch analyze by fleet size ({lines:,} lines of one message) ==")
    print(
        f"{'devices':>10}{'seconds':>10}{'lines/s':>12}{'CPU-s':>8}{'lines/CPU-s':>13}"
        f"{'peak RSS MiB':>14}{'vs first':>10}{'steady/CPU-s':>14}{'vs first':>10}"
    )
    base: float | None = None
    steady_base: float | None = None
    for fr in runs:
        run = fr.run
        ok = run.returncode == 0
        rate = lines / run.seconds if run.seconds > 0 and ok else 0.0
        cpu_rate = lines / run.cpu_seconds if run.cpu_seconds > 0 and ok else 0.0
        steady = fr.steady_rate(lines)
        if base is None:
            base = cpu_rate
            steady_base = steady
        rel = f"{cpu_rate / base:.0%}" if base else "-"
        steady_rel = f"{steady / steady_base:.0%}" if steady_base and steady else "-"
        status = "" if ok else f"  (exit {run.returncode})"
        print(
            f"{fr.devices:>10,}{run.seconds:>10.2f}{rate:>12,.0f}{run.cpu_seconds:>8.2f}"
            f"{cpu_rate:>13,.0f}{run.peak_rss_mib:>14.1f}{rel:>10}{steady:>14,.0f}"
            f"{steady_rel:>10}{status}"
        )
    print(
        "  (issue 12's target: 100k devices at >= 80% of the 1k rate; 'vs first' in CPU."
        f"\n   'steady': the second {lines:,} lines of a {2 * lines:,}-line archive, once"
        " every device is known: the cost of a line without each device's first line)"
    )


def soak_archive(path: Path, devices: int, incidents: int) -> int:
    """One line per device (clock rows), then, for ``incidents`` of them, five HMAC
    failures within a minute from one peer (an incident each, open at the end); returns
    the line count."""
    n = 0
    with open(path, "w") as f:
        for d in range(devices):
            t = START + d / 100
            tm = time.gmtime(int(t))
            f.write(
                f"<166>Mar 05 2024 {tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} fw-{d} : "
                f"%ASA-6-302013: Built inbound TCP connection {d} for outside:198.51.100.7/443 "
                "(198.51.100.7/443) to inside:10.0.0.9/51515 (10.0.0.9/51515)\n"
            )
            n += 1
        t0 = START + devices / 100 + 1
        for k in range(5):
            for d in range(incidents):
                t = t0 + k * 10 + d / (incidents * 2)
                tm = time.gmtime(int(t))
                f.write(
                    f"<164>Mar 05 2024 {tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} fw-{d} : "
                    "%ASA-4-402120: IPSEC: Received an ESP packet (SPI= 0x1A2B3C4D, sequence "
                    f"number= 0x{k + 1:X}) from 203.0.113.{d % 250 + 1} (user= "
                    f"203.0.113.{d % 250 + 1}) to 192.0.2.1 that failed authentication.\n"
                )
                n += 1
    return n


def soak(tw: str, out: Path, devices: int = 100_000, incidents: int = 10_000) -> None:
    path = out / "soak.log"
    lines = soak_archive(path, devices, incidents)
    jsonl = out / "soak.jsonl"
    cmd = [tw, "analyze", "--format", "jsonl", "--year", "2024", str(path)]
    print(f"running: {' '.join(cmd)}")
    run = measure(cmd, jsonl, out / "soak.err")
    found = len(jsonl.read_text().splitlines()) if jsonl.exists() else 0
    print(f"== soak: tunnelwatch analyze, {devices:,} devices, {incidents:,} open incidents ==")
    print(
        f"  {lines:,} lines in {run.seconds:.2f}s, {found:,} incidents, peak RSS "
        f"{run.peak_rss_mib:.1f} MiB (exit {run.returncode})"
    )
    path.unlink(missing_ok=True)
