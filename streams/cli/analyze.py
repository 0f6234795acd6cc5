"""``tunnelwatch analyze``: the embedded default, the whole core in-process on archives."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson

from streams.cli.common import add_input_options, error, iter_chunks, iter_parsed
from streams.core import native
from streams.core.engine import Correlator
from streams.core.event import Unparsed
from streams.core.kb import default_kb
from streams.core.parse import Parser
from streams.core.stories import join_stories
from streams.errors import ConfigError, InputError

TICK_EVERY = 4096


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("analyze", help="diagnose VPN incidents in syslog archives")
    add_input_options(p)
    p.add_argument("--format", choices=("table", "jsonl"), default="table")
    p.add_argument("--strict", action="store_true", help="exit 2 when a line was not syslog")
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
    n = 0
    scanner.reset()
    for chunk in iter_chunks(args, parser):
        if chunk is None:
            scanner.close()
        else:
            scanner.feed(chunk)
        while True:
            limit = TICK_EVERY - n % TICK_EVERY
            rows, record = scanner.scan(limit)
            if rows:
                n += len(rows)
                for rec in corr.clocks(rows):
                    latest[rec["incident_id"]] = rec
            if record is not None:
                n += 1
                item = parser.parse(record)
                if not isinstance(item, Unparsed):
                    for rec in corr.feed(item):
                        latest[rec["incident_id"]] = rec
            elif len(rows) < limit:
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
    kb = default_kb()
    parser = Parser(year=args.year, device=args.device)
    corr = Correlator(kb)
    latest: dict[str, dict[str, Any]] = {}
    module = native.load()
    if module is not None:
        _run_native(module, args, parser, corr, latest)
    else:
        _run_python(args, parser, corr, latest)
    for rec in corr.finish():
        latest[rec["incident_id"]] = rec
    records = sorted(latest.values(), key=lambda r: (r["first_seen"], r["device"], r["cause"]))
    join_stories(records)
    return records, parser, "python" if module is None else "native"


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    try:
        records, parser, path = analyze_with_path(args)
    except (InputError, ConfigError) as exc:
        return error(str(exc))
    elapsed = time.perf_counter() - t0
    if args.format == "jsonl":
        out = sys.stdout.buffer
        for rec in records:
            out.write(orjson.dumps(rec) + b"\n")
        out.flush()
    else:
        from streams.cli.render import incident_table

        incident_table(records)
    s = parser.stats
    rate = s.records / elapsed if elapsed > 0 else 0.0
    print(
        f"tunnelwatch: lines={s.records} events={s.events} classified={s.classified} "
        f"unparsed={s.unparsed} incidents={len(records)} "
        f"elapsed={elapsed:.2f}s rate={rate:,.0f} lines/s path={path}",
        file=sys.stderr,
    )
    return 2 if args.strict and s.unparsed else 0
