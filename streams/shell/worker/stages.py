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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from streams.core.engine import (
    DeviceState,
    advance_due,
    apply_admitted,
    clock,
    flush,
    from_core,
    next_due,
)
from streams.core.event import Event, Unparsed
from streams.core.fleet import NEG_INF, DeviceClock, FleetClock, FleetCore, Lane, Taken
from streams.core.kb import KnowledgeBase
from streams.core.native import ClockRow, NativeModule, Scanner, make_scanner
from streams.core.parse import Parser
from streams.core.zones import TzMap
from streams.shell.topics import HEADER_RECEIVED_AT, HEADER_SOURCE, HEADER_YEAR

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
#: Devices fed from two raw partitions the worker names in its log (the rest are counted).
MAX_MIXED_NAMED = 1_000


def bounded_text(raw: str) -> str:
    """``raw`` cut to :data:`STATE_RAW_CHARS` characters (and its length said) when
    longer: what a device's state keeps of a line."""
    if len(raw) <= STATE_RAW_CHARS:
        return raw
    return f"{raw[:STATE_RAW_CHARS]}… [truncated: {len(raw)} characters]"


def bounded(ev: Event) -> Event:
    """``ev`` with its raw text cut by :func:`bounded_text`; else ``ev`` itself."""
    if len(ev.raw) <= STATE_RAW_CHARS:
        return ev
    return replace(ev, raw=bounded_text(ev.raw))


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


def _year_of(text: str | None) -> int | None:
    """The year of a ``year`` header (``replay --year``), None when absent or not a year."""
    if text is None or not text.isdigit() or not 1970 <= int(text) <= 9999:
        return None
    return int(text)


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


@dataclass(frozen=True, slots=True)
class Clocked:
    """A raw record the native scanner read as a clock row: an event without a kind the
    knowledge base reads, of which the engine needs only ``(device, ts, time_source,
    clock_synced, tz_known)``. No Python event is made of it, and nothing is published."""

    key: bytes
    row: ClockRow

    def event(self, value: bytes | None) -> Event:
        """The event the engine reads of it (for the reroute topic): its raw text, no kind."""
        device, ts, source, synced, tz_known = self.row[:5]
        text = _as_bytes(value).decode("utf-8", errors="replace").rstrip("\r\n")
        return Event(
            device=device or UNKNOWN_DEVICE,
            ts=ts,
            raw=text,
            message=text,
            clock_synced=synced,
            time_source=source,
            tz_known=tz_known,
        )


