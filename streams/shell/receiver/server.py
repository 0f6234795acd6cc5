"""The receiver: syslog over UDP, TCP and TLS in, every message unparsed to Kafka out.

:class:`Receiver` binds the listeners, checks each message (allow-list, per-source rate,
size), turns it into a :class:`~streams.shell.receiver.record.Record` and hands it to the
:class:`~streams.shell.receiver.pipeline.Pipeline` (memory queue, spool, Kafka).
Input is only ever data: nothing a sender writes can do more than be counted and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.errors import ConfigError
from streams.shell.receiver.framing import StreamFramer
from streams.shell.receiver.kafka import KafkaOut
from streams.shell.receiver.metrics import Metrics, MetricsServer
from streams.shell.receiver.pipeline import LoudLog, Pipeline, PipelineConfig
from streams.shell.receiver.protection import AllowList, IPNetwork, RateLimiter
from streams.shell.receiver.record import RecordMaker, format_source
from streams.shell.receiver.spool import DEFAULT_SEGMENT_BYTES, Spool
from streams.shell.topics import RAW_TOPIC

log = logging.getLogger(__name__)

UDP_RCVBUF_REQUEST = 32 * 1024 * 1024
DEFAULT_MAX_MESSAGE = 65536
_SOURCE_CACHE_MAX = 65536


def parse_hostport(text: str, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT`` or ``:PORT`` → (host, port); ConfigError when invalid."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ConfigError(f"{text!r} is not HOST:PORT")
    host = host.strip("[]") or default_host
    try:
        number = int(port)
    except ValueError as exc:
        raise ConfigError(f"{text!r}: port {port!r} is not a number") from exc
    if not 0 <= number <= 65535:
        raise ConfigError(f"{text!r}: port out of range")
    return host, number


@dataclass
class ReceiverConfig:
    bootstrap: str
    topic: str = RAW_TOPIC
    udp: tuple[str, int] | None = None
    tcp: tuple[str, int] | None = None
    tls: tuple[str, int] | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    spool_dir: Path = Path(".state/spool")
    spool_max_bytes: int = 1 << 30
    spool_segment_bytes: int = DEFAULT_SEGMENT_BYTES
    allow: list[IPNetwork] = field(default_factory=list)
    rate_limit: float | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE
    metrics: tuple[str, int] | None = None
    udp_rcvbuf: int = UDP_RCVBUF_REQUEST
    request_timeout_ms: int = 30_000
    shutdown_timeout: float = 10.0
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, rx: Receiver) -> None:
        self.rx = rx

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.rx.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP socket error: %s", exc)


class _Stream(asyncio.Protocol):
    """One TCP or TLS connection, framed per RFC 6587 (detected from the first byte)."""

    def __init__(self, rx: Receiver, name: str) -> None:
        self.rx = rx
        self.name = name
        self.transport: Any = None  # asyncio's or uvloop's transport
        self.framer = StreamFramer(rx.config.max_message_bytes)
        self.host = ""
        self.source = b""
        self.open = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.host, self.source = self.rx.source_of(transport.get_extra_info("peername"))
        if not self.rx.allow.allows(self.host):
            self.rx.metrics.dropped["not_allowed"] += 1
            self.rx.not_allowed_log.hit()
            transport.abort()
            return
        self.open = True
        self.rx.connections.add(self)
        self.rx.metrics.tcp_connections += 1

    def data_received(self, data: bytes) -> None:
        if not self.open:
            return
        result = self.framer.feed(data)
        rx = self.rx
        if result.truncated:
            rx.metrics.dropped["truncated"] += result.truncated
        for message in result.messages:
            rx.on_message(message, self.host, self.source, self.name)
        if result.error is not None:
            rx.metrics.dropped["bad_frame"] += 1
            rx.bad_frame_log.hit()
            log.debug("closing %s connection from %s: %s", self.name, self.host, result.error)
            self.open = False
            self.transport.abort()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.open:
            result = self.framer.finish()
            for message in result.messages:
                self.rx.on_message(message, self.host, self.source, self.name)
            if result.error is not None:
                self.rx.metrics.dropped["bad_frame"] += 1
        self.open = False
        self.rx.connections.discard(self)
        self.rx.metrics.tcp_connections = len(self.rx.connections)


class Receiver:
    """Listeners + checks + pipeline. ``await start()``, then ``await close()``."""

    def __init__(self, config: ReceiverConfig) -> None:
        if not (config.udp or config.tcp or config.tls):
            raise ConfigError("nothing to listen on: give --udp, --tcp and/or --tls")
        if config.tls and not (config.tls_cert and config.tls_key):
            raise ConfigError("--tls needs --tls-cert and --tls-key")
        if config.max_message_bytes < 1:
            raise ConfigError("--max-message-bytes must be positive")
        self.config = config
        self.metrics = Metrics()
        self.allow = AllowList(config.allow)
        self.rate = RateLimiter(config.rate_limit)
        self.maker = RecordMaker()
        self.connections: set[_Stream] = set()
        self.not_allowed_log = LoudLog("messages from sources outside --allow dropped", 60.0)
        self.bad_frame_log = LoudLog("TCP connections closed for a broken octet count", 60.0)
        self.rate_log = LoudLog("messages over --rate-limit dropped", 60.0)
        self._sources: dict[Any, tuple[str, bytes]] = {}
        self._servers: list[asyncio.Server] = []
        self._udp: asyncio.DatagramTransport | None = None
        self._metrics_server: MetricsServer | None = None
        self.spool: Spool | None = None
        self.pipeline: Pipeline | None = None
        self.udp_address: tuple[str, int] | None = None
        self.tcp_address: tuple[str, int] | None = None
        self.tls_address: tuple[str, int] | None = None
        self.udp_rcvbuf_granted = 0

    # -- per message -------------------------------------------------------------------

    def source_of(self, addr: Any) -> tuple[str, bytes]:
        try:
            return self._sources[addr]
        except (KeyError, TypeError):
            pass
        text = format_source(addr)
        host = str(addr[0]) if addr else "unknown"
        if host.startswith("::ffff:") and "." in host:
            host = host[7:]
        out = (host, text.encode("ascii", "replace"))
        if len(self._sources) >= _SOURCE_CACHE_MAX:
            self._sources.clear()
        with contextlib.suppress(TypeError):  # an unhashable address: just not cached
            self._sources[addr] = out
        return out

    def on_datagram(self, data: bytes, addr: Any) -> None:
        host, source = self.source_of(addr)
        metrics = self.metrics
        if not self.allow.allows(host):
            metrics.dropped["not_allowed"] += 1
            self.not_allowed_log.hit()
            return
        if self.rate.rate and not self.rate.allow(host):
            metrics.dropped["rate_limited"] += 1
            self.rate_log.hit()
            return
        if data[-1:] in (b"\n", b"\x00", b"\r"):
            data = data.rstrip(b"\r\n\x00")
        if len(data) > self.config.max_message_bytes:
            data = data[: self.config.max_message_bytes]
            metrics.dropped["truncated"] += 1
        self._accept(data, host, source, "udp")

    def on_message(self, data: bytes, host: str, source: bytes, transport: str) -> None:
        """A framed message from a stream connection (already cut to the size limit)."""
        if self.rate.rate and not self.rate.allow(host):
            self.metrics.dropped["rate_limited"] += 1
            self.rate_log.hit()
            return
        self._accept(data, host, source, transport)

    def _accept(self, data: bytes, host: str, source: bytes, transport: str) -> None:
        pipeline = self.pipeline
        if pipeline is None:  # arrived while shutting down, after the pipeline closed
            self.metrics.dropped["shutdown"] += 1
            return
        if not data:
            self.metrics.dropped["empty"] += 1
            return
        self.metrics.received[transport] += 1
        pipeline.put(self.maker.make(data, host, source))

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        self.spool = Spool(cfg.spool_dir, cfg.spool_max_bytes, cfg.spool_segment_bytes)
        out = KafkaOut(cfg.bootstrap, cfg.topic, request_timeout_ms=cfg.request_timeout_ms)
        self.pipeline = Pipeline(out, self.spool, self.metrics, cfg.pipeline)
        self.pipeline.start()
        loop = asyncio.get_running_loop()
        try:
            if cfg.udp:
                sock = self._udp_socket(*cfg.udp)
                transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), sock=sock)
                self._udp = transport
                self.udp_address = _addr(sock.getsockname())
            if cfg.tcp:
                server = await loop.create_server(
                    lambda: _Stream(self, "tcp"), cfg.tcp[0], cfg.tcp[1], backlog=1024
                )
                self._servers.append(server)
                self.tcp_address = _addr(server.sockets[0].getsockname())
            if cfg.tls:
                assert cfg.tls_cert is not None and cfg.tls_key is not None
                ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                try:
                    ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
                except (OSError, ssl.SSLError) as exc:
                    raise ConfigError(f"--tls-cert/--tls-key: {exc}") from exc
                server = await loop.create_server(
                    lambda: _Stream(self, "tls"), cfg.tls[0], cfg.tls[1], ssl=ctx, backlog=1024
                )
                self._servers.append(server)
                self.tls_address = _addr(server.sockets[0].getsockname())
            if cfg.metrics:
                self._metrics_server = MetricsServer(self.metrics, *cfg.metrics)
                await self._metrics_server.start()
        except BaseException:
            await self.close()
            raise

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        return self._metrics_server.address if self._metrics_server else None

    def _udp_socket(self, host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            want = self.config.udp_rcvbuf
            force = getattr(socket, "SO_RCVBUFFORCE", None)  # Linux
            try:  # root (CAP_NET_ADMIN) may exceed net.core.rmem_max
                if force is None:
                    raise PermissionError
                sock.setsockopt(socket.SOL_SOCKET, force, want)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, want)
            # Linux reports twice the size asked for (it counts its bookkeeping too).
            self.udp_rcvbuf_granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            self.metrics.udp_rcvbuf_bytes = self.udp_rcvbuf_granted
            level = logging.INFO if self.udp_rcvbuf_granted >= want else logging.WARNING
            log.log(
                level,
                "UDP SO_RCVBUF: requested %d bytes, kernel granted %d (as reported by getsockopt)",
                want,
                self.udp_rcvbuf_granted,
            )
            sock.bind((host, port))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot listen on UDP {host}:{port}: {exc}") from exc
        return sock

    async def close(self) -> None:
        """Stop listening, publish or spool what is in memory, release everything."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers = []
        await asyncio.sleep(0)  # let connection_lost callbacks run
        if self.pipeline is not None:
            await self.pipeline.close(self.config.shutdown_timeout)
            self.pipeline = None
        elif self.spool is not None:
            self.spool.close()
        if self._metrics_server is not None:
            await self._metrics_server.close()
            self._metrics_server = None


def _addr(sockname: Any) -> tuple[str, int]:
    return str(sockname[0]), int(sockname[1])
