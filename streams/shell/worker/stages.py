"""The worker's two stages without faust: parse (raw → event or dead letter) and correlate.

Kept apart from the faust wiring (``app.py``) so that they can be tested and reasoned
about on their own:

- :class:`ParseStage` turns one ``syslog.raw`` record into the bytes to publish on
  ``syslog.events`` (keyed by device) or on ``syslog.deadletter``. One
  :class:`~streams.core.parse.Parser` per raw partition, so that the little state parsing
  keeps (year per device, last stamp) follows the order of that partition only.
- :class:`Shard` holds the engine state of the devices of the partitions this worker
  owns. Each stored state carries the events-topic partition and offset of the last
  event applied to it, which makes re-delivered events (at-least-once after a crash)
  no-ops: the state is exactly the fold of the device's event sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from streams.core.engine import DeviceState, advance, device_watermark, flush, step
from streams.core.event import Event, Unparsed
from streams.core.kb import KnowledgeBase
from streams.core.parse import Parser
from streams.shell.topics import HEADER_RECEIVED_AT, HEADER_SOURCE

#: The device of events that name none (same as ``Correlator.unknown_device``).
UNKNOWN_DEVICE = "unknown"
STATE_FORMAT = 1

Headers = Sequence[tuple[str, bytes]]


def header(headers: Headers | None, name: str) -> str | None:
    """The last value of header ``name`` as text, or None."""
    found: str | None = None
    for key, value in headers or ():
        if key == name and value is not None:
            found = value.decode("utf-8", errors="replace")
    return found


def parse_received_at(text: str | None) -> float | None:
    """POSIX seconds of an ISO 8601 ``received_at`` header (naive means UTC)."""
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _host_of(source: str | None) -> str | None:
    """``10.0.0.1`` of ``10.0.0.1:514`` (``[::1]:514`` gives ``::1``)."""
    if not source:
        return None
    host, sep, port = source.rpartition(":")
    if not sep or not port.isdigit():
        return source
    return host.strip("[]") or source


@dataclass(frozen=True, slots=True)
class Routed:
    """Where one raw record goes: ``syslog.events`` or ``syslog.deadletter``."""

    deadletter: bool
    key: bytes | None
    value: bytes
    device: str | None = None
    event: Event | None = None  # the parsed event (spares correlation a JSON round trip)


class ParseStage:
    """syslog.raw → syslog.events / syslog.deadletter."""

    def __init__(self, year: int | None = None, device: str | None = None) -> None:
        self.year = year
        self.device = device
        self._parsers: dict[int, Parser] = {}
        self._received: tuple[str | None, float | None] = (None, None)
        self.events = 0
        self.deadletters = 0

    def parser(self, partition: int) -> Parser:
        p = self._parsers.get(partition)
        if p is None:
            p = self._parsers[partition] = Parser(year=self.year, device=self.device, stream=True)
        return p

    def handle(
        self,
        value: bytes | str | None,
        key: bytes | None,
        headers: Headers | None,
        *,
        topic: str = "",
        partition: int = 0,
        offset: int = -1,
    ) -> Routed:
        received_at = header(headers, HEADER_RECEIVED_AT)
        source_header = header(headers, HEADER_SOURCE)
        # The receiver keys a record by its device, else by the sender's address: that
        # key is the device of lines that name none (as the receiver saw it).
        source = key.decode("utf-8", errors="replace") if key else _host_of(source_header)
        if value is None:
            out: Event | Unparsed = Unparsed("", "empty record (null value)")
        else:
            parser = self.parser(partition)
            # The receiver stamps a whole batch with one time: parse each stamp once.
            if received_at != self._received[0]:
                self._received = (received_at, parse_received_at(received_at))
            ref = self._received[1]
            if ref is not None and self.year is None:
                # The receiver's clock is the reference for year-less stamps, as an
                # archive's modification time is for analyze.
                parser.set_reference(ref)
            # A line without any stamp takes the time it was received.
            out = parser.parse(value, source=source, received=ref)
        if isinstance(out, Unparsed):
            self.deadletters += 1
            letter = {
                "unparsed": True,
                "reason": out.reason or "unparsed",
                "raw": out.raw,
                "source": source_header,
                "received_at": received_at,
                "topic": topic,
                "partition": partition,
                "offset": offset,
            }
            return Routed(True, key, orjson.dumps(letter))
        self.events += 1
        device = out.device or UNKNOWN_DEVICE
        return Routed(False, device.encode("utf-8"), orjson.dumps(out.to_record()), device, out)


def fingerprint(rec: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two records of one incident different for a reader."""
    return (
        rec["status"],
        rec["count"],
        rec["last_seen"],
        rec["confidence"],
        rec.get("resolved_at"),
        rec["summary"],
    )