class ParseStage:
    """syslog.raw → syslog.events / syslog.deadletter.

    With ``native`` (the extension) and ``kb``, :meth:`handle_batch` reads a fetch's
    records through the native scanner, as ``analyze`` reads an archive: the records
    whose event no rule of ``kb`` reads come back as :class:`Clocked` rows; only the
    others are parsed in Python. Without a zone map only (the scanner reads stamps
    without one).
    """

    def __init__(
        self,
        year: int | None = None,
        device: str | None = None,
        tz_map: TzMap | None = None,
        *,
        native: NativeModule | None = None,
        kb: KnowledgeBase | None = None,
    ) -> None:
        self.year = year
        self.device = device
        self.tz_map = tz_map
        self.native = native if kb is not None and tz_map is None else None
        self.kb = kb
        self._parsers: dict[tuple[int, int | None], Parser] = {}
        self._scanners: dict[tuple[int, int | None], Scanner] = {}
        self.clocked = 0  # records read as clock rows by the native scanner
        self._received: tuple[str | None, float | None] = (None, None)
        self.events = 0
        self.deadletters = 0
        self.oversize = 0  # records whose event was too large (or unencodable): dead letters
        self.errors = 0  # records the parser failed on (a defect): dead letters

    def parser(self, partition: int, year: int | None = None) -> Parser:
        """The parser of a raw partition (of records that carry ``year``, if given)."""
        key = (partition, year)
        p = self._parsers.get(key)
        if p is None:
            y = self.year if year is None else year
            p = self._parsers[key] = Parser(
                year=y, device=self.device, stream=True, tz_map=self.tz_map
            )
        return p

    def scanner(self, partition: int, year: int | None = None) -> Scanner:
        """The native scanner of :meth:`parser` ``(partition, year)``."""
        assert self.native is not None and self.kb is not None
        key = (partition, year)
        sc = self._scanners.get(key)
        if sc is None:
            # With the text of each row: a row the fleet clock holds (a clock jump) is
            # noted with it, as analyze notes it, whichever path the row takes.
            sc = self._scanners[key] = make_scanner(
                self.native, self.parser(partition, year), kb=self.kb, with_text=True
            )
        return sc

    def _reference(self, parser: Parser, received_at: str | None, year: int | None) -> float | None:
        """The receive time of a record (parsed once per receiver batch), set as the
        parser's reference for year-less stamps when no year is given."""
        if received_at != self._received[0]:
            self._received = (received_at, parse_received_at(received_at))
        ref = self._received[1]
        if ref is not None and self.year is None and year is None:
            # The receiver's clock is the reference for year-less stamps, as an
            # archive's modification time is for analyze.
            parser.set_reference(ref)
        return ref

    def handle_batch(self, records: Sequence[Any]) -> list[Routed | Clocked]:
        """:meth:`handle` of each consumer record (``value``, ``key``, ``headers``,
        ``topic``, ``partition``, ``offset``) in order, the records whose event no rule
        reads as :class:`Clocked` rows when the native scanner is there. Never raises."""
        if self.native is None:
            return [self.handle_record(m) for m in records]
        out: list[Routed | Clocked] = []
        for i, j, values, sources, partition, received_at, year in self._runs(records):
            self._handle_run(records[i:j], values, sources, partition, received_at, year, out)
        return out

    def handle_batch_core(
        self,
        records: Sequence[Any],
        core: FleetCore,
        framed: Callable[[int], bool],
        on_rows: Callable[[int, list[tuple[tuple[Any, ...], int]]], bool],
        on_record: Callable[[Any, Routed | Clocked], None],
    ) -> tuple[int, int]:
        """:meth:`handle_batch` with the clock rows applied as they are read, in order,
        to ``core`` (``Scanner.records_core``): those of its native devices there, the
        others given to ``on_rows(partition, [(row, offset)])``, which applies them and
        says whether the shard has a frame for the partition now (``framed(partition)``
        before). Every other record goes to ``on_record(record, routed)`` in its place:
        parsed in Python (:class:`Routed`), or a clock row the core does not apply
        (:class:`Clocked`: no device name, or a device of another partition). Returns
        the count of rows the core applied and of records it skipped as read before.

        Raises what ``on_rows`` and ``on_record`` raise; an error of the scanner itself
        (a defect) hands the rest of the run to :meth:`handle_batch`'s path (whatever
        the core applied of it is skipped there as read before)."""
        assert self.native is not None
        applied = duplicates = 0
        failed: list[BaseException] = []  # what on_rows raised (not the scanner's defect)

        def rows_of(partition: int) -> Callable[[list[tuple[tuple[Any, ...], int]]], bool]:
            def call(rows: list[tuple[tuple[Any, ...], int]]) -> bool:
                try:
                    return on_rows(partition, rows)
                except BaseException as exc:
                    failed.append(exc)
                    raise

            return call

        for i, j, values, sources, partition, received_at, year in self._runs(records):
            run = records[i:j]
            offsets = [m.offset for m in run]
            parser = self.parser(partition, year)
            scanner = self.scanner(partition, year)
            apply_rows = rows_of(partition)
            k = 0
            n = len(run)
            while k < n:
                ref = self._reference(parser, received_at, year)
                try:
                    nxt, row, rows, a, d = scanner.records_core(
                        values, sources, offsets, ref, k, core, partition, framed(partition),
                        apply_rows,
                    )  # fmt: skip
                except Exception:
                    if failed:
                        raise
                    # A defect of the scanner: the rest of the run the old way.
                    rest: list[Routed | Clocked] = []
                    self._handle_run(
                        run[k:], values[k:], sources[k:], partition, received_at, year, rest
                    )
                    for m, routed in zip(run[k:], rest, strict=True):
                        on_record(m, routed)
                    break
                applied += a
                duplicates += d
                self.clocked += rows
                self.events += rows
                if nxt >= n:
                    break
                if row is None:
                    on_record(run[nxt], self.handle_record(run[nxt]))
                else:
                    device = row[0] or UNKNOWN_DEVICE
                    on_record(run[nxt], Clocked(device.encode("utf-8", errors="replace"), row))
                k = nxt + 1
        return applied, duplicates

    def _runs(
        self, records: Sequence[Any]
    ) -> Iterator[tuple[int, int, list[Any], list[str | None], int, str | None, int | None]]:
        """The runs of records that share a parser and a receive time: ``(start, end,
        values, sources, partition, received_at, year)``."""
        n = len(records)
        i = 0
        while i < n:
            first = records[i]
            partition = first.partition
            headers = first.headers
            received_at = header(headers, HEADER_RECEIVED_AT)
            year = _year_of(header(headers, HEADER_YEAR))
            values: list[Any] = []
            sources: list[str | None] = []
            j = i
            while j < n:
                m = records[j]
                if m.partition != partition:
                    break
                if m.headers is not headers:
                    hs = m.headers
                    if (
                        header(hs, HEADER_RECEIVED_AT) != received_at
                        or _year_of(header(hs, HEADER_YEAR)) != year
                    ):
                        break
                    headers = hs
                values.append(m.value)
                key = m.key
                sources.append(
                    key.decode("utf-8", errors="replace") or None
                    if key
                    else _host_of(header(m.headers, HEADER_SOURCE))
                )
                j += 1
            yield i, j, values, sources, partition, received_at, year
            i = j

    def _handle_run(
        self,
        run: Sequence[Any],
        values: list[Any],
        sources: list[str | None],
        partition: int,
        received_at: str | None,
        year: int | None,
        out: list[Routed | Clocked],
    ) -> None:
        parser = self.parser(partition, year)
        scanner = self.scanner(partition, year)
        k = 0
        n = len(run)
        while k < n:
            ref = self._reference(parser, received_at, year)
            try:
                rows, nxt = scanner.records(values, sources, ref, k)
            except Exception:  # a defect of the scanner: the record goes to Python
                rows, nxt = [], k
            for row in rows:
                device = row[0] or UNKNOWN_DEVICE
                out.append(Clocked(device.encode("utf-8", errors="replace"), row))
            self.clocked += len(rows)
            self.events += len(rows)
            if nxt >= n:
                break
            out.append(self.handle_record(run[nxt]))
            k = nxt + 1

    def handle_record(self, m: Any) -> Routed:
        """:meth:`handle` of a consumer record (``value``, ``key``, ``headers``, ``topic``,
        ``partition``, ``offset``)."""
        return self.handle(
            m.value, m.key, m.headers, topic=m.topic, partition=m.partition, offset=m.offset
        )

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
            year = _year_of(header(headers, HEADER_YEAR))
            parser = self.parser(partition, year)
            # The receiver stamps a whole batch with one time: parse each stamp once.
            ref = self._reference(parser, received_at, year)
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


