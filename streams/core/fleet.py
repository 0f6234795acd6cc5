"""The event-time clock of a fleet: one driver for ``analyze`` and the stream worker.

Device clocks disagree: some print local time under a wrong zone label, some none, some
are unsynced (``*``), some reload to 1993, and anyone who reaches the UDP port can send a
line dated 2099. The engine (``streams.core.engine``) runs each device on its *own*
clock: a device that keeps logging its evidence keeps its incident open whatever the
other clocks say. The fleet clock is only there for what a device's own clock cannot
tell: that time passed while the device said nothing (its quiet incidents resolve, its
absence rules fire).

The model, per *lane* (the devices read in one order: one Kafka partition on the stream,
and in ``analyze`` the same partition of the same partitioner, so both read each lane in
the same order and make the same decisions):

- a device's ``offset`` is its engine time minus the lane clock ``L`` at its first line
  (a new device stands for "now"); its *reading* of the lane is its engine time minus
  that offset, so its own clock, whatever its zone, label or error, reads fleet time;
- ``L`` is the median reading of the lane's recent speakers: it moves only when most
  of them say that time passed, so a few clocks that run fast, jump or lie do not drag
  it; a device that said nothing while the others spoke several times each stops
  voting, so a fleet whose devices fall silent still moves on with the ones that speak;
- a device that keeps speaking is advanced by its *own* clock only, whatever the lane
  says: the fleet clock never resolves an incident whose device still logs its evidence.
  Once it fell silent, its watermark is ``L + offset`` (the lane read in its own time),
  minus the allowed lateness;
- a stamp far from where its device stands (more than :data:`JUMP` behind its own newest
  time, or more than :data:`FAR` ahead of it) is held, not applied. The device's next
  lines decide: back on its old course, the held line was an outlier (a forged or broken
  stamp): it is counted, kept as a clock anomaly, and applied at the device's own time
  then; on the new course, the clock really moved (a reload to 1993, an NTP step): going
  back, or coming back from a corrected course, the device's ``correction`` changes so
  that its engine time carries on without a gap; going forward from its true clock, the
  device's own clock is followed.

Cost per line is a few dictionary and float operations; the devices to advance are kept
in a heap per lane of the lane time at which each has work to do, so a tick visits only
the devices that are due, never the whole fleet.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

#: Seconds a stamp may fall behind its device's newest time before it is held as a jump.
JUMP = 900.0
#: Seconds a stamp may run ahead of where its device stands before it is held.
FAR = 6 * 3600.0
#: The lane clock is the median reading of this many most recent speakers.
WINDOW = 31
#: Seconds a reading may run ahead of the lane clock before the median is taken again
#: (else every RECOMPUTE readings).
STEP = 10.0
RECOMPUTE = 64
EXPIRE = 8
#: Lines of one device held at most while a jump is undecided.
MAX_HELD = 8
#: Clock anomalies (raw lines) kept per device.
MAX_ANOMALIES = 4
NEG_INF = float("-inf")
INF = float("inf")

T = TypeVar("T")


@dataclass(slots=True)
class DeviceClock(Generic[T]):
    """What the fleet clock knows of one device (JSON-friendly but for ``held`` items)."""

    lane: int = 0
    offset: float | None = None  # engine time - lane clock at its first line (or its jump)
    correction: float = 0.0  # added to the device's stamps (jumps kept continuous)
    last: float = NEG_INF  # newest engine time of its timed lines
    reading: float = NEG_INF  # highest lane time its lines stood for
    seen: int = 0  # the lane's read count at its last timed line
    # The least (engine time - lane clock) of its lines: its clock's offset from the lane
    # at the moment the lane was freshest (the skew report's estimate).
    skew: float = INF
    # Lines held while a jump is undecided: (item, engine time as stamped, raw text).
    held: list[tuple[T, float, str]] = field(default_factory=list)
    held_expected: float = NEG_INF  # the device's own time when the first line was held
    jumps: int = 0
    outliers: int = 0
    anomalies: list[str] = field(default_factory=list)
    scheduled: float | None = None  # lane time of its heap entry, if any (not stored)


@dataclass(slots=True)
class Lane:
    clock: float = NEG_INF
    devices: int = 0
    # The readings of the lane's most recent speakers (oldest first) with the read count
    # of their last reading. The clock is their (lower) median, taken again when a
    # reading runs ahead of it or every RECOMPUTE readings. A device that said nothing
    # while the others read EXPIRE times each on average no longer votes: a fleet whose
    # devices fall silent one by one still moves on with the ones that speak.
    recent: dict[str, tuple[float, int]] = field(default_factory=dict)
    reads: int = 0
    pending: int = 0
    holding: dict[str, None] = field(default_factory=dict)  # devices holding a jump
    heap: list[tuple[float, str]] = field(default_factory=list)

    def patience(self) -> int:
        """Reads after which a device that said nothing counts as silent."""
        return EXPIRE * max(self.devices, 4)

    def unvote(self, name: str) -> None:
        """The device no longer votes in this lane (it left it)."""
        self.recent.pop(name, None)

    def read(self, name: str, n: float) -> None:
        """A device's reading of the lane moved to ``n``; move the lane clock."""
        recent = self.recent
        self.reads += 1
        if name in recent:
            del recent[name]
        elif len(recent) >= WINDOW:
            del recent[next(iter(recent))]
        recent[name] = (n, self.reads)
        self.pending += 1
        if n > self.clock + STEP or self.pending >= RECOMPUTE:
            self._recompute()

    def _recompute(self) -> None:
        recent = self.recent
        self.pending = 0
        stale = self.reads - self.patience()
        while True:
            oldest = next(iter(recent))
            if recent[oldest][1] >= stale:
                break
            del recent[oldest]
        values = sorted(v for v, _ in recent.values())
        median = values[(len(values) - 1) // 2]
        if median > self.clock:
            self.clock = median


class LaneView(Protocol):
    """What :class:`FleetClock` reads and moves of a lane: a :class:`Lane`, or a lane of
    the native fleet core (``tunnelwatch_native.CoreLane``, the same numbers kept in Rust,
    see :class:`FleetCore`)."""

    clock: float
    devices: int

    @property
    def reads(self) -> int: ...

    @property
    def holding(self) -> dict[str, None]: ...

    @property
    def heap(self) -> list[tuple[float, str]]: ...

    def read(self, name: str, n: float) -> None: ...

    def patience(self) -> int: ...

    def unvote(self, name: str) -> None: ...


#: What ``FleetCore.promote`` gives of a device the core held: ``(lane, offset, last,
#: reading, seen, skew, max_ts, late, koffset, changed)``, the last two the worker's (the
#: offset of its last record applied, and whether it changed since it was last stored).
Taken = tuple[int, float | None, float, float, int, float, float, int, int, bool]


class FleetCore(Protocol):
    """``tunnelwatch_native.FleetCore`` (``native/src/fleet.rs``): the lanes of a fleet
    clock and the clocks of its *native* devices (never held a line, no correction, no
    engine state but their newest time and late count), kept in Rust and moved there by
    the scanner's clock rows (``Scanner.scan_fleet``). This module is its model: the same
    decisions, proved equal by the tests."""

    def promote(self, name: str) -> Taken | None: ...

    def stored_forms(
        self, format: int, frames: dict[int, str]
    ) -> list[tuple[int, bytes, bytes]]: ...

    def mark_stored(self) -> None: ...

    def drop(self, lanes: list[int], names: list[str]) -> int: ...

    def changed(self) -> int: ...

    def adopt(
        self,
        name: str,
        lane: int,
        offset: float | None,
        last: float,
        reading: float,
        skew: float,
        max_ts: float,
        late: int,
        koffset: int,
    ) -> str: ...

    def apply_record(self, name: str, ts: float, inferred: bool, offset: int) -> str: ...

    def lane(self, number: int) -> LaneView: ...

    def median_offset(self, others: list[float]) -> float | None: ...

    def skews_from(self, median: float, minimum: float) -> dict[str, float]: ...

    def counts(self) -> tuple[int, int, int, int]: ...

    def apply_row(self, name: str, ts: float, inferred: bool) -> bool: ...

    def peek(
        self, name: str
    ) -> tuple[int, float | None, float, float, int, float, float, int, bool] | None: ...


def core_settings() -> dict[str, Any]:
    """This module's constants, as ``FleetCore`` takes them (one place for them)."""
    return {
        "jump": JUMP,
        "far": FAR,
        "window": WINDOW,
        "step": STEP,
        "recompute": RECOMPUTE,
        "expire": EXPIRE,
    }


Admitted = list[tuple[T, float]]


class FleetClock(Generic[T]):
    """The clocks of a fleet, lane by lane: see the module docstring.

    ``lane_of(device)`` names a device's lane (the stream's partition); None puts every
    device in lane 0. ``lateness`` is the engine's allowed lateness (``kb.lateness``).
    ``make_lane(number)``, when given, makes the lanes (a :class:`FleetCore`'s ``lane``:
    the core then decides where a new lane starts); else each is a :class:`Lane`.
    """

    def __init__(
        self,
        lateness: float,
        lane_of: Callable[[str], int] | None = None,
        make_lane: Callable[[int], LaneView] | None = None,
    ) -> None:
        self.lateness = lateness
        self.lane_of = lane_of
        self.make_lane = make_lane
        self.lanes: dict[int, LaneView] = {}
        self.devices: dict[str, DeviceClock[T]] = {}

    # -- devices -------------------------------------------------------------------

    def device(self, name: str) -> DeviceClock[T]:
        """The clock of a device (a new one on its first line)."""
        dc = self.devices.get(name)
        if dc is None:
            dc = DeviceClock(lane=self.lane_of(name) if self.lane_of is not None else 0)
            self.devices[name] = dc
        return dc

    def lane(self, n: int) -> LaneView:
        lane = self.lanes.get(n)
        if lane is None:
            if self.make_lane is not None:
                lane = self.lanes[n] = self.make_lane(n)
                return lane
            # A new lane starts where the others stand, so that offsets compare across
            # lanes (only the skew report reads them across lanes).
            start = max((x.clock for x in self.lanes.values()), default=NEG_INF)
            lane = self.lanes[n] = Lane(clock=start)
        return lane

    def adopt(self, name: str, dc: DeviceClock[T]) -> None:
        """Take the clock of a device restored from storage (the stream's changelog)."""
        self.devices[name] = dc
        lane = self.lane(dc.lane)
        if dc.offset is not None:
            lane.devices += 1
        if dc.held:
            lane.holding[name] = None
        dc.scheduled = None

    def forget(self, names: Iterable[str]) -> None:
        for name in names:
            dc = self.devices.pop(name, None)
            lane = self.lanes.get(dc.lane) if dc is not None else None
            if dc is None or lane is None:
                continue
            if dc.offset is not None:
                lane.devices -= 1
            lane.holding.pop(name, None)
            lane.unvote(name)

    # -- lines ---------------------------------------------------------------------

    def admit(
        self, name: str, dc: DeviceClock[T], item: T, ts: float, timed: bool, raw: str = ""
    ) -> Admitted[T]:
        """The lines to apply now, each with its engine time, for one more line of a device.

        ``timed``: the line's time came from a clock (device or relay), not inferred from
        the receive time or the previous line. Usually ``[(item, ts + correction)]``; empty
        while a jump is undecided; several when a decision releases held lines.
        """
        eng = ts + dc.correction
        if not timed:
            return [(item, eng)]
        lane = self.lanes.get(dc.lane)
        if lane is None:
            lane = self.lane(dc.lane)
        if dc.offset is None:
            self._first(name, dc, lane, eng)
            return [(item, eng)]
        if dc.held:
            return self._decide(name, dc, lane, item, eng, raw)
        if self.ordinary(name, dc, eng):
            return [(item, eng)]
        return self._hold(name, dc, lane, item, eng, raw)

    def first(self, name: str, dc: DeviceClock[T], eng: float) -> bool:
        """Take the first timed line of a device at engine time ``eng`` if it is one
        (what :meth:`admit` does with it; the hot path of a new device asks this after
        :meth:`ordinary`). False: the line needs :meth:`admit`."""
        if dc.offset is not None:
            return False
        lane = self.lanes.get(dc.lane)
        if lane is None:
            lane = self.lane(dc.lane)
        self._first(name, dc, lane, eng)
        return True

    def _first(self, name: str, dc: DeviceClock[T], lane: LaneView, eng: float) -> None:
        # The device's first timed line: it stands for "now" in its lane.
        if lane.clock == NEG_INF:
            lane.clock = eng
        dc.offset = eng - lane.clock
        dc.last = eng
        dc.reading = lane.clock
        lane.devices += 1
        lane.read(name, lane.clock)

    def ordinary(self, name: str, dc: DeviceClock[T], eng: float) -> bool:
        """Take a timed line at engine time ``eng`` if it is an ordinary one: a device
        seen before, no jump undecided, not far from where it stands. False: the line
        needs :meth:`admit` (the hot path of ``analyze`` asks this first)."""
        offset = dc.offset
        if offset is None or dc.held:
            return False
        last = dc.last
        if eng < last - JUMP:
            return False
        lane = self.lanes[dc.lane]
        if eng > last + FAR and eng > lane.clock + offset + FAR:
            return False
        n = eng - offset
        if n > dc.reading:
            dc.reading = n
            lane.read(name, n)
        dc.seen = lane.reads
        if eng > last:
            dc.last = eng
        if eng - lane.clock < dc.skew:
            dc.skew = eng - lane.clock
        return True

    def _accept(self, name: str, dc: DeviceClock[T], lane: LaneView, eng: float) -> None:
        assert dc.offset is not None
        n = eng - dc.offset
        if n > dc.reading:
            dc.reading = n
            lane.read(name, n)
        dc.seen = lane.reads
        if eng > dc.last:
            dc.last = eng

    def _hold(
        self, name: str, dc: DeviceClock[T], lane: LaneView, item: T, eng: float, raw: str
    ) -> Admitted[T]:
        if not dc.held:
            dc.held_expected = dc.last
            lane.holding[name] = None
        dc.held.append((item, eng, raw))
        return []

    def _decide(
        self, name: str, dc: DeviceClock[T], lane: LaneView, item: T, eng: float, raw: str
    ) -> Admitted[T]:
        """A device holding a jump speaks again: its line tells which course is true."""
        first = dc.held[0][1]
        last = dc.last
        on_old = last - JUMP <= eng <= max(last, lane.clock + (dc.offset or 0.0)) + FAR
        on_new = first - JUMP <= eng <= first + FAR
        if on_new and not on_old:
            if len(dc.held) < 2 and first < last:
                # Two lines of the new course before a clock goes back for good.
                return self._hold(name, dc, lane, item, eng, raw)
            return self._jump(name, dc, lane, item, eng)
        out = self._outliers(name, dc, lane)
        if on_old:
            self._accept(name, dc, lane, eng)
            out.append((item, eng))
            return out
        # On neither course: this line is the new candidate.
        out.extend(self._hold(name, dc, lane, item, eng, raw))
        return out

    def _jump(
        self, name: str, dc: DeviceClock[T], lane: LaneView, item: T, eng: float
    ) -> Admitted[T]:
        """The device's clock moved for good: going back (or leaving a corrected course),
        its engine time carries on from where it was; going forward from its true clock,
        its own clock is followed."""
        first = dc.held[0][1]
        shift = 0.0
        if first < dc.last or dc.correction != 0.0:
            shift = dc.held_expected - first
            dc.correction += shift
        dc.jumps += 1
        self._note(dc, dc.held[0][2])
        out: Admitted[T] = [(held, t + shift) for held, t, _ in dc.held]
        self._unhold(name, dc, lane)
        # The device's reading of the lane starts anew on its new course.
        dc.offset = out[0][1] - lane.clock
        dc.reading = lane.clock
        for _, t in out:
            self._accept(name, dc, lane, t)
        eng += shift
        self._accept(name, dc, lane, eng)
        out.append((item, eng))
        return out

    def _outliers(self, name: str, dc: DeviceClock[T], lane: LaneView) -> Admitted[T]:
        """Give up on a held jump: each held line is an outlier, applied at its device's
        own time when it was held."""
        out: Admitted[T] = []
        for item, _, raw in dc.held:
            dc.outliers += 1
            self._note(dc, raw)
            out.append((item, dc.held_expected))
        self._unhold(name, dc, lane)
        return out

    def _unhold(self, name: str, dc: DeviceClock[T], lane: LaneView) -> None:
        dc.held.clear()
        lane.holding.pop(name, None)

    def _note(self, dc: DeviceClock[T], raw: str) -> None:
        if raw:
            dc.anomalies.append(raw[:300])
            del dc.anomalies[:-MAX_ANOMALIES]

    def settle(self, name: str, dc: DeviceClock[T]) -> Admitted[T]:
        """Decide a held jump without the device's next line (the end of an archive, or
        the lane moved on by :data:`FAR` since): a course of several lines is a jump, a
        lone line an outlier."""
        if not dc.held:
            return []
        lane = self.lane(dc.lane)
        if len(dc.held) >= 2:
            item, eng, _ = dc.held.pop()
            return self._jump(name, dc, lane, item, eng)
        return self._outliers(name, dc, lane)

    def overdue(self) -> list[tuple[str, DeviceClock[T]]]:
        """Devices holding a jump while their lane moved on by :data:`FAR` since."""
        out: list[tuple[str, DeviceClock[T]]] = []
        for lane in self.lanes.values():
            for name in lane.holding:
                dc = self.devices.get(name)
                if (
                    dc is not None
                    and dc.held
                    and dc.offset is not None
                    and lane.clock + dc.offset >= dc.held_expected + FAR
                ):
                    out.append((name, dc))
        return out

    def holding(self) -> list[tuple[str, DeviceClock[T]]]:
        """Every device holding a jump."""
        return [
            (name, self.devices[name])
            for lane in self.lanes.values()
            for name in list(lane.holding)
            if name in self.devices
        ]

    # -- watermarks and scheduling ---------------------------------------------------

    def watermark(self, dc: DeviceClock[T], own_max: float) -> float:
        """The watermark to advance a device with, minus the allowed lateness: its own
        newest time while it speaks; once it fell silent (the others read
        :data:`EXPIRE` times each on average meanwhile), the lane's clock read in its
        time, if that is later. A device that keeps speaking is never moved by the
        others' clocks, whatever they say."""
        own = own_max - self.lateness
        lane = self.lanes.get(dc.lane)
        if lane is None or dc.offset is None or lane.clock == NEG_INF:
            return own
        if lane.reads - dc.seen <= lane.patience():
            return own
        return max(own, lane.clock + dc.offset - self.lateness)

    def schedule(self, name: str, dc: DeviceClock[T], due: float) -> None:
        """Remember that the device has work at engine time ``due`` (inf: none)."""
        if due == INF or dc.offset is None:
            return
        at = due - dc.offset + self.lateness
        if dc.scheduled is not None and dc.scheduled <= at:
            return
        dc.scheduled = at
        heapq.heappush(self.lane(dc.lane).heap, (at, name))

    def due(self) -> Iterator[tuple[str, DeviceClock[T]]]:
        """The devices whose scheduled time their lane's clock reached (each once)."""
        for lane in self.lanes.values():
            heap = lane.heap
            while heap and heap[0][0] <= lane.clock:
                at, name = heapq.heappop(heap)
                dc = self.devices.get(name)
                if dc is None or dc.scheduled != at:
                    continue  # superseded by an earlier entry, or forgotten
                dc.scheduled = None
                yield name, dc

    # -- reporting -------------------------------------------------------------------

    def skews(self, minimum: float = 60.0, core: FleetCore | None = None) -> dict[str, float]:
        """Devices whose clock is off from the fleet's by more than ``minimum`` seconds:
        seconds from the median device (the fleet's consensus). ``core``: the native core
        that holds the fleet's other devices (it takes the median over all of them and
        names its own devices off by that much)."""
        offsets = {
            name: (dc.skew if dc.skew != INF else dc.offset) - dc.correction
            for name, dc in self.devices.items()
            if dc.offset is not None
        }
        if core is not None:
            median = core.median_offset(list(offsets.values()))
        elif offsets:
            ordered = sorted(offsets.values())
            median = ordered[len(ordered) // 2]
        else:
            median = None
        if median is None:
            return {}
        out = {d: o - median for d, o in offsets.items() if abs(o - median) > minimum}
        if core is not None:
            out.update(core.skews_from(median, minimum))
        return out
