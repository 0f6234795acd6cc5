"""The worker's native batch path gives what its per-record Python path gives.

``ParseStage.handle_batch`` reads a fetch of ``syslog.raw`` through the native scanner:
the records whose event no rule reads come back as clock rows (``Clocked``), the others
are parsed in Python. Checked record by record against ``ParseStage.handle`` (same
routing, same keys, a clock row says what the Python event says, the parser states
and counters end the same), and through the engine: a ``Shard`` fed the batch path's
outcomes gives the same incident records and device states as one fed Python events.

Inputs: a synthetic fleet archive, every corpus file and golden input, a mix of every
header shape, and random syslog lines; records with and without keys, receive times,
``year`` headers and source headers, across several partitions.
"""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_native import ALL_SHAPES, CORPUS, GOLDEN, syslog_line

from load import shapes
from load.scenario import default_scenario
from load.synth import generate
from streams.core import native
from streams.core.catalog import default_catalog
from streams.core.engine import apply_admitted
from streams.core.event import Event
from streams.core.kb import default_kb
from streams.shell.topics import HEADER_RECEIVED_AT, HEADER_SOURCE, HEADER_YEAR, partition_of
from streams.shell.worker.stages import Clocked, ParseStage, Routed, Shard, decode_event

HAVE_NATIVE = importlib.util.find_spec(native.MODULE) is not None
pytestmark = pytest.mark.skipif(
    not HAVE_NATIVE,
    reason=f"{native.MODULE} is not built (make install builds it when cargo is installed)",
)

KB = default_kb()
INERT = native.inert_kinds(default_catalog(), KB)
PARTITIONS = 3


@dataclass(frozen=True, slots=True)
class Rec:
    """A consumer record as the parse agent sees it."""

    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, bytes]]
    topic: str
    partition: int
    offset: int


def _module() -> native.NativeModule:
    mod = native.load()
    assert mod is not None
    return mod


def records_of(
    lines: Sequence[str | bytes | None],
    *,
    seed: int,
    keyed: float = 0.8,
    batch: int = 40,
    start: float = 1_780_000_000.0,
) -> list[Rec]:
    """Records as the receiver would publish them: keyed by a device name (most) or
    not, one receive time per receiver batch (sometimes none), now and then a ``year``
    header, the partition of the key (else a random one)."""
    rnd = random.Random(seed)
    out: list[Rec] = []
    offsets = [0] * PARTITIONS
    headers: list[tuple[str, bytes]] = []
    for i, line in enumerate(lines):
        if i % batch == 0:
            received = datetime.fromtimestamp(start + i, UTC).isoformat()
            headers = [(HEADER_SOURCE, f"10.9.{i % 7}.{i % 5}:514".encode())]
            if rnd.random() < 0.9:
                headers.append((HEADER_RECEIVED_AT, received.encode()))
            if rnd.random() < 0.15:
                headers.append((HEADER_YEAR, b"2024"))
        value = line.encode("utf-8", "surrogateescape") if isinstance(line, str) else line
        key = f"dev-{rnd.randrange(9)}".encode() if rnd.random() < keyed else None
        part = partition_of(key, PARTITIONS) if key else rnd.randrange(PARTITIONS)
        # Each record's own headers list, as a consumer gives them (most alike).
        out.append(Rec(value, key, list(headers), "syslog.raw", part, offsets[part]))
        offsets[part] += 1
    return out


def _parser_states(stage: ParseStage) -> dict[Any, Any]:
    """The state of each parser that read a record (the batch path may make the parser
    of a run whose only record is a null value: it reads nothing)."""
    return {
        k: (p.stats, dict(p._years.last), p._last_ts, p._last_relay)
        for k, p in stage._parsers.items()
        if p.stats.records
    }


def _row_view(ev: Event) -> tuple[Any, ...]:
    return (ev.device, ev.ts, ev.time_source, ev.clock_synced, ev.tz_known)


