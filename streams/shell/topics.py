"""Kafka topic names, the default partition count, and small admin helpers.

This is the ONE place where the streaming layout is defined::

    syslog.raw         receiver -> worker    one syslog record per message (value = bytes),
                                             headers ``received_at`` (ISO 8601) and ``source``
    syslog.events      worker (parse)        Event.to_record() as JSON, keyed by device
    syslog.deadletter  worker (parse)        {"reason", "raw", ...} for unparseable records
    vpn.incidents      worker (correlate)    full incident records, keyed by incident_id
    vpn.operator       board -> notifier     acks, silences, maintenance windows (compacted,
                                             one partition; see streams/core/operator.py)
    <app-id>-device_state-changelog          the worker's per-device engine state (compacted)
    <app-id>-reroute   worker -> worker      events whose raw record was keyed by another
                                             name than their device (rare): to the worker
                                             that owns the device's partition

``syslog.events``, the reroute topic and the changelog must have the same partition count
(the state of a device lives in the changelog partition of its events); ``syslog.raw`` too,
for the worker to correlate as it parses. Everything is created with
:data:`DEFAULT_PARTITIONS` unless told otherwise.

aiokafka is imported lazily so that importing this module (the CLI does) stays cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.errors import BrokerError, BrokerUnavailable

RAW_TOPIC = "syslog.raw"
EVENTS_TOPIC = "syslog.events"
DEADLETTER_TOPIC = "syslog.deadletter"
INCIDENTS_TOPIC = "vpn.incidents"
OPERATOR_TOPIC = "vpn.operator"
DEFAULT_APP_ID = "tunnelwatch"
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
#: Partitions of every topic the project creates. Change it here and nowhere else.
DEFAULT_PARTITIONS = 4
#: Name of the worker's faust table holding one engine state per device.
STATE_TABLE = "device_state"

#: Record headers set by the receiver on syslog.raw.
HEADER_RECEIVED_AT = "received_at"
HEADER_SOURCE = "source"
#: The year of year-less stamps, set by ``replay --year`` (so the stream dates an old
#: archive as ``analyze --year`` does).
HEADER_YEAR = "year"

_TOPIC_EXISTS = 36
_TIMEOUT_MS = 30_000


def changelog_topic(app_id: str) -> str:
    """The faust changelog topic of the worker's state table."""
    return f"{app_id}-{STATE_TABLE}-changelog"


def leader_topic(app_id: str) -> str:
    """faust's own topic for electing the group's leader (one partition), which the worker
    would otherwise create with a single replica."""
    return f"{app_id}-__assignor-__leader"


def reroute_topic(app_id: str) -> str:
    """The worker's internal topic for events correlated on another partition than read."""
    return f"{app_id}-reroute"


def _murmur2() -> Callable[[bytes], int]:
    """Kafka's murmur2: the native extension's when it is built (the same function,
    tested equal), else aiokafka's (pure Python, 50 times slower)."""
    from streams.core import native

    try:
        module = native.load()
    except native.NativeUnavailable:
        module = None
    if module is None:
        from aiokafka.partitioner import murmur2

        return murmur2  # type: ignore[no-any-return]
    return module.kafka_murmur2


_MURMUR2 = _murmur2()
_NATIVE_MURMUR2 = _MURMUR2.__module__ != "aiokafka.partitioner"


def _partition_of(key: bytes, partitions: int) -> int:
    return int(_MURMUR2(key) & 0x7FFFFFFF) % partitions


#: The partition of ``key`` under Kafka's default partitioner (murmur2), where
#: ``send(key=...)`` puts it: the one partitioner of the worker, of ``analyze``'s clock
#: lanes, and of the receiver's Python path (its Rust path is tested equal to it).
#: The native murmur2 is as fast as a cache hit, and a cache of a large fleet's names
#: only misses: not cached. aiokafka's (pure Python) is cached, for a 100k-device fleet
#: (220 bytes an entry: device names come from the network).
partition_of: Callable[[bytes, int], int] = (
    _partition_of if _NATIVE_MURMUR2 else functools.lru_cache(maxsize=1 << 18)(_partition_of)
)


@dataclass(frozen=True, slots=True)
class DeviceLane:
    """The partition of a device's events among ``partitions``: its lane of the fleet
    clock (call it with the device's name)."""

    partitions: int

    def __call__(self, device: str) -> int:
        return partition_of(device.encode("utf-8"), self.partitions)

    @property
    def native(self) -> bool:
        """The partitioner is the native extension's murmur2 (which a native fleet core
        can then run itself, without calling back into Python)."""
        return _NATIVE_MURMUR2


