"""The receiver's counters and a plain asyncio HTTP server exposing them at ``/metrics``.

Prometheus text exposition format 0.0.4, every name prefixed ``tunnelwatch_``:

==================================  =============================================================
``received_total{transport}``       messages accepted from udp, tcp or tls (before spooling)
``published_total``                 records acknowledged by Kafka
``spooled_total``                   records written to the spool
``spool_bytes``                     bytes of spool segments on disk
``dropped_total{reason}``           not_allowed, rate_limited, spool_full, spool_error (the
                                    spool's disk fails and its memory buffer is full),
                                    bad_frame, empty (empty datagrams, blank TCP/TLS lines),
                                    shutdown (arrived after the pipeline closed);
                                    ``truncated`` counts messages cut to --max-message-bytes
                                    (they are still published)
``queue_depth``                     records waiting in memory (queue and batches in flight)
``publish_latency_seconds``         histogram: from handing a batch to the producer to its ack
``udp_rcvbuf_errors_total``         Udp RcvbufErrors of /proc/net/snmp (the network namespace)
``udp_in_errors_total``             Udp InErrors of /proc/net/snmp
``udp_rcvbuf_bytes``                the receive buffer the kernel granted the UDP socket
``udp_buffered``                    native path: datagrams read from the socket by the reader
                                    thread and not yet taken by the event loop
``kafka_up``                        1 while the producer is connected and keeping up
``tcp_connections``                 open TCP/TLS connections
``spool_write_errors_total``        failed spool writes (each retried with a backoff)
``spool_failing``                   1 while spool writes fail
``spool_torn_tails_total``          segment tails cut off on open (a write cut short)
``spool_skipped_bytes_total``       spool bytes not readable as records (torn tails included)
``spool_quarantined_total``         damaged spool stretches skipped, copied to quarantine/
``spool_lost_records_total``        records counted in the spool that could not be read back
``spool_held_total``                records copied to the held journal (memory while Kafka
                                    does not ack)
``tls_handshake_failures_total``    TLS handshakes that failed
``connections_closed_total{reason}`` connections ended by: ``abrupt`` (TLS without
                                    close_notify, or reset), ``idle`` (--tcp-idle-timeout),
                                    ``source_cap``/``total_cap`` (refused, over
                                    --max-connections-per-source / --max-connections)
==================================  =============================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "tunnelwatch_"
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
DROP_REASONS = (
    "not_allowed", "rate_limited", "spool_full", "spool_error", "bad_frame", "empty",
    "shutdown", "truncated",
)  # fmt: skip
CLOSE_REASONS = ("abrupt", "idle", "source_cap", "total_cap")
TRANSPORTS = ("udp", "tcp", "tls")
SNMP_PATH = Path("/proc/net/snmp")


def read_udp_snmp(path: Path = SNMP_PATH) -> dict[str, int]:
    """The ``Udp:`` counters of /proc/net/snmp (empty when unavailable)."""
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except OSError:
        return {}
    rows = [line.split()[1:] for line in lines if line.startswith("Udp:")]
    if len(rows) < 2:
        return {}
    names, values = rows[0], rows[1]
    out: dict[str, int] = {}
    for name, value in zip(names, values, strict=False):
        with contextlib.suppress(ValueError):
            out[name] = int(value)
    return out


@dataclass
class Histogram:
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    total: int = 0
    sum: float = 0.0

    def observe(self, value: float, n: int = 1) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += n
                break
        self.total += n
        self.sum += value * n


@dataclass
class Metrics:
    """Plain counters, bumped inline on the hot path; rendered on scrape."""

    received: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TRANSPORTS, 0))
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    published: int = 0
    spooled: int = 0
    publish_errors: int = 0
    latency: Histogram = field(default_factory=Histogram)
    udp_rcvbuf_bytes: int = 0
    tcp_connections: int = 0
    held: int = 0
    tls_handshake_failures: int = 0
    closed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLOSE_REASONS, 0))
    spool: Any = None  # the Spool, for its counters
    # Filled in by the receiver before rendering:
    spool_bytes: Callable[[], int] = lambda: 0
    queue_depth: Callable[[], int] = lambda: 0
    udp_buffered: Callable[[], int] = lambda: 0
    kafka_up: Callable[[], bool] = lambda: False

    def render(self) -> str:
        p = PREFIX
        snmp = read_udp_snmp()
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {p}{name} {help_}")
            lines.append(f"# TYPE {p}{name} {kind}")
            for labels, value in samples:
                text = repr(value) if isinstance(value, float) else str(value)
                lines.append(f"{p}{name}{labels} {text}")

        metric(
            "received_total",
            "counter",
            "Messages received, by transport.",
            [(f'{{transport="{t}"}}', n) for t, n in self.received.items()],
        )
        metric("published_total", "counter", "Records acked by Kafka.", [("", self.published)])
        metric("spooled_total", "counter", "Records written to the spool.", [("", self.spooled)])
        metric("spool_bytes", "gauge", "Spool bytes on disk.", [("", self.spool_bytes())])
        metric(
            "dropped_total",
            "counter",
            "Messages dropped (truncated: cut to the size limit, still published), by reason.",
            [(f'{{reason="{r}"}}', n) for r, n in self.dropped.items()],
        )
        metric("queue_depth", "gauge", "Records held in memory.", [("", self.queue_depth())])
        metric(
            "publish_errors_total",
            "counter",
            "Failed produce attempts (retried).",
            [("", self.publish_errors)],
        )
        h = self.latency
        lines.append(f"# HELP {p}publish_latency_seconds Batch hand-over to Kafka ack.")
        lines.append(f"# TYPE {p}publish_latency_seconds histogram")
        cumulative = 0
        for bound, count in zip(h.buckets, h.counts, strict=True):
            cumulative += count
            lines.append(f'{p}publish_latency_seconds_bucket{{le="{bound}"}} {cumulative}')
        lines.append(f'{p}publish_latency_seconds_bucket{{le="+Inf"}} {h.total}')
        lines.append(f"{p}publish_latency_seconds_sum {h.sum!r}")
        lines.append(f"{p}publish_latency_seconds_count {h.total}")
        metric(
            "udp_rcvbuf_errors_total",
            "counter",
            "Udp RcvbufErrors from /proc/net/snmp (whole network namespace).",
            [("", snmp.get("RcvbufErrors", 0))],
        )
        metric(
            "udp_in_errors_total",
            "counter",
            "Udp InErrors from /proc/net/snmp (whole network namespace).",
            [("", snmp.get("InErrors", 0))],
        )
        metric(
            "udp_rcvbuf_bytes",
            "gauge",
            "SO_RCVBUF granted by the kernel for the UDP socket.",
            [("", self.udp_rcvbuf_bytes)],
        )
        metric(
            "udp_buffered",
            "gauge",
            "Datagrams read by the native UDP reader thread, not yet queued.",
            [("", self.udp_buffered())],
        )
        metric("kafka_up", "gauge", "1 while Kafka keeps up.", [("", int(self.kafka_up()))])
        metric("tcp_connections", "gauge", "Open connections.", [("", self.tcp_connections)])
        metric(
            "connections_closed_total",
            "counter",
            "TCP/TLS connections ended abruptly, for idleness or refused over a cap, by reason.",
            [(f'{{reason="{r}"}}', n) for r, n in self.closed.items()],
        )
        metric(
            "tls_handshake_failures_total",
            "counter",
            "TLS handshakes that failed.",
            [("", self.tls_handshake_failures)],
        )
        sp = self.spool
        for name, kind, help_, value in (
            ("spool_write_errors_total", "counter", "Failed spool writes (retried).",
             sp.write_errors if sp else 0),
            ("spool_failing", "gauge", "1 while spool writes fail.",
             int(sp is not None and sp.failing is not None)),
            ("spool_torn_tails_total", "counter", "Spool segment tails cut off on open.",
             sp.torn_tails if sp else 0),
            ("spool_skipped_bytes_total", "counter", "Spool bytes not readable as records.",
             sp.skipped_bytes if sp else 0),
            ("spool_quarantined_total", "counter",
             "Damaged spool stretches skipped and kept in quarantine/.",
             sp.quarantined if sp else 0),
            ("spool_lost_records_total", "counter",
             "Records counted in the spool that could not be read back.", sp.lost if sp else 0),
            ("spool_held_total", "counter",
             "Records copied to the held journal while Kafka did not ack.", self.held),
        ):  # fmt: skip
            metric(name, kind, help_, [("", value)])
        return "\n".join(lines) + "\n"


def parse_metrics(text: str) -> dict[str, float]:
    """Samples of a text exposition as ``{'name{labels}': value}`` (for tests and the bench)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[name] = float(value)
    return out


class MetricsServer:
    """``GET /metrics`` (and ``/healthz``) over plain HTTP/1.0 on asyncio streams."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        sock = self._server.sockets[0].getsockname()
        return str(sock[0]), int(sock[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5.0)
            parts = head.split(b"\r\n", 1)[0].split()
            method = parts[0] if parts else b""
            path = parts[1].split(b"?", 1)[0] if len(parts) > 1 else b""
            if method not in (b"GET", b"HEAD"):
                status, body, ctype = "405 Method Not Allowed", b"not allowed\n", "text/plain"
            elif path == b"/metrics":
                status, ctype = "200 OK", "text/plain; version=0.0.4; charset=utf-8"
                body = self.metrics.render().encode("utf-8")
            elif path == b"/healthz":
                status, body, ctype = "200 OK", b"ok\n", "text/plain"
            else:
                status, body, ctype = "404 Not Found", b"not found\n", "text/plain"
            writer.write(
                f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("ascii")
            )
            if method != b"HEAD":
                writer.write(body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def scrape(host: str, port: int, timeout: float = 5.0) -> str:
    """GET /metrics from a receiver (for tests, the bench and operators' scripts)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    _, _, body = data.partition(b"\r\n\r\n")
    return body.decode("utf-8")