def _clock_dump(
    dc: DeviceClock[Event | None], frame: str | None, lane_clock: float
) -> dict[str, Any]:
    return {
        "frame": frame,
        "lane_clock": None if lane_clock == NEG_INF else lane_clock,
        "offset": dc.offset,
        "correction": dc.correction,
        # A held clock row (an event without a kind, see Shard.clock) is stored as null.
        "held": [[None if ev is None else ev.to_record(), eng, raw] for ev, eng, raw in dc.held],
        "held_expected": None if dc.held_expected == NEG_INF else dc.held_expected,
        "last": None if dc.last == NEG_INF else dc.last,
        "reading": None if dc.reading == NEG_INF else dc.reading,
        "skew": None if dc.skew == float("inf") else dc.skew,
        "jumps": dc.jumps,
        "outliers": dc.outliers,
        "anomalies": list(dc.anomalies),
    }


def _float(v: Any) -> float:
    return NEG_INF if v is None else float(v)


def _clock_load(d: dict[str, Any], lane: int) -> DeviceClock[Event | None]:
    return DeviceClock(
        lane=lane,
        offset=None if d.get("offset") is None else float(d["offset"]),
        correction=float(d.get("correction", 0.0)),
        held=[
            (None if r is None else Event.from_record(r), float(eng), str(raw))
            for r, eng, raw in d.get("held", [])
        ],
        held_expected=_float(d.get("held_expected")),
        last=_float(d.get("last")),
        reading=_float(d.get("reading")),
        skew=float("inf") if d.get("skew") is None else float(d["skew"]),
        jumps=int(d.get("jumps", 0)),
        outliers=int(d.get("outliers", 0)),
        anomalies=[str(a) for a in d.get("anomalies", [])],
    )


