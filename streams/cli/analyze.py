"""``tunnelwatch analyze``: the embedded default, the whole core in-process on archives."""

from __future__ import annotations

import argparse
import gc
import sys
import time
from typing import Any

import orjson

from streams.cli.common import add_input_options, error, iter_chunks, iter_parsed, make_parser
from streams.core import native
from streams.core.engine import Correlator, corroborate_incidents
from streams.core.event import Unparsed
from streams.core.kb import default_kb
from streams.core.parse import Parser
from streams.core.stories import join_stories
from streams.errors import ConfigError, InputError
from streams.shell import captures
from streams.shell.topics import DeviceLane, device_lane

TICK_EVERY = 4096
SKEW_REPORT = 300.0  # seconds off the fleet's clock before analyze reports a device


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "analyze", help="diagnose VPN incidents in syslog archives and show crypto captures"
    )
    add_input_options(p)
    p.add_argument("--format", choices=("table", "jsonl"), default="table")
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 2 when a line was not syslog or a capture file had a problem",
    )
    p.set_defaults(func=run)


def _run_python(
    args: argparse.Namespace, parser: Parser, corr: Correlator, latest: dict[str, dict[str, Any]]
) -> None:
    n = 0
    for item in iter_parsed(args, parser):
        n += 1
        if isinstance(item, Unparsed):
            continue
        # Every event moves its device's clock, which may resolve or fire incidents.
        for rec in corr.feed(item):
            latest[rec["incident_id"]] = rec
        if n % TICK_EVERY == 0:
            for rec in corr.tick():
                latest[rec["incident_id"]] = rec


def _run_native(
    module: native.NativeModule,
    args: argparse.Namespace,
    parser: Parser,
    corr: Correlator,
    latest: dict[str, dict[str, Any]],
) -> None:
    """The same records in the same order as :func:`_run_python`: the scanner gives clock
    rows for the lines that only move a device's clock and hands every other record to
    the parser; it stops at every TICK_EVERY-th record so that ticks fall where they do
    on the Python path."""
    scanner = native.make_scanner(module, parser, kb=corr.kb)
    # The lanes and the devices that only move their clock live in the native core: their
    # rows never become Python objects.
    lane_of = corr.lane_of
    partitions = lane_of.partitions if isinstance(lane_of, DeviceLane) and lane_of.native else None
    core = native.make_fleet_core(module, corr.kb.lateness, lane_of, partitions)
    corr.use_core(core)
    changed = corr.changed
    n = 0
    scanner.reset()
    for chunk in iter_chunks(args, parser):
        if chunk is None:
            scanner.close()
        else:
            scanner.feed(chunk)
        while True:
            limit = TICK_EVERY - n % TICK_EVERY
            rows, record = scanner.scan_fleet(limit, core, corr.on_rows)
            n += rows
            if changed:
                for rec in changed:
                    latest[rec["incident_id"]] = rec
                changed.clear()
            if record is not None:
                n += 1
                item = parser.parse(record)
                if not isinstance(item, Unparsed):
                    for rec in corr.feed(item):
                        latest[rec["incident_id"]] = rec
            elif rows < limit:
                break  # the scanner wants more input
            if n % TICK_EVERY == 0:
                for rec in corr.tick():
                    latest[rec["incident_id"]] = rec
        if chunk is None:
            scanner.reset()


def analyze(args: argparse.Namespace) -> tuple[list[dict[str, Any]], Parser]:
    """Run parser and engine over the files; the final state of every incident."""
    records, parser, _ = analyze_with_path(args)
    return records, parser


def analyze_with_path(args: argparse.Namespace) -> tuple[list[dict[str, Any]], Parser, str]:
    """:func:`analyze`, and which path read the lines (``native`` or ``python``)."""
    records, parser, path, _, _ = analyze_all(args)
    return records, parser, path


