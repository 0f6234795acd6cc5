"""Options and helpers shared by the commands that read archives."""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Iterator
from datetime import datetime

from streams.core.event import Event, Unparsed
from streams.core.framing import iter_records
from streams.core.parse import Parser
from streams.shell.archive import open_archive

CHUNK = 1 << 20


def add_input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="archive files (.gz ok), - for stdin")
    p.add_argument("--year", type=int, help="year of year-less stamps (default: file time)")
    p.add_argument("--device", help="device name for lines that name none")
    p.add_argument(
        "--tz-map",
        metavar="FILE",
        help="device name, IP or CIDR -> IANA zone (CSV or YAML): the zone of devices that "
        "log local time without a zone label",
    )
    p.add_argument(
        "--start",
        type=_instant,
        metavar="ISO8601",
        help="time of a capture's uptime-stamped and unstamped lines when nothing nearer "
        "is known, e.g. 2024-03-07T16:05:00Z (default: the file's modification time)",
    )


def make_parser(args: argparse.Namespace, *, captures: bool = False) -> Parser:
    """The parser of ``analyze``/``parse`` (raises ConfigError for a bad --tz-map)."""
    from streams.shell.tzmap import load_tz_map

    tz_map = load_tz_map(args.tz_map) if getattr(args, "tz_map", None) else None
    return Parser(year=args.year, device=args.device, tz_map=tz_map, captures=captures)


def _instant(text: str) -> float:
    """``--start``: an ISO 8601 date and time with its offset (``Z`` or ``+01:00``)."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no offset: add Z or +hh:mm")
    return at.timestamp()


def _context(args: argparse.Namespace, mtime: float | None) -> float:
    """The capture's time: ``--start``, else the file's modification time, else (standard
    input) the time it is read."""
    start: float | None = getattr(args, "start", None)
    if start is not None:
        return start
    return mtime if mtime is not None else time.time()


def iter_parsed(args: argparse.Namespace, parser: Parser) -> Iterator[Event | Unparsed]:
    """Parse every record of every file in order (raises InputError on unreadable files)."""
    for name in args.files:
        with open_archive(name) as (stream, mtime):
            if args.year is None:
                parser.set_reference(mtime)
            parser.new_capture(_context(args, mtime))
            for record in iter_records(stream):
                yield parser.parse(record)


def iter_chunks(args: argparse.Namespace, parser: Parser) -> Iterator[bytes | None]:
    """The raw bytes of every file in order, in chunks; None after each file's last chunk.

    Sets the parser's reference time per file as :func:`iter_parsed` does; the bytes are
    read here, inside the archive's context, so read errors become InputError.
    """
    for name in args.files:
        with open_archive(name) as (stream, mtime):
            if args.year is None:
                parser.set_reference(mtime)
            parser.new_capture(_context(args, mtime))
            assert isinstance(stream, io.TextIOWrapper)
            raw = stream.buffer
            while chunk := raw.read(CHUNK):
                yield chunk
        yield None


def error(msg: str) -> int:
    print(f"tunnelwatch: error: {msg}", file=sys.stderr)
    return 2
