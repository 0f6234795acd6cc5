"""``tunnelwatch board``: the live incident board, 127.0.0.1:8514 by default.

Exit codes: 0 stopped by SIGTERM/SIGINT, 1 Kafka could not be reached, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from streams.errors import BrokerError
from streams.shell.topics import DEFAULT_BOOTSTRAP, INCIDENTS_TOPIC, OPERATOR_TOPIC

TOKEN_ENV = "TUNNELWATCH_BOARD_TOKEN"
DEFAULT_LISTEN = "127.0.0.1:8514"


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "board", help="serve the live incident board (acknowledge, silences, maintenance)"
    )
    p.add_argument("--bootstrap", default=DEFAULT_BOOTSTRAP, help="Kafka bootstrap servers")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help="default: %(default)s (port 0: any free port)")  # fmt: skip
    p.add_argument("--topic", default=INCIDENTS_TOPIC, help="default: %(default)s")
    p.add_argument("--operator-topic", default=OPERATOR_TOPIC, help="default: %(default)s")
    p.add_argument(
        "--token",
        help=f"token required by write actions (default: ${TOKEN_ENV}; none: read-only)",
    )
    p.add_argument("--ready-file", type=Path, help="write {'url': ...} here once serving")
    p.set_defaults(func=run)


async def _serve(args: argparse.Namespace, host: str, port: int, token: str) -> int:
    from streams.shell.board.server import serve_board

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def ready(bound: int) -> None:
        url = f"http://{host}:{bound}/"
        print(f"tunnelwatch board: {url} (write actions "
              f"{'need the token' if token else 'disabled: no token'})",
              file=sys.stderr, flush=True)  # fmt: skip
        if args.ready_file is not None:
            args.ready_file.write_text(json.dumps({"url": url}))

    try:
        await serve_board(
            args.bootstrap, args.topic, args.operator_topic, host, port, token, stop, ready
        )
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    return 0


def run(args: argparse.Namespace) -> int:
    host, sep, port_text = args.listen.rpartition(":")
    if not sep or not port_text.isdigit():
        print(f"tunnelwatch board: --listen: not HOST:PORT: {args.listen!r}", file=sys.stderr)
        return 2
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV, "")
    try:
        return asyncio.run(_serve(args, host or "127.0.0.1", int(port_text), token))
    except BrokerError as exc:
        print(f"tunnelwatch board: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"tunnelwatch board: cannot serve on {args.listen}: {exc}", file=sys.stderr)
        return 1
