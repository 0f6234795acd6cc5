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

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
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
#: The largest record value the worker publishes. Kafka refuses a record over its
#: ``message.max.bytes`` (1 MiB by default) and faust's producer one over its
#: ``max_request_size`` (1,000,000 bytes): a derived record over this becomes a dead
#: letter, which stays far below it.
MAX_PUBLISH_BYTES = 900_000
#: Characters of the raw text a shortened dead letter keeps (at most six bytes each once
#: JSON-escaped: the letter stays under 100 KB).
LETTER_RAW_CHARS = 16_384
#: Characters an incident's evidence line keeps when the whole record is too large.
EVIDENCE_CHARS = 4_096
#: Characters of an event's raw text the worker's engine state keeps (as evidence and in
#: rule windows). The catalog reads the first 2,048 characters of a message only; a
#: sender's 250 KB lines would otherwise grow a device's stored state past Kafka's limit.
STATE_RAW_CHARS = 2_048


def bounded(ev: Event) -> Event:
    """``ev`` with its raw text cut to :data:`STATE_RAW_CHARS` characters (and the
    original length said) when longer; else ``ev`` itself."""
    if len(ev.raw) <= STATE_RAW_CHARS:
        return ev
    short = f"{ev.raw[:STATE_RAW_CHARS]}… [truncated: {len(ev.raw)} characters]"
    return replace(ev, raw=short)


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


def _as_bytes(value: bytes | str | None) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode("utf-8", errors="surrogatepass")
    return bytes(value)


def dead_letter(
    value: bytes | str | None,
    reason: str,
    *,
    raw: str | None = None,
    source: str | None = None,
    received_at: str | None = None,
    topic: str = "",
    partition: int = 0,
    offset: int = -1,
    limit: int = MAX_PUBLISH_BYTES,
) -> bytes:
    """The dead letter of one raw record, as JSON that fits in ``limit`` bytes.

    ``raw``: the record's text as the parser read it (else ``value`` decoded). When the
    whole letter would be larger than ``limit``, or cannot be encoded, it keeps the first
    :data:`LETTER_RAW_CHARS` characters of the text, with ``truncated``, the record's
    size in bytes (``raw_bytes``) and the SHA-256 of its bytes (``raw_sha256``), so that
    the original can still be recognized.
    """
    letter: dict[str, Any] = {
        "unparsed": True,
        "reason": reason or "unparsed",
        "raw": raw if raw is not None else _as_bytes(value).decode("utf-8", errors="replace"),
        "source": source,
        "received_at": received_at,
        "topic": topic,
        "partition": partition,
        "offset": offset,
    }
    try:
        out = orjson.dumps(letter)
    except (TypeError, ValueError):  # a string orjson refuses (lone surrogates)
        out = b""
    if out and len(out) <= limit:
        return out
    data = _as_bytes(value)
    text = data.decode("utf-8", errors="replace")
    letter["raw"] = text[:LETTER_RAW_CHARS]
    letter["truncated"] = True
    letter["raw_bytes"] = len(data)
    letter["raw_sha256"] = hashlib.sha256(data).hexdigest()
    for key in ("source", "received_at", "reason", "topic"):
        if isinstance(letter[key], str):  # header texts are the sender's: bounded too
            letter[key] = letter[key].encode("utf-8", errors="replace").decode("utf-8")[:1024]
    return orjson.dumps(letter)


def replacement_letters(deadletter_topic: str) -> Callable[..., tuple[str, bytes | None, bytes]]:
    """The ``replace`` of the parse agent's outbox: a record Kafka refused becomes the
    short dead letter (truncated raw text, size, SHA-256) of the raw record it came from
    (``origin``: a consumer record with ``value``, ``headers``, ``topic``, ``partition``
    and ``offset``)."""

    def replace(
        topic: str, key: bytes | None, value: bytes, origin: Any, error: BaseException
    ) -> tuple[str, bytes | None, bytes]:
        headers = getattr(origin, "headers", None)
        letter = dead_letter(
            getattr(origin, "value", value),
            f"refused by Kafka on {topic}: {error!r}"[:1024],
            source=header(headers, HEADER_SOURCE),
            received_at=header(headers, HEADER_RECEIVED_AT),
            topic=str(getattr(origin, "topic", "")),
            partition=int(getattr(origin, "partition", 0) or 0),
            offset=int(getattr(origin, "offset", -1)),
            limit=0,  # always the short form: the full one may be what was refused
        )
        raw_key = getattr(origin, "key", key)
        # The raw record's key, unless it is itself what made the record too large.
        return deadletter_topic, raw_key if len(raw_key or b"") <= 1024 else None, letter

    return replace


