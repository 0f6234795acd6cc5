"""``tunnelwatch kafka start|stop|status``: manage the local Kafka broker, or a local
cluster of several (``--brokers N``); ``kafka topics``: create the stack's topics on any
cluster.

Exit codes: 0 success (``status``: ready), 1 the broker could not be set up, started or
stopped, 3 (``status``) not running, 4 (``status``) running but not ready yet, or a
cluster with some brokers down.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from streams.errors import BrokerError
from streams.shell import broker
from streams.shell.topics import (
    DEFAULT_APP_ID,
    DEFAULT_PARTITIONS,
    TopicNames,
    ensure_topics,
    replicated_topics,
    replication_factors,
    run_sync,
)

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
        default=None,
        help=f"broker state directory (default: {_rel(broker.DEFAULT_DATA_DIR)}, "
        f"or {_rel(broker.DEFAULT_CLUSTER_DIR)} with --brokers 2 or more)",
    )
    common.add_argument(
        "--brokers",
        type=int,
        default=1,
        help="brokers of a local KRaft cluster (ports from --port/--controller-port, two "
        "apart; topics with min(N, 3) replicas and min.insync.replicas one less); stop "
        "and status find a cluster from its data dir (default: %(default)s)",
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

    topics = actions.add_parser(
        "topics",
        help="create the stack's topics on a running cluster (existing ones are kept)",
        description=(
            "Create the topics of the stack (syslog.raw, syslog.events, syslog.deadletter, "
            "vpn.incidents and the worker's internal ones) on any Kafka cluster, with "
            "the given replication, before pointing the receiver and workers at it."
        ),
    )
    topics.add_argument("--bootstrap", required=True, help="host:port[,host:port...]")
    topics.add_argument("--replication-factor", type=int, default=3)
    topics.add_argument("--min-insync-replicas", type=int, default=2)
    topics.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS)
    topics.add_argument("--app-id", default=DEFAULT_APP_ID, help="the workers' --app-id")
    topics.set_defaults(func=_topics)


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _data_dir(args: argparse.Namespace) -> Path:
    if args.data_dir is not None:
        return Path(args.data_dir)
    return broker.DEFAULT_CLUSTER_DIR if args.brokers > 1 else broker.DEFAULT_DATA_DIR


def _start(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    if args.brokers > 1:
        return _start_cluster(args, data_dir)
    if broker.is_cluster(data_dir):
        print(
            f"tunnelwatch kafka start: {data_dir} holds a cluster: give its --brokers",
            file=sys.stderr,
        )
        return EXIT_FAILED
    try:
        info = broker.start(data_dir, args.port, args.controller_port)
    except BrokerError as exc:
        print(f"tunnelwatch kafka start: {exc}", file=sys.stderr)
        return EXIT_FAILED
    verb = "started" if info.started else "already running"
    print(f"{info.bootstrap} ready ({verb}, pid {info.pid}, data dir {info.data_dir})")
    return 0


def _start_cluster(args: argparse.Namespace, data_dir: Path) -> int:
    try:
        info = broker.start_cluster(data_dir, args.brokers, args.port, args.controller_port)
    except BrokerError as exc:
        print(f"tunnelwatch kafka start: {exc}", file=sys.stderr)
        return EXIT_FAILED
    spec = info.spec
    verb = "started" if info.started else "already running"
    print(
        f"{info.bootstrap} ready ({verb}, {spec.brokers} brokers, replication factor "
        f"{spec.replication}, min.insync.replicas {spec.min_isr}, data dir {info.data_dir})"
    )
    for node_id, pid in sorted(info.pids.items()):
        print(f"  node {node_id} {broker.HOST}:{spec.ports(node_id)[0]} pid {pid}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    try:
        if broker.is_cluster(data_dir):
            stopped = broker.stop_cluster(data_dir)
            print(f"stopped {stopped} brokers" if stopped else "not running")
            return 0
        was_running = broker.stop(data_dir)
    except BrokerError as exc:
        print(f"tunnelwatch kafka stop: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print("stopped" if was_running else "not running")
    return 0


def _cluster_status(data_dir: Path) -> int | None:
    found = broker.cluster_status(data_dir)
    if found is None:
        return None
    up = sum(n.registered for n in found.nodes)
    spec = found.spec
    print(
        f"{found.bootstrap} {found.state.value} ({up} of {spec.brokers} brokers, "
        f"replication factor {spec.replication}, min.insync.replicas {spec.min_isr})"
    )
    for n in found.nodes:
        if n.pid is None:
            what = "not running"
        else:
            what = f"{'ready' if n.registered else 'not ready'} (pid {n.pid})"
        print(f"  node {n.node_id} {n.bootstrap} {what}")
    if found.state is broker.BrokerState.READY:
        return 0
    if found.state is broker.BrokerState.NOT_RUNNING:
        return EXIT_NOT_RUNNING
    return EXIT_NOT_READY


def _status(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    if broker.is_cluster(data_dir):
        rc = _cluster_status(data_dir)
        if rc is not None:
            return rc
    result = broker.status(data_dir, args.port)
    pid = f" (pid {result.pid})" if result.pid is not None else ""
    print(f"{result.bootstrap} {result.state.value}{pid}")
    if result.state is broker.BrokerState.READY:
        return 0
    if result.state is broker.BrokerState.NOT_RUNNING:
        return EXIT_NOT_RUNNING
    return EXIT_NOT_READY


def _topics(args: argparse.Namespace) -> int:
    names = TopicNames()
    specs = replicated_topics(
        names, args.app_id, args.partitions, min_insync_replicas=args.min_insync_replicas
    )
    try:
        counts = run_sync(
            ensure_topics(args.bootstrap, specs, replication_factor=args.replication_factor)
        )
        replicas = run_sync(replication_factors(args.bootstrap, sorted(counts), settle=30.0))
    except BrokerError as exc:
        print(f"tunnelwatch kafka topics: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for name in sorted(counts):
        print(f"{name} partitions {counts[name]} replicas {replicas.get(name, '?')}")
    short = sorted(t for t, r in replicas.items() if r < args.replication_factor)
    if short:
        print(
            f"warning: {', '.join(short)} existed with fewer than "
            f"{args.replication_factor} replicas (left as they are)",
            file=sys.stderr,
        )
    return 0
