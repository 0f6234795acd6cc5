"""Where a replay sends its records: a syslog receiver over UDP or TCP, or Kafka directly.

Every sink has ``send(record: str)``, ``flush()`` (everything sent so far is on its way:
called before the replay sleeps) and ``close()``.

- ``udp://HOST:PORT``: one datagram per record.
- ``tcp://HOST:PORT``: RFC 6587 octet counting (``LEN SP MSG``), which carries multi-line
  records intact.
- ``kafka://BOOTSTRAP``: published like the receiver would (same key, same headers;
  ``source`` is the address given with ``--source``), in idempotent lz4 batches.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Protocol

from aiokafka.errors import KafkaError

from streams.errors import BrokerUnavailable, ConfigError
from streams.shell.receiver.kafka import Chunk, KafkaOut
from streams.shell.receiver.record import RecordMaker
from streams.shell.receiver.server import parse_hostport
from streams.shell.topics import HEADER_YEAR

_TCP_BUFFER = 256 * 1024
_KAFKA_CHUNK = 5_000
_KAFKA_WINDOW = 4
_ACK_TIMEOUT_S = 60.0


class Sink(Protocol):
    def send(self, record: str) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


def _host_port(rest: str, scheme: str) -> tuple[str, int]:
    host, port = parse_hostport(rest, "127.0.0.1")
    if port == 0:
        raise ConfigError(f"{scheme}://{rest}: a port is needed")
    return host, port


class UdpSink:
    def __init__(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.address = (host, port)

    def send(self, record: str) -> None:
        self.sock.sendto(record.encode("utf-8", "surrogateescape"), self.address)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.sock.close()


class TcpSink:
    def __init__(self, host: str, port: int) -> None:
        try:
            self.sock = socket.create_connection((host, port), timeout=30.0)
        except OSError as exc:
            raise ConfigError(f"cannot connect to tcp://{host}:{port}: {exc}") from exc
        self._buf: list[bytes] = []
        self._size = 0

    def send(self, record: str) -> None:
        data = record.encode("utf-8", "surrogateescape")
        frame = b"%d %s" % (len(data), data)
        self._buf.append(frame)
        self._size += len(frame)
        if self._size >= _TCP_BUFFER:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            self.sock.sendall(b"".join(self._buf))
            self._buf.clear()
            self._size = 0

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.sock.close()


class KafkaSink:
    """Publishes chunks with the receiver's :class:`KafkaOut` on a private event loop."""

    def __init__(self, bootstrap: str, topic: str, source: str, year: int | None = None) -> None:
        import uvloop

        self.maker = RecordMaker()
        ip, _ = parse_hostport(source, "127.0.0.1")
        self.ip = ip
        self.source = source.encode("ascii", "replace")
        # replay --year travels as a header: the worker dates year-less stamps with it.
        self.extra = () if year is None else ((HEADER_YEAR, str(year).encode("ascii")),)
        self.out = KafkaOut(bootstrap, topic, client_id="tunnelwatch-replay")
        self.runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        self._records: list[str] = []
        self._inflight: list[Chunk] = []
        try:
            self.runner.run(self.out.start())
        except BrokerUnavailable as exc:
            self.runner.close()
            raise ConfigError(f"kafka://{bootstrap}: {exc}") from exc

    def send(self, record: str) -> None:
        self._records.append(record)
        if len(self._records) >= _KAFKA_CHUNK:
            self._submit()

    def _submit(self) -> None:
        if not self._records:
            return
        make, ip, source = self.maker.make, self.ip, self.source
        records = [make(r.encode("utf-8", "surrogateescape"), ip, source) for r in self._records]
        if self.extra:
            records = [r._replace(headers=(*r.headers, *self.extra)) for r in records]
        self._records.clear()
        chunk = Chunk(records, "memory")
        try:
            self.runner.run(self.out.submit(chunk))
        except KafkaError as exc:
            raise BrokerUnavailable(f"Kafka at {self.out.bootstrap}: {exc}") from exc
        self._inflight.append(chunk)
        if len(self._inflight) >= _KAFKA_WINDOW:
            self._wait(self._inflight.pop(0))

    def _wait(self, chunk: Chunk) -> None:
        futures = [b.future for b in chunk.batches if b.future is not None]

        async def acked() -> None:
            try:
                await asyncio.wait_for(asyncio.gather(*futures), _ACK_TIMEOUT_S)
            except KafkaError as exc:
                raise BrokerUnavailable(f"Kafka at {self.out.bootstrap}: {exc}") from exc
            except TimeoutError as exc:
                raise BrokerUnavailable(
                    f"Kafka at {self.out.bootstrap} acknowledged nothing for {_ACK_TIMEOUT_S:.0f} s"
                ) from exc

        self.runner.run(acked())

    def flush(self) -> None:
        self._submit()
        while self._inflight:
            self._wait(self._inflight.pop(0))

    def close(self) -> None:
        try:
            self.flush()
        finally:
            try:
                self.runner.run(self.out.stop(timeout=10.0))
            finally:
                self.runner.close()


def open_sink(target: str, topic: str, source: str, year: int | None = None) -> Sink:
    """The sink of ``udp://H:P``, ``tcp://H:P`` or ``kafka://BOOTSTRAP``; ``year`` is sent
    as a record header on Kafka (a datagram or a TCP frame has no room for it)."""
    scheme, sep, rest = target.partition("://")
    if not sep or not rest:
        raise ConfigError(f"--to {target!r}: expected udp://H:P, tcp://H:P or kafka://BOOTSTRAP")
    if scheme == "udp":
        return UdpSink(*_host_port(rest, scheme))
    if scheme == "tcp":
        return TcpSink(*_host_port(rest, scheme))
    if scheme == "kafka":
        return KafkaSink(rest, topic, source, year)
    raise ConfigError(f"--to {target!r}: unknown scheme {scheme!r} (udp, tcp or kafka)")