def device_lane(partitions: int = DEFAULT_PARTITIONS) -> DeviceLane:
    """The partition of a device's events: its lane of the fleet clock."""
    return DeviceLane(partitions)


@dataclass(frozen=True, slots=True)
class TopicNames:
    """The topics one worker (or stack) uses."""

    raw: str = RAW_TOPIC
    events: str = EVENTS_TOPIC
    deadletter: str = DEADLETTER_TOPIC
    incidents: str = INCIDENTS_TOPIC


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int = DEFAULT_PARTITIONS
    configs: Mapping[str, str] = field(default_factory=dict)


def stack_topics(
    names: TopicNames, app_id: str, partitions: int = DEFAULT_PARTITIONS
) -> list[TopicSpec]:
    """Every topic of a stack: the four data topics, the reroute topic and the changelog."""
    return [
        TopicSpec(names.raw, partitions),
        TopicSpec(names.events, partitions),
        TopicSpec(names.deadletter, partitions),
        TopicSpec(names.incidents, partitions),
        TopicSpec(reroute_topic(app_id), partitions),
        TopicSpec(changelog_topic(app_id), partitions, {"cleanup.policy": "compact"}),
        TopicSpec(OPERATOR_TOPIC, 1, {"cleanup.policy": "compact"}),
    ]


def replicated_topics(
    names: TopicNames,
    app_id: str,
    partitions: int = DEFAULT_PARTITIONS,
    *,
    min_insync_replicas: int = 1,
) -> list[TopicSpec]:
    """The topics of a stack on a cluster: :func:`stack_topics` and faust's leader topic,
    each with ``min.insync.replicas`` (create them with ``ensure_topics(...,
    replication_factor=R)``)."""
    specs = [*stack_topics(names, app_id, partitions), TopicSpec(leader_topic(app_id), 1)]
    isr = {"min.insync.replicas": str(min_insync_replicas)}
    return [TopicSpec(s.name, s.partitions, {**s.configs, **isr}) for s in specs]


async def _admin(bootstrap: str) -> Any:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=_TIMEOUT_MS)
    try:
        await admin.start()
    except Exception as exc:
        await admin.close()
        raise BrokerUnavailable(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    return admin


async def partition_counts(bootstrap: str, topics: Sequence[str]) -> dict[str, int]:
    """Partition count of each existing topic among ``topics`` (missing ones are left out)."""
    admin = await _admin(bootstrap)
    try:
        return await _partition_counts(admin, topics)
    finally:
        await admin.close()


async def _partition_counts(admin: Any, topics: Sequence[str]) -> dict[str, int]:
    # Describe existing topics only: a metadata request naming a missing topic makes a
    # broker with auto.create.topics.enable create it, with its default partition count.
    existing = set(await admin.list_topics())
    wanted = [t for t in topics if t in existing]
    if not wanted:
        return {}
    out: dict[str, int] = {}
    for entry in await admin.describe_topics(wanted):
        if int(entry.get("error_code", 0)) == 0 and entry.get("partitions"):
            out[str(entry["topic"])] = len(entry["partitions"])
    return out


async def ensure_topics(
    bootstrap: str, specs: Iterable[TopicSpec], *, replication_factor: int = 1
) -> dict[str, int]:
    """Create the missing topics (with ``replication_factor`` replicas); return the
    partition count of every one of them.

    Existing topics are left as they are (their count may differ from the spec: the
    caller decides whether that matters).
    """
    from aiokafka.admin import NewTopic

    wanted = {s.name: s for s in specs}
    admin = await _admin(bootstrap)
    try:
        existing = await _partition_counts(admin, list(wanted))
        missing = [s for name, s in wanted.items() if name not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        s.name,
                        num_partitions=s.partitions,
                        replication_factor=replication_factor,
                        topic_configs=dict(s.configs),
                    )
                    for s in missing
                ]
            )
            for entry in response.topic_errors:
                code = int(entry[1])
                if code not in (0, _TOPIC_EXISTS):
                    raise BrokerError(f"creating topic {entry[0]} failed with error code {code}")
        # Metadata can lag a create by a moment: wait until every topic is visible.
        deadline = time.monotonic() + 30.0
        while True:
            counts = await _partition_counts(admin, list(wanted))
            if len(counts) == len(wanted) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        absent = sorted(set(wanted) - set(counts))
        if absent:
            raise BrokerError(f"topics still missing after creation: {', '.join(absent)}")
        return counts
    finally:
        await admin.close()