def assert_same_routing(recs: Sequence[Rec]) -> int:
    """Both paths over ``recs``, record by record; returns how many were clock rows."""
    py = ParseStage()
    nat = ParseStage(native=_module(), kb=KB)
    want = [py.handle_record(r) for r in recs]
    got = nat.handle_batch(recs)
    assert len(got) == len(want)
    rows = 0
    for rec, w, g in zip(recs, want, got, strict=True):
        if isinstance(g, Clocked):
            rows += 1
            assert not w.deadletter and w.event is not None, rec
            assert g.key == w.key, rec
            assert g.row[:5] == _row_view(w.event), rec
            assert g.row[5] == w.event.raw.rstrip("\r\n"), rec  # its text, if the clock holds it
            assert w.event.kind is None or w.event.kind in INERT, rec
            assert w.event.local is None and w.event.conn_id is None, rec
            assert g.event(rec.value).to_record()["ts"] == w.event.ts
        else:
            assert isinstance(g, Routed)
            assert (g.deadletter, g.key, g.value, g.event) == (
                w.deadletter,
                w.key,
                w.value,
                w.event,
            ), rec
    assert _parser_states(nat) == _parser_states(py)
    assert (nat.events, nat.deadletters, nat.errors) == (py.events, py.deadletters, py.errors)
    assert nat.clocked == rows
    return rows


def _synth_lines(seed: int, lines: int = 6000) -> list[str]:
    return list(generate(default_scenario(), lines=lines, seed=seed))


@pytest.mark.parametrize("seed", (1, 7))
def test_a_synthetic_fleet_routes_alike_and_most_records_are_clock_rows(seed: int) -> None:
    recs = records_of(_synth_lines(seed), seed=seed)
    rows = assert_same_routing(recs)
    assert rows > len(recs) // 2


def test_every_corpus_file_and_golden_input_routes_alike() -> None:
    lines: list[str] = []
    for path in [*CORPUS, *GOLDEN]:
        lines.extend(path.read_text(errors="replace").splitlines())
    assert assert_same_routing(records_of(lines, seed=3, batch=17)) > 0


def test_a_mix_of_every_header_shape_routes_alike() -> None:
    golden = [p.read_text() for p in GOLDEN]
    lines = shapes.mixed_archive(
        ALL_SHAPES, 4000, catalog_bodies=golden, catalog_share=0.1, seed=5, devices=50
    )
    assert assert_same_routing(records_of(lines, seed=5, batch=64)) > 2000


def test_records_the_scanner_cannot_read_alone_go_to_python_in_their_place() -> None:
    stamp = "<166>Jun  1 2026 00:00:0{} fw-1 : %ASA-6-302013: Built inbound TCP connection"
    lines: list[str | bytes | None] = [
        stamp.format(1),
        None,  # a null value: a dead letter
        b"",
        b"   ",
        stamp.format(2) + "\n  continued on a second line",
        stamp.format(3) + " \xe9t\xe9",  # not ASCII
        b"\xff\xfe not UTF-8",
        stamp.format(4) + "\r\n",
        "%LINK-3-UPDOWN: Interface Gi0/1, changed state to up",  # no stamp: received time
        stamp.format(5),
    ]
    recs = records_of(lines, seed=1, keyed=1.0, batch=100)
    got = ParseStage(native=_module(), kb=KB).handle_batch(recs)
    kinds = ["clock" if isinstance(g, Clocked) else "dead" if g.deadletter else "py" for g in got]
    assert kinds == ["clock", "dead", "dead", "dead", "py", "py", "dead", "clock", "clock", "clock"]
    assert assert_same_routing(recs) == 4


def test_a_clock_rows_event_survives_the_reroute_topic() -> None:
    (rec,) = records_of(["<166>Jun  1 2026 00:00:01 fw-1 : %ASA-6-302013: Built"], seed=2)
    (out,) = ParseStage(native=_module(), kb=KB).handle_batch([rec])
    assert isinstance(out, Clocked)
    ev = out.event(rec.value)
    back = decode_event(orjson.dumps(ev.to_record()))
    assert (back.device, back.ts, back.time_source, back.kind) == ("fw-1", ev.ts, "device", None)
    assert back.raw == rec.value.decode()  # type: ignore[union-attr]


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(syslog_line(), min_size=1, max_size=30), st.integers(0, 1000))
def test_random_syslog_records_route_alike(lines: list[str], seed: int) -> None:
    assert_same_routing(records_of(lines, seed=seed, batch=7))


# -- through the engine ----------------------------------------------------------------


