"""Entry point of the ``tunnelwatch`` console script.

Each sub-command lives in its own module exposing ``register(subparsers)``;
the module registers an argparse sub-parser whose ``func`` default takes the
parsed namespace and returns the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules under streams.cli that provide sub-commands, in help order.
COMMANDS: tuple[str, ...] = (
    "analyze",
    "compare_cmd",
    "parse",
    "kafka_cmd",
    "receive_cmd",
    "replay_cmd",
    "worker_cmd",
    "incidents_cmd",
    "stack_cmd",
    "load_cmd",
    "notify_cmd",
    "board_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunnelwatch",
        description="Diagnose IPsec VPN faults from Cisco IOS/ASA syslog.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"streams.cli.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error.
        sys.stderr.close()
        return 0
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
