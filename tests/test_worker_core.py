"""The worker's native fleet core gives what a shard of Python slots gives.

With the native extension, the worker keeps the devices that only ever moved their
clock in a ``FleetCore`` (``native/src/fleet.rs``): ``ParseStage.handle_batch_core``
reads a fetch and applies its clock rows there as it reads them, hands the rows of
Python's devices and every other record back in their place, and
``FleetCore.stored_forms`` writes the stored form of the core's changed devices. A device
becomes a Python ``Slot`` (its promotion) when a record needs Python.

Checked here against the reference, a ``Shard`` without a core fed the batch path's
outcomes one by one (``ParseStage.handle_batch``), the way the worker fed it before:
the same incident records, the same applied and duplicate counts, and after every
simulated commit the same stored states, read back field by field. The inputs make the
core promote devices (clock jumps, reloads, forged stamps, catalog messages), see
records again (a fetch delivered twice), hand partitions over and restore them from the
stored states, and grow its index (thousands of devices).
"""

from __future__ import annotations

import asyncio
import importlib.util
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from test_worker_batch import Rec, _module

from streams.core import native
from streams.core.engine import apply_admitted
from streams.core.event import Event
from streams.core.kb import default_kb
from streams.core.native import make_fleet_core
from streams.core.parse import Parser
from streams.shell.topics import HEADER_RECEIVED_AT, HEADER_SOURCE, partition_of
from streams.shell.worker.stages import (
    STATE_FORMAT,
    UNKNOWN_DEVICE,
    Clocked,
    ParseStage,
    Routed,
    Shard,
    Slot,
)

HAVE_NATIVE = importlib.util.find_spec(native.MODULE) is not None
pytestmark = pytest.mark.skipif(
    not HAVE_NATIVE,
    reason=f"{native.MODULE} is not built (make install builds it when cargo is installed)",
)

KB = default_kb()
PARTITIONS = 3
BUILT = (
    "%ASA-6-302013: Built inbound TCP connection {i} for outside:198.51.100.7/443 "
    "(198.51.100.7/443) to inside:10.0.0.9/51515 (10.0.0.9/51515)"
)