def _apply_one(shard: Shard, rec: Rec, out: Routed | Clocked) -> list[dict[str, Any]] | None:
    """One record's outcome applied to ``shard`` as the worker applies it (a clock row or
    an event; None: neither)."""
    if isinstance(out, Clocked):
        slot = shard.restore(out.key.decode(), None, rec.partition)
        return shard.clock(slot, out.row, rec.partition, rec.offset)
    if out.deadletter or out.event is None or out.key is None:
        return None
    slot = shard.restore(out.key.decode(), None, rec.partition)
    return shard.apply(slot, out.event, rec.partition, rec.offset)


def _apply_batch(shard: Shard, recs: Sequence[Rec]) -> Iterator[Rec]:
    """Parse ``recs`` as one batch and apply each to ``shard``; yields each record once
    applied."""
    for rec, out in zip(recs, ParseStage(native=_module(), kb=KB).handle_batch(recs), strict=True):
        _apply_one(shard, rec, out)
        yield rec


def _feed(shard: Shard, outcomes: Iterator[tuple[Rec, Routed | Clocked]]) -> dict[str, Any]:
    latest: dict[str, Any] = {}
    for i, (rec, out) in enumerate(outcomes, 1):
        recs = _apply_one(shard, rec, out)
        for r in recs or []:
            latest[r["incident_id"]] = r
        if i % 97 == 0:
            for r in shard.tick():
                latest[r["incident_id"]] = r
    for name, dc in shard.fleet.holding():
        slot = shard.slots[name]
        for r in apply_admitted(slot.state, shard.fleet.settle(name, dc), KB):
            latest[r["incident_id"]] = r
    for r in shard.tick() + shard.pending_updates(float("inf")):
        latest[r["incident_id"]] = r
    return latest


@pytest.mark.parametrize("seed", (2, 11))
def test_a_shard_fed_the_batch_path_raises_the_same_incidents_and_keeps_the_same_states(
    seed: int,
) -> None:
    lines = _synth_lines(seed, 12_000)
    # Keyed by the device the line names (as the receiver keys it): events stay in
    # their raw partition, as on the stack's inline path.
    recs = [
        Rec(r.value, None, r.headers, r.topic, r.partition, r.offset)
        for r in records_of(lines, seed=seed, keyed=0.0)
    ]
    py_stage = ParseStage()
    want_out = [py_stage.handle_record(r) for r in recs]
    got_out = ParseStage(native=_module(), kb=KB).handle_batch(recs)
    assert sum(isinstance(g, Clocked) for g in got_out) > len(recs) // 2
    a, b = Shard(KB), Shard(KB)
    want = _feed(a, iter(zip(recs, want_out, strict=True)))
    got = _feed(b, iter(zip(recs, got_out, strict=True)))
    assert want, "the archive has faults: incidents expected"
    assert got == want
    assert set(a.slots) == set(b.slots)
    for name, slot in a.slots.items():
        other = b.slots[name]
        assert other.state.to_dict() == slot.state.to_dict(), name
        assert (other.offset, other.partition) == (slot.offset, slot.partition)
        assert (other.clock.offset, other.clock.last, other.clock.correction) == (
            slot.clock.offset,
            slot.clock.last,
            slot.clock.correction,
        )


def test_a_held_clock_row_is_stored_and_restored() -> None:
    shard = Shard(KB)
    rows = [("r1", 1_780_000_000.0 + i, "device", True, True) for i in range(3)]
    slot = shard.restore("r1", None, 0)
    for i, row in enumerate(rows):
        shard.clock(slot, row, 0, i)
    # A stamp far behind the device's newest is held until its next lines decide.
    assert shard.clock(slot, ("r1", 1_000_000_000.0, "device", True, True), 0, 3) == []
    assert slot.clock.held and slot.clock.held[0][0] is None
    stored = shard.dump("r1")
    again = Shard(KB).restore("r1", stored, 0)
    assert again.clock.held == slot.clock.held
    assert again.offset == 3


def test_a_clock_row_applied_before_is_a_duplicate() -> None:
    shard = Shard(KB)
    slot = shard.restore("r1", None, 0)
    row = ("r1", 1_780_000_000.0, "device", True, True)
    assert shard.clock(slot, row, 0, 5) == []
    assert shard.clock(slot, row, 0, 5) is None
    assert shard.clock(slot, row, 0, 4) is None
    assert (shard.duplicates, shard.applied) == (2, 1)


