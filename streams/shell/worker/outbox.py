"""What the parse agent publishes for one batch of raw records, sent as whole batches.

faust's ``Producer.send`` costs a future, a partitioner call and an accumulator lookup
per record: on a replay it took as much CPU as parsing. The outbox gathers a batch's
records per topic partition (the key's partition under Kafka's default murmur2
partitioner, cached per key: where ``send(key=...)`` would put it), hands each group to
aiokafka as one ``send_batch``, and :meth:`Outbox.deliver` waits until Kafka has every
record, sending a failed group again until it succeeds. The agent acknowledges its
batch only after that, so offsets are never committed past a record whose outputs were
not published.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import KafkaError

from streams.shell.topics import partition_of

#: Seconds between two attempts at a group Kafka refused (broker away, leader moving).
RETRY_BACKOFF = 0.5


@dataclass(slots=True)
class _Group:
    topic: str
    partition: int
    records: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    futures: list[asyncio.Future[Any]] = field(default_factory=list)


class Outbox:
    """Records of one agent batch, grouped per topic partition.

    ``producer``: a started aiokafka producer (faust's own, so that faust's flush before
    each offset commit covers these batches too); ``partitions``: the partition count of
    the topics written (the stack creates them all alike); ``say``: where a retry is
    reported.
    """

    def __init__(self, producer: Any, partitions: int, say: Callable[[str], None]) -> None:
        self._producer = producer
        self._partitions = partitions
        self._say = say
        self._groups: dict[tuple[str, int], _Group] = {}
        self.records = 0
        self.retries = 0

    def partition(self, key: bytes) -> int:
        return partition_of(key, self._partitions)

    def add(self, topic: str, key: bytes | None, value: bytes, partition: int = 0) -> None:
        """Queue one record: to its key's partition, else to ``partition``."""
        part = self.partition(key) if key is not None else partition % self._partitions
        group = self._groups.get((topic, part))
        if group is None:
            group = self._groups[(topic, part)] = _Group(topic, part)
        group.records.append((key, value))

    async def _submit(self, group: _Group) -> None:
        producer = self._producer
        builder = producer.create_batch()
        futures = group.futures
        for key, value in group.records:
            if builder.append(timestamp=None, key=key, value=value) is None:
                if builder.record_count() == 0:
                    raise KafkaError(f"a record of {len(value)} bytes does not fit in a batch")
                futures.append(
                    await producer.send_batch(builder, group.topic, partition=group.partition)
                )
                builder = producer.create_batch()
                builder.append(timestamp=None, key=key, value=value)
        if builder.record_count():
            futures.append(
                await producer.send_batch(builder, group.topic, partition=group.partition)
            )

    async def deliver(self) -> int:
        """Send every queued record and wait until Kafka has them all; the count sent."""
        groups = list(self._groups.values())
        self._groups = {}
        pending = groups
        while pending:
            for group in pending:
                group.futures = []
                await self._submit(group)
            failed: list[_Group] = []
            for group in pending:
                results = await asyncio.gather(*group.futures, return_exceptions=True)
                errors = [r for r in results if isinstance(r, BaseException)]
                if errors:
                    failed.append(group)
                    self._say(
                        f"publishing {len(group.records)} records to "
                        f"{group.topic}:{group.partition} failed ({errors[0]!r}); retrying"
                    )
            if failed:
                # A group is all or nothing for the caller: resend it whole (duplicates
                # of a partly written group are harmless downstream, losses are not).
                self.retries += 1
                await asyncio.sleep(RETRY_BACKOFF)
            pending = failed
        sent = sum(len(g.records) for g in groups)
        self.records += sent
        return sent


__all__ = ["Outbox", "partition_of"]
