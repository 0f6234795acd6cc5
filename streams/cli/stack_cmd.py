"""``tunnelwatch up`` / ``tunnelwatch down``: the local streaming stack in the background.

``up`` starts (or finds running) Kafka, creates the topics, starts the worker and the
receiver (UDP and TCP on 127.0.0.1:5514), and returns once every part is ready. ``down``
stops them. Both are idempotent. State, logs and pid files: ``--state-dir``
(default ``.state/stack``).

Exit codes: 0 all up (``down``: all stopped), 1 a part failed, 3 the receiver is missing
from this build (the rest is up).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streams.errors import TunnelwatchError
from streams.shell import broker
from streams.shell.topics import DEFAULT_PARTITIONS

EXIT_FAILED = 1
EXIT_PARTIAL = 3


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from streams.shell.stack import DEFAULT_LISTEN, DEFAULT_STATE_DIR

    state = argparse.ArgumentParser(add_help=False)
    state.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="logs, pid files and data (default: %(default)s)",
    )
    p = sub.add_parser(
        "up",
        parents=[state],
        help="start Kafka, the worker and the receiver in the background",
    )
    p.add_argument("--port", type=int, default=broker.DEFAULT_PORT, help="Kafka port")
    p.add_argument(
        "--controller-port",
        type=int,
        default=broker.DEFAULT_CONTROLLER_PORT,
        help=argparse.SUPPRESS,
    )
    p.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS)
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the partitions (default: %(default)s)",
    )
    p.add_argument(
        "--listen", default=DEFAULT_LISTEN, help="receiver UDP+TCP address (default: %(default)s)"
    )
    p.add_argument(
        "--tz-map",
        metavar="FILE",
        help="device name, IP or CIDR -> IANA zone (CSV or YAML) for the workers",
    )
    p.add_argument(
        "--board",
        default="127.0.0.1:8514",
        metavar="HOST:PORT",
        help="the incident board's address ('none': no board; default: %(default)s)",
    )
    p.add_argument(
        "--notify-config", type=Path, metavar="F", help="also start `tunnelwatch notify` with F"
    )
    p.set_defaults(func=_up)
    d = sub.add_parser("down", parents=[state], help="stop what `tunnelwatch up` started")
    d.set_defaults(func=_down)


def _up(args: argparse.Namespace) -> int:
    from streams.shell.stack import up

    try:
        complete = up(
            args.state_dir,
            port=args.port,
            controller_port=args.controller_port,
            partitions=args.partitions,
            listen=args.listen,
            workers=args.workers,
            tz_map=args.tz_map,
            board=None if args.board == "none" else args.board,
            notify_config=args.notify_config,
        )
    except TunnelwatchError as exc:
        print(f"tunnelwatch up: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return 0 if complete else EXIT_PARTIAL


def _down(args: argparse.Namespace) -> int:
    from streams.shell.stack import down

    try:
        down(args.state_dir)
    except TunnelwatchError as exc:
        print(f"tunnelwatch down: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return 0