def test_every_stored_state_reads_back_as_the_state_it_stores() -> None:
    # Slot.dump hands the engine state's dataclass to orjson as it is: what it stores
    # must read back (DeviceState.from_dict) as the same state, incidents, windows,
    # pending evidence and all. Checked every 500 records along a fleet's archive.
    recs = records_of(_synth_lines(4, 12_000), seed=4, keyed=0.0)
    shard = Shard(KB)
    seen = {"incidents": 0, "windows": 0, "compact": 0}
    for i, _ in enumerate(_apply_batch(shard, recs)):
        if i % 500:
            continue
        for name, slot in shard.slots.items():
            stored = shard.dump(name)
            back = Shard(KB).restore(name, stored, slot.partition)
            assert back.state.to_dict() == slot.state.to_dict(), name
            fields = ("lane", "offset", "correction", "last", "reading", "skew", "held")
            fields += ("jumps", "outliers", "anomalies")
            assert [getattr(back.clock, f) for f in fields] == [
                getattr(slot.clock, f) for f in fields
            ], name
            assert (back.offset, back.reroute_offset, back.origins, back.frame) == (
                slot.offset,
                slot.reroute_offset,
                slot.origins,
                shard.frames.get(slot.partition),
            )
            seen["incidents"] += bool(slot.state.incidents)
            seen["windows"] += bool(slot.state.windows)
            # A device that only moved its clock is stored in the short form.
            seen["compact"] += b'"windows"' not in stored
    assert seen["incidents"] > 0 and seen["windows"] > 0 and seen["compact"] > 0


def test_a_worker_whose_batch_failed_midway_never_stores_a_state_again() -> None:
    # Device states moved for records whose outputs may not be in Kafka: the commit hook
    # must refuse to store them (no offset is committed), not write them ahead.
    import asyncio

    from streams.shell.worker.app import WorkerApp, WorkerPoisoned
    from streams.shell.worker.config import WorkerConfig

    async def go() -> None:
        worker = WorkerApp(WorkerConfig(bootstrap="127.0.0.1:9", app_id="tw-test-poison"), 4)
        try:
            slot = worker.shard.restore("r1", None, 0)
            worker.shard.clock(slot, ("r1", 1_780_000_000.0, "device", True, True), 0, 0)
            worker.unstored[b"r1"] = None
            worker.poisoned = True
            with pytest.raises(WorkerPoisoned):
                await worker.store_states()
            assert worker.unstored == {b"r1": None}
            assert worker.table.data.get(b"r1") is None
        finally:
            worker.app.consumer._thread.thread_loop.close()

    asyncio.run(go())


def test_a_periodic_commit_that_would_store_a_state_per_record_waits_for_more_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fleet of many devices under load changes nearly a state per record between two
    # commits: the commit waits until each state carries several records, at most
    # commit_max_interval, never for a few states and never once everything was read.
    import asyncio

    from streams.shell.worker import faust_fixes
    from streams.shell.worker.app import WorkerApp
    from streams.shell.worker.config import WorkerConfig

    behind: list[int | None] = [5]
    monkeypatch.setattr(faust_fixes, "records_behind", lambda consumer, topics: behind[0])

    async def go() -> list[bool]:
        cfg = WorkerConfig(
            bootstrap="127.0.0.1:9",
            app_id="tw-test-put-off",
            store_floor=4,
            store_share=0.25,
            commit_max_interval=10.0,
        )
        worker = WorkerApp(cfg, 4)
        answers: list[bool] = []
        try:
            for i in range(10):
                device = f"r{i}"
                slot = worker.shard.restore(device, None, 0)
                worker.shard.clock(slot, (device, 1_780_000_000.0 + i, "device", True, True), 0, i)
                worker.unstored[device.encode()] = None
            answers.append(worker.put_off())  # 10 states for 10 records, still reading
            answers.append(not worker.put_off_commit())  # so: the commit is put off
            behind[0] = 0
            answers.append(worker.put_off())  # everything read: store now
            behind[0] = None
            answers.append(worker.put_off())  # not known yet: waits
            worker.shard.applied += 30  # 40 records for 10 states: each carries 4
            answers.append(worker.put_off())
            worker.shard.applied -= 30
            worker._stored_at -= 11.0  # the last store was over 10 s ago
            answers.append(worker.put_off())
            worker._stored_at += 11.0
            for i in range(6):
                del worker.unstored[f"r{i}".encode()]
            answers.append(worker.put_off())  # 4 states: never put off
            assert worker.counters.commits_put_off == 1
            for i in range(6):
                worker.unstored[f"r{i}".encode()] = None
            assert worker.put_off()
            worker.cfg = replace(worker.cfg, commit_max_interval=0.0)
            answers.append(worker.put_off())  # --commit-max-interval 0: never put off
            assert worker.table.data.get(b"r1") is None
        finally:
            worker.app.consumer._thread.thread_loop.close()
        return answers

    assert asyncio.run(go()) == [True, False, False, True, False, False, False, False]