def fit_incident(rec: dict[str, Any], limit: int = MAX_PUBLISH_BYTES) -> bytes:
    """An incident record as JSON of at most about ``limit`` bytes: when the whole record is
    larger (evidence lines are raw lines, and a sender may send long ones), each evidence
    line keeps its first :data:`EVIDENCE_CHARS` characters and says how long it was."""
    out = orjson.dumps(rec)
    if len(out) <= limit:
        return out
    short = dict(rec)
    short["evidence"] = [
        line
        if len(line) <= EVIDENCE_CHARS
        else f"{line[:EVIDENCE_CHARS]}… [truncated: {len(line.encode('utf-8'))} bytes]"
        for line in rec["evidence"]
    ]
    return orjson.dumps(short)


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
        self.oversize = 0  # records whose event was too large (or unencodable): dead letters
        self.errors = 0  # records the parser failed on (a defect): dead letters

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
        """Route one raw record; never raises: what cannot be published as an event
        (too large, unencodable, or a parser failure) becomes a dead letter that fits."""
        try:
            return self._handle(
                value, key, headers, topic=topic, partition=partition, offset=offset
            )
        except Exception as exc:  # a defect must not stop the partition
            self.errors += 1
            self.deadletters += 1
            letter = dead_letter(
                value,
                f"worker error: {type(exc).__name__}: {exc}"[:1024],
                source=header(headers, HEADER_SOURCE),
                received_at=header(headers, HEADER_RECEIVED_AT),
                topic=topic,
                partition=partition,
                offset=offset,
            )
            return Routed(True, key, letter)

    def parser(self, partition: int) -> Parser:
        p = self._parsers.get(partition)
        if p is None:
            p = self._parsers[partition] = Parser(year=self.year, device=self.device, stream=True)
        return p

    def _handle(
        self,
        value: bytes | str | None,
        key: bytes | None,
        headers: Headers | None,
        *,
        topic: str,
        partition: int,
        offset: int,
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
            letter = dead_letter(
                value,
                out.reason,
                raw=out.raw,
                source=source_header,
                received_at=received_at,
                topic=topic,
                partition=partition,
                offset=offset,
            )
            return Routed(True, key, letter)
        device = out.device or UNKNOWN_DEVICE
        try:
            device_key = device.encode("utf-8")
            encoded = orjson.dumps(out.to_record())
        except (TypeError, ValueError) as exc:  # UnicodeEncodeError, orjson's errors
            reason = f"event cannot be encoded: {type(exc).__name__}: {exc}"[:1024]
        else:
            if len(encoded) + len(device_key) <= MAX_PUBLISH_BYTES:
                self.events += 1
                return Routed(False, device_key, encoded, device, out)
            reason = (
                f"event too large to publish: {len(encoded)} bytes "
                f"(limit {MAX_PUBLISH_BYTES}) from a record of {len(_as_bytes(value))} bytes"
            )
        # Not published as an event, so not correlated either (in every worker mode the
        # same): aside, shortened, with the original's size and digest.
        self.oversize += 1
        self.deadletters += 1
        letter = dead_letter(
            value,
            reason,
            source=source_header,
            received_at=received_at,
            topic=topic,
            partition=partition,
            offset=offset,
        )
        return Routed(True, key, letter)


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
        self.bad_states = 0  # stored states that could not be read (started afresh)

    # -- state ---------------------------------------------------------------------

    def restore(self, device: str, stored: bytes | None, partition: int) -> Slot:
        """The cached slot of ``device``, else the one decoded from ``stored``, else a new one."""
        slot = self.slots.get(device)
        if slot is not None:
            return slot
        slot = None
        if stored:
            try:
                slot = Slot.load(stored)
            except Exception:  # not a state this worker wrote: start the device afresh
                self.bad_states += 1
            else:
                if slot.synced_max > self.part_max.get(slot.partition, float("-inf")):
                    self.part_max[slot.partition] = slot.synced_max
        if slot is None:
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
        _, out = step(slot.state, bounded(ev), self.kb)
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
    "LETTER_RAW_CHARS",
    "MAX_PUBLISH_BYTES",
    "STATE_RAW_CHARS",
    "UNKNOWN_DEVICE",
    "ParseStage",
    "Routed",
    "Shard",
    "Slot",
    "bounded",
    "dead_letter",
    "decode_event",
    "fingerprint",
    "fit_incident",
    "header",
    "parse_received_at",
    "replacement_letters",
]
