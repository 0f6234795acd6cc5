"""Publishing records to Kafka in explicit batches (aiokafka ``create_batch``/``send_batch``).

Per-message ``send()`` tops out around 120k msg/s; here the caller hands over a *chunk* of
records, which is split by partition (the key's partition under Kafka's default murmur2
partitioner, exactly where ``send(key=...)`` would put it: ``streams.shell.topics.
partition_of``, the worker's) into one batch per partition, lz4-compressed. The producer
is idempotent (``acks=all``): aiokafka retries a batch until the broker takes it and the
broker drops the duplicates of those retries, so a chunk handed over is delivered once and
in order per partition, however long Kafka is away.

With the native extension (``native=`` a loaded ``tunnelwatch_native``, see
``streams/core/native.py``) the split by partition and the batches themselves are built in
Rust (``group_by_partition``, ``RecordBatch``: same partitions, same record format, fast
LZ4 instead of aiokafka's level 9, one timestamp per batch); aiokafka still sends them,
with the same idempotent sequence numbers and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError

from streams.errors import BrokerUnavailable
from streams.shell.receiver.record import Record
from streams.shell.topics import partition_of

if TYPE_CHECKING:
    from streams.core.native import NativeModule

log = logging.getLogger(__name__)

MAX_BATCH_BYTES = 1_000_000  # under the broker's default message.max.bytes (1 MiB)
COMPRESSION = "lz4"
#: Codecs the native batches write (Kafka's attribute values).
_NATIVE_CODECS = {None: 0, "lz4": 3}


@dataclass(slots=True)
class Batch:
    """The records of one chunk that go to one partition, and their delivery."""

    partition: int
    records: list[Record]
    future: asyncio.Future[Any] | None = None  # set once handed to the producer


@dataclass(slots=True)
class Chunk:
    """Records handed to Kafka together; acknowledged when every batch is."""

    records: list[Record]
    origin: str  # "memory" or "spool"
    token: Any = None  # the spool position after the last record (spool chunks)
    batches: list[Batch] = field(default_factory=list)
    submitted_at: float = 0.0

    def done(self) -> bool:
        return bool(self.batches) and all(
            b.future is not None and b.future.done() for b in self.batches
        )

    def failed(self) -> list[Batch]:
        return [
            b
            for b in self.batches
            if b.future is not None
            and b.future.done()
            and (b.future.cancelled() or b.future.exception() is not None)
        ]

    def unsent(self) -> bool:
        return any(b.future is None for b in self.batches)


def _consume(fut: asyncio.Future[Any]) -> None:
    """Mark a batch future's exception as retrieved (we look at it via Chunk.failed)."""
    if not fut.cancelled():
        fut.exception()