def analyze_all(
    args: argparse.Namespace,
) -> tuple[list[dict[str, Any]], Parser, str, list[captures.Loaded], Correlator]:
    """:func:`analyze_with_path`, the capture files among ``args.files`` (told apart by
    their content: their evidence corroborates the syslog incidents of the same device
    and peer, or stands as incidents of its own), and the correlator (its fleet clock's
    report)."""
    kb = default_kb()
    syslog_files, capture_files = captures.split_files(list(args.files))
    loaded = captures.load(capture_files, args.device)
    args = argparse.Namespace(**{**vars(args), "files": syslog_files})
    parser = make_parser(args, captures=True)
    # The stream's partitions are the fleet clock's lanes: both read a lane in one order.
    corr = Correlator(kb, lane_of=device_lane())
    latest: dict[str, dict[str, Any]] = {}
    # The native scanner reads stamps without a zone map: with one, every line is parsed
    # in Python.
    module = None if parser.tz_map else native.load()
    if module is not None:
        _run_native(module, args, parser, corr, latest)
    else:
        _run_python(args, parser, corr, latest)
    for rec in corr.finish():
        latest[rec["incident_id"]] = rec
    records = corroborate_incidents(kb, list(latest.values()), captures.capture_records(kb, loaded))
    records.sort(key=lambda r: (r["first_seen"], r["device"], r["cause"]))
    join_stories(records)
    return records, parser, "python" if module is None else "native", loaded, corr


#: Objects allocated between two young collections while analyzing (CPython: 700). The
#: per-device states live until the end; with the default, a fleet of 100k devices has
#: the collector walk them again and again (1M lines over 100k devices: 258k -> ~400k
#: lines/s; over 1k devices no change).
GC_THRESHOLD = (50_000, 1000, 1000)


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLD)
    try:
        records, parser, path, loaded, corr = analyze_all(args)
    except (InputError, ConfigError) as exc:
        return error(str(exc))
    finally:
        # What the run made (every device's state) is never collected: freezing it
        # spares a full collection walking it once the default thresholds are back.
        gc.freeze()
        gc.set_threshold(*before)
    problems = captures.report_problems(loaded)
    elapsed = time.perf_counter() - t0
    if args.format == "jsonl":
        out = sys.stdout.buffer
        for rec in records:
            out.write(orjson.dumps(rec) + b"\n")
        out.flush()
    else:
        from streams.cli.render import incident_table

        incident_table(records)
    _clock_report(corr)
    s = parser.stats
    rate = s.records / elapsed if elapsed > 0 else 0.0
    print(
        f"tunnelwatch: lines={s.records} events={s.events} classified={s.classified} "
        f"unparsed={s.unparsed} incidents={len(records)} "
        f"elapsed={elapsed:.2f}s rate={rate:,.0f} lines/s path={path}",
        file=sys.stderr,
    )
    if loaded:
        n = sum(x.capture.records for x in loaded)
        print(
            f"tunnelwatch: captures={len(loaded)} records={n} problems={problems}", file=sys.stderr
        )
    return 2 if args.strict and (s.unparsed or problems) else 0


def _clock_report(corr: Correlator, limit: int = 20) -> None:
    """Devices whose clock is off from the fleet's by more than five minutes (offsets are
    read from the order lines arrive in: in a sparse archive they are right to a few
    minutes), and devices whose clock jumped or sent outlier stamps: a NOC wants to know."""
    from streams.cli.render import safe_text

    skews = corr.skews(SKEW_REPORT)
    if skews:
        worst = sorted(skews.items(), key=lambda kv: (-abs(kv[1]), kv[0]))
        shown = ", ".join(f"{safe_text(d)} {_offset(s)}" for d, s in worst[:limit])
        more = f" (+{len(worst) - limit} more)" if len(worst) > limit else ""
        print(f"tunnelwatch: clocks off the fleet's: {shown}{more}", file=sys.stderr)
    anomalies = corr.clock_anomalies()
    for device, (jumps, outliers, lines) in sorted(anomalies.items())[:limit]:
        example = f": {safe_text(lines[-1][:120])}" if lines else ""
        print(
            f"tunnelwatch: clock of {safe_text(device)}: {jumps} jump(s), {outliers} outlier "
            f"stamp(s){example}",
            file=sys.stderr,
        )


def _offset(seconds: float) -> str:
    sign = "+" if seconds >= 0 else "-"
    s = round(abs(seconds))
    return (
        f"{sign}{s // 3600}h{s % 3600 // 60:02d}m"
        if s >= 3600
        else f"{sign}{s // 60}m{s % 60:02d}s"
    )
