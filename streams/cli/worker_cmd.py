"""``tunnelwatch worker``: parse syslog.raw and correlate per device on Kafka (faust)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streams.errors import BrokerError, ConfigError
from streams.shell.topics import (
    DEADLETTER_TOPIC,
    DEFAULT_APP_ID,
    DEFAULT_BOOTSTRAP,
    DEFAULT_PARTITIONS,
    EVENTS_TOPIC,
    INCIDENTS_TOPIC,
    RAW_TOPIC,
    TopicNames,
)
from streams.shell.worker.config import DEFAULT_DATA_DIR, EVENT_POLICIES, STORES, WorkerConfig


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "worker",
        help="run the streaming worker: syslog.raw -> syslog.events -> vpn.incidents",
        description=(
            "Parse syslog.raw into syslog.events (keyed by device; unparseable records go "
            "to the dead-letter topic) and correlate per device into vpn.incidents, with "
            "the engine state in a changelog-backed table. Runs until SIGTERM/SIGINT. "
            "Start several with the same --app-id to share the partitions."
        ),
    )
    p.add_argument("--bootstrap", default=DEFAULT_BOOTSTRAP, help="Kafka bootstrap servers")
    p.add_argument(
        "--partitions",
        type=int,
        default=DEFAULT_PARTITIONS,
        help="partitions of the topics it creates (default: %(default)s)",
    )
    p.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="local state (default: %(default)s)"
    )
    p.add_argument("--app-id", default=DEFAULT_APP_ID, help="consumer group and table prefix")
    p.add_argument("--raw-topic", default=RAW_TOPIC)
    p.add_argument("--events-topic", default=EVENTS_TOPIC)
    p.add_argument("--deadletter-topic", default=DEADLETTER_TOPIC)
    p.add_argument("--incidents-topic", default=INCIDENTS_TOPIC)
    p.add_argument(
        "--store",
        choices=sorted(STORES),
        default="memory",
        help="table store: memory (rebuilt from the changelog on start) or rocksdb "
        "(needs the rocksdict package)",
    )
    p.add_argument(
        "--year",
        type=int,
        help="year of year-less stamps (archive replays; default: the received_at header)",
    )
    p.add_argument("--device", help="device name for lines that name none (default: the source)")
    p.add_argument(
        "--tz-map",
        metavar="FILE",
        help="device name, IP or CIDR -> IANA zone (CSV or YAML): the zone of devices that "
        "log local time without a zone label",
    )
    p.add_argument("--ready-file", type=Path, help="write this file once partitions are assigned")
    p.add_argument(
        "--tick", type=float, default=1.0, help="seconds between watermark ticks (default: 1)"
    )
    p.add_argument(
        "--flush-idle",
        type=float,
        default=2.0,
        help="publish an incident's pending state after this many seconds without events "
        "of its device (default: 2)",
    )
    p.add_argument(
        "--events",
        choices=EVENT_POLICIES,
        default="engine",
        help="what goes to the events topic: engine = the events a rule of the knowledge "
        "base reads (every VPN message the engine correlates; the other lines only move "
        "their device's clock, read by the native scanner without a Python event); all = "
        "every parsed line, each parsed in Python (slower) (default: %(default)s)",
    )
    p.add_argument(
        "--commit-max-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="under load, a commit that would store about a device state per record waits "
        "for more records, at most this long after the last store; a crash replays at most "
        "that much (0: never wait) (default: %(default)s)",
    )
    p.add_argument("--loglevel", default="warning", help="faust log level (default: warning)")
    p.add_argument(
        "--metrics", metavar="HOST:PORT", help="serve Prometheus /metrics (streams/shell/health.py)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = WorkerConfig(
        bootstrap=args.bootstrap,
        partitions=args.partitions,
        data_dir=args.data_dir,
        app_id=args.app_id,
        topics=TopicNames(
            raw=args.raw_topic,
            events=args.events_topic,
            deadletter=args.deadletter_topic,
            incidents=args.incidents_topic,
        ),
        store=args.store,
        year=args.year,
        device=args.device,
        tz_map=args.tz_map,
        ready_file=args.ready_file,
        tick_interval=args.tick,
        flush_idle=args.flush_idle,
        loglevel=args.loglevel,
        events=args.events,
        commit_max_interval=args.commit_max_interval,
    )
    from streams.shell.worker.run import run_worker

    if getattr(args, "metrics", None):
        from streams.shell.health import WorkerHealth, serve_in_thread

        host, _, port = args.metrics.rpartition(":")
        health = WorkerHealth(args.bootstrap, args.app_id, args.raw_topic, args.incidents_topic)
        try:
            serve_in_thread(health, host or "127.0.0.1", int(port))
        except (OSError, ValueError) as exc:
            print(f"tunnelwatch worker: --metrics {args.metrics}: {exc}", file=sys.stderr)
            return 1
    try:
        return run_worker(cfg)
    except (BrokerError, ConfigError) as exc:  # ConfigError: unsupported faust version
        print(f"tunnelwatch worker: {exc}", file=sys.stderr)
        return 1