class KafkaOut:
    """An idempotent aiokafka producer plus per-key partitioning, for whole chunks."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        client_id: str = "tunnelwatch-receiver",
        request_timeout_ms: int = 30_000,
        compression: str | None = COMPRESSION,
        native: NativeModule | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.client_id = client_id
        self.request_timeout_ms = request_timeout_ms
        self.compression = compression
        codec = _NATIVE_CODECS.get(compression, -1)
        self._native = native if codec >= 0 else None
        self._codec = max(codec, 0)
        self._producer: Any = None
        self._partitions: list[int] = []
        self._by_key: dict[bytes, int] = {}

    @property
    def started(self) -> bool:
        return self._producer is not None

    def alive(self) -> bool:
        """False when the producer's sender task died (the producer must be replaced)."""
        if self._producer is None:
            return False
        sender = getattr(self._producer, "_sender", None)
        task = getattr(sender, "sender_task", None)
        return task is None or not task.done()

    async def start(self) -> None:
        """Connect and learn the topic's partitions; BrokerUnavailable when Kafka is away."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            acks="all",
            enable_idempotence=True,
            compression_type=self.compression,
            max_batch_size=MAX_BATCH_BYTES,
            max_request_size=MAX_BATCH_BYTES + 65536,
            linger_ms=0,
            request_timeout_ms=self.request_timeout_ms,
            retry_backoff_ms=200,
        )
        try:
            await producer.start()
            partitions = await producer.partitions_for(self.topic)
        except (KafkaError, OSError) as exc:
            await self._force_stop(producer)
            raise BrokerUnavailable(f"Kafka at {self.bootstrap}: {exc}") from exc
        except BaseException:
            await self._force_stop(producer)
            raise
        self._producer = producer
        self._set_partitions(partitions)

    def _set_partitions(self, partitions: Any) -> None:
        parts = sorted(int(p) for p in partitions)
        if parts != self._partitions:
            self._partitions = parts
            self._by_key.clear()

    def partition_of(self, key: bytes) -> int:
        """The partition of ``key``: :func:`streams.shell.topics.partition_of` (Kafka's
        murmur2, the worker's partitioner) indexing the sorted partitions, as aiokafka's
        ``DefaultPartitioner`` picks it."""
        try:
            return self._by_key[key]
        except KeyError:
            parts = self._partitions
            part = parts[partition_of(key, len(parts))]
            if len(self._by_key) > 100_000:
                self._by_key.clear()
            self._by_key[key] = part
            return part

    @property
    def native(self) -> bool:
        """Whether batches are built by the native extension."""
        return self._native is not None

    def plan(self, chunk: Chunk) -> None:
        """Split the chunk's records by partition (order kept within each)."""
        if self._native is not None:
            groups_n = self._native.group_by_partition(chunk.records, self._partitions)
            chunk.batches = [Batch(p, recs) for p, recs in groups_n]
            return
        groups: dict[int, list[Record]] = {}
        part_of = self.partition_of
        for record in chunk.records:
            part = part_of(record.key)
            group = groups.get(part)
            if group is None:
                groups[part] = [record]
            else:
                group.append(record)
        chunk.batches = [Batch(p, recs) for p, recs in groups.items()]

    async def submit(self, chunk: Chunk) -> None:
        """Hand every not yet submitted batch of ``chunk`` to the producer.

        Raises ``KafkaError`` (e.g. a timeout waiting for metadata) with the batches not
        handed over left unsent: calling again resumes, so nothing is sent twice.
        """
        producer = self._producer
        if producer is None:
            raise BrokerUnavailable("the Kafka producer is not started")
        if not chunk.batches:
            self.plan(chunk)
        if not chunk.submitted_at:
            chunk.submitted_at = time.monotonic()
        extra: list[Batch] = []
        native = self._native
        for batch in chunk.batches:
            if batch.future is not None:
                continue
            records = batch.records
            if native is not None:
                built = native.RecordBatch(
                    records,
                    max_bytes=MAX_BATCH_BYTES,
                    timestamp_ms=int(time.time() * 1000),
                    compression=self._codec,
                )
                n = built.record_count()
                if n < len(records):  # full: the rest in a batch of its own after this one
                    extra.append(Batch(batch.partition, records[n:]))
                    batch.records = records[:n]
                batch.future = await producer.send_batch(
                    built, self.topic, partition=batch.partition
                )
                batch.future.add_done_callback(_consume)
                continue
            builder = producer.create_batch()
            for i, (key, value, headers) in enumerate(records):
                meta = builder.append(timestamp=None, key=key, value=value, headers=list(headers))
                if meta is not None:
                    continue
                if i == 0:  # cannot happen with messages under 64 KiB; never loop on it
                    raise KafkaError(f"a record of {len(value)} bytes does not fit in a batch")
                # Full: the rest goes in a batch of its own after this one (same partition).
                extra.append(Batch(batch.partition, records[i:]))
                batch.records = records[:i]
                break
            batch.future = await producer.send_batch(builder, self.topic, partition=batch.partition)
            batch.future.add_done_callback(_consume)
        if extra:
            chunk.batches.extend(extra)
            await self.submit(chunk)

    def resubmit_failed(self, chunk: Chunk) -> int:
        """Forget the delivery of failed batches so that :meth:`submit` sends them again."""
        failed = chunk.failed()
        for batch in failed:
            batch.future = None
        return len(failed)

    def forget_pending(self, chunk: Chunk) -> None:
        """After a producer reset: batches not acknowledged are to be sent again."""
        for batch in chunk.batches:
            fut = batch.future
            if fut is not None and (
                not fut.done() or fut.cancelled() or fut.exception() is not None
            ):
                batch.future = None

    async def stop(self, timeout: float) -> bool:
        """Flush (up to ``timeout`` seconds) and close; False when batches were abandoned."""
        producer, self._producer = self._producer, None
        if producer is None:
            return True
        try:
            await asyncio.wait_for(producer.flush(), timeout)
        except (TimeoutError, KafkaError):
            await self._force_stop(producer)
            return False
        try:
            await asyncio.wait_for(producer.stop(), timeout)
        except (TimeoutError, KafkaError):
            await self._force_stop(producer)
        return True

    async def reset(self) -> None:
        """Drop the producer without waiting (after its sender died or on a fatal error)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await self._force_stop(producer)

    @staticmethod
    async def _force_stop(producer: Any) -> None:
        """Stop a producer whose batches may never be delivered (Kafka away).

        The sender task is cancelled first (it then waits for its in-flight requests and
        ends), then the batches it held are failed so that ``stop()`` need not wait for
        them. (Failing them while the sender still runs makes aiokafka's idempotent sender
        hit a bug of its own on the way out.)
        """
        sender = getattr(producer, "_sender", None)
        task = getattr(sender, "sender_task", None)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=10.0)
        acc = getattr(producer, "_message_accumulator", None)
        if acc is not None:
            acc.fail_all(KafkaTimeoutError("receiver shutting the producer down"))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), 10.0)
