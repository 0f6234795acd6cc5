"""``tunnelwatch kafka start|stop|status``: manage the local single-node Kafka broker.

Exit codes: 0 success (``status``: ready), 1 the broker could not be set up, started or
stopped, 3 (``status``) not running, 4 (``status``) running but not ready yet.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from streams.errors import BrokerError
from streams.shell import broker

EXIT_FAILED = 1
EXIT_NOT_RUNNING = 3
EXIT_NOT_READY = 4


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "kafka",
        help="start, stop or check the local Apache Kafka broker",
        description=(
            "Manage a real single-node Apache Kafka broker (KRaft) whose jars are fetched "
            "from Maven Central into .cache/kafka (or $TUNNELWATCH_KAFKA_HOME)."
        ),
    )
    actions = parser.add_subparsers(dest="kafka_action", metavar="ACTION", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        type=Path,
        default=broker.DEFAULT_DATA_DIR,
        help="broker state directory (default: %(default)s)",
    )

    ports = argparse.ArgumentParser(add_help=False)
    ports.add_argument(
        "--port",
        type=int,
        default=broker.DEFAULT_PORT,
        help="PLAINTEXT listener port on 127.0.0.1 (default: %(default)s)",
    )
    ports.add_argument(
        "--controller-port",
        type=int,
        default=broker.DEFAULT_CONTROLLER_PORT,
        help="KRaft CONTROLLER listener port on 127.0.0.1 (default: %(default)s)",
    )

    start = actions.add_parser(
        "start",
        parents=[common, ports],
        help="start the broker and wait until it is ready (no-op if it already is)",
    )
    start.set_defaults(func=_start)

    stop = actions.add_parser(
        "stop", parents=[common, ports], help="stop the broker (no-op if not running)"
    )
    stop.set_defaults(func=_stop)

    status = actions.add_parser(
        "status",
        parents=[common],
        help="print the bootstrap address and whether the broker is ready",
    )
    status.add_argument(
        "--port",
        type=int,
        default=None,
        help="port to probe (default: the data dir's configured port, else 9092)",
    )
    status.add_argument("--controller-port", type=int, default=None, help=argparse.SUPPRESS)
    status.set_defaults(func=_status)


def _start(args: argparse.Namespace) -> int:
    try:
        info = broker.start(args.data_dir, args.port, args.controller_port)
    except BrokerError as exc:
        print(f"tunnelwatch kafka start: {exc}", file=sys.stderr)
        return EXIT_FAILED
    verb = "started" if info.started else "already running"
    print(f"{info.bootstrap} ready ({verb}, pid {info.pid}, data dir {info.data_dir})")
    return 0


def _stop(args: argparse.Namespace) -> int:
    try:
        was_running = broker.stop(args.data_dir)
    except BrokerError as exc:
        print(f"tunnelwatch kafka stop: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print("stopped" if was_running else "not running")
    return 0


def _status(args: argparse.Namespace) -> int:
    result = broker.status(args.data_dir, args.port)
    pid = f" (pid {result.pid})" if result.pid is not None else ""
    print(f"{result.bootstrap} {result.state.value}{pid}")
    if result.state is broker.BrokerState.READY:
        return 0
    if result.state is broker.BrokerState.NOT_RUNNING:
        return EXIT_NOT_RUNNING
    return EXIT_NOT_READY
