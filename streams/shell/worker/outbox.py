"""What the parse agent publishes for one batch of raw records, sent as whole batches.

faust's ``Producer.send`` costs a future, a partitioner call and an accumulator lookup
per record: on a replay it took as much CPU as parsing. The outbox gathers a batch's
records per topic partition (the key's partition under Kafka's default murmur2
partitioner, cached per key: where ``send(key=...)`` would put it), hands each group to
aiokafka as one ``send_batch``, and :meth:`Outbox.deliver` waits until Kafka has every
record. The agent acknowledges its batch only after that, so offsets are never committed
past a record whose outputs were not published.

Failures, by what they say about the record:

- **Broker or network trouble** (errors aiokafka marks ``retriable``, timeouts, lost
  connections): the group is sent again every :data:`RETRY_BACKOFF` seconds until it
  succeeds (at-least-once; a stop request ends the wait, see ``run.py``).
- **A refusal** (a broker answer aiokafka marks not retriable, such as
  ``MessageSizeTooLargeError``, or a record aiokafka cannot encode): the group is tried
  :data:`REFUSED_ATTEMPTS` times, then record by record once more; a record refused on
  its own is handed to ``replace`` (the worker makes a short dead letter of it), and
  one that cannot be replaced, or whose replacement is refused too, is skipped, logged
  with the topic, partition and offset it came from, and counted. Nothing blocks.
- Records larger than ``max_bytes`` are not even tried: they are refused at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import BrokerResponseError, MessageSizeTooLargeError

from streams.shell.topics import partition_of

#: Seconds between two attempts at a group that failed (broker away, leader moving).
RETRY_BACKOFF = 0.5
#: Attempts at a group the broker refused (a non-retriable answer) before its records
#: are tried one by one.
REFUSED_ATTEMPTS = 3
#: The largest record (key and value) tried; larger ones are refused without a try.
MAX_RECORD_BYTES = 1_000_000 - 512

#: A record that takes the place of a refused one: ``replace(topic, key, value, origin,
#: error)`` gives ``(topic, key, value)``, or None to skip the record.
Replace = Callable[
    [str, bytes | None, bytes, Any, BaseException], tuple[str, bytes | None, bytes] | None
]


def refused(exc: BaseException) -> bool:
    """Whether ``exc`` says the record (not the broker's state) is the problem: a broker
    answer aiokafka does not mark retriable, or an error aiokafka raised on the record
    itself. Timeouts, lost connections and a stopping producer are not refusals."""
    if isinstance(exc, BrokerResponseError):
        return not getattr(exc, "retriable", False)
    return isinstance(exc, ValueError | TypeError | AssertionError)


def where(origin: Any) -> str:
    """``topic:partition@offset`` of the consumer record a published record came from."""
    if origin is None:
        return "unknown origin"
    topic = getattr(origin, "topic", "?")
    return f"{topic}:{getattr(origin, 'partition', '?')}@{getattr(origin, 'offset', '?')}"


@dataclass(slots=True)
class _Record:
    key: bytes | None
    value: bytes
    origin: Any = None  # the consumer record it derives from (for replace and the logs)
    replacement: bool = False  # already a replacement: skipped if refused too


@dataclass(slots=True)
class _Group:
    topic: str
    partition: int
    records: list[_Record] = field(default_factory=list)
    futures: list[asyncio.Future[Any]] = field(default_factory=list)
    refusals: int = 0  # attempts in a row the broker refused


class Outbox:
    """Records of one agent batch, grouped per topic partition.

    ``producer``: a started aiokafka producer (faust's own, so that faust's flush before
    each offset commit covers these batches too); ``partitions``: the partition count of
    the topics written (the stack creates them all alike), ``topic_partitions`` the count
    of a topic that has another; ``say``: where a retry is
    reported; ``replace``: what takes the place of a refused record (see the module
    docstring); ``max_bytes``: the largest record tried.
    """

    def __init__(
        self,
        producer: Any,
        partitions: int,
        say: Callable[[str], None],
        replace: Replace | None = None,
        max_bytes: int = MAX_RECORD_BYTES,
        topic_partitions: dict[str, int] | None = None,
    ) -> None:
        self._producer = producer
        self._partitions = partitions
        self._topic_partitions = dict(topic_partitions or {})
        self._say = say
        self._replace = replace
        self._max_bytes = max_bytes
        self._groups: dict[tuple[str, int], _Group] = {}
        self.records = 0
        self.retries = 0
        self.replaced = 0  # refused records published as their replacement
        self.skipped = 0  # refused records not published at all

    def partition(self, key: bytes) -> int:
        return partition_of(key, self._partitions)

    def add(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int = 0,
        origin: Any = None,
    ) -> None:
        """Queue one record: to its key's partition, else to ``partition``. ``origin``:
        the consumer record it derives from (handed to ``replace``, named in the logs)."""
        self._add(topic, _Record(key, value, origin), partition)

    def add_to(
        self, topic: str, partition: int, key: bytes | None, value: bytes, origin: Any = None
    ) -> None:
        """Queue one record to ``partition`` whatever its key (a table's changelog: the
        partition of the record the state came from)."""
        self._add(topic, _Record(key, value, origin), partition, keyed=False)

    def _add(self, topic: str, record: _Record, partition: int, *, keyed: bool = True) -> None:
        size = len(record.value) + len(record.key or b"")
        if size > self._max_bytes:
            error = MessageSizeTooLargeError(f"{size} bytes, over the limit of {self._max_bytes}")
            self._refuse(topic, record, error)
            return
        key = record.key
        count = self._topic_partitions.get(topic, self._partitions)
        if key is None or not keyed:
            part = partition % count
        elif count == self._partitions:
            part = self.partition(key)
        else:
            part = partition_of(key, count)
        group = self._groups.get((topic, part))
        if group is None:
            group = self._groups[(topic, part)] = _Group(topic, part)
        group.records.append(record)

    def _refuse(self, topic: str, record: _Record, error: BaseException) -> None:
        """A record Kafka will not take: its replacement is queued, else it is skipped."""
        origin = record.origin
        if not record.replacement and self._replace is not None:
            new = self._replace(topic, record.key, record.value, origin, error)
            if new is not None:
                self.replaced += 1
                self._say(
                    f"a record for {topic} from {where(origin)} was refused ({error!r}): "
                    f"publishing a dead letter of it to {new[0]} instead"
                )
                replacement = _Record(new[1], new[2], origin, replacement=True)
                self._add(new[0], replacement, int(getattr(origin, "partition", 0) or 0))
                return
        self.skipped += 1
        self._say(
            f"SKIPPED a record of {len(record.value)} bytes for {topic} from {where(origin)}: "
            f"it cannot be published ({error!r}) and has no publishable replacement"
        )

    async def _submit(self, group: _Group) -> None:
        producer = self._producer
        builder = producer.create_batch()
        futures = group.futures
        for record in group.records:
            # A batch always takes its first record, whatever its size.
            if builder.append(timestamp=None, key=record.key, value=record.value) is None:
                futures.append(
                    await producer.send_batch(builder, group.topic, partition=group.partition)
                )
                builder = producer.create_batch()
                builder.append(timestamp=None, key=record.key, value=record.value)
        if builder.record_count():
            futures.append(
                await producer.send_batch(builder, group.topic, partition=group.partition)
            )

    async def deliver(self) -> int:
        """Send every queued record and wait until Kafka has them all, or has refused
        them for good (then their replacements); the count published."""
        sent = 0
        while self._groups:
            pending = list(self._groups.values())
            self._groups = {}
            while pending:
                failed: list[_Group] = []
                # Every group handed over first, then every answer awaited: one round trip.
                early: dict[int, BaseException] = {}
                for group in pending:
                    group.futures = []
                    try:
                        await self._submit(group)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # refused by aiokafka before sending
                        early[id(group)] = exc
                for group in pending:
                    results = await asyncio.gather(*group.futures, return_exceptions=True)
                    error = early.get(id(group)) or next(
                        (r for r in results if isinstance(r, BaseException)), None
                    )
                    if error is None:
                        sent += len(group.records)
                    elif not refused(error):
                        # A group is all or nothing for the caller: resend it whole
                        # (duplicates of a partly written group are harmless downstream,
                        # losses are not).
                        group.refusals = 0
                        failed.append(group)
                        self._say(
                            f"publishing {len(group.records)} records to "
                            f"{group.topic}:{group.partition} failed ({error!r}); retrying"
                        )
                    else:
                        failed.extend(self._on_refusal(group, error))
                if failed:
                    self.retries += 1
                    await asyncio.sleep(RETRY_BACKOFF)
                pending = failed
        self.records += sent
        return sent

    def _on_refusal(self, group: _Group, error: BaseException) -> list[_Group]:
        """The groups to try again after the broker refused ``group``."""
        group.refusals += 1
        if group.refusals < REFUSED_ATTEMPTS:
            self._say(
                f"publishing {len(group.records)} records to {group.topic}:{group.partition} "
                f"was refused ({error!r}); attempt {group.refusals} of {REFUSED_ATTEMPTS}"
            )
            return [group]
        if len(group.records) > 1:
            # Find the records at fault: each alone, once more.
            return [
                _Group(group.topic, group.partition, [r], refusals=REFUSED_ATTEMPTS - 1)
                for r in group.records
            ]
        self._refuse(group.topic, group.records[0], error)  # queues its replacement
        return []


__all__ = ["MAX_RECORD_BYTES", "Outbox", "Replace", "partition_of", "refused", "where"]
