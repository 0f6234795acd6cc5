"""``tunnelwatch receive``: a syslog receiver (UDP, TCP, TLS) publishing to Kafka.

Every message goes unparsed to the topic (default ``syslog.raw``), keyed by device, with
headers ``received_at`` and ``source``. When Kafka is away or slow, messages go to an
on-disk spool and are published in order when it is back. SIGTERM/SIGINT stop it cleanly:
what is in memory goes to Kafka or to the spool.

Exit codes: 0 after a clean shutdown, 2 bad options (or a port that cannot be bound).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from streams.errors import ConfigError
from streams.shell.receiver.protection import parse_networks
from streams.shell.receiver.server import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_KEEPALIVE,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
    DEFAULT_MAX_MESSAGE,
    Receiver,
    ReceiverConfig,
    parse_hostport,
)
from streams.shell.topics import DEFAULT_BOOTSTRAP, RAW_TOPIC

DEFAULT_SPOOL_DIR = Path(".state/spool")
DEFAULT_SPOOL_MAX = 1 << 30


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "receive",
        help="receive syslog over UDP/TCP/TLS and publish it unparsed to Kafka",
        description=(
            "Receive syslog (UDP; TCP and TLS with RFC 6587 octet counting or LF framing) "
            "and publish every message unparsed to Kafka, keyed by device, spooling to disk "
            "while Kafka is away."
        ),
    )
    p.add_argument("--udp", metavar="HOST:PORT", help="UDP listener, e.g. 0.0.0.0:514")
    p.add_argument("--tcp", metavar="HOST:PORT", help="TCP listener, e.g. 0.0.0.0:601")
    p.add_argument("--tls", metavar="HOST:PORT", help="TLS listener (RFC 5425), e.g. :6514")
    p.add_argument("--tls-cert", type=Path, metavar="F", help="PEM certificate chain for --tls")
    p.add_argument("--tls-key", type=Path, metavar="F", help="PEM private key for --tls")
    p.add_argument(
        "--tls-ca",
        type=Path,
        metavar="F",
        help="require TLS client certificates signed by these PEM CA certificates",
    )
    p.add_argument(
        "--tcp-idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT,
        metavar="S",
        help="close TCP/TLS connections silent this long; 0: never (default: %(default)s)",
    )
    p.add_argument(
        "--tcp-keepalive",
        type=int,
        default=DEFAULT_KEEPALIVE,
        metavar="S",
        help="TCP keepalive probes after S idle seconds; 0: off (default: %(default)s)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help="TCP/TLS connections at once, more are refused; 0: no cap (default: %(default)s)",
    )
    p.add_argument(
        "--max-connections-per-source",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
        metavar="N",
        help="TCP/TLS connections at once from one address; 0: no cap (default: %(default)s)",
    )
    p.add_argument(
        "--bootstrap", default=DEFAULT_BOOTSTRAP, help="Kafka bootstrap (default: %(default)s)"
    )
    p.add_argument("--topic", default=RAW_TOPIC, help="topic (default: %(default)s)")
    p.add_argument(
        "--spool-dir",
        type=Path,
        default=DEFAULT_SPOOL_DIR,
        metavar="D",
        help="spool directory (default: %(default)s)",
    )
    p.add_argument(
        "--spool-max-bytes",
        type=int,
        default=DEFAULT_SPOOL_MAX,
        metavar="N",
        help="spool size limit; beyond it messages are dropped (default: 1 GiB)",
    )
    p.add_argument(
        "--allow",
        nargs="+",
        action="extend",
        default=[],
        metavar="CIDR",
        help="accept only these source networks (default: any)",
    )
    p.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        metavar="MSGS_PER_S",
        help="per-source token bucket (burst: one second's worth); default: none",
    )
    p.add_argument(
        "--max-message-bytes",
        type=int,
        default=DEFAULT_MAX_MESSAGE,
        metavar="N",
        help="longer messages are truncated and counted (default: %(default)s)",
    )
    p.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus /metrics here")
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds to flush to Kafka on shutdown before spooling (default: %(default)s)",
    )
    p.add_argument(
        "--udp-path",
        choices=("auto", "native", "python"),
        default="auto",
        help="UDP reading and Kafka batching: the native module (Rust reader thread), the "
        "Python path, or native when installed (default: %(default)s)",
    )
    p.add_argument(
        "--udp-buffer-mb",
        type=int,
        default=None,
        metavar="MB",
        help="native path: datagrams the reader thread may hold while the event loop is "
        "busy (default: 256)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> ReceiverConfig:
    def hp(value: str | None, default_host: str = "0.0.0.0") -> tuple[str, int] | None:
        return parse_hostport(value, default_host) if value else None

    return ReceiverConfig(
        bootstrap=args.bootstrap,
        topic=args.topic,
        udp=hp(args.udp),
        tcp=hp(args.tcp),
        tls=hp(args.tls),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_ca=args.tls_ca,
        tcp_idle_timeout=args.tcp_idle_timeout,
        tcp_keepalive=args.tcp_keepalive,
        max_connections=args.max_connections,
        max_connections_per_source=args.max_connections_per_source,
        spool_dir=args.spool_dir,
        spool_max_bytes=args.spool_max_bytes,
        allow=parse_networks(args.allow),
        rate_limit=args.rate_limit,
        max_message_bytes=args.max_message_bytes,
        metrics=hp(args.metrics, "127.0.0.1"),
        shutdown_timeout=args.shutdown_timeout,
        native={"auto": None, "native": True, "python": False}[args.udp_path],
        **(
            {"udp_buffer_bytes": args.udp_buffer_mb * 1024 * 1024}
            if args.udp_buffer_mb is not None
            else {}
        ),
    )


async def serve(config: ReceiverConfig) -> None:
    """Run until SIGTERM or SIGINT, then shut down cleanly."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    receiver = Receiver(config)
    try:
        await receiver.start()
        parts = [
            f"{name} {addr[0]}:{addr[1]}"
            for name, addr in (
                ("udp", receiver.udp_address),
                ("tcp", receiver.tcp_address),
                ("tls", receiver.tls_address),
                ("metrics", receiver.metrics_address),
            )
            if addr is not None
        ]
        if receiver.udp_address is not None:
            parts.append(
                f"udp rcvbuf requested {config.udp_rcvbuf}, granted {receiver.udp_rcvbuf_granted}"
            )
        print(
            f"tunnelwatch receive: listening ({', '.join(parts)}) → {config.bootstrap} "
            f"topic {config.topic}, spool {config.spool_dir}",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
        print("tunnelwatch receive: shutting down", file=sys.stderr, flush=True)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await receiver.close()
    m = receiver.metrics
    print(
        f"tunnelwatch receive: received {sum(m.received.values())}, published {m.published}, "
        f"spooled {m.spooled}, dropped "
        + ", ".join(f"{k}={v}" for k, v in m.dropped.items() if v)
        + (" (none)" if not any(m.dropped.values()) else ""),
        file=sys.stderr,
        flush=True,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiokafka logs every failed connection attempt; the receiver reports Kafka's state itself.
    logging.getLogger("aiokafka").setLevel(logging.DEBUG if args.verbose else logging.CRITICAL)
    try:
        config = config_from_args(args)
        import uvloop

        uvloop.run(serve(config))
    except ConfigError as exc:
        print(f"tunnelwatch receive: error: {exc}", file=sys.stderr)
        return 2
    return 0