def run_sync(coro: Any) -> Any:
    """Run a coroutine from synchronous code (the CLI, the stack)."""
    return asyncio.run(coro)


async def replication_factors(
    bootstrap: str, topics: Sequence[str], *, settle: float = 0.0
) -> dict[str, int]:
    """The smallest replica count among the partitions of each existing topic.

    With ``settle`` > 0, wait up to that many seconds until every one of ``topics`` is
    described: right after a create, the broker that answers may not know a topic yet
    (each broker learns new topics from the controller a moment later).
    """
    admin = await _admin(bootstrap)
    deadline = time.monotonic() + settle
    try:
        while True:
            existing = set(await admin.list_topics())
            wanted = [t for t in topics if t in existing]
            out: dict[str, int] = {}
            if wanted:
                for entry in await admin.describe_topics(wanted):
                    parts = entry.get("partitions") or []
                    if int(entry.get("error_code", 0)) == 0 and parts:
                        out[str(entry["topic"])] = min(len(p.get("replicas", [])) for p in parts)
            if len(out) == len(set(topics)) or time.monotonic() >= deadline:
                return out
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def end_offsets(bootstrap: str, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    """The end offset of every partition of ``topics`` (missing topics are skipped)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    counts = await partition_counts(bootstrap, topics)
    tps = [TopicPartition(t, p) for t in topics for p in range(counts.get(t, 0))]
    if not tps:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
        return {(tp.topic, tp.partition): int(off) for tp, off in ends.items()}
    finally:
        await consumer.stop()


def subscribed_topics(member_metadata: bytes) -> set[str]:
    """The topics in a member's consumer-protocol metadata (version, then an array of
    topic names: int16-length strings after an int32 count)."""
    topics: set[str] = set()
    try:
        count = int.from_bytes(member_metadata[2:6], "big", signed=True)
        pos = 6
        for _ in range(max(count, 0)):
            size = int.from_bytes(member_metadata[pos : pos + 2], "big", signed=True)
            if size < 0 or pos + 2 + size > len(member_metadata):
                break  # truncated: keep what was read
            topics.add(member_metadata[pos + 2 : pos + 2 + size].decode("utf-8"))
            pos += 2 + size
    except (UnicodeDecodeError, ValueError):
        return set()
    return topics


async def group_lag(bootstrap: str, group_id: str) -> int:
    """Records the consumer group has not committed yet, over the topics it committed on
    that its members read now (offsets it once committed on a topic it no longer reads,
    after an upgrade, say, would never catch up).

    -1 when the group has committed nothing yet.
    """
    admin = await _admin(bootstrap)
    try:
        committed = await admin.list_consumer_group_offsets(group_id)
        reading: set[str] = set()
        with contextlib.suppress(Exception):  # an older broker or a group being formed
            for resp in await admin.describe_consumer_groups([group_id]):
                for group in resp.to_object().get("groups", []):
                    for member in group.get("members", []):
                        reading |= subscribed_topics(member.get("member_metadata") or b"")
    finally:
        await admin.close()
    if reading:
        committed = {tp: m for tp, m in committed.items() if tp.topic in reading}
    if not committed:
        return -1
    ends = await end_offsets(bootstrap, sorted({tp.topic for tp in committed}))
    lag = 0
    for (topic, partition), end in ends.items():
        meta = next(
            (m for tp, m in committed.items() if tp.topic == topic and tp.partition == partition),
            None,
        )
        done = int(meta.offset) if meta is not None and meta.offset >= 0 else 0
        lag += max(end - done, 0)
    return lag


async def wait_quiet(
    bootstrap: str,
    topic: str,
    quiet_for: float,
    *,
    group_id: str | None = None,
    timeout: float = 600.0,
    poll: float = 0.5,
) -> bool:
    """Wait until ``topic`` has not grown for ``quiet_for`` seconds.

    With ``group_id``, the group must also have caught up (no lag on the topics it
    commits). Returns False when ``timeout`` passes first.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: dict[tuple[str, int], int] | None = None
    since = loop.time()
    while loop.time() < deadline:
        ends = await end_offsets(bootstrap, [topic])
        caught_up = True
        if group_id is not None:
            caught_up = await group_lag(bootstrap, group_id) == 0
        now = loop.time()
        if ends != last or not caught_up:
            last, since = ends, now
        elif now - since >= quiet_for:
            return True
        await asyncio.sleep(poll)
    return False
