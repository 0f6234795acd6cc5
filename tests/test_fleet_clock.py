"""Properties of the fleet clock (streams/core/fleet.py) over random fleets (hypothesis).

A fleet here is a set of devices whose clocks run at true time plus an offset (from -14 h
to +14 h), some of which jump (an NTP step, a reload to 1993), send one outlier stamp
(2099, 1970), log in bursts or fall silent. Lines reach the engine in true-time order
(the order of an archive or a partition). The victim device logs HMAC failures from one
peer; the properties are about its incident.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core import native
from streams.core.engine import Correlator, apply_admitted
from streams.core.event import Event
from streams.core.kb import default_kb
from streams.shell.topics import device_lane
from streams.shell.worker.stages import Shard

KB = default_kb()
T0 = 1_717_200_000.0  # 2024-06-01T00:00:00Z
PEER = "203.0.113.10"
HOUR = 3600.0
QUIET = KB.quiet_period


@dataclass
class Device:
    name: str
    offset: float
    period: float  # seconds between two lines (true time)
    jump_at: float | None = None  # true time of a clock jump
    jump_by: float = 0.0
    outlier_at: float | None = None  # true time of one outlier stamp
    outlier_ts: float = 0.0
    silent_after: float | None = None

    def stamp(self, t: float) -> float:
        s = T0 + t + self.offset
        if self.jump_at is not None and t >= self.jump_at:
            s += self.jump_by
        return s


@dataclass
class Fleet:
    devices: list[Device]
    span: float
    victim: Device
    victim_until: float  # the victim logs evidence until then (true time)
    victim_every: float
    lines: list[tuple[float, Event]] = field(default_factory=list)

    def build(self, victim_shift: float = 0.0, outliers: bool = True) -> list[Event]:
        out: list[tuple[float, int, Event]] = []
        seq = 0
        for d in self.devices:
            t = 0.0
            while t < self.span:
                if d.silent_after is not None and t > d.silent_after:
                    break
                out.append((t, seq, _ev(d.name, d.stamp(t), None)))
                seq += 1
                if outliers and d.outlier_at is not None and t <= d.outlier_at < t + d.period:
                    out.append((d.outlier_at, seq, _ev(d.name, d.outlier_ts, None)))
                    seq += 1
                t += d.period
        v = self.victim
        t = 0.0
        while t <= self.victim_until:
            out.append((t, seq, _ev(v.name, v.stamp(t) + victim_shift, "HMAC_VERIFY_FAILED")))
            seq += 1
            t += self.victim_every
        out.sort(key=lambda x: (x[0], x[1]))
        return [e for _, _, e in out]


def _ev(device: str, ts: float, kind: str | None) -> Event:
    return Event(
        device=device,
        ts=ts,
        raw=f"{device} {kind} {ts:.0f}",
        message="",
        kind=kind,
        peer=PEER if kind else None,
    )


@st.composite
def fleets(draw: st.DrawFn, *, silent_victim: bool = False) -> Fleet:
    seed = draw(st.integers(0, 2**32 - 1))
    rng = random.Random(seed)
    n = draw(st.integers(3, 12))
    span = 3 * HOUR
    devices: list[Device] = []
    for i in range(n):
        d = Device(
            name=f"dev-{i}",
            offset=rng.choice([0.0, rng.uniform(-14 * HOUR, 14 * HOUR), 9 * HOUR, -5 * HOUR]),
            period=rng.choice([5.0, 20.0, 60.0, 300.0]),
        )
        r = rng.random()
        if r < 0.15:  # a reload to 1993
            d.jump_at, d.jump_by = rng.uniform(0, span), -31 * 365 * 86400.0
        elif r < 0.3:  # an NTP step or a zone change
            d.jump_at, d.jump_by = rng.uniform(0, span), rng.choice([-HOUR, HOUR, 2 * HOUR])
        elif r < 0.45:  # one forged or broken stamp
            d.outlier_at = rng.uniform(0, span)
            d.outlier_ts = rng.choice([4_070_908_800.0, 0.0, T0 - 86_400.0 * 30])
        if rng.random() < 0.2:
            d.silent_after = rng.uniform(0, span)
        devices.append(d)
    victim = Device(
        name="victim",
        offset=rng.choice([0.0, rng.uniform(-14 * HOUR, 14 * HOUR)]),
        period=60.0,
    )
    every = rng.choice([20.0, 60.0, 120.0])  # the HMAC rule needs 5 within 10 minutes
    until = rng.uniform(HOUR, span - (QUIET + 600 if silent_victim else 0))
    return Fleet(devices, span, victim, until, every)


def _run(events: list[Event], tick_every: int = 50) -> list[dict[str, Any]]:
    corr = Correlator(KB)
    records: list[dict[str, Any]] = []
    for i, e in enumerate(events, 1):
        records.extend(corr.feed(e))
        if i % tick_every == 0:
            records.extend(corr.tick())
    records.extend(corr.finish())
    return records


def _victim(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for r in records:
        if r["device"] == "victim":
            latest[r["incident_id"]] = r
    return latest


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(fleets())
def test_an_incident_never_resolves_while_its_device_logs_its_evidence(fleet: Fleet) -> None:
    records = _run(fleet.build())
    victim = _victim(records)
    assert len(victim) == 1, [(r["first_seen"], r["status"]) for r in victim.values()]
    (rec,) = victim.values()
    resolved = [r for r in records if r["device"] == "victim" and r["status"] == "resolved"]
    # It may resolve once its evidence stopped (the fleet moved on), never before.
    k = int(fleet.victim_until // fleet.victim_every)
    last_evidence = fleet.victim.stamp(k * fleet.victim_every)
    for r in resolved:
        assert r["resolved_at"] >= r["last_seen"]
        assert r["last_seen"].startswith(rec["last_seen"][:16])
    assert rec["count"] == k + 1
    assert abs(_epoch(rec["last_seen"]) - last_evidence) < 1


@SETTINGS
@given(fleets(), st.floats(-14 * HOUR, 14 * HOUR))
def test_shifting_one_device_clock_changes_only_the_times_of_its_incidents(
    fleet: Fleet, shift: float
) -> None:
    shift = round(shift)
    a = list(_victim(_run(fleet.build())).values())
    b = list(_victim(_run(fleet.build(victim_shift=shift))).values())
    assert len(a) == len(b) == 1
    ra, rb = a[0], b[0]
    for key in ("cause", "peer", "count", "status", "rule", "kinds"):
        assert ra[key] == rb[key], key
    assert abs(_epoch(rb["first_seen"]) - _epoch(ra["first_seen"]) - shift) < 1
    assert abs(_epoch(rb["last_seen"]) - _epoch(ra["last_seen"]) - shift) < 1


@SETTINGS
@given(fleets(silent_victim=True))
def test_a_silent_device_resolves_once_the_fleet_moved_on_by_the_quiet_period(
    fleet: Fleet,
) -> None:
    # Two steady devices keep the fleet's time going whatever the others do.
    for name in ("steady-1", "steady-2"):
        fleet.devices.append(Device(name=name, offset=0.0, period=30.0))
    victim = _victim(_run(fleet.build()))
    assert len(victim) == 1
    (rec,) = victim.values()
    assert rec["status"] == "resolved"
    assert abs(_epoch(rec["resolved_at"]) - _epoch(rec["last_seen"]) - QUIET) < 1


@SETTINGS
@given(fleets())
def test_outlier_stamps_of_other_devices_change_nothing_of_the_victims_incident(
    fleet: Fleet,
) -> None:
    with_outliers = _victim(_run(fleet.build()))
    without = _victim(_run(fleet.build(outliers=False)))
    assert with_outliers == without


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(), st.integers(1, 6))
def test_analyze_and_the_stream_drive_the_clock_alike(fleet: Fleet, partitions: int) -> None:
    # analyze's correlator with the stream's lanes, and the worker's shard fed each
    # partition's events in order: the same incidents in the same final state.
    lane_of = device_lane(partitions)
    corr = Correlator(KB, lane_of=lane_of)
    shard = Shard(KB)
    a: dict[str, dict[str, Any]] = {}
    b: dict[str, dict[str, Any]] = {}
    offsets: dict[int, int] = {}
    for i, e in enumerate(fleet.build(), 1):
        for r in corr.feed(e):
            a[r["incident_id"]] = r
        assert e.device is not None
        p = lane_of(e.device)
        offsets[p] = offsets.get(p, -1) + 1
        slot = shard.restore(e.device, None, p)
        for r in shard.apply(slot, e, p, offsets[p]) or []:
            b[r["incident_id"]] = r
        if i % 37 == 0:
            for r in corr.tick():
                a[r["incident_id"]] = r
        if i % 53 == 0:
            for r in shard.tick():
                b[r["incident_id"]] = r
    for r in corr.finish():
        a[r["incident_id"]] = r
    for name, dc in shard.fleet.holding():
        slot = shard.slots[name]
        for r in apply_admitted(slot.state, shard.fleet.settle(name, dc), KB):
            b[r["incident_id"]] = r
    for r in shard.tick() + shard.pending_updates(float("inf")):
        b[r["incident_id"]] = r
    assert a == b


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# -- the native fleet core (native/src/fleet.rs) against this module's model -------------

NATIVE = native.load()


def _clock_source(rng: random.Random) -> str:
    return "inferred" if rng.random() < 0.1 else rng.choice(["device", "device", "relay"])


def _drive(
    events: list[Event], sources: list[str], partitions: int, core: bool, murmur: bool = False
) -> tuple[Correlator, list[dict[str, Any]]]:
    """Feed ``events`` in order: clock events as clock rows (through the native core when
    ``core``, as ``Scanner.scan_fleet`` gives them to it; ``murmur``: the core runs the
    partitioner itself), the others as events."""
    lane_of = device_lane(partitions)
    corr = Correlator(KB, lane_of=lane_of)
    fc = None
    if core:
        assert NATIVE is not None
        fc = native.make_fleet_core(
            NATIVE, KB.lateness, lane_of, lane_of.partitions if murmur else None
        )
        corr.use_core(fc)
    records: list[dict[str, Any]] = []
    for i, (e, source) in enumerate(zip(events, sources, strict=True), 1):
        assert e.device is not None
        if e.kind is not None:
            records.extend(corr.feed(e))
        elif fc is None:
            records.extend(corr.clocks([(e.device, e.ts, source, True, True)]))
        elif fc.apply_row(e.device, e.ts, source == "inferred"):
            corr.on_rows([(e.device, e.ts, source, True, True)])
            records.extend(corr.changed)
            corr.changed.clear()
        if i % 37 == 0:
            records.extend(corr.tick())
    records.extend(corr.finish())
    return corr, records


def _clock_fields(corr: Correlator, name: str) -> tuple[Any, ...]:
    """What the fleet clock and the engine know of a device's clock, wherever it is kept."""
    dc = corr.fleet.devices.get(name)
    if dc is not None:
        st = corr.states[name]
        return (dc.lane, dc.offset, dc.last, dc.reading, dc.seen, dc.skew, st.max_ts, st.late)
    assert corr.core is not None
    got = corr.core.peek(name)
    assert got is not None and not got[-1], name
    return got[:-1]


