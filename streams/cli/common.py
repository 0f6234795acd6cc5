"""Options and helpers shared by the commands that read archives."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from streams.core.event import Event, Unparsed
from streams.core.framing import iter_records
from streams.core.parse import Parser
from streams.shell.archive import open_archive


def add_input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="archive files (.gz ok), - for stdin")
    p.add_argument("--year", type=int, help="year of year-less stamps (default: file time)")
    p.add_argument("--device", help="device name for lines that name none")


def iter_parsed(args: argparse.Namespace, parser: Parser) -> Iterator[Event | Unparsed]:
    """Parse every record of every file in order (raises InputError on unreadable files)."""
    for name in args.files:
        with open_archive(name) as (stream, mtime):
            if args.year is None:
                parser.set_reference(mtime)
            for record in iter_records(stream):
                yield parser.parse(record)


def error(msg: str) -> int:
    print(f"tunnelwatch: error: {msg}", file=sys.stderr)
    return 2