@dataclass(slots=True)
class Slot:
    """One device's engine state, its clock, and where it stands in the events topic."""

    state: DeviceState
    partition: int
    offset: int = -1  # offset of the last event applied (-1: none)
    # The same for events that reached the device's partition through the reroute topic
    # (their raw record was keyed by another name than the device's: see app.py).
    reroute_offset: int = -1
    # Per raw partition, the raw offset of the last rerouted record applied: a raw record
    # read again (after a crash or a rebalance) is rerouted again at a new reroute offset;
    # its origin tells it apart.
    origins: dict[int, int] = field(default_factory=dict)
    clock: DeviceClock[Event | None] = field(default_factory=DeviceClock)
    # The frame of the stored clock (see Shard.restore) and its lane clock then.
    frame: str | None = None
    lane_clock: float = NEG_INF
    touched: float = 0.0  # monotonic wall time of the last event (for idle flushes)

    def clock_only(self, *, late: bool = False) -> bool:
        """A device that only ever moved its clock (most of a large fleet): no held or
        noted clock line, no engine state but its newest time (and its late count, with
        ``late``), no reroute origin."""
        dc = self.clock
        st = self.state
        return not (
            dc.held
            or dc.anomalies
            or dc.jumps
            or dc.outliers
            or st.incidents
            or st.windows
            or st.pending
            or st.recent
            or st.exchanges
            or st.handles
            or st.conn_peers
            or st.addresses
            or (st.late and not late)
            or st.serial
            or st.current
            or self.origins
        )

    def dump(self, frame: str | None = None, lane_clock: float = NEG_INF) -> bytes:
        # A copy of exact size: orjson's result keeps its 4 KiB buffer, and the table's
        # store keeps every device's state (100k devices: 400 MB instead of 50 MB).
        return memoryview(self._dump(frame, lane_clock)).tobytes()

    def _dump(self, frame: str | None, lane_clock: float) -> bytes:
        dc = self.clock
        st = self.state
        if self.clock_only():
            # A device that only moved its clock (most of a large fleet): the fields that
            # differ from what Slot.load assumes, half the bytes, twice as fast.
            return orjson.dumps(
                {
                    "format": STATE_FORMAT,
                    "partition": self.partition,
                    "offset": self.offset,
                    "reroute_offset": self.reroute_offset,
                    "frame": frame,
                    "lane_clock": None if lane_clock == NEG_INF else lane_clock,
                    "clock": {
                        "lane": dc.lane,
                        "offset": dc.offset,
                        "correction": dc.correction,
                        "last": dc.last,
                        "reading": dc.reading,
                        "skew": dc.skew,
                    },
                    "state": {"device": st.device, "max_ts": st.max_ts},
                }
            )
        return orjson.dumps(
            {
                "format": STATE_FORMAT,
                "partition": self.partition,
                "offset": self.offset,
                "reroute_offset": self.reroute_offset,
                "origins": {str(p): o for p, o in self.origins.items()},
                "frame": frame,
                "lane_clock": None if lane_clock == NEG_INF else lane_clock,
                # orjson writes a dataclass itself, its infinite times as null: the fields
                # _clock_dump and DeviceState.to_dict give, and a few more ("seen",
                # "scheduled", "due": read by no loader), several times faster. A clock
                # holding lines (Events) still takes _clock_dump (their record form).
                "clock": _clock_dump(dc, frame, lane_clock) if dc.held else dc,
                "state": self.state,
            }
        )

    @classmethod
    def load(cls, data: bytes) -> Slot:
        d = orjson.loads(data)
        partition = int(d["partition"])
        c = d.get("clock") or {}
        return cls(
            state=DeviceState.from_dict(d["state"]),
            partition=partition,
            offset=int(d["offset"]),
            reroute_offset=int(d.get("reroute_offset", -1)),
            origins={int(p): int(o) for p, o in (d.get("origins") or {}).items()},
            clock=_clock_load(c, partition),
            # At the top level now; states stored before had them in the clock.
            frame=d["frame"] if "frame" in d else c.get("frame"),
            lane_clock=_float(d["lane_clock"] if "lane_clock" in d else c.get("lane_clock")),
        )


