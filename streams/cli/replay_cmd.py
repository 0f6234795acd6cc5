"""``tunnelwatch replay``: send archives to a receiver (UDP/TCP) or to Kafka at a given pace.

Exit codes: 0 done, 1 Kafka failed during the replay, 2 bad options or unreadable input.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from streams.errors import BrokerError, ConfigError, InputError
from streams.shell.replay import open_sink, print_summary, replay


def _speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor 'max'") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError("the speed must be positive")
    return value


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "replay",
        help="send archives to a receiver or Kafka, keeping the gaps between lines",
        description=(
            "Send the records of archives in order, keeping the gaps between their event "
            "times scaled by --speed: over UDP, TCP (octet counting) or straight to Kafka "
            "(same key and headers as the receiver)."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="archive files (.gz ok), - for stdin")
    p.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="udp://HOST:PORT, tcp://HOST:PORT or kafka://BOOTSTRAP",
    )
    p.add_argument(
        "--speed",
        type=_speed,
        default=1.0,
        metavar="N|max",
        help="N times real time, or max for no pauses (default: 1)",
    )
    p.add_argument(
        "--topic", default="syslog.raw", help="topic for kafka:// (default: %(default)s)"
    )
    p.add_argument(
        "--year",
        type=int,
        help="year of year-less stamps (default: file time); with kafka:// it also reaches "
        "the worker as a record header, so streamed incident ids equal analyze --year's",
    )
    p.add_argument(
        "--source",
        default="127.0.0.1:0",
        metavar="IP:PORT",
        help="the 'source' header for kafka:// (default: %(default)s)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        sink = open_sink(args.to, args.topic, args.source, args.year)
    except ConfigError as exc:
        print(f"tunnelwatch replay: error: {exc}", file=sys.stderr)
        return 2
    if args.year is not None and not args.to.startswith("kafka://"):
        print(
            "tunnelwatch replay: note: --year paces the replay only; over UDP/TCP the worker "
            "dates year-less stamps by their receive time (use kafka:// to carry the year)",
            file=sys.stderr,
        )
    try:
        result = replay(args.files, sink, args.speed, args.year)
    except InputError as exc:
        print(f"tunnelwatch replay: error: {exc}", file=sys.stderr)
        return 2
    except (BrokerError, OSError) as exc:
        print(f"tunnelwatch replay: error: {exc}", file=sys.stderr)
        return 1
    finally:
        try:
            sink.close()
        except (BrokerError, OSError) as exc:
            print(f"tunnelwatch replay: error while closing: {exc}", file=sys.stderr)
    print_summary(result, args.to)
    return 0
