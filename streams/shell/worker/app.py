"""The faust application of ``tunnelwatch worker``: agents ``parse`` and ``correlate``.

::

    syslog.raw ──parse──▶ syslog.events (keyed by device) ──correlate──▶ vpn.incidents
                  └─────▶ syslog.deadletter                   │
                                                  table device_state (changelog-backed)

Event time only: the fleet clock (``streams.core.fleet``, the one ``analyze`` uses)
advances each device on its own clock, and a timer advances the silent ones. No faust
windowed tables: they count in wall-clock time.

**The batch path.** ``parse`` takes each fetch of ``syslog.raw`` as one batch. With the
native extension, the scanner reads the batch as ``analyze`` reads an archive: a record
whose event no rule of the knowledge base reads (a message outside the catalog, or an
inert catalog message such as the ASA's 106023 deny) becomes a clock row, with no Python
event and nothing published; only the others are parsed in Python.

**What goes to syslog.events** (``--events``): ``engine`` (the default), the events
whose kind a rule reads, every VPN message the engine correlates; ``all``, every parsed
record, each one parsed in Python (the batch path is off). When ``syslog.raw`` and
``syslog.events`` differ in partitions, ``correlate`` reads ``syslog.events`` and every
event is published.

At-least-once, with idempotent state: each batch is worked under one lock with the
timer: (1) the events and clock rows are applied, (2) the batch's events, dead letters,
reroutes and incident records are sent in one delivery (an ``Outbox``) that waits until
Kafka has them all, (3) the batch is acknowledged. Before faust commits acknowledged
offsets, the devices whose state changed since the last commit are stored, each with the
offset of its last record: the table's store, and its changelog as one batch per
partition (one write per device per commit, not per record; see ``store_states``). A
crash anywhere means a replay from the last commit, in which records at or before a
state's stored offset are skipped and the others give the very records they gave before
(duplicates of identical records, harmless for readers that keep the latest record per
``incident_id``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

import faust
import orjson

from streams.core import native
from streams.core.event import Event
from streams.core.kb import default_kb
from streams.core.native import ClockRow
from streams.shell.topics import STATE_TABLE, changelog_topic, reroute_topic
from streams.shell.tzmap import load_tz_map
from streams.shell.worker import faust_fixes
from streams.shell.worker.config import WorkerConfig
from streams.shell.worker.inbox import Inbox
from streams.shell.worker.outbox import Outbox, partition_of
from streams.shell.worker.stages import (
    MAX_PUBLISH_BYTES,
    Clocked,
    ParseStage,
    Shard,
    decode_event,
    fit_incident,
    replacement_letters,
)


def say(msg: str) -> None:
    """One log line on stderr (faust's own logging stays at the configured level)."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    print(f"[{stamp}] tunnelwatch worker: {msg}", file=sys.stderr, flush=True)


class Source:
    """What faust's table reads from the current event: the record it came in (a table
    write files itself under that record's partition)."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, message: Any) -> None:
        self.message = message


class _PartitionOf:
    """A record of a partition, as far as a table's store asks."""

    __slots__ = ("partition",)

    def __init__(self, partition: int) -> None:
        self.partition = partition


#: One record to correlate: the device key, the event or the native scanner's clock row
#: (:class:`~streams.shell.worker.stages.Clocked`), and the input partition and offset.
_Item = tuple[bytes, Event | ClockRow, int, int]


def build_app(
    cfg: WorkerConfig,
    partitions: int,
    raw_partitions: int | None = None,
    incident_partitions: int | None = None,
) -> faust.App:
    """The faust app with both agents, the table and the timers wired up.

    When ``syslog.raw`` has as many partitions as ``syslog.events`` (the stack creates
    them so), ``parse`` correlates an event right away if its device's events partition
    is the raw partition it was read from (always, when the raw record is keyed by the
    device, as the receiver keys it): that partition's changelog holds the state either
    way, and the event skips a round trip through Kafka and JSON. The others go through
    the reroute topic to ``correlate``. ``syslog.events`` is published in both cases.
    Otherwise ``correlate`` reads ``syslog.events`` as before.
    """
    inline = raw_partitions is None or raw_partitions == partitions
    faust_fixes.apply()
    app = faust.App(
        cfg.app_id,
        broker=[f"kafka://{b.strip()}" for b in cfg.bootstrap.split(",") if b.strip()],
        store=cfg.store_url,
        datadir=str(cfg.data_dir),
        autodiscover=False,
        web_enabled=False,
        topic_partitions=partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        broker_commit_interval=cfg.commit_interval,
        stream_recovery_delay=0.0,
        table_standby_replicas=0,
        producer_acks=-1,
        # A replay pushes thousands of records a second: let them share produce requests.
        producer_linger=0.005,
        producer_max_batch_size=256 * 1024,
        key_serializer="raw",
        value_serializer="raw",
        # A worker killed with SIGKILL holds its partitions until the session times out:
        # keep that short so that a restarted (or another) worker takes over quickly.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        Monitor=faust_fixes.quiet_monitor(),
    )
    names = cfg.topics

    def topic(name: str) -> Any:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions,
        )

    raw_topic = topic(names.raw)
    events_topic = topic(names.events)
    topic(names.deadletter)  # declared, written through the producer
    reroute_name = reroute_topic(cfg.app_id)
    correlate_topic = topic(reroute_name) if inline else events_topic
    # Offsets of the topic correlated from (for the fleet clock and revocations).
    input_name = names.raw if inline else names.events
    topic(names.incidents)  # declared, written through the outboxes
    changelog_name = changelog_topic(cfg.app_id)
    table = app.Table(
        STATE_TABLE,
        default=None,
        partitions=partitions,
        key_type=bytes,  # bytes means the raw codec, for the changelog and its recovery
        value_type=bytes,
        extra_topic_configs={"cleanup.policy": "compact"},
    )

    kb = default_kb()
    # The batch path (see ParseStage): with the native scanner, when events are correlated
    # where they are parsed and only the events rules read are published.
    publish_all = cfg.events == "all" or not inline
    stage = ParseStage(
        year=cfg.year,
        device=cfg.device,
        tz_map=load_tz_map(cfg.tz_map) if cfg.tz_map else None,
        native=None if publish_all else native.load(),
        kb=kb,
    )
    engine_kinds = frozenset(kb.kinds_used())
    if stage.native is not None:
        say("parse path: native batch (records no rule reads are clock rows)")
    else:
        why = (
            "--events all"
            if cfg.events == "all"
            else "syslog.raw and syslog.events differ in partitions"
            if not inline
            else "--tz-map given"
            if cfg.tz_map
            else "native extension not built"
        )
        say(f"parse path: python ({why})")
    shard = Shard(kb)
    counters = dict.fromkeys(
        (
            "raw",
            "published",
            "replaced",
            "skipped",
            "state_too_large",
            "bad_events",
            "states_stored",
        ),
        0,
    )
    lock = asyncio.Lock()
    ready = {"done": False}

    topic_partitions = {names.incidents: incident_partitions or partitions}
    outboxes: list[Outbox] = []

    def new_outbox() -> Outbox:
        """An outbox on faust's own aiokafka producer (its flush before a commit covers
        what the outbox sent); one per agent and one for the timer (each batch is one
        outbox's)."""
        box = Outbox(
            faust_fixes.aiokafka_producer(app),
            partitions,
            say,
            replacement_letters(names.deadletter),
            topic_partitions=topic_partitions,
        )
        outboxes.append(box)
        return box

    def queue_incidents(outbox: Outbox, records: list[dict[str, Any]]) -> None:
        for rec in records:
            outbox.add(names.incidents, rec["incident_id"].encode("ascii"), fit_incident(rec))

    async def deliver(outbox: Outbox, records: list[dict[str, Any]]) -> None:
        """Send what the outbox holds with the incident records: one round trip; return
        once Kafka acknowledged every one."""
        queue_incidents(outbox, records)
        await outbox.deliver()
        counters["replaced"] = sum(b.replaced for b in outboxes)
        counters["skipped"] = sum(b.skipped for b in outboxes)
        if records:
            shard.note_published(records)
            counters["published"] += len(records)

    async def quiet_logs() -> None:
        # faust filters at its handlers only: without a root level, every aiokafka debug
        # call would still build a log record (a quarter of the CPU on a replay).
        logging.getLogger().setLevel(max(logging.getLevelName(cfg.loglevel.upper()), 10))

    app.task(quiet_logs)

    async def correlate_batch(items: list[_Item], outbox: Outbox, *, rerouted: bool) -> None:
        """Apply events and clock rows and publish their incident records with whatever
        the outbox holds (one round trip); their states are stored before the next commit
        (:func:`store_states`)."""
        async with lock:
            if items and not restored["done"] and _settled(app):
                # Stored devices first: a lane's clock frame comes from its stored devices
                # (see Shard), not from whichever new device speaks first.
                restore_owned()
            now = time.monotonic()
            out: list[dict[str, Any]] = []
            slots = shard.slots
            for key, ev, partition, offset in items:
                device = key.decode("utf-8", errors="replace")
                slot = slots.get(device)
                if slot is None:
                    slot = shard.restore(device, table.get(key), partition)
                if isinstance(ev, Event):
                    recs = shard.apply(slot, ev, partition, offset, now, rerouted=rerouted)
                else:
                    recs = shard.clock(slot, ev, partition, offset, now)
                if recs is None:
                    continue
                if recs:
                    out.extend(recs)
                unstored[key] = None
            await deliver(outbox, out)

    #: Devices whose state changed since it was last stored (see store_states).
    unstored: dict[bytes, None] = {}
    store_outbox: dict[str, Outbox | None] = {"box": None}
    partition_refs: dict[int, Source] = {}

    async def store_states() -> None:
        """Store the changed device states: the table's store and, as one batch per
        partition, its changelog; awaited by the consumer before every offset commit
        (see faust_fixes), so that a commit never covers a record whose state is not
        stored. One write per device per commit, not one per record: with a fleet of
        100k devices each speaking now and then, a write per record was most of the
        cost. Under the lock: every state stored is one whose records' incident records
        Kafka already has."""
        async with lock:
            if not unstored:
                return
            box = store_outbox["box"]
            if box is None:
                box = store_outbox["box"] = new_outbox()
            by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
            for key in unstored:
                device = key.decode("utf-8", errors="replace")
                slot = shard.slots.get(device)
                if slot is None:  # handed over in a rebalance
                    continue
                state = shard.dump(device)
                if len(state) > MAX_PUBLISH_BYTES:
                    # Kafka would refuse it, and faust's producer would fail the worker:
                    # kept in memory only, logged and counted (after a restart the device
                    # resumes from its last stored state). Bounded raw texts (stages.py)
                    # make this all but impossible.
                    counters["state_too_large"] += 1
                    say(f"state of {key!r} is {len(state)} bytes: not stored in the changelog")
                    continue
                by_partition.setdefault(slot.partition, []).append((key, state))
            for partition, states in by_partition.items():
                # The store in the context of a record of the device's partition (a
                # RocksDB store files a key under the current record's partition).
                ref = partition_refs.get(partition)
                if ref is None:
                    ref = partition_refs[partition] = Source(_PartitionOf(partition))
                with faust_fixes.event_context(ref):
                    for key, state in states:
                        table.data[key] = state
                        box.add_to(changelog_name, partition, key, state)
            await box.deliver()
            stored = sum(len(v) for v in by_partition.values())
            counters["states_stored"] += stored
            unstored.clear()

    app.tunnelwatch_before_commit = store_states  # type: ignore[attr-defined]

    # syslog.raw's records come to ``parse`` as whole fetches, past faust's per-record
    # stream (see inbox.py): the agent is still what subscribes the topic.
    inbox = Inbox(app, {names.raw}, max_records=4 * cfg.batch_max)
    # Not one of flow control's managed queues: faust clears those each time it resumes
    # the flow, which a recovery does after its seek, and again when it completes; a
    # fetch cleared then is not read again. The inbox drops what a rebalance made stale
    # instead (see inbox.py).
    app.tunnelwatch_inbox = inbox  # type: ignore[attr-defined]
    # See faust_fixes: faust's 1.5 s fetch wait held busy partitions behind idle ones.
    app.tunnelwatch_fetch_max_wait_ms = int(cfg.fetch_max_wait * 1000)  # type: ignore[attr-defined]

    @app.agent(raw_topic, name="parse")
    async def parse(stream: Any) -> None:
        # Batches in, batches out: faust's per-record Topic.send machinery costs more
        # than parsing. The outbox waits until Kafka has the batch's records before the
        # batch is acknowledged: at-least-once holds.
        outbox: Outbox | None = None
        while True:
            # Whatever arrived while the previous batch was processed, and what comes in
            # the next few milliseconds: large batches under load, little latency.
            batch = await inbox.take(cfg.batch_max, cfg.batch_linger)
            if outbox is None:
                outbox = new_outbox()
            items: list[_Item] = []
            counters["raw"] += len(batch)
            for msg, routed in zip(batch, stage.handle_batch(batch), strict=True):
                if isinstance(routed, Clocked):
                    # Read by the native scanner: it moves its device's clock only.
                    key = routed.key
                    if outbox.partition(key) == msg.partition:
                        items.append((key, routed.row, msg.partition, msg.offset))
                    else:
                        value = orjson.dumps(routed.event(msg.value).to_record())
                        outbox.add(reroute_name, key, value, origin=msg)
                    continue
                if routed.deadletter:
                    outbox.add(names.deadletter, routed.key, routed.value, msg.partition, msg)
                    continue
                key = routed.key or b"unknown"
                ev = routed.event
                if publish_all or (ev is not None and ev.kind in engine_kinds):
                    outbox.add(names.events, key, routed.value, origin=msg)
                if not inline:
                    continue
                if ev is not None and outbox.partition(key) == msg.partition:
                    items.append((key, ev, msg.partition, msg.offset))
                else:
                    outbox.add(reroute_name, key, routed.value, origin=msg)
            # Events, dead letters, reroutes and incidents: one delivery.
            await correlate_batch(items, outbox, rerouted=False)
            inbox.ack(batch)

    @app.agent(correlate_topic, name="correlate")
    async def correlate(stream: Any) -> None:
        outbox: Outbox | None = None
        async for batch in stream.take_events(cfg.batch_max, within=cfg.batch_within):
            if outbox is None:
                outbox = new_outbox()
            items: list[_Item] = []
            for event in batch:
                msg = event.message
                key: bytes = msg.key or b"unknown"
                try:
                    ev = decode_event(msg.value)
                except Exception as exc:  # not an event record: skipped, never a crash
                    counters["bad_events"] += 1
                    say(
                        f"SKIPPED {msg.topic}:{msg.partition}@{msg.offset}: not an event "
                        f"record ({type(exc).__name__}: {str(exc)[:200]})"
                    )
                    continue
                items.append((key, ev, msg.partition, msg.offset))
            await correlate_batch(items, outbox, rerouted=inline)

    def owned_keys() -> list[bytes]:
        """The table's keys whose partition this worker owns now. faust's memory store
        keeps the keys of revoked partitions: ticking those stale states would publish
        records of devices another worker owns (and overwrite its newer records)."""
        mine = {tp.partition for tp in app.consumer.assignment() if tp.topic == input_name}
        return [k for k in list(table.keys()) if partition_of(k, partitions) in mine]

    restored = {"done": False}

    def restore_owned(owned: list[bytes] | None = None) -> None:
        for key in owned_keys() if owned is None else owned:
            device = key.decode("utf-8", errors="replace")
            if device not in shard.slots:
                shard.restore(device, table.get(key), -1)
        restored["done"] = True

    async def tick() -> None:
        if not _settled(app):
            return
        if not ready["done"]:
            ready["done"] = True
            _announce_ready(app, cfg, len(owned_keys()))
        async with lock:
            # Devices known only from the table (after a restart or a rebalance) need
            # their watermark too. (Not every tick: the table's keys are the fleet.)
            if not restored["done"]:
                restore_owned()
            records = shard.tick()
            records.extend(shard.pending_updates(time.monotonic() - cfg.flush_idle))
            if records:
                box = timer_outbox["box"]
                if box is None:
                    box = timer_outbox["box"] = new_outbox()
                await deliver(box, records)

    timer_outbox: dict[str, Outbox | None] = {"box": None}
    app.timer(interval=cfg.tick_interval)(tick)

    healer = faust_fixes.HoleHealer({names.raw, names.events, reroute_name}, say)

    async def heal() -> None:
        if _settled(app):
            await healer.check(app.consumer, inbox.waiting())

    app.timer(interval=5.0)(heal)

    if cfg.stats_interval > 0:
        last = {"t": time.monotonic(), "applied": 0}

        async def stats() -> None:
            now = time.monotonic()
            rate = (shard.applied - last["applied"]) / max(now - last["t"], 1e-9)
            if shard.applied != last["applied"]:
                say(
                    f"raw={counters['raw']} events={stage.events} clock_rows={stage.clocked} "
                    f"deadletter={stage.deadletters} oversize={stage.oversize} "
                    f"parse_errors={stage.errors} refused_replaced={counters['replaced']} "
                    f"refused_skipped={counters['skipped']} "
                    f"state_too_large={counters['state_too_large']} "
                    f"states_stored={counters['states_stored']} "
                    f"bad_events={counters['bad_events']} bad_states={shard.bad_states} "
                    f"applied={shard.applied} "
                    f"duplicates={shard.duplicates} incidents_published={counters['published']} "
                    f"devices={len(shard.slots)} duplicate_acks={faust_fixes.duplicate_acks} "
                    f"inbox_dropped={inbox.dropped} "
                    f"rate={rate:,.0f} events/s"
                )
            last["t"], last["applied"] = now, shard.applied

        app.timer(interval=cfg.stats_interval)(stats)

    async def on_revoked(sender: Any, /, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        revoked = args[0] if args else kwargs.get("revoked", ())
        parts = {tp.partition for tp in revoked if tp.topic == input_name}
        inbox.clear()  # the new assignment reads from the committed offsets
        # faust committed (and so stored) before this signal; what changed since is
        # stored too before the devices are handed over.
        await store_states()
        dropped = shard.drop_partitions(parts)
        restored["done"] = False
        if dropped:
            say(f"partitions {sorted(parts)} revoked: {dropped} device states handed over")

    app.on_partitions_revoked.connect(on_revoked)

    # Keep references for introspection (tests, debugging).
    app.tunnelwatch = {"stage": stage, "shard": shard, "table": table}  # type: ignore[attr-defined]
    _ = (parse, correlate)
    return app


def _settled(app: Any) -> bool:
    """Partitions assigned, tables recovered, no rebalance in progress."""
    try:
        recovery = app.tables.recovery
        return (
            not app.rebalancing and recovery.completed.is_set() and bool(app.consumer.assignment())
        )
    except Exception:  # not started yet
        return False


def _announce_ready(app: Any, cfg: WorkerConfig, restored: int) -> None:
    assigned = sorted(f"{tp.topic}:{tp.partition}" for tp in app.consumer.assignment())
    say(
        f"ready: group {cfg.app_id} assigned {len(assigned)} partitions "
        f"({', '.join(assigned)}); restored {restored} device states from the changelog"
    )
    if cfg.ready_file is not None:
        cfg.ready_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cfg.ready_file.with_suffix(".tmp")
        tmp.write_bytes(
            orjson.dumps(
                {"pid": os.getpid(), "app_id": cfg.app_id, "assigned": assigned},
            )
        )
        tmp.replace(cfg.ready_file)
