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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import faust
import orjson

from streams.core import native
from streams.core.event import Event
from streams.core.kb import default_kb
from streams.core.native import ClockRow, make_fleet_core
from streams.shell.topics import STATE_TABLE, changelog_topic, reroute_topic
from streams.shell.tzmap import load_tz_map
from streams.shell.worker import faust_fixes
from streams.shell.worker.config import WorkerConfig
from streams.shell.worker.inbox import Inbox
from streams.shell.worker.outbox import Outbox, partition_of
from streams.shell.worker.stages import (
    MAX_PUBLISH_BYTES,
    STATE_FORMAT,
    UNKNOWN_DEVICE,
    Clocked,
    ParseStage,
    Routed,
    Shard,
    decode_rerouted,
    fit_incident,
    replacement_letters,
    reroute_record,
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


class WorkerPoisoned(RuntimeError):
    """Device states may be ahead of what was published: they must not be stored."""


class _PartitionOf:
    """A record of a partition, as far as a table's store asks."""

    __slots__ = ("partition",)

    def __init__(self, partition: int) -> None:
        self.partition = partition


#: One record to correlate: the device key, the event or the native scanner's clock row
#: (:class:`~streams.shell.worker.stages.Clocked`), the input partition and offset, and
#: the raw partition and offset of a rerouted record (else None).
_Item = tuple[bytes, Event | ClockRow, int, int, tuple[int, int] | None]


@dataclass(slots=True)
class Counters:
    """What the stats line reports besides the stages' own counts."""

    raw: int = 0  # raw records taken
    published: int = 0  # incident records published
    replaced: int = 0  # records Kafka refused, published as dead letters instead
    skipped: int = 0  # records Kafka refused that could not be replaced
    state_too_large: int = 0  # device states kept in memory only (over Kafka's limit)
    bad_events: int = 0  # records of the correlate topic that are not events
    states_stored: int = 0  # device states written to the table (once per commit)
    commits_put_off: int = 0  # periodic commits put off (see WorkerApp.put_off)


class WorkerApp:
    """The worker: a faust app and its named parts.

    - ``app``: the faust app (agents ``parse`` and ``correlate``, the state ``table``,
      timers ``tick``, ``heal`` and ``stats``);
    - ``stage`` (:class:`ParseStage`) reads ``syslog.raw``, ``shard`` (:class:`Shard`)
      holds the engine state of the devices this worker owns, ``inbox`` hands ``parse``
      whole fetches, outboxes (:meth:`new_outbox`) send whole batches;
    - ``lock`` serializes what changes the shard: batches, ticks and state stores.

    When ``syslog.raw`` has as many partitions as ``syslog.events`` (the stack creates
    them so: ``inline``), ``parse`` correlates a record right away if its device's
    partition is the raw partition it was read from (always, when the raw record is keyed
    by the device, as the receiver keys it): that partition's changelog holds the state
    either way. The others go through the reroute topic to ``correlate``. Otherwise
    ``correlate`` reads ``syslog.events``, and every event is published there.
    """

    def __init__(
        self,
        cfg: WorkerConfig,
        partitions: int,
        raw_partitions: int | None = None,
        incident_partitions: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.partitions = partitions
        self.inline = raw_partitions is None or raw_partitions == partitions
        faust_fixes.apply()
        self.app = self._faust_app()
        self.names = names = cfg.topics
        self.raw_topic = self._topic(names.raw)
        self.events_topic = self._topic(names.events)
        self._topic(names.deadletter)  # declared, written through the outboxes
        self._topic(names.incidents)  # declared, written through the outboxes
        self.reroute_name = reroute_topic(cfg.app_id)
        self.correlate_topic = self._topic(self.reroute_name) if self.inline else self.events_topic
        # Offsets of the topic correlated from (for the fleet clock and revocations).
        self.input_name = names.raw if self.inline else names.events
        self.changelog_name = changelog_topic(cfg.app_id)
        self.table = self.app.Table(
            STATE_TABLE,
            default=None,
            partitions=partitions,
            key_type=bytes,  # bytes means the raw codec, for the changelog and its recovery
            value_type=bytes,
            extra_topic_configs={"cleanup.policy": "compact"},
        )
        self.topic_partitions = {names.incidents: incident_partitions or partitions}

        self.kb = kb = default_kb()
        # The batch path (see ParseStage): with the native scanner, when records are
        # correlated where they are parsed and only the events rules read are published.
        self.publish_all = cfg.events == "all" or not self.inline
        self.stage = ParseStage(
            year=cfg.year,
            device=cfg.device,
            tz_map=load_tz_map(cfg.tz_map) if cfg.tz_map else None,
            native=None if self.publish_all else native.load(),
            kb=kb,
        )
        self.engine_kinds = frozenset(kb.kinds_used())
        core = None
        if self.stage.native is not None and cfg.fleet_core:
            # Its lanes are the partitions, on the receiver's murmur2.
            core = make_fleet_core(self.stage.native, kb.lateness, None, partitions=partitions)
        self.shard = Shard(kb, core)
        self.counters = Counters()
        self.lock = asyncio.Lock()
        self.ready = False  # announced (ready file written)
        self.restored = False  # the owned devices of the table are in the shard
        self.outboxes: list[Outbox] = []
        self._timer_outbox: Outbox | None = None
        self._store_outbox: Outbox | None = None
        #: Devices whose slot changed since it was last stored (see store_states).
        self.unstored = self.shard.unstored
        # When states were last stored, and the shard's applied count then.
        self._stored_at = time.monotonic()
        self._applied_at_store = 0
        self._partition_refs: dict[int, Source] = {}
        #: A batch failed after it changed device states: they are never stored (see
        #: correlate_batch), so no commit can cover the failed batch's records.
        self.poisoned = False
        self._last_stats = (time.monotonic(), 0)
        # syslog.raw's records come to ``parse`` as whole fetches, past faust's
        # per-record stream (see inbox.py): the agent is still what subscribes the topic.
        self.inbox = Inbox(self.app, {names.raw}, max_records=4 * cfg.batch_max)
        self.healer = faust_fixes.HoleHealer({names.raw, names.events, self.reroute_name}, say)
        self._wire()
        self._say_parse_path()

    # -- construction ----------------------------------------------------------------

    def _faust_app(self) -> faust.App:
        cfg = self.cfg
        return faust.App(
            cfg.app_id,
            broker=[f"kafka://{b.strip()}" for b in cfg.bootstrap.split(",") if b.strip()],
            store=cfg.store_url,
            datadir=str(cfg.data_dir),
            autodiscover=False,
            web_enabled=False,
            topic_partitions=self.partitions,
            topic_replication_factor=1,
            consumer_auto_offset_reset="earliest",
            processing_guarantee="at_least_once",
            broker_commit_interval=cfg.commit_interval,
            stream_recovery_delay=0.0,
            table_standby_replicas=0,
            producer_acks=-1,
            # A replay pushes thousands of records a second: let them share produce
            # requests.
            producer_linger=0.005,
            producer_max_batch_size=256 * 1024,
            key_serializer="raw",
            value_serializer="raw",
            # A worker killed with SIGKILL holds its partitions until the session times
            # out: keep that short so that a restarted (or another) worker takes over.
            broker_session_timeout=10.0,
            broker_heartbeat_interval=2.0,
            Monitor=faust_fixes.quiet_monitor(),
        )

    def _topic(self, name: str) -> Any:
        return self.app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=self.partitions,
        )

    def _wire(self) -> None:
        app, cfg = self.app, self.cfg
        app.task(self.quiet_logs)
        app.agent(self.raw_topic, name="parse")(self.parse)
        app.agent(self.correlate_topic, name="correlate")(self.correlate)
        app.timer(interval=cfg.tick_interval)(self.tick)
        app.timer(interval=5.0)(self.heal)
        if cfg.stats_interval > 0:
            app.timer(interval=cfg.stats_interval)(self.stats)
        app.on_partitions_revoked.connect(self.on_revoked)
        # Read by faust_fixes (the one module of faust internals) and the inbox: the
        # inbox is not one of flow control's managed queues (faust clears those each
        # time it resumes the flow, and a fetch cleared then is not read again); faust's
        # 1.5 s fetch wait held busy partitions behind idle ones; states are stored
        # before each commit.
        app.tunnelwatch_inbox = self.inbox  # type: ignore[attr-defined]
        app.tunnelwatch_fetch_max_wait_ms = int(cfg.fetch_max_wait * 1000)  # type: ignore[attr-defined]
        app.tunnelwatch_before_commit = self.store_states  # type: ignore[attr-defined]
        app.tunnelwatch_put_off_commit = self.put_off_commit  # type: ignore[attr-defined]
        app.tunnelwatch_worker = self  # type: ignore[attr-defined]

    def _say_parse_path(self) -> None:
        if self.stage.native is not None:
            where = "the native fleet core" if self.shard.core is not None else "Python slots"
            say(
                "parse path: native batch (records no rule reads are clock rows; devices "
                f"that only move their clock in {where})"
            )
            return
        cfg = self.cfg
        why = (
            "--events all"
            if cfg.events == "all"
            else "syslog.raw and syslog.events differ in partitions"
            if not self.inline
            else "--tz-map given"
            if cfg.tz_map
            else "native extension not built"
        )
        say(f"parse path: python ({why})")

    # -- delivery --------------------------------------------------------------------

    def new_outbox(self, *, replace: bool = True) -> Outbox:
        """An outbox on faust's own aiokafka producer (its flush before a commit covers
        what the outbox sent); one per agent, one for the timer and one for the states
        (each batch is one outbox's). ``replace``: a record Kafka refuses for good
        becomes a dead letter of the raw record it came from (else it is skipped)."""
        box = Outbox(
            faust_fixes.aiokafka_producer(self.app),
            self.partitions,
            say,
            replacement_letters(self.names.deadletter) if replace else None,
            topic_partitions=self.topic_partitions,
        )
        self.outboxes.append(box)
        return box

    async def deliver(self, outbox: Outbox, records: list[dict[str, Any]]) -> None:
        """Send what the outbox holds with the incident records: one round trip; return
        once Kafka acknowledged every one."""
        incidents = self.names.incidents
        for rec in records:
            outbox.add(incidents, rec["incident_id"].encode("ascii"), fit_incident(rec))
        await outbox.deliver()
        c = self.counters
        c.replaced = sum(b.replaced for b in self.outboxes)
        c.skipped = sum(b.skipped for b in self.outboxes)
        if records:
            self.shard.note_published(records)
            c.published += len(records)

    # -- agents ----------------------------------------------------------------------

    async def quiet_logs(self) -> None:
        # faust filters at its handlers only: without a root level, every aiokafka debug
        # call would still build a log record (a quarter of the CPU on a replay).
        logging.getLogger().setLevel(max(logging.getLevelName(self.cfg.loglevel.upper()), 10))

    async def parse(self, stream: Any) -> None:
        """syslog.raw, in whole fetches: batches in, batches out (faust's per-record
        ``Topic.send`` machinery cost more than parsing). A batch is acknowledged once
        Kafka has its outputs: at-least-once holds."""
        cfg = self.cfg
        outbox: Outbox | None = None
        while True:
            # Whatever arrived while the previous batch was processed, and what comes in
            # the next few milliseconds: large batches under load, little latency.
            batch = await self.inbox.take(cfg.batch_max, cfg.batch_linger)
            if outbox is None:  # faust's producer is started by now
                outbox = self.new_outbox()
            self.counters.raw += len(batch)
            if self.shard.core is not None:
                box = outbox
                await self._locked(partial(self._parse_apply, batch, box), box, bool(batch))
            else:
                # Events, dead letters, reroutes and incidents: one delivery.
                items = self._routed(batch, outbox)
                await self.correlate_batch(items, outbox, rerouted=False)
            self.inbox.ack(batch)

    def _routed(self, batch: list[Any], outbox: Outbox) -> list[_Item]:
        """A fetch parsed (:meth:`ParseStage.handle_batch`) and routed: the items to
        correlate here, in order."""
        items: list[_Item] = []
        for msg, routed in zip(batch, self.stage.handle_batch(batch), strict=True):
            item = self._route(msg, routed, outbox)
            if item is not None:
                items.append(item)
        return items

    def _route(self, msg: Any, routed: Routed | Clocked, outbox: Outbox) -> _Item | None:
        """Where a raw record goes: to the outbox (events, dead letters, reroutes), and
        the item to correlate here, if any."""
        if isinstance(routed, Clocked):
            # Read by the native scanner: it moves its device's clock only.
            key = routed.key
            if outbox.partition(key) == msg.partition:
                return (key, routed.row, msg.partition, msg.offset, None)
            value = reroute_record(routed.event(msg.value), msg.partition, msg.offset)
            outbox.add(self.reroute_name, key, value, origin=msg)
            return None
        if routed.deadletter:
            outbox.add(self.names.deadletter, routed.key, routed.value, msg.partition, msg)
            return None
        key = routed.key or b"unknown"
        ev = routed.event
        if self.publish_all or (ev is not None and ev.kind in self.engine_kinds):
            outbox.add(self.names.events, key, routed.value, origin=msg)
        if not self.inline:
            return None
        if ev is None:
            outbox.add(self.reroute_name, key, routed.value, origin=msg)
        elif outbox.partition(key) == msg.partition:
            return (key, ev, msg.partition, msg.offset, None)
        else:
            value = reroute_record(ev, msg.partition, msg.offset)
            outbox.add(self.reroute_name, key, value, origin=msg)
        return None

    def _parse_apply(self, batch: list[Any], outbox: Outbox) -> list[dict[str, Any]]:
        """A fetch of syslog.raw read and applied in one pass, in order (the native
        fleet core's path): clock rows of the core's devices applied there, every other
        record routed and applied as it comes. The incident records it changed."""
        shard = self.shard
        core = shard.core
        assert core is not None
        out: list[dict[str, Any]] = []
        if not self.restored:
            # Devices of the table not restored yet: each new device is looked up there.
            return self._apply(self._routed(batch, outbox), False)
        frames = shard.frames

        def on_rows(partition: int, rows: list[tuple[tuple[Any, ...], int]]) -> bool:
            items: list[_Item] = [
                ((row[0] or UNKNOWN_DEVICE).encode("utf-8", "replace"), row, partition, o, None)
                for row, o in rows
            ]
            out.extend(self._apply(items, False))
            return partition in frames

        def on_record(msg: Any, routed: Routed | Clocked) -> None:
            item = self._route(msg, routed, outbox)
            if item is not None:
                out.extend(self._apply([item], False))

        applied, duplicates = self.stage.handle_batch_core(
            batch, core, frames.__contains__, on_rows, on_record
        )
        shard.applied += applied
        shard.duplicates += duplicates
        return out

    async def correlate(self, stream: Any) -> None:
        """The reroute topic (or syslog.events when not inline), through faust's stream."""
        outbox: Outbox | None = None
        async for batch in stream.take_events(self.cfg.batch_max, within=self.cfg.batch_within):
            if outbox is None:  # faust's producer is started by now
                outbox = self.new_outbox()
            items: list[_Item] = []
            for event in batch:
                msg = event.message
                key: bytes = msg.key or b"unknown"
                try:
                    ev, origin = decode_rerouted(msg.value)
                except Exception as exc:  # not an event record: skipped, never a crash
                    self.counters.bad_events += 1
                    say(
                        f"SKIPPED {msg.topic}:{msg.partition}@{msg.offset}: not an event "
                        f"record ({type(exc).__name__}: {str(exc)[:200]})"
                    )
                    continue
                items.append((key, ev, msg.partition, msg.offset, origin))
            await self.correlate_batch(items, outbox, rerouted=self.inline)

    async def correlate_batch(self, items: list[_Item], outbox: Outbox, *, rerouted: bool) -> None:
        """Apply events and clock rows and publish their incident records with whatever
        the outbox holds (one round trip); their states are stored before the next
        commit (:meth:`store_states`)."""
        await self._locked(lambda: self._apply(items, rerouted), outbox, bool(items))

    async def _locked(
        self, apply: Callable[[], list[dict[str, Any]]], outbox: Outbox, restore: bool = True
    ) -> None:
        """``apply()`` (it changes device states) under the lock, then the delivery of
        its incident records with whatever the outbox holds."""
        async with self.lock:
            if restore and not self.restored and _settled(self.app):
                # Stored devices first: a lane's clock frame comes from its stored
                # devices (see Shard), not from whichever new device speaks first.
                self.restore_owned()
            try:
                out = apply()
                await self.deliver(outbox, out)
            except BaseException as exc:
                # Device states moved for records whose outputs may not be in Kafka: if
                # the next commit stored them, those records would be skipped after a
                # restart and their incident records lost. Never store again; a defect
                # ends the process (as safe as kill -9: the records are read again from
                # the last commit), a cancellation (a stop) ends it anyway.
                self.poisoned = True
                if isinstance(exc, asyncio.CancelledError):
                    raise
                say(
                    f"FATAL: a batch failed after changing device states "
                    f"({type(exc).__name__}: {str(exc)[:300]}); exiting without storing "
                    "them: the records are read again from the last commit"
                )
                os._exit(70)

    def _apply(self, items: list[_Item], rerouted: bool) -> list[dict[str, Any]]:
        """Feed the shard a batch's records; the incident records they changed."""
        shard, table, unstored = self.shard, self.table, self.unstored
        data = table.data
        now = time.monotonic()
        out: list[dict[str, Any]] = []
        slots = shard.slots
        for key, ev, partition, offset, origin in items:
            device = key.decode("utf-8", errors="replace")
            slot = slots.get(device)
            if slot is None:
                # A device new to the table is the common case with a large fleet: the
                # membership test spares the table's KeyError (its get raises inside).
                stored = table.get(key) if key in data else None
                slot = shard.restore(device, stored, partition)
            if isinstance(ev, Event):
                recs = shard.apply(
                    slot, ev, partition, offset, now, rerouted=rerouted, origin=origin
                )
            else:
                recs = shard.clock(slot, ev, partition, offset, now)
            if recs is None:
                continue
            if recs:
                out.extend(recs)
            unstored[key] = None
        return out

    # -- state -----------------------------------------------------------------------

    async def store_states(self) -> None:
        """Store the changed device states: the table's store and, as one batch per
        partition, its changelog; awaited by the consumer before every offset commit
        (see faust_fixes), so that a commit never covers a record whose state is not
        stored. One write per device per commit, not one per record: with a fleet of
        100k devices each speaking now and then, a write per record was most of the
        cost. Under the lock: every state stored is one whose records' incident records
        Kafka already has. (A periodic commit may be put off before, see
        :meth:`put_off`.)"""
        async with self.lock:
            if self.poisoned:
                raise WorkerPoisoned(
                    "a batch failed after changing device states: they are not stored, "
                    "and no offset is committed"
                )
            core = self.shard.core
            if not self.unstored and (core is None or not core.changed()):
                return
            box = self._store_outbox
            if box is None:
                # No replacement: a state Kafka refuses must stop the commit, not become
                # a dead letter.
                box = self._store_outbox = self.new_outbox(replace=False)
            skipped = box.skipped
            shard = self.shard
            by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
            for key in self.unstored:
                device = key.decode("utf-8", errors="replace")
                slot = shard.slots.get(device)
                if slot is None:  # handed over in a rebalance
                    continue
                state = shard.dump(device)
                if len(state) > MAX_PUBLISH_BYTES:
                    # Kafka would refuse it, and faust's producer would fail the worker:
                    # kept in memory only, logged and counted (after a restart the
                    # device resumes from its last stored state). Bounded raw texts
                    # (stages.py) make this all but impossible.
                    self.counters.state_too_large += 1
                    say(f"state of {key!r} is {len(state)} bytes: not stored in the changelog")
                    continue
                by_partition.setdefault(slot.partition, []).append((key, state))
            if core is not None:
                # The core's devices, in their short form (written there).
                for partition, key, state in core.stored_forms(STATE_FORMAT, shard.frames):
                    by_partition.setdefault(partition, []).append((key, state))
            data = self.table.data
            for partition, states in by_partition.items():
                # The store in the context of a record of the device's partition (a
                # RocksDB store files a key under the current record's partition).
                ref = self._partition_refs.get(partition)
                if ref is None:
                    ref = self._partition_refs[partition] = Source(_PartitionOf(partition))
                with faust_fixes.event_context(ref):
                    for key, state in states:
                        data[key] = state
                        box.add_to(self.changelog_name, partition, key, state)
            await box.deliver()
            if box.skipped != skipped:
                self.poisoned = True
                raise WorkerPoisoned(
                    f"{box.skipped - skipped} device states were refused by Kafka: "
                    "no offset is committed past them"
                )
            self.counters.states_stored += sum(len(v) for v in by_partition.values())
            self.unstored.clear()
            if core is not None:
                core.mark_stored()
            self._stored_at = time.monotonic()
            self._applied_at_store = self.shard.applied

    def changed_states(self) -> int:
        """How many device states changed since they were last stored (at most)."""
        core = self.shard.core
        return len(self.unstored) + (core.changed() if core is not None else 0)

    def put_off_commit(self) -> bool:
        """The consumer asks before a periodic commit (see faust_fixes): True puts it
        off (counted)."""
        if self.put_off():
            if not self.counters.commits_put_off:
                say(
                    f"a commit waits: {self.changed_states():,} device states changed since the "
                    f"last store, for {self.shard.applied - self._applied_at_store:,} records; "
                    f"commits wait up to {self.cfg.commit_max_interval:g} s while the worker "
                    "is behind (commits_put_off on the stats line counts them)"
                )
            self.counters.commits_put_off += 1
            return True
        return False

    def put_off(self) -> bool:
        """Whether a periodic commit waits: storing a device's state costs about as much
        as applying a few records to it, and a fleet of 100k devices under load changes
        nearly one state per record between two commits a second apart. Waiting, each
        state stored carries several records (Kafka Streams commits every 30 s for the
        same reason). Never more than ``commit_max_interval`` seconds from the last
        store, never for a few states (``store_floor``), never once everything there
        is was read (the worker has time to spare, and a crash should replay little)."""
        cfg = self.cfg
        states = self.changed_states()
        applied = self.shard.applied - self._applied_at_store
        if states <= max(cfg.store_floor, applied * cfg.store_share):
            return False
        if time.monotonic() - self._stored_at >= cfg.commit_max_interval:
            return False
        if not len(self.inbox):
            behind = faust_fixes.records_behind(
                self.app.consumer, {self.input_name, self.reroute_name}
            )
            if behind == 0:
                return False
        return True

    def owned_keys(self) -> list[bytes]:
        """The table's keys whose partition this worker owns now. faust's memory store
        keeps the keys of revoked partitions: ticking those stale states would publish
        records of devices another worker owns (and overwrite its newer records)."""
        mine = {
            tp.partition for tp in self.app.consumer.assignment() if tp.topic == self.input_name
        }
        return [k for k in list(self.table.keys()) if partition_of(k, self.partitions) in mine]

    def restore_owned(self) -> None:
        """Every owned device of the table into the shard (after a start or a rebalance)."""
        shard = self.shard
        for key in self.owned_keys():
            device = key.decode("utf-8", errors="replace")
            shard.restore_stored(device, self.table.get(key))
        self.restored = True

    async def on_revoked(
        self, sender: Any, /, *args: Any, signal: Any = None, **kwargs: Any
    ) -> None:
        revoked = args[0] if args else kwargs.get("revoked", ())
        parts = {tp.partition for tp in revoked if tp.topic == self.input_name}
        self.inbox.clear()  # the new assignment reads from the committed offsets
        # faust forgets the acknowledged offsets it had not committed before this signal
        # (they are read again by the next owner), but the states of what was applied
        # are stored before the devices are handed over: the next owner skips what they
        # cover and reads the rest.
        await self.store_states()
        dropped = self.shard.drop_partitions(parts)
        self.restored = False
        if dropped:
            say(f"partitions {sorted(parts)} revoked: {dropped} device states handed over")

    # -- timers ----------------------------------------------------------------------

    async def tick(self) -> None:
        """Advance the silent devices by their lane's clock; publish what changed and the
        pending state of idle devices."""
        if not _settled(self.app):
            return
        if not self.ready:
            self.ready = True
            _announce_ready(self.app, self.cfg, len(self.owned_keys()))
        async with self.lock:
            # Devices known only from the table (after a restart or a rebalance) need
            # their watermark too. (Not every tick: the table's keys are the fleet.)
            if not self.restored:
                self.restore_owned()
            records = self.shard.tick()
            # The devices the fleet clock moved (a quiet incident resolved, an absence
            # fired) are stored with the next commit, after their records are in Kafka:
            # else a restart would make the same change again and publish it twice.
            changed = {str(r["device"]) for r in records}
            records.extend(self.shard.pending_updates(time.monotonic() - self.cfg.flush_idle))
            if records:
                box = self._timer_outbox
                if box is None:
                    box = self._timer_outbox = self.new_outbox()
                await self.deliver(box, records)
            for device in changed:
                # (A name read from a key that is not UTF-8 does not give its key back:
                # that device is stored with its next record, as before.)
                if device in self.shard.slots and "\ufffd" not in device:
                    self.unstored[device.encode("utf-8")] = None

    async def heal(self) -> None:
        if _settled(self.app):
            await self.healer.check(self.app.consumer, self.inbox.waiting())

    async def stats(self) -> None:
        now = time.monotonic()
        shard, stage, c = self.shard, self.stage, self.counters
        if shard.new_mixed:
            named = ", ".join(repr(d) for d in shard.new_mixed[:20])
            more = len(shard.new_mixed) - 20
            say(
                f"devices fed from two raw partitions (their own and, rerouted, another's: "
                f"the order between the two is not defined; key raw records by device): "
                f"{named}{f' and {more} more' if more > 0 else ''}"
            )
            shard.new_mixed.clear()
        then, applied = self._last_stats
        rate = (shard.applied - applied) / max(now - then, 1e-9)
        if shard.applied != applied:
            say(
                f"raw={c.raw} events={stage.events} clock_rows={stage.clocked} "
                f"deadletter={stage.deadletters} oversize={stage.oversize} "
                f"parse_errors={stage.errors} refused_replaced={c.replaced} "
                f"refused_skipped={c.skipped} state_too_large={c.state_too_large} "
                f"states_stored={c.states_stored} commits_put_off={c.commits_put_off} "
                f"bad_events={c.bad_events} "
                f"bad_states={shard.bad_states} applied={shard.applied} "
                f"duplicates={shard.duplicates} incidents_published={c.published} "
                f"devices={shard.device_count()} mixed_key_devices={shard.mixed_count} "
                f"duplicate_acks={faust_fixes.duplicate_acks} "
                f"inbox_dropped={self.inbox.dropped} rate={rate:,.0f} events/s"
            )
        self._last_stats = (now, shard.applied)


def build_app(
    cfg: WorkerConfig,
    partitions: int,
    raw_partitions: int | None = None,
    incident_partitions: int | None = None,
) -> faust.App:
    """The faust app of a :class:`WorkerApp` (``app.tunnelwatch_worker`` is the worker)."""
    return WorkerApp(cfg, partitions, raw_partitions, incident_partitions).app


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
