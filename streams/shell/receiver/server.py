"""The receiver: syslog over UDP, TCP and TLS in, every message unparsed to Kafka out.

:class:`Receiver` binds the listeners, checks each message (allow-list, per-source rate,
size), turns it into a :class:`~streams.shell.receiver.record.Record` and hands it to the
:class:`~streams.shell.receiver.pipeline.Pipeline` (memory queue, spool, Kafka).
Input is only ever data: nothing a sender writes can do more than be counted and dropped.

UDP has two paths, the same records and counters on both (tests run both):

- native (``tunnelwatch_native`` installed, ``TUNNELWATCH_NATIVE`` not ``0``): the
  receiver owns the socket; a reader thread of ``tunnelwatch_native.UdpReceiver`` (Rust,
  ``native/src/receiver.rs``, no GIL) reads it with ``recvmmsg`` as datagrams come and
  buffers them (up to ``udp_buffer_bytes``: the kernel's socket buffer may be small, and
  the event loop has pauses of its own), and signals an eventfd registered with
  ``loop.add_reader``; there ``UdpReceiver.drain`` applies the allow-list, rate limit,
  size limit and device key (where ``DeviceFinder``'s fast path reads it; Python keys the
  rest) to what was buffered and returns ready records that go to the pipeline in one
  call; the Kafka batches are built in Rust too (see ``kafka.py``);
- Python (``TUNNELWATCH_NATIVE=0``, or the extension missing): an asyncio
  ``DatagramProtocol``, one callback and one :meth:`Receiver.on_datagram` per datagram.

The startup log line says which path runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.core import native
from streams.errors import ConfigError
from streams.shell.receiver.framing import StreamFramer
from streams.shell.receiver.kafka import KafkaOut
from streams.shell.receiver.metrics import Metrics, MetricsServer
from streams.shell.receiver.pipeline import LoudLog, Pipeline, PipelineConfig
from streams.shell.receiver.protection import AllowList, IPNetwork, RateLimiter
from streams.shell.receiver.record import Record, RecordMaker, format_source
from streams.shell.receiver.spool import DEFAULT_BUFFER_MAX_BYTES, DEFAULT_SEGMENT_BYTES, Spool
from streams.shell.topics import HEADER_RECEIVED_AT, HEADER_SOURCE, RAW_TOPIC

log = logging.getLogger(__name__)

UDP_RCVBUF_REQUEST = 32 * 1024 * 1024
DEFAULT_IDLE_TIMEOUT = 600.0
DEFAULT_KEEPALIVE = 60
DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_MAX_CONNECTIONS_PER_SOURCE = 100
DEFAULT_MAX_MESSAGE = 65536
_SOURCE_CACHE_MAX = 65536
#: Native path: datagrams taken from the reader thread per event-loop wake-up at most
#: (then the publisher gets its turn).
UDP_DRAIN_BUDGET = 8192
#: Native path: datagrams one recvmmsg call reads at most (64 KiB of buffer each).
UDP_RECV_BATCH = 256
#: Native path: bytes of datagrams the reader thread holds for the event loop at most.
UDP_BUFFER_BYTES = 256 * 1024 * 1024
#: Native path: the reader thread's nice value, when the process may raise it.
UDP_READER_NICE = -10


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
    #: Client certificates are required and checked against this CA bundle when set.
    tls_ca: Path | None = None
    #: TCP/TLS: close a connection silent this long (seconds; 0: never).
    tcp_idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    #: TCP/TLS: keepalive probes after this many seconds of silence (0: off).
    tcp_keepalive: int = DEFAULT_KEEPALIVE
    #: TCP/TLS connections at once, in all and per source address (0: no limit).
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_connections_per_source: int = DEFAULT_MAX_CONNECTIONS_PER_SOURCE
    spool_dir: Path = Path(".state/spool")
    spool_max_bytes: int = 1 << 30
    spool_segment_bytes: int = DEFAULT_SEGMENT_BYTES
    #: Records the spool keeps in memory while its disk fails (then: dropped, spool_error).
    spool_buffer_bytes: int = DEFAULT_BUFFER_MAX_BYTES
    allow: list[IPNetwork] = field(default_factory=list)
    rate_limit: float | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE
    metrics: tuple[str, int] | None = None
    udp_rcvbuf: int = UDP_RCVBUF_REQUEST
    udp_buffer_bytes: int = UDP_BUFFER_BYTES
    #: Native path: the nice value asked for the UDP reader thread (it only moves datagrams
    #: from the kernel's buffer to its own, but must run soon when the machine is busy);
    #: raising it needs CAP_SYS_NICE, without which it keeps the process's; None: leave it.
    udp_reader_nice: int | None = UDP_READER_NICE
    request_timeout_ms: int = 30_000
    shutdown_timeout: float = 10.0
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    #: The native UDP path and Kafka batches: None as ``TUNNELWATCH_NATIVE`` says (auto:
    #: when the extension is installed), True requires it, False is the Python path.
    native: bool | None = None


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, rx: Receiver) -> None:
        self.rx = rx

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.rx.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP socket error: %s", exc)


class _NativeUdp:
    """The UDP socket on the native path (see the module documentation)."""

    def __init__(self, rx: Receiver, sock: socket.socket, module: native.NativeModule) -> None:
        self.rx = rx
        self.sock = sock
        self.udp = native.make_udp_receiver(
            module,
            sock.fileno(),
            max_message_bytes=rx.config.max_message_bytes,
            rate=rx.rate.rate,
            burst=rx.rate.burst,
            max_sources=_SOURCE_CACHE_MAX,
            resolve=self.resolve,
            record=Record,
            header_names=(HEADER_RECEIVED_AT, HEADER_SOURCE),
            batch=UDP_RECV_BATCH,
            max_buffer_bytes=rx.config.udp_buffer_bytes,
            reader_nice=rx.config.udp_reader_nice,
        )
        # While the pipeline is congested, datagrams wait in the reader thread's buffer up
        # to this many bytes (then they go on, and the pipeline spools).
        self.high_water = rx.config.udp_buffer_bytes * 3 // 4
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paused = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_reader(self.udp.ready_fd, self.on_ready)
        self._loop = loop

    def resolve(
        self, family: int, ip: bytes, port: int, flowinfo: int, scope_id: int
    ) -> tuple[str, bytes, bool]:
        """``(host, source header, allowed)`` of a new source, as on the Python path."""
        addr: tuple[Any, ...] | None
        try:
            text = socket.inet_ntop(family, ip)
        except (OSError, ValueError):
            addr = None
        else:
            addr = (text, port, flowinfo, scope_id) if family == socket.AF_INET6 else (text, port)
        host, source = self.rx.source_of(addr)
        return host, source, self.rx.allow.allows(host)

    def rate_allow(self, host: str) -> bool:
        return self.udp.rate_allow(host, time.monotonic())

    @property
    def buffered(self) -> int:
        return self.udp.buffered

    def on_ready(self) -> None:
        pipeline = self.rx.pipeline
        if (
            pipeline is not None
            and pipeline.congested()
            and self.udp.buffered_bytes < self.high_water
            and self._loop is not None
        ):
            # Kafka is behind but acking: let the datagrams wait in the reader's buffer
            # rather than send the pipeline into spool mode.
            self._loop.remove_reader(self.udp.ready_fd)
            self._paused = True
            pipeline.when_room(self._resume)
            return
        self.drain(UDP_DRAIN_BUDGET)

    def _resume(self) -> None:
        if self._paused and self._loop is not None:
            self._paused = False
            self._loop.add_reader(self.udp.ready_fd, self.on_ready)

    def drain(self, budget: int) -> int:
        """Take what the reader thread buffered (about ``budget`` datagrams at most) to the
        pipeline; how many datagrams that was."""
        rx = self.rx
        records, slow, size, drops, errno = self.udp.drain(
            rx.maker.received_at(), time.monotonic(), budget
        )
        if errno:
            log.debug("UDP socket error: %s", os.strerror(errno))
        n = len(records)
        if drops is not None:
            not_allowed, rate_limited, truncated, empty = drops
            n += not_allowed + rate_limited + empty
            dropped = rx.metrics.dropped
            if not_allowed:
                dropped["not_allowed"] += not_allowed
                rx.not_allowed_log.hit(not_allowed)
            if rate_limited:
                dropped["rate_limited"] += rate_limited
                rx.rate_log.hit(rate_limited)
            dropped["truncated"] += truncated
            dropped["empty"] += empty
        if slow is not None:
            key_of = rx.maker.key_of
            for i, host in slow:
                _, value, headers = records[i]
                key = key_of(value, host)
                records[i] = Record(key, value, headers)
                size += len(key)
        if records:
            rx.accept_many(records, size, "udp")
        return n

    def close(self) -> None:
        """Stop the reader after it read what the socket holds, take that to the pipeline,
        close the socket."""
        if self._loop is not None:
            if not self._paused:
                self._loop.remove_reader(self.udp.ready_fd)
            self._loop = None
        self.udp.close()
        while self.drain(UDP_DRAIN_BUDGET):
            pass
        self.sock.close()


class _Stream(asyncio.Protocol):
    """One TCP or TLS connection, framed per RFC 6587 (detected from the first byte).

    TLS is done here with an ``ssl.SSLObject`` over memory buffers rather than by the event
    loop, so that the connection reads everything the peer sent before it went away, with
    or without close_notify, and so that failed handshakes and abrupt ends can be counted
    (the event loop's TLS transport hides both). The server sends no session tickets
    (``num_tickets = 0``): a client that closes without reading them would make its kernel
    answer with a reset, and a reset makes ours discard what it had not handed over yet.
    """

    def __init__(self, rx: Receiver, name: str, tls: ssl.SSLContext | None = None) -> None:
        self.rx = rx
        self.name = name
        self.transport: Any = None  # asyncio's or uvloop's transport
        self.framer = StreamFramer(rx.config.max_message_bytes)
        self.host = ""
        self.source = b""
        self.open = False
        self.last_active = time.monotonic()
        self._tls = tls
        self._ssl: ssl.SSLObject | None = None
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._handshaken = False
        self._ended = False  # the end of the connection was counted (clean or not)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        rx = self.rx
        self.host, self.source = rx.source_of(transport.get_extra_info("peername"))
        if not rx.allow.allows(self.host):
            rx.metrics.dropped["not_allowed"] += 1
            rx.not_allowed_log.hit()
            transport.abort()
            return
        cfg = rx.config
        if cfg.max_connections and len(rx.connections) >= cfg.max_connections:
            rx.metrics.closed["total_cap"] += 1
            rx.cap_log.hit()
            transport.abort()
            return
        if cfg.max_connections_per_source and (
            rx.per_source.get(self.host, 0) >= cfg.max_connections_per_source
        ):
            rx.metrics.closed["source_cap"] += 1
            rx.cap_log.hit()
            transport.abort()
            return
        self.open = True
        rx.connections.add(self)
        rx.per_source[self.host] = rx.per_source.get(self.host, 0) + 1
        rx.metrics.tcp_connections = len(rx.connections)
        if cfg.tcp_keepalive:
            _keepalive(transport.get_extra_info("socket"), cfg.tcp_keepalive)
        if self._tls is not None:
            self._ssl = self._tls.wrap_bio(self._in, self._out, server_side=True)

    def data_received(self, data: bytes) -> None:
        if not self.open:
            return
        self.last_active = time.monotonic()
        if self._ssl is not None:
            self._in.write(data)
            data = self._tls_read()
        if data:
            self._feed(data)
        if self._ended and self.open:
            self.transport.close()  # the peer sent close_notify (or broke the TLS stream)

    def _feed(self, data: bytes) -> None:
        result = self.framer.feed(data)
        rx = self.rx
        if result.truncated:
            rx.metrics.dropped["truncated"] += result.truncated
        if result.blank:
            rx.metrics.dropped["empty"] += result.blank
        for message in result.messages:
            rx.on_message(message, self.host, self.source, self.name)
        if result.error is not None:
            rx.metrics.dropped["bad_frame"] += 1
            rx.bad_frame_log.hit()
            log.debug("closing %s connection from %s: %s", self.name, self.host, result.error)
            self.open = False
            self.transport.abort()

    # -- TLS ---------------------------------------------------------------------------

    def _tls_read(self) -> bytes:
        """Application data that arrived (after the handshake, when it completes)."""
        sslobj = self._ssl
        assert sslobj is not None
        if not self._handshaken:
            try:
                sslobj.do_handshake()
            except ssl.SSLWantReadError:
                self._tls_flush()
                return b""
            except (ssl.SSLError, OSError) as exc:
                self._handshake_failed(exc)
                self._tls_flush()  # the alert, if any
                self.open = False
                self.transport.close()
                return b""
            self._handshaken = True
            self._tls_flush()
        chunks: list[bytes] = []
        while True:
            try:
                chunk = sslobj.read(1 << 16)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                chunk = b""
            except (ssl.SSLError, OSError) as exc:  # EOF without close_notify, bad record
                self._abrupt(exc)
                break
            if not chunk:  # close_notify: a clean end; answer it
                self._ended = True
                with contextlib.suppress(ssl.SSLError, OSError):
                    sslobj.unwrap()
                break
            chunks.append(chunk)
        self._tls_flush()
        return b"".join(chunks)

    def _tls_flush(self) -> None:
        pending = self._out.read()
        if pending and not self.transport.is_closing():
            self.transport.write(pending)

    def _handshake_failed(self, exc: BaseException) -> None:
        if not self._ended:
            self._ended = True
            self.rx.metrics.tls_handshake_failures += 1
            self.rx.handshake_log.hit()
            log.debug("TLS handshake with %s failed: %s", self.host, exc)

    def _abrupt(self, exc: BaseException | None) -> None:
        if not self._ended:
            self._ended = True
            self.rx.metrics.closed["abrupt"] += 1
            log.debug("%s connection from %s ended abruptly: %s", self.name, self.host, exc)

    # -- the end -----------------------------------------------------------------------

    def eof_received(self) -> bool | None:
        if self.open and self._ssl is not None:
            self._in.write_eof()
            if self._handshaken:
                data = self._tls_read()
                if data:
                    self._feed(data)
            else:
                self._handshake_failed(EOFError("connection closed during the handshake"))
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        rx = self.rx
        if self.open:
            if self._ssl is not None and not self._handshaken:
                self._handshake_failed(exc or EOFError("connection closed during the handshake"))
            elif exc is not None:
                self._abrupt(exc)  # reset by the peer
            result = self.framer.finish()
            for message in result.messages:
                rx.on_message(message, self.host, self.source, self.name)
            if result.error is not None:
                rx.metrics.dropped["bad_frame"] += 1
        if self in rx.connections:
            rx.connections.discard(self)
            left = rx.per_source.get(self.host, 1) - 1
            if left > 0:
                rx.per_source[self.host] = left
            else:
                rx.per_source.pop(self.host, None)
        self.open = False
        rx.metrics.tcp_connections = len(rx.connections)

    def close_idle(self) -> None:
        """Idle longer than --tcp-idle-timeout: close (an unfinished LF line is published,
        as when the peer closes)."""
        self.rx.metrics.closed["idle"] += 1
        self._ended = True
        self.transport.close()


def _keepalive(sock: Any, idle: int) -> None:
    """TCP keepalive: probes after ``idle`` seconds of silence, a dead peer found within
    about twice that."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(idle // 5, 1))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 5)
    except OSError as exc:
        log.debug("TCP keepalive not set: %s", exc)


def tls_context(cert: Path, key: Path, ca: Path | None = None) -> ssl.SSLContext:
    """The server context for --tls (TLS >= 1.2; no session tickets; client certificates
    required and checked against ``ca`` when it is given)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.num_tickets = 0
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--tls-cert/--tls-key: {exc}") from exc
    if ca is not None:
        try:
            ctx.load_verify_locations(cafile=str(ca))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"--tls-ca: {exc}") from exc
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class Receiver:
    """Listeners + checks + pipeline. ``await start()``, then ``await close()``."""

    def __init__(self, config: ReceiverConfig) -> None:
        if not (config.udp or config.tcp or config.tls):
            raise ConfigError("nothing to listen on: give --udp, --tcp and/or --tls")
        if config.tls and not (config.tls_cert and config.tls_key):
            raise ConfigError("--tls needs --tls-cert and --tls-key")
        if config.max_message_bytes < 1:
            raise ConfigError("--max-message-bytes must be positive")
        if config.tls_ca and not config.tls:
            raise ConfigError("--tls-ca needs --tls")
        if min(config.tcp_idle_timeout, config.tcp_keepalive, config.max_connections,
               config.max_connections_per_source) < 0:  # fmt: skip
            raise ConfigError(
                "--tcp-idle-timeout, --tcp-keepalive and the connection caps must not be negative"
            )
        self.config = config
        self.metrics = Metrics()
        self.allow = AllowList(config.allow)
        self.rate = RateLimiter(config.rate_limit)
        self.native, self.native_why = _native_module(config.native)
        self._rate_allow = self.rate.allow  # the UDP path's buckets once it is native
        self.maker = RecordMaker()
        self.connections: set[_Stream] = set()
        self.per_source: dict[str, int] = {}
        self.cap_log = LoudLog("TCP/TLS connections refused over a connection cap", 60.0)
        self.handshake_log = LoudLog("TLS handshakes failed", 60.0)
        self._sweeper: asyncio.Task[None] | None = None
        self.not_allowed_log = LoudLog("messages from sources outside --allow dropped", 60.0)
        self.bad_frame_log = LoudLog("TCP connections closed for a broken octet count", 60.0)
        self.rate_log = LoudLog("messages over --rate-limit dropped", 60.0)
        self._sources: dict[Any, tuple[str, bytes]] = {}
        self._servers: list[asyncio.Server] = []
        self._udp: asyncio.DatagramTransport | None = None
        self._native_udp: _NativeUdp | None = None
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
        if self.rate.rate and not self._rate_allow(host):
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

    def accept_many(self, records: list[Record], size: int, transport: str) -> None:
        """Records already checked and made (the native UDP path); ``size``: their sizes."""
        pipeline = self.pipeline
        if pipeline is None:
            self.metrics.dropped["shutdown"] += len(records)
            return
        self.metrics.received[transport] += len(records)
        pipeline.put_many(records, size)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        self.spool = Spool(
            cfg.spool_dir, cfg.spool_max_bytes, cfg.spool_segment_bytes, cfg.spool_buffer_bytes
        )
        out = KafkaOut(
            cfg.bootstrap, cfg.topic, request_timeout_ms=cfg.request_timeout_ms, native=self.native
        )
        self.pipeline = Pipeline(out, self.spool, self.metrics, cfg.pipeline)
        self.pipeline.start()
        loop = asyncio.get_running_loop()
        try:
            if cfg.udp:
                sock = self._udp_socket(*cfg.udp)
                self.udp_address = _addr(sock.getsockname())
                if self.native is not None and hasattr(self.native, "UdpReceiver"):
                    try:
                        udp = _NativeUdp(self, sock, self.native)
                    except BaseException:
                        sock.close()
                        raise
                    udp.start(loop)
                    self._native_udp = udp
                    self._rate_allow = udp.rate_allow
                    self.metrics.udp_buffered = lambda: udp.buffered
                    log.info(
                        "UDP %s:%d: native path (tunnelwatch_native %s: a reader thread "
                        "with recvmmsg, nice %d%s, up to %d MiB buffered; checks, device keys "
                        "and Kafka batches in Rust)",
                        *self.udp_address,
                        self.native.__version__,
                        udp.udp.reader_nice,
                        ""
                        if cfg.udp_reader_nice is None or udp.udp.reader_nice == cfg.udp_reader_nice
                        else f" (not allowed {cfg.udp_reader_nice}: needs CAP_SYS_NICE)",
                        cfg.udp_buffer_bytes >> 20,
                    )
                else:
                    transport, _ = await loop.create_datagram_endpoint(
                        lambda: _Udp(self), sock=sock
                    )
                    self._udp = transport
                    log.info(
                        "UDP %s:%d: Python path (asyncio datagram protocol, one callback a "
                        "datagram; Kafka batches by aiokafka): %s",
                        *self.udp_address,
                        self.native_why
                        or f"{native.MODULE} has no UdpReceiver here (it needs Linux)",
                    )
            if cfg.tcp:
                server = await loop.create_server(
                    lambda: _Stream(self, "tcp"), cfg.tcp[0], cfg.tcp[1], backlog=1024
                )
                self._servers.append(server)
                self.tcp_address = _addr(server.sockets[0].getsockname())
            if cfg.tls:
                assert cfg.tls_cert is not None and cfg.tls_key is not None
                ctx = tls_context(cfg.tls_cert, cfg.tls_key, cfg.tls_ca)
                server = await loop.create_server(
                    lambda: _Stream(self, "tls", ctx), cfg.tls[0], cfg.tls[1], backlog=1024
                )
                self._servers.append(server)
                self.tls_address = _addr(server.sockets[0].getsockname())
            if cfg.metrics:
                self._metrics_server = MetricsServer(self.metrics, *cfg.metrics)
                await self._metrics_server.start()
            if self._servers and cfg.tcp_idle_timeout:
                self._sweeper = asyncio.create_task(self._sweep(), name="tunnelwatch-idle")
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

    async def _sweep(self) -> None:
        """Close connections idle longer than --tcp-idle-timeout."""
        timeout = self.config.tcp_idle_timeout
        every = min(max(timeout / 4, 0.05), 5.0)
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.open and now - conn.last_active > timeout:
                    conn.close_idle()

    async def close(self) -> None:
        """Stop listening, publish or spool what is in memory, release everything."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._native_udp is not None:
            self._native_udp.close()
            self._native_udp = None
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


def _native_module(choice: bool | None) -> tuple[native.NativeModule | None, str]:
    """The extension for the receiver's fast paths, or None and why not.

    Raises NativeUnavailable (a ConfigError) when it is required but not installed."""
    if choice is False:
        return None, "the native path is switched off (ReceiverConfig.native=False)"
    module = native.load("1" if choice else None)
    if module is not None:
        return module, ""
    mode = os.environ.get(native.ENV, "auto").strip().lower()
    if mode in ("0", "no", "off", "false", "python"):
        return None, f"{native.ENV}={mode}"
    return None, f"{native.MODULE} is not installed (make install builds it when cargo is there)"


def _addr(sockname: Any) -> tuple[str, int]:
    return str(sockname[0]), int(sockname[1])