def test_the_worker_command_takes_the_longest_a_commit_may_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streams.cli.main import main
    from streams.shell.worker import run as run_module

    seen: list[Any] = []
    monkeypatch.setattr(run_module, "run_worker", lambda cfg: seen.append(cfg) or 0)
    assert main(["worker", "--commit-max-interval", "0"]) == 0
    assert main(["worker"]) == 0
    assert [cfg.commit_max_interval for cfg in seen] == [0.0, 10.0]


def test_devices_the_fleet_clock_changed_are_stored_with_the_next_commit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A silent device's incident resolved by its lane's clock changes its state with no
    # record of its own: unless stored, a restart resolves it again and publishes the
    # same record twice.
    import asyncio

    from streams.shell.worker import app as app_module
    from streams.shell.worker.app import WorkerApp
    from streams.shell.worker.config import WorkerConfig

    monkeypatch.setattr(app_module, "_settled", lambda app: True)
    from load.bench_worker import soak_lines

    # 40 devices, 8 of them with five HMAC failures each at the end (an incident each).
    recs = records_of(soak_lines(40, 8), seed=4, keyed=0.0)

    async def go() -> tuple[set[str], set[bytes]]:
        worker = WorkerApp(WorkerConfig(bootstrap="127.0.0.1:9", app_id="tw-test-tick"), 4)
        delivered: list[dict[str, Any]] = []

        async def deliver(box: Any, records: list[dict[str, Any]]) -> None:
            delivered.extend(records)

        monkeypatch.setattr(worker, "deliver", deliver)
        monkeypatch.setattr(worker, "new_outbox", lambda **kw: None)
        worker.ready = worker.restored = True
        shard = worker.shard
        try:
            for _ in _apply_batch(shard, recs):
                pass
            open_ = {d for d, slot in shard.slots.items() if slot.state.incidents}
            assert len(open_) == 8, open_
            # Then only one device per lane speaks, for two days: the others fall silent
            # and their lanes' clocks move on.
            last = max(s.state.max_ts for s in shard.slots.values())
            for lane in range(4):
                name = f"filler-{lane}"
                slot = shard.restore(name, None, lane)
                for i in range(3000):
                    row = (name, last + 60.0 * i, "device", True, True)
                    shard.clock(slot, row, lane, 10_000 + i)
            worker.unstored.clear()
            await worker.tick()
        finally:
            worker.app.consumer._thread.thread_loop.close()
        resolved = {
            str(r["device"])
            for r in delivered
            if r["status"] == "resolved" and str(r["device"]) in open_
        }
        return resolved, set(worker.unstored)

    resolved, unstored = asyncio.run(go())
    assert resolved, "the fleet clock resolves the silent devices' incidents"
    assert {d.encode() for d in resolved} <= unstored


def test_handing_over_a_partition_forgets_what_was_published_of_its_devices() -> None:
    shard = Shard(KB)
    for device, partition in (("r1", 0), ("r2", 1)):
        shard.restore(device, None, partition)
        shard.note_published(
            [
                {
                    "incident_id": f"inc-{device}",
                    "device": device,
                    "status": "open",
                    "count": 3,
                    "last_seen": "2026-06-01T00:00:00Z",
                    "confidence": 0.8,
                    "summary": "s",
                }
            ]
        )
    assert shard.drop_partitions([0]) == 1
    assert set(shard.published) == {"inc-r2"}
    assert set(shard.published_by) == {"inc-r2"}