class Shard:
    """The engine over the devices of the partitions one worker owns.

    The same engine and the same fleet clock as ``analyze``
    (:class:`streams.core.engine.Correlator`, :mod:`streams.core.fleet`), with per-device
    stored offsets for idempotent re-delivery. Each events partition is a lane of the
    fleet clock: a partition keeps its devices' lines in their order, which is the order
    ``analyze`` reads them in its lane (it uses the same partitioner), so both make the
    same clock decisions; and a partition that lags behind another during a replay does
    not see its devices advanced by the other's time.

    A lane's clock is in the frame of the device it started from; stored device clocks
    carry their lane's frame id and lane time. A device restored into a lane of another
    frame (its partition was started anew elsewhere) forgets its offset, which only means
    that the fleet does not advance it until it speaks again.
    """

    def __init__(self, kb: KnowledgeBase, core: FleetCore | None = None) -> None:
        self.kb = kb
        self.slots: dict[str, Slot] = {}
        # With a native fleet core (``core``), the lanes and the devices that only ever
        # moved their clock live there (see ParseStage.handle_batch_core): a device
        # becomes a Slot here when a record needs Python (its promotion).
        self.core = core
        self.fleet: FleetClock[Event | None] = FleetClock(
            kb.lateness, make_lane=core.lane if core is not None else None
        )
        #: Keys of the devices whose slot changed since it was last stored (the core
        #: keeps its own devices' changes: FleetCore.stored_forms).
        self.unstored: dict[bytes, None] = {}
        self.frames: dict[int, str] = {}  # lane -> frame id
        self.published: dict[str, tuple[Any, ...]] = {}
        self.published_by: dict[str, str] = {}  # incident id -> its device
        # Devices fed from two raw partitions (see _enter): counted, the first ones named.
        self.mixed: dict[str, None] = {}
        self.mixed_count = 0
        self.new_mixed: list[str] = []
        # Devices fed since their pending state was last looked at, oldest touch first
        # (those with open incidents, and those there already: see _touched).
        self.dirty: dict[str, None] = {}
        self.applied = 0
        self.duplicates = 0
        self.bad_states = 0  # stored states that could not be read (started afresh)

    # -- state ---------------------------------------------------------------------

    def restore(self, device: str, stored: bytes | None, partition: int) -> Slot:
        """The cached slot of ``device``, else one of the core's device (the core's
        numbers are newer than anything stored), else the one decoded from ``stored``,
        else a new one. A device the core does not know is registered there as Python's."""
        slot = self.slots.get(device)
        if slot is not None:
            return slot
        core = self.core
        got = core.promote(device) if core is not None else None
        if got is not None:
            return self._promoted(device, got)
        loaded = self._load(stored) if stored else None
        if loaded is None:
            loaded = Slot(DeviceState(device), partition, clock=DeviceClock(lane=partition))
        return self._keep(device, loaded)

    def restore_stored(self, device: str, stored: bytes | None) -> None:
        """:meth:`restore` of a device of the table (``restore_owned``): into the core,
        not a slot, when the core can hold its stored state (a device that only moved
        its clock, in its own partition)."""
        if device in self.slots:
            return
        core = self.core
        if core is None or not stored:
            self.restore(device, stored, -1)
            return
        held = core.peek(device)
        if held is not None and not held[-1]:
            return  # the core's own numbers are newer than the stored ones
        loaded = self._load(stored)
        if (
            loaded is not None
            and loaded.clock_only(late=True)
            and not loaded.clock.correction
            and loaded.reroute_offset == -1
        ):
            dc, st = loaded.clock, loaded.state
            how = core.adopt(
                device, loaded.partition, dc.offset, dc.last, dc.reading, dc.skew,
                st.max_ts, st.late, loaded.offset,
            )  # fmt: skip
            if how == "adopted":
                self._lane_clock(loaded)
                return
        # A slot: the device is registered as Python's in the core (which does not hold
        # it natively: see peek above, so it has no numbers to give).
        core.promote(device)
        if loaded is None:
            loaded = Slot(DeviceState(device), -1, clock=DeviceClock(lane=-1))
        self._keep(device, loaded)

    def _load(self, stored: bytes) -> Slot | None:
        """A stored slot, in this shard's frame of its lane (None: not a state this
        worker wrote, counted: the device starts afresh)."""
        try:
            slot = Slot.load(stored)
        except Exception:
            self.bad_states += 1
            return None
        frame = self.frames.get(slot.partition)
        if frame is None and slot.frame is not None and slot.clock.offset is not None:
            self.frames[slot.partition] = slot.frame
            if self.core is None:
                self.fleet.lanes[slot.partition] = Lane(clock=slot.lane_clock)
            else:
                self.fleet.lane(slot.partition).clock = slot.lane_clock
        elif frame != slot.frame:
            # Another frame: its offset and reading mean nothing here.
            slot.clock.offset = None
            slot.clock.reading = NEG_INF
        return slot

    def _lane_clock(self, slot: Slot) -> None:
        """A restored device's lane is at least where it stood when it was stored."""
        lane = self.fleet.lane(slot.partition)
        if slot.clock.offset is not None and slot.lane_clock > lane.clock:
            lane.clock = slot.lane_clock

    def _keep(self, device: str, slot: Slot) -> Slot:
        """A restored or new slot, in the shard and its fleet clock."""
        self.fleet.adopt(device, slot.clock)
        self._lane_clock(slot)
        self.slots[device] = slot
        self._schedule(device, slot)
        if slot.state.incidents:
            # A state from the changelog may hold updates no record carries yet (a crash,
            # a rebalance): its device is looked at by the next pending_updates. (Only
            # incidents have pending updates: a new device, or one without, has none.)
            self.dirty[device] = None
        return slot

    def _promoted(self, device: str, got: Taken) -> Slot:
        """The slot of a device the core held: its numbers carry on here (its lane
        already counts it)."""
        st, dc = from_core(self.fleet, device, got)
        lane, koffset, changed = got[0], got[8], got[9]
        slot = self.slots[device] = Slot(st, lane, koffset, clock=dc)
        if changed:  # not stored since it changed in the core: now the slot's to store
            self.unstored[device.encode("utf-8")] = None
        return slot

    def device_count(self) -> int:
        """The devices of this shard: its slots and the core's native devices."""
        return len(self.slots) + (self.core.counts()[1] if self.core is not None else 0)

    def dump(self, device: str) -> bytes:
        """The stored form of a device's slot, with its lane's frame and time."""
        slot = self.slots[device]
        lane = self.fleet.lanes.get(slot.partition)
        return slot.dump(self.frames.get(slot.partition), lane.clock if lane else NEG_INF)

    def drop_partitions(self, partitions: Iterable[int]) -> int:
        """Forget the devices of revoked partitions (their state lives on in the changelog)."""
        gone = set(partitions)
        victims = [d for d, s in self.slots.items() if s.partition in gone]
        for d in victims:
            del self.slots[d]
        # What was published of their open incidents is the next owner's to know.
        leaving = set(victims)
        for iid in [i for i, d in self.published_by.items() if d in leaving]:
            del self.published_by[iid]
            self.published.pop(iid, None)
        self.fleet.forget(victims)
        native = 0
        if self.core is not None:
            native = self.core.drop(sorted(gone), victims)
        for p in gone:
            self.fleet.lanes.pop(p, None)
            self.frames.pop(p, None)
        return len(victims) + native

    def _move(self, device: str, slot: Slot, partition: int) -> None:
        """A device's events now come from another partition (lane)."""
        self.fleet.forget([device])
        slot.clock = DeviceClock(lane=partition)
        slot.partition = partition
        self.fleet.adopt(device, slot.clock)

    def _schedule(self, device: str, slot: Slot) -> None:
        self.fleet.schedule(device, slot.clock, next_due(slot.state, self.kb))

    # -- processing ----------------------------------------------------------------

    def _enter(
        self,
        slot: Slot,
        partition: int,
        offset: int,
        now: float,
        rerouted: bool,
        ts: float,
        origin: tuple[int, int] | None = None,
    ) -> bool:
        """The bookkeeping of one more record of a device: False when it was applied
        before (a re-delivery); else its offset is noted (see :meth:`_touched` for the rest).
        ``origin``: the raw partition and offset of a rerouted record."""
        device = slot.state.device
        if rerouted:
            if slot.partition == partition and offset <= slot.reroute_offset:
                self.duplicates += 1
                return False
            if slot.partition != partition:
                slot.offset = -1
                slot.origins.clear()
                self._move(device, slot, partition)
            if origin is not None:
                if origin[1] <= slot.origins.get(origin[0], -1):
                    # The same raw record rerouted again (read again after a crash).
                    slot.reroute_offset = offset
                    self.duplicates += 1
                    return False
                slot.origins[origin[0]] = origin[1]
            slot.reroute_offset = offset
        else:
            if slot.partition == partition and offset <= slot.offset:
                self.duplicates += 1
                return False
            if slot.partition != partition:
                slot.reroute_offset = -1
                slot.origins.clear()
                self._move(device, slot, partition)
            slot.offset = offset
        slot.touched = now
        if slot.offset >= 0 and slot.reroute_offset >= 0 and device not in self.mixed:
            # Fed from its own raw partition and, through the reroute topic, from another:
            # the order between the two is not defined (see the README's worker section).
            self.mixed_count += 1
            if len(self.mixed) < MAX_MIXED_NAMED:
                self.mixed[device] = None
                self.new_mixed.append(device)
        self.applied += 1
        if partition not in self.frames:
            self.frames[partition] = f"{device}@{ts:.3f}"
        return True

    def apply(
        self,
        slot: Slot,
        ev: Event,
        partition: int,
        offset: int,
        now: float = 0.0,
        *,
        rerouted: bool = False,
        origin: tuple[int, int] | None = None,
    ) -> list[dict[str, Any]] | None:
        """Feed one event; None when it was applied before (a re-delivery).

        ``partition``/``offset``: where the event was read; ``rerouted``: read from the
        reroute topic instead, whose offsets are tracked apart, and ``origin`` the raw
        partition and offset it was rerouted from (see :func:`reroute_record`).
        """
        if not self._enter(slot, partition, offset, now, rerouted, ev.ts, origin):
            return None
        device = slot.state.device
        ev = bounded(ev)
        admitted = self.fleet.admit(
            device, slot.clock, ev, ev.ts, ev.time_source != "inferred", ev.raw
        )
        out = apply_admitted(slot.state, admitted, self.kb)
        self._schedule(device, slot)
        self._touched(device, slot.state)
        return out

    def _touched(self, device: str, st: DeviceState) -> None:
        """A record of the device was applied: it is the newest in :attr:`dirty` if it
        has open incidents (their pending updates) or was there already. A device without
        incidents has nothing pending: most of a large fleet stays out."""
        dirty = self.dirty
        if st.incidents or device in dirty:
            dirty.pop(device, None)
            dirty[device] = None

    def clock(
        self, slot: Slot, row: ClockRow, partition: int, offset: int, now: float = 0.0
    ) -> list[dict[str, Any]] | None:
        """Feed one clock row (the native scanner's reading of a record whose event has no
        kind the knowledge base reads: ``(device, ts, time_source, clock_synced,
        tz_known)``); None when it was applied before. What :meth:`apply` does with that
        event, as ``Correlator.clocks`` does it in ``analyze``."""
        ts = row[1]
        if not self._enter(slot, partition, offset, now, False, ts):
            return None
        device = slot.state.device
        dc = slot.clock
        st = slot.state
        eng = ts + dc.correction
        fleet = self.fleet
        if row[2] == "inferred" or fleet.ordinary(device, dc, eng) or fleet.first(device, dc, eng):
            out = clock(st, eng, self.kb)
        else:
            # A held row is noted with its text (cut as an event's is), as analyze notes it.
            raw = bounded_text(row[5]) if len(row) > 5 else ""
            out = apply_admitted(st, self.fleet.admit(device, dc, None, ts, True, raw), self.kb)
        due = st.due
        if due == NEG_INF:
            due = next_due(st, self.kb)
        self.fleet.schedule(device, dc, due)
        self._touched(device, st)
        return out

    def tick(self) -> list[dict[str, Any]]:
        """Advance the devices that have work to do by their lane's clock (silent ones)."""
        slots = self.slots

        def state_of(device: str) -> DeviceState | None:
            slot = slots.get(device)
            return None if slot is None else slot.state

        return advance_due(self.fleet, state_of, self.kb)

    def pending_updates(self, idle_before: float) -> list[dict[str, Any]]:
        """Current records of incidents changed since last published, on idle devices.

        The engine publishes an ongoing incident's updates sparingly (powers of two,
        confidence changes, every 5 minutes of event time); ``analyze`` prints the final
        state at the end of the archive. A stream has no end, so the worker publishes
        the pending state once a device has been quiet for a while.
        """
        out: list[dict[str, Any]] = []
        done: list[str] = []
        # Only devices fed since they were last looked at, oldest touch first: the
        # first one still busy ends the walk (the cost follows the traffic, not the fleet).
        for device in self.dirty:
            slot = self.slots.get(device)
            if slot is not None and slot.touched > idle_before:
                break
            done.append(device)
            if slot is None:
                continue
            # flush(): the records as step() gives them (with the device's addresses).
            for rec in flush(slot.state, self.kb):
                if self.published.get(rec["incident_id"]) != fingerprint(rec):
                    out.append(rec)
        for device in done:
            del self.dirty[device]
        return out

    def note_published(self, records: Iterable[dict[str, Any]]) -> None:
        for rec in records:
            iid = rec["incident_id"]
            if rec["status"] == "resolved":
                self.published.pop(iid, None)
                self.published_by.pop(iid, None)
            else:
                self.published[iid] = fingerprint(rec)
                self.published_by[iid] = rec["device"]


