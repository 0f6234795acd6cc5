"""``tunnelwatch notify``: send the incidents of vpn.incidents to Alertmanager and webhooks.

Exit codes: 0 stopped by SIGTERM/SIGINT, 1 Kafka could not be reached, 2 bad
configuration (one line per bad field).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

from streams.core.alerting import parse_duration
from streams.errors import BrokerError
from streams.shell.notify.config import NotifyConfigError, load_config
from streams.shell.topics import DEFAULT_BOOTSTRAP, INCIDENTS_TOPIC, OPERATOR_TOPIC


def register(sub: argparse._SubParsersAction[Any]) -> None:
    from streams.shell.notify.run import DEFAULT_GROUP

    p = sub.add_parser(
        "notify",
        help="send incidents to Alertmanager (API v2) and webhooks (signed, or PagerDuty)",
    )
    p.add_argument("--config", type=Path, required=True, metavar="F", help="the YAML file")
    p.add_argument("--bootstrap", default=DEFAULT_BOOTSTRAP, help="Kafka bootstrap servers")
    p.add_argument("--topic", default=INCIDENTS_TOPIC, help="default: %(default)s")
    p.add_argument(
        "--operator-topic",
        default=OPERATOR_TOPIC,
        help="silences and maintenance windows set on the board (default: %(default)s)",
    )
    p.add_argument("--group", default=DEFAULT_GROUP, help="consumer group (default: %(default)s)")
    p.add_argument(
        "--max-age",
        metavar="DURATION",
        help="do not send incidents whose last_seen is more than this behind the fleet's "
        "newest event time (e.g. 1h, 400d; 'none': send everything). Default: the "
        "config's max_age, else 1h",
    )
    p.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus /metrics here")
    p.add_argument("--ready-file", type=Path, help="write this JSON file once reading")
    p.set_defaults(func=run)


def _max_age(text: str | None, default: float | None) -> float | None:
    if text is None:
        return default
    if text.strip().lower() == "none":
        return None
    return parse_duration(text)


async def _serve(args: argparse.Namespace) -> int:
    from streams.shell.notify import metrics
    from streams.shell.notify.run import Notifier

    config = load_config(args.config)
    notifier = Notifier(
        config,
        args.bootstrap,
        args.topic,
        args.group,
        max_age=_max_age(args.max_age, config.max_age),
        operator_topic=args.operator_topic,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = None
    try:
        if args.metrics:
            host, _, port = args.metrics.rpartition(":")
            runner, bound = await metrics.serve(notifier, host or "127.0.0.1", int(port))
            print(f"tunnelwatch notify: metrics on {host or '127.0.0.1'}:{bound}", file=sys.stderr)
        task = asyncio.ensure_future(notifier.run(stop))
        ready = asyncio.ensure_future(notifier.ready.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if notifier.ready.is_set() and args.ready_file is not None:
            args.ready_file.write_text(json.dumps({"group": args.group, "topic": args.topic}))
        ready.cancel()
        await task
    finally:
        if runner is not None:
            await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        _max_age(args.max_age, None)
    except ValueError as exc:
        print(f"tunnelwatch notify: --max-age: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve(args))
    except NotifyConfigError as exc:
        print(f"tunnelwatch notify: invalid configuration {args.config}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except BrokerError as exc:
        print(f"tunnelwatch notify: {exc}", file=sys.stderr)
        return 1