def test_a_device_fed_from_two_raw_partitions_is_counted_and_named_once() -> None:
    # Direct records and rerouted ones of one device have no defined order between
    # them: the worker names such devices (key raw records by device to avoid it).
    shard = Shard(KB)
    ev = Event(device="r1", ts=1_780_000_000.0, raw="x", message="x")
    slot = shard.restore("r1", None, 0)
    shard.apply(slot, ev, 0, 0)
    shard.apply(slot, replace(ev, ts=ev.ts + 1), 0, 1)
    assert (shard.mixed_count, shard.new_mixed) == (0, [])
    shard.apply(slot, replace(ev, ts=ev.ts + 2), 0, 0, rerouted=True)
    shard.apply(slot, replace(ev, ts=ev.ts + 3), 0, 1, rerouted=True)
    other = shard.restore("r2", None, 1)
    shard.apply(other, replace(ev, device="r2"), 1, 0, rerouted=True)
    assert (shard.mixed_count, shard.new_mixed) == (1, ["r1"])


def test_a_raw_record_rerouted_again_after_a_crash_is_applied_once() -> None:
    # After a crash the raw partition is read again from its last commit, and a record
    # rerouted before is rerouted again at a new reroute offset: its origin (raw
    # partition and offset) tells the device's owner it has it already.
    from streams.shell.worker.stages import decode_rerouted, reroute_record

    ev = Event(device="r1", ts=1_780_000_000.0, raw="x", message="x", kind="psk_mismatch")
    back, origin = decode_rerouted(reroute_record(ev, 1, 5))
    assert (back, origin) == (ev, (1, 5))
    assert decode_rerouted(orjson.dumps(ev.to_record())) == (ev, None)

    shard = Shard(KB)
    slot = shard.restore("r1", None, 0)

    def feed(offset: int, origin: tuple[int, int], dt: float) -> bool:
        e = replace(ev, ts=ev.ts + dt)
        return shard.apply(slot, e, 0, offset, rerouted=True, origin=origin) is not None

    assert feed(0, (1, 5), 0)
    assert feed(1, (1, 6), 1)
    assert not feed(7, (1, 5), 0)  # the same raw records, rerouted again
    assert not feed(8, (1, 6), 1)
    assert feed(9, (1, 7), 2)
    assert feed(10, (3, 2), 3)  # another raw partition's records count apart
    assert (shard.applied, shard.duplicates) == (4, 2)
    again = Shard(KB).restore("r1", shard.dump("r1"), 0)
    assert again.origins == {1: 7, 3: 2}
    assert again.reroute_offset == 10


def test_the_worker_lists_as_dirty_only_devices_with_open_incidents() -> None:
    # pending_updates publishes the current state of open incidents: a device without any
    # (most of a large fleet) has nothing pending and stays off the list it walks.
    shard = Shard(KB)
    t0 = 1_717_200_000.0
    for i in range(5):
        slot = shard.restore("quiet", None, 0)
        shard.clock(slot, ("quiet", t0 + i, "device", True, True), 0, i)
    assert "quiet" not in shard.dirty
    for i in range(6):
        slot = shard.restore("victim", None, 1)
        ev = Event(
            device="victim",
            ts=t0 + 10 * i,
            raw=f"victim HMAC {i}",
            message="",
            kind="HMAC_VERIFY_FAILED",
            peer="203.0.113.10",
        )
        shard.apply(slot, ev, 1, i)
    assert slot.state.incidents
    assert list(shard.dirty) == ["victim"]
    assert [r["device"] for r in shard.pending_updates(float("inf"))] == ["victim"]
    assert not shard.dirty
    # Its next record lists it again; restored from its stored state, it is listed too.
    shard.clock(slot, ("victim", t0 + 70, "device", True, True), 1, 6)
    assert list(shard.dirty) == ["victim"]
    other = Shard(KB)
    other.restore("victim", shard.dump("victim"), 1)
    other.restore("quiet", shard.dump("quiet"), 0)
    assert list(other.dirty) == ["victim"]
