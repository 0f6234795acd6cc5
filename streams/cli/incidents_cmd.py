"""``tunnelwatch incidents``: the incidents on vpn.incidents, latest state per incident_id.

Without ``--follow``: read what the topic holds now (to its end offsets), print one line
(or table row) per incident in the order ``analyze`` uses, and exit. The snapshot always
reads the whole topic: every record is a full state, the newest one per incident wins.

With ``--follow``: print each update as it arrives, from now on, or first everything the
topic holds with ``--from-beginning``; until interrupted.

Exit codes: 0 success, 1 Kafka could not be reached, 3 ``--wait-quiet`` timed out.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson

from streams.core.stories import join_stories
from streams.errors import BrokerError
from streams.shell import incidents as reader
from streams.shell.topics import DEFAULT_BOOTSTRAP, INCIDENTS_TOPIC, wait_quiet


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "incidents",
        help="print the incidents published on vpn.incidents (latest state per incident)",
    )
    p.add_argument("--bootstrap", default=DEFAULT_BOOTSTRAP, help="Kafka bootstrap servers")
    p.add_argument("--topic", default=INCIDENTS_TOPIC)
    p.add_argument(
        "--from-beginning",
        action="store_true",
        help="with --follow: start with everything the topic holds (a snapshot always does)",
    )
    p.add_argument("--follow", action="store_true", help="keep printing updates as they come")
    p.add_argument("--format", choices=("table", "jsonl"), default="table")
    p.add_argument(
        "--wait-quiet",
        type=float,
        metavar="SECONDS",
        help="first wait until the topic has not grown for SECONDS (and --group caught up)",
    )
    p.add_argument(
        "--group",
        help="with --wait-quiet: also wait until this consumer group (the worker's "
        "--app-id) has no lag",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="give up --wait-quiet after this many seconds (default: %(default)s)",
    )
    p.set_defaults(func=run)


def _line(rec: dict[str, Any]) -> str:
    from streams.cli.render import safe_text  # device text: no escape sequences

    return safe_text(
        f"{rec['status']:<8} {rec['device']} {rec['peer'] or '-'} {rec['cause']} "
        f"conf={rec['confidence']:.2f} n={rec['count']} "
        f"{rec['first_seen'][:19]}..{rec['last_seen'][:19]} {rec['incident_id']}"
    )


async def _run(args: argparse.Namespace) -> int:
    if args.wait_quiet is not None:
        quiet = await wait_quiet(
            args.bootstrap,
            args.topic,
            args.wait_quiet,
            group_id=args.group,
            timeout=args.timeout,
        )
        if not quiet:
            print(
                f"tunnelwatch incidents: {args.topic} did not become quiet within "
                f"{args.timeout:.0f}s",
                file=sys.stderr,
            )
            return 3
    out = sys.stdout
    if not args.follow:
        records = reader.ordered(await reader.snapshot(args.bootstrap, args.topic))
        # Both ends of a tunnel, as analyze joins them (the records carry device addresses).
        join_stories(records)
        if args.format == "jsonl":
            for rec in records:
                out.write(orjson.dumps(rec).decode("utf-8") + "\n")
            out.flush()
        else:
            from streams.cli.render import incident_table

            incident_table(records)
        print(f"tunnelwatch: incidents={len(records)} topic={args.topic}", file=sys.stderr)
        return 0
    async for rec in reader.follow(args.bootstrap, args.topic, from_beginning=args.from_beginning):
        out.write(orjson.dumps(rec).decode("utf-8") if args.format == "jsonl" else _line(rec))
        out.write("\n")
        out.flush()
    return 0  # pragma: no cover - follow ends only by interruption


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except BrokerError as exc:
        print(f"tunnelwatch incidents: {exc}", file=sys.stderr)
        return 1