@dataclass
class Worker:
    """A shard, its parse stage and its table (key -> stored state), fed as the worker
    feeds them: ``core`` on the fleet core's path, else the reference path."""

    core: bool
    shard: Shard = field(init=False)
    stage: ParseStage = field(init=False)
    table: dict[bytes, bytes] = field(default_factory=dict)
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        mod = _module()
        core = make_fleet_core(mod, KB.lateness, None, partitions=PARTITIONS) if self.core else None
        self.shard = Shard(KB, core)
        self.stage = ParseStage(native=mod, kb=KB)

    def _apply(
        self, key: bytes, what: Event | tuple[Any, ...], partition: int, offset: int
    ) -> None:
        """The worker's ``_apply`` of one item: the device's slot (the table's state
        when the shard has none), then the event or clock row."""
        shard = self.shard
        device = key.decode("utf-8", errors="replace")
        slot = shard.slots.get(device)
        if slot is None:
            slot = shard.restore(device, self.table.get(key), partition)
        if isinstance(what, Event):
            recs = shard.apply(slot, what, partition, offset)
        else:
            recs = shard.clock(slot, what, partition, offset)
        if recs is None:
            return
        for r in recs:
            self.latest[r["incident_id"]] = r
        shard.unstored[key] = None

    def _route(self, rec: Rec, routed: Routed | Clocked) -> None:
        """A record in its place: applied when its device is this partition's (the
        others would be rerouted: left out on both paths)."""
        if isinstance(routed, Clocked):
            if partition_of(routed.key, PARTITIONS) == rec.partition:
                self._apply(routed.key, routed.row, rec.partition, rec.offset)
            return
        if routed.deadletter or routed.event is None:
            return
        key = routed.key or b"unknown"
        if partition_of(key, PARTITIONS) == rec.partition:
            self._apply(key, routed.event, rec.partition, rec.offset)

    def feed(self, batch: Sequence[Rec]) -> None:
        shard = self.shard
        if shard.core is None:
            for rec, routed in zip(batch, self.stage.handle_batch(batch), strict=True):
                self._route(rec, routed)
        else:

            def on_rows(partition: int, rows: list[tuple[tuple[Any, ...], int]]) -> bool:
                for row, offset in rows:
                    key = (row[0] or UNKNOWN_DEVICE).encode("utf-8", errors="replace")
                    self._apply(key, row, partition, offset)
                return partition in shard.frames

            applied, duplicates = self.stage.handle_batch_core(
                batch, shard.core, shard.frames.__contains__, on_rows, self._route
            )
            shard.applied += applied
            shard.duplicates += duplicates
        for r in shard.tick():
            self.latest[r["incident_id"]] = r

    def commit(self) -> None:
        """``store_states``: every changed state into the table."""
        shard = self.shard
        for key in shard.unstored:
            device = key.decode("utf-8", errors="replace")
            if device in shard.slots:
                self.table[key] = shard.dump(device)
        shard.unstored.clear()
        if shard.core is not None:
            for partition, key, state in shard.core.stored_forms(STATE_FORMAT, shard.frames):
                assert partition == Slot.load(state).partition
                self.table[key] = state
            shard.core.mark_stored()

    def hand_over(self, partition: int) -> None:
        """A rebalance that takes ``partition`` away and gives it back: states stored,
        its devices forgotten, then restored from the table (``restore_owned``)."""
        self.commit()
        self.shard.drop_partitions([partition])
        for key, state in sorted(self.table.items()):
            device = key.decode("utf-8", errors="replace")
            if Slot.load(state).partition == partition:
                self.shard.restore_stored(device, state)

    def finish(self) -> None:
        shard = self.shard
        for name, dc in shard.fleet.holding():
            for r in apply_admitted(shard.slots[name].state, shard.fleet.settle(name, dc), KB):
                self.latest[r["incident_id"]] = r
        for r in shard.tick() + shard.pending_updates(float("inf")):
            self.latest[r["incident_id"]] = r
        self.commit()


def _records(lines: Sequence[str], seed: int, *, strays: float = 0.03) -> list[Rec]:
    """Records keyed by the device each line names, in its partition (a few keyed by
    another name, so that they come to a partition not their device's), one receive
    time per 64 records."""
    rnd = random.Random(seed)
    parser = Parser(stream=True)
    offsets = [0] * PARTITIONS
    out: list[Rec] = []
    headers: list[tuple[str, bytes]] = []
    for i, line in enumerate(lines):
        if i % 64 == 0:
            headers = [
                (HEADER_RECEIVED_AT, b"2024-06-03T09:00:00+00:00"),
                (HEADER_SOURCE, b"10.9.9.9:514"),
            ]
        device = getattr(parser.parse(line), "device", None) or "unknown"
        key = device.encode() if rnd.random() >= strays else b"relay-7"
        part = partition_of(key, PARTITIONS)
        out.append(Rec(line.encode(), key, headers, "syslog.raw", part, offsets[part]))
        offsets[part] += 1
    return out


def _fleet_lines(seed: int) -> list[str]:
    from fleetgen import FleetSpec, build_fleet

    spec = FleetSpec(
        seed=seed,
        devices=40,
        hours=1.0,
        busy=1,
        busy_minutes=10.0,
        busy_rate=5.0,
        start="2024-06-03T06:00:00Z",
    )
    return build_fleet(spec).text().splitlines()


def _large_fleet(devices: int, lines: int) -> list[str]:
    """Lines outside the catalog over many devices (clock rows of native devices), a few
    of them far ahead or behind (the core hands those devices to Python)."""
    out = []
    for i in range(lines):
        t = 1_717_400_000 + i // 7
        if i % 997 == 0:
            t += 400_000  # a stamp days ahead
        elif i % 1499 == 0:
            t -= 90_000
        stamp = f"Jun {(t // 86400) % 28 + 1:2d} 2024 {t // 3600 % 24:02d}:{t // 60 % 60:02d}:{t % 60:02d}"
        out.append(f"<166>{stamp} fw-{i % devices} : {BUILT.format(i=i)}")
    return out