@dataclass(slots=True)
class Slot:
    """One device's engine state and where it stands in the events topic."""

    state: DeviceState
    partition: int
    offset: int = -1  # offset of the last event applied (-1: none)
    # The same for events that reached the device's partition through the reroute topic
    # (their raw record was keyed by another name than the device's: see app.py).
    reroute_offset: int = -1
    synced_max: float = float("-inf")  # newest synced device-clock time (the fleet clock)
    touched: float = 0.0  # monotonic wall time of the last event (for idle flushes)

    def dump(self) -> bytes:
        return orjson.dumps(
            {
                "format": STATE_FORMAT,
                "partition": self.partition,
                "offset": self.offset,
                "reroute_offset": self.reroute_offset,
                "synced_max": None if self.synced_max == float("-inf") else self.synced_max,
                "state": self.state.to_dict(),
            }
        )

    @classmethod
    def load(cls, data: bytes) -> Slot:
        d = orjson.loads(data)
        sm = d.get("synced_max")
        return cls(
            state=DeviceState.from_dict(d["state"]),
            partition=int(d["partition"]),
            offset=int(d["offset"]),
            reroute_offset=int(d.get("reroute_offset", -1)),
            synced_max=float("-inf") if sm is None else float(sm),
        )


class Shard:
    """The engine over the devices of the partitions one worker owns.

    Mirrors :class:`streams.core.engine.Correlator` (same device fallback, same use of
    synced, non-inferred event times for the fleet clock), with per-device stored offsets
    for idempotent re-delivery.

    The fleet clock differs in one way: ``analyze`` reads one file in order, so its
    newest time is where the whole fleet stands. A worker reads several partitions, and
    one may run ahead of another by hours of event time during a replay; its newest time
    would resolve the incidents of devices whose partition has not caught up yet. So the
    fleet clock is the *slowest* partition's newest time among the partitions that still
    have records to read, and the newest time of all once every partition is caught up.
    """

    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb
        self.slots: dict[str, Slot] = {}
        self.part_max: dict[int, float] = {}  # newest synced time per events partition
        self.part_offset: dict[int, int] = {}  # last offset read per events partition
        self.published: dict[str, tuple[Any, ...]] = {}
        self.applied = 0
        self.duplicates = 0

    # -- state ---------------------------------------------------------------------

    def restore(self, device: str, stored: bytes | None, partition: int) -> Slot:
        """The cached slot of ``device``, else the one decoded from ``stored``, else a new one."""
        slot = self.slots.get(device)
        if slot is not None:
            return slot
        if stored:
            slot = Slot.load(stored)
            if slot.synced_max > self.part_max.get(slot.partition, float("-inf")):
                self.part_max[slot.partition] = slot.synced_max
        else:
            slot = Slot(DeviceState(device), partition)
        self.slots[device] = slot
        return slot

    def drop_partitions(self, partitions: Iterable[int]) -> int:
        """Forget the devices of revoked partitions (their state lives on in the changelog)."""
        gone = set(partitions)
        victims = [d for d, s in self.slots.items() if s.partition in gone]
        for d in victims:
            del self.slots[d]
        for p in gone:
            self.part_max.pop(p, None)
            self.part_offset.pop(p, None)
        return len(victims)

    def fleet_clock(self, highwater: Callable[[int], int | None]) -> float:
        """The fleet's event time: see the class docstring.

        ``highwater(p)``: the end offset of events partition ``p`` as the consumer last
        saw it, None when unknown (counted as not caught up).
        """
        behind: list[float] = []
        for p, newest in self.part_max.items():
            end = highwater(p)
            if end is None or self.part_offset.get(p, -1) + 1 < end:
                behind.append(newest)
        if behind:
            return min(behind)
        return max(self.part_max.values(), default=float("-inf"))

    # -- processing ----------------------------------------------------------------

    def apply(
        self,
        slot: Slot,
        ev: Event,
        partition: int,
        offset: int,
        now: float = 0.0,
        *,
        rerouted: bool = False,
    ) -> list[dict[str, Any]] | None:
        """Feed one event; None when it was applied before (a re-delivery).

        ``partition``/``offset``: where the event was read (the input topic whose
        highwater :meth:`fleet_clock` is given); ``rerouted``: read from the reroute
        topic instead, whose offsets are tracked apart and do not move the fleet clock's
        progress.
        """
        if rerouted:
            if slot.partition == partition and offset <= slot.reroute_offset:
                self.duplicates += 1
                return None
            if slot.partition != partition:
                slot.offset = -1
            slot.partition = partition
            slot.reroute_offset = offset
        else:
            if offset > self.part_offset.get(partition, -1):
                self.part_offset[partition] = offset
            if slot.partition == partition and offset <= slot.offset:
                self.duplicates += 1
                return None
            if slot.partition != partition:
                slot.reroute_offset = -1
            slot.partition = partition
            slot.offset = offset
        slot.touched = now
        if ev.clock_synced and ev.time_source != "inferred":
            if ev.ts > slot.synced_max:
                slot.synced_max = ev.ts
            if ev.ts > self.part_max.get(partition, float("-inf")):
                self.part_max[partition] = ev.ts
        self.applied += 1
        _, out = step(slot.state, ev, self.kb)
        return out

    def tick(self, highwater: Callable[[int], int | None]) -> list[dict[str, Any]]:
        """Advance every device to its watermark (its own clock, or the fleet's)."""
        fleet = self.fleet_clock(highwater)
        out: list[dict[str, Any]] = []
        for slot in self.slots.values():
            st = slot.state
            if st.max_ts == float("-inf"):
                continue
            _, recs = advance(st, device_watermark(st, fleet, self.kb), self.kb)
            out.extend(recs)
        return out

    def pending_updates(self, idle_before: float) -> list[dict[str, Any]]:
        """Current records of incidents changed since last published, on idle devices.

        The engine publishes an ongoing incident's updates sparingly (powers of two,
        confidence changes, every 5 minutes of event time); ``analyze`` prints the final
        state at the end of the archive. A stream has no end, so the worker publishes
        the pending state once a device has been quiet for a while.
        """
        out: list[dict[str, Any]] = []
        for slot in self.slots.values():
            if slot.touched > idle_before:
                continue
            # flush(): the records as step() gives them (with the device's addresses).
            for rec in flush(slot.state, self.kb):
                if self.published.get(rec["incident_id"]) != fingerprint(rec):
                    out.append(rec)
        return out

    def note_published(self, records: Iterable[dict[str, Any]]) -> None:
        for rec in records:
            if rec["status"] == "resolved":
                self.published.pop(rec["incident_id"], None)
            else:
                self.published[rec["incident_id"]] = fingerprint(rec)


def decode_event(value: bytes) -> Event:
    """An event record of syslog.events back into an :class:`Event`."""
    return Event.from_record(orjson.loads(value))


__all__ = [
    "UNKNOWN_DEVICE",
    "ParseStage",
    "Routed",
    "Shard",
    "Slot",
    "decode_event",
    "fingerprint",
    "header",
    "parse_received_at",
]
