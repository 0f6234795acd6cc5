"""``tunnelwatch parse``: one JSON event per message."""

from __future__ import annotations

import argparse
import sys

import orjson

from streams.cli.common import add_input_options, error, iter_parsed, make_parser
from streams.core.event import Unparsed
from streams.errors import ConfigError, InputError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("parse", help="parse archives into JSON events (one per line)")
    add_input_options(p)
    p.add_argument("--only-known", action="store_true", help="print only catalog messages")
    p.add_argument("--strict", action="store_true", help="exit 2 when a line was not syslog")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    try:
        parser = make_parser(args, captures=True)
        for item in iter_parsed(args, parser):
            if isinstance(item, Unparsed):
                rec = {"unparsed": True, "reason": item.reason, "raw": item.raw}
            else:
                if args.only_known and item.kind is None:
                    continue
                rec = item.to_record()
            out.write(orjson.dumps(rec) + b"\n")
    except (InputError, ConfigError) as exc:
        return error(str(exc))
    out.flush()
    s = parser.stats
    print(
        f"records={s.records} events={s.events} classified={s.classified} unparsed={s.unparsed}",
        file=sys.stderr,
    )
    return 2 if args.strict and s.unparsed else 0