def _run(
    recs: Sequence[Rec], *, batch: int, again: float, seed: int, hand_over: Callable[[int], bool]
) -> tuple[Worker, Worker]:
    """Both paths over the same fetches: some delivered twice, a commit every few
    fetches, and partitions handed over where ``hand_over(fetch)`` says."""
    rnd = random.Random(seed)
    ref, core = Worker(core=False), Worker(core=True)
    for n, i in enumerate(range(0, len(recs), batch)):
        fetch = recs[i : i + batch]
        redelivered = rnd.random() < again
        for w in (ref, core):
            w.feed(fetch)
            if redelivered:
                w.feed(fetch[: len(fetch) // 2])
            if n % 3 == 2:
                w.commit()
            if hand_over(n):
                w.hand_over(n % PARTITIONS)
    for w in (ref, core):
        w.finish()
    return ref, core


def _stored(state: bytes) -> dict[str, Any]:
    """A stored state as the worker reads it back (``Slot.load``), field by field."""
    slot = Slot.load(state)
    dc = slot.clock
    return {
        "state": slot.state.to_dict(),
        "where": (slot.partition, slot.offset, slot.reroute_offset, dict(slot.origins)),
        "frame": (slot.frame, slot.lane_clock),
        "clock": (
            dc.lane,
            dc.offset,
            dc.correction,
            dc.last,
            dc.reading,
            dc.skew,
            dc.jumps,
            dc.outliers,
            list(dc.anomalies),
            [(e is None, eng, raw) for e, eng, raw in dc.held],
            dc.held_expected,
        ),
    }


def assert_same(ref: Worker, core: Worker) -> None:
    assert core.latest == ref.latest
    assert (core.shard.applied, core.shard.duplicates) == (ref.shard.applied, ref.shard.duplicates)
    assert core.shard.frames == ref.shard.frames
    assert set(core.table) == set(ref.table)
    for key, state in ref.table.items():
        assert _stored(core.table[key]) == _stored(state), key
    assert core.shard.device_count() == len(ref.shard.slots)


@pytest.mark.parametrize("seed", (5, 17))
def test_a_fleet_of_disagreeing_clocks_gives_the_same_incidents_and_stored_states(
    seed: int,
) -> None:
    recs = _records(_fleet_lines(seed), seed)
    ref, core = _run(recs, batch=150, again=0.2, seed=seed, hand_over=lambda n: n in (7, 19))
    assert ref.latest, "the fleet has faults: incidents expected"
    assert ref.shard.duplicates > 0
    assert_same(ref, core)
    native_count = core.shard.core.counts()[1] if core.shard.core else 0
    assert native_count > 0, "most devices of the fleet stay in the core"


def test_thousands_of_devices_through_promotions_and_hand_overs_store_the_same() -> None:
    recs = _records(_large_fleet(2500, 12_000), 3)
    ref, core = _run(recs, batch=500, again=0.3, seed=3, hand_over=lambda n: n in (5, 13, 20))
    assert_same(ref, core)
    assert core.shard.core is not None
    _, native_count, _, _ = core.shard.core.counts()
    assert native_count > 2000 and len(core.shard.slots) > 10


def test_the_core_stores_a_device_once_per_commit_and_only_when_it_changed() -> None:
    w = Worker(core=True)
    recs = _records(_large_fleet(50, 200), 1, strays=0.0)
    w.feed(recs)
    core = w.shard.core
    assert core is not None
    changed = core.changed()
    first = core.stored_forms(STATE_FORMAT, w.shard.frames)
    # Each native device the records reached, once (the partitions' first devices and
    # those the clock held are slots: theirs to store).
    assert len(first) + len(w.shard.slots) == 50 and changed >= len(first) > 40
    assert len({key for _, key, _ in first}) == len(first)
    # Until Kafka has them (a store that failed), they stay to be stored.
    assert core.stored_forms(STATE_FORMAT, w.shard.frames) == first
    core.mark_stored()
    assert core.stored_forms(STATE_FORMAT, w.shard.frames) == []
    w.feed(recs)  # the same records again: duplicates, nothing changed
    assert core.stored_forms(STATE_FORMAT, w.shard.frames) == []
    assert w.shard.duplicates >= len(first)


def test_the_stored_form_written_natively_is_json_a_slot_reads() -> None:
    core = make_fleet_core(_module(), KB.lateness, None, partitions=PARTITIONS)
    name = 'fw-"odd"\\name\t1'
    partition = partition_of(name.encode(), PARTITIONS)
    assert core.apply_record(name, 1_717_400_000.25, False, 41) == "done"
    assert core.apply_record(name, 1_717_399_000.0, True, 42) == "done"  # late, inferred
    assert core.apply_record(name, 1_717_400_000.0, False, 42) == "duplicate"
    [(part, key, value)] = core.stored_forms(STATE_FORMAT, {partition: 'f"rame\\'})
    assert (part, key) == (partition, name.encode())
    d = orjson.loads(value)
    assert d["state"] == {"device": name, "max_ts": 1_717_400_000.25, "late": 1}
    assert d["frame"] == 'f"rame\\' and d["offset"] == 42
    slot = Slot.load(value)
    assert (slot.partition, slot.offset, slot.clock.offset, slot.clock.last) == (
        partition,
        42,
        0.0,
        1_717_400_000.25,
    )
    assert slot.state.late == 1 and slot.clock.skew == float("inf")  # one timed row: no skew yet


def test_a_device_the_core_held_carries_its_numbers_and_its_unstored_change_into_its_slot() -> None:
    core = make_fleet_core(_module(), KB.lateness, None, partitions=PARTITIONS)
    shard = Shard(KB, core)
    name = "fw-9"
    assert core.apply_record(name, 1_717_400_000.0, False, 3) == "done"
    assert core.apply_record(name, 1_717_400_010.0, False, 4) == "done"
    slot = shard.restore(name, b"not read: the core's device is newer", 0)
    assert (slot.offset, slot.state.max_ts, slot.clock.last) == (
        4,
        1_717_400_010.0,
        1_717_400_010.0,
    )
    assert slot.partition == partition_of(name.encode(), PARTITIONS)
    assert shard.unstored == {name.encode(): None}
    # Python's from now on: its rows are handed back, and the core stores it no more.
    assert core.apply_record(name, 1_717_400_020.0, False, 5) == "python"
    assert core.stored_forms(STATE_FORMAT, {}) == []


class _FailingBox:
    """The store's outbox, whose first delivery is cancelled (a stop mid-store)."""

    def __init__(self) -> None:
        self.skipped = 0
        self.records: list[tuple[str, int, bytes | None, bytes]] = []
        self.deliveries = 0

    def add_to(self, topic: str, partition: int, key: bytes | None, value: bytes) -> None:
        self.records.append((topic, partition, key, value))

    async def deliver(self) -> int:
        self.deliveries += 1
        if self.deliveries == 1:
            self.records.clear()
            raise asyncio.CancelledError
        return len(self.records)


def test_a_store_that_did_not_reach_kafka_leaves_the_cores_devices_to_the_next() -> None:
    from streams.shell.worker.app import WorkerApp
    from streams.shell.worker.config import WorkerConfig

    async def go() -> None:
        worker = WorkerApp(WorkerConfig(bootstrap="127.0.0.1:9", app_id="tw-test-core"), 4)
        try:
            core = worker.shard.core
            assert core is not None, "the native batch path keeps its devices in the core"
            names = [f"fw-{i}" for i in range(5)]
            for i, name in enumerate(names):
                assert core.apply_record(name, 1_780_000_000.0 + i, False, i) == "done"
            box = _FailingBox()
            worker._store_outbox = box  # type: ignore[assignment]
            with pytest.raises(asyncio.CancelledError):
                await worker.store_states()
            assert worker.changed_states() == 5
            await worker.store_states()
            assert sorted(key for _, _, key, _ in box.records if key) == [n.encode() for n in names]
            assert all(worker.table.data.get(n.encode()) for n in names)
            assert worker.changed_states() == 0
        finally:
            worker.app.consumer._thread.thread_loop.close()

    asyncio.run(go())