def decode_event(value: bytes) -> Event:
    """An event record of syslog.events back into an :class:`Event`."""
    return decode_rerouted(value)[0]


#: The field of a reroute record that names the raw record it came from.
ORIGIN = "origin"


def reroute_record(ev: Event, partition: int, offset: int) -> bytes:
    """The reroute topic's record of an event read at ``partition``/``offset`` of
    syslog.raw: its event record with its origin, so that the owner of its device skips
    it when the raw record is read and rerouted again (after a crash or a rebalance)."""
    rec = ev.to_record()
    rec[ORIGIN] = [partition, offset]
    return orjson.dumps(rec)


def decode_rerouted(value: bytes) -> tuple[Event, tuple[int, int] | None]:
    """An event record (of syslog.events or the reroute topic) and its origin, if any."""
    rec = orjson.loads(value)
    origin = rec.pop(ORIGIN, None)
    ev = Event.from_record(rec)
    if isinstance(origin, list) and len(origin) == 2:
        return ev, (int(origin[0]), int(origin[1]))
    return ev, None


__all__ = [
    "LETTER_RAW_CHARS",
    "MAX_PUBLISH_BYTES",
    "STATE_RAW_CHARS",
    "UNKNOWN_DEVICE",
    "Clocked",
    "ParseStage",
    "Routed",
    "Shard",
    "Slot",
    "bounded",
    "dead_letter",
    "decode_event",
    "decode_rerouted",
    "fingerprint",
    "fit_incident",
    "header",
    "parse_received_at",
    "replacement_letters",
    "reroute_record",
]
