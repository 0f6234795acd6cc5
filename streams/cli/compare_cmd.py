"""``tunnelwatch compare A B``: the two ends of a tunnel, configuration against configuration."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from streams.cli.common import error
from streams.core.captures import Capture, read
from streams.core.captures.compare import compare
from streams.core.kb import default_kb
from streams.errors import InputError
from streams.shell.archive import open_archive
from streams.shell.captures import finding_records


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "compare",
        help="compare the crypto configs (or show captures) of both ends of a tunnel",
    )
    p.add_argument(
        "a",
        metavar="A",
        help="one end: a running-config or show captures (a file or a directory of files)",
    )
    p.add_argument("b", metavar="B", help="the other end, likewise")
    p.add_argument("--format", choices=("table", "jsonl"), default="table")
    p.add_argument("--strict", action="store_true", help="exit 2 when a file had a problem")
    p.set_defaults(func=run)


def _files(name: str) -> list[str]:
    path = Path(name)
    if path.is_dir():
        return sorted(str(p) for p in path.iterdir() if p.is_file())
    return [name]


def _load(name: str) -> tuple[Capture, str, float]:
    """One end: its files read as one capture (the device of its prompt or hostname,
    else the name of the file or directory) and the newest file time."""
    texts: list[str] = []
    newest = 0.0
    for f in _files(name):
        with open_archive(f) as (stream, mtime):
            texts.append(stream.read())
        newest = max(newest, mtime or 0.0)
    cap = read(name, "\n".join(texts), newest)
    return cap, cap.device or Path(name).stem, newest


def run(args: argparse.Namespace) -> int:
    try:
        a, a_name, ta = _load(args.a)
        b, b_name, tb = _load(args.b)
    except InputError as exc:
        return error(str(exc))
    kb = default_kb()
    records = finding_records(kb, compare(a, a_name, b, b_name, max(ta, tb)))
    problems = 0
    for cap in (a, b):
        for p in cap.problems:
            problems += 1
            print(f"tunnelwatch: {cap.name}:{p.line}: {p.kind}: {p.detail}", file=sys.stderr)
    if args.format == "jsonl":
        out = sys.stdout.buffer
        for rec in records:
            out.write(orjson.dumps(rec) + b"\n")
        out.flush()
    else:
        from streams.cli.render import incident_table

        incident_table(records)
        for i, rec in enumerate(records, 1):
            print(f"[{i}] {rec['device']} / {rec['peer']}: {rec['cause']}")
            for line in rec["evidence"]:
                print(f"    {line}")
            print(f"    fix: {rec['recommended_actions'][0]}")
    for cap, name in ((a, a_name), (b, b_name)):
        c = cap.config
        if not (c.policies or c.crypto_maps or c.transform_sets or c.keys):
            print(
                f"tunnelwatch: {cap.name}: no crypto configuration found for {name}",
                file=sys.stderr,
            )
    print(
        f"tunnelwatch: compare {a_name} ({a.records} records) with {b_name} ({b.records} "
        f"records): findings={len(records)} problems={problems}",
        file=sys.stderr,
    )
    return 2 if args.strict and problems else 0