@pytest.mark.skipif(NATIVE is None, reason=f"{native.MODULE} is not built")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(), st.integers(1, 5), st.integers(0, 2**32 - 1), st.booleans())
def test_the_native_fleet_core_makes_every_decision_the_python_fleet_clock_makes(
    fleet: Fleet, partitions: int, seed: int, murmur: bool
) -> None:
    rng = random.Random(seed)
    events = fleet.build()
    sources = [_clock_source(rng) for _ in events]
    ref, expected = _drive(events, sources, partitions, core=False)
    got, records = _drive(events, sources, partitions, core=True, murmur=murmur)
    assert records == expected
    assert got.skews(0.0) == ref.skews(0.0)
    assert got.clock_anomalies() == ref.clock_anomalies()
    for name in ref.fleet.devices:
        assert _clock_fields(got, name) == _clock_fields(ref, name), name
    for n, lane in ref.fleet.lanes.items():
        mine = got.fleet.lane(n)
        assert (mine.clock, mine.reads, mine.devices) == (lane.clock, lane.reads, lane.devices)
    # The devices that only moved their clock stayed in the core.
    assert got.core is not None
    total, in_core, _, _ = got.core.counts()
    assert total == len(ref.fleet.devices)
    assert in_core == total - len(got.fleet.devices)


@pytest.mark.skipif(NATIVE is None, reason=f"{native.MODULE} is not built")
@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=50), st.integers(1, 64))
def test_the_native_fleet_core_puts_a_device_in_the_lane_of_the_stream_partitioner(
    names: list[str], partitions: int
) -> None:
    assert NATIVE is not None
    lane_of = device_lane(partitions)
    core = native.make_fleet_core(NATIVE, KB.lateness, lane_of, partitions)
    for name in names:
        core.apply_row(name, T0, False)
        got = core.peek(name)
        assert got is not None
        assert got[0] == lane_of(name), name
