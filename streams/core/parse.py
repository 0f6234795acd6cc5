"""Parsing: one syslog record (str or bytes) in, one :class:`Event` or :class:`Unparsed` out.

Never raises on any input. :class:`Parser` keeps the little state parsing needs
(year inference per device, the last event time for lines without a stamp); it
does no I/O and never reads the clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from streams.core.catalog import (
    ASA_FACILITIES,
    ASA_IKE_PREFIX,
    STANDARD_GROUPS,
    Catalog,
    default_catalog,
    tag_key,
)
from streams.core.clock import YearTracker, epoch_of, tz_offset_minutes
from streams.core.event import Event, Unparsed
from streams.core.header import (
    BARE_TAG_RE,
    TAG_RE,
    WRAPPER_MNEMONICS,
    Header,
    Stamp,
    fast_prefix,
    scan_prefix,
)
from streams.core.zones import TzMap, local_offset_minutes

MAX_LINE = 65536
# Catalog patterns look at the first 2 KiB of a message: real Cisco messages are far
# shorter, and a bound keeps a hostile 64 KiB line from costing seconds of backtracking.
MAX_MATCH = 2048
MAX_UPTIME_DEVICES = 100_000
_ISAKMP_ID = re.compile(r"ISAKMP \((\d+:\d+)\)")
# A capture names its devices by their prompts (`RouterA#debug crypto isakmp`,
# `PIX(config)#show crypto isakmp sa`, `Router>`) or by block markers (`=RouterA=`): the
# lines after one come from that device until the next.
_PROMPT = re.compile(r"([A-Za-z][\w.-]{0,62})(?:\([\w-]+\))?[#>][ \t]*(?:[a-z!].*)?")
_BLOCK = re.compile(r"=+[ \t]*([A-Za-z][\w.-]{0,62})[ \t]*=+")
_CONTINUATION = re.compile(r"[ \t]*\r?\n[ \t]*")


def decode(data: bytes) -> str:
    """Bytes to text: UTF-8, invalid sequences replaced (nothing is dropped)."""
    return data.decode("utf-8", errors="replace")


@dataclass(slots=True)
class ParseStats:
    records: int = 0
    events: int = 0
    classified: int = 0
    unparsed: int = 0
    unknown_tz: int = 0


@dataclass
class Parser:
    """Parses records of one input stream (a file, or a receiver's feed).

    ``year``: year of year-less stamps (``--year``); ``reference_ts``: the
    archive's reference time, used when ``year`` is not given; ``device``:
    the device name when a line names none (``--device``); ``stream``: the lines
    are received live and the reference is their receive time (year-less stamps
    take the year nearest to it: see :class:`~streams.core.clock.YearTracker`);
    ``context_ts``: the capture's time (``--start``, else the file's modification
    time), the time of uptime-stamped and unstamped lines when nothing nearer is known.
    ``captures``: the input is an archive or a console capture of its own (``analyze``,
    ``parse``), where a prompt or block marker (``RouterA#``, ``=RouterA=``) names the
    device of the lines after it, until :meth:`new_capture`. Never on a receiver's or
    worker's feed, where lines of many sources interleave.
    """

    catalog: Catalog = field(default_factory=default_catalog)
    year: int | None = None
    reference_ts: float | None = None
    device: str | None = None
    stream: bool = False
    # Device (name, address, network) -> IANA zone, for devices that log local time
    # without a zone label (--tz-map).
    tz_map: TzMap | None = None
    context_ts: float | None = None
    captures: bool = False
    stats: ParseStats = field(default_factory=ParseStats)
    _years: YearTracker = field(init=False)
    _last_ts: float | None = field(init=False, default=None)
    # The syslog server's clock: the last relay stamp seen (its Stamp and device), read
    # only when a line without a stamp needs a time.
    _last_relay: tuple[Stamp, str | None] | None = field(init=False, default=None)
    _received: float | None = field(init=False, default=None)
    _zones: dict[str, str | None] = field(init=False, default_factory=dict)
    _given_device: str | None = field(init=False, default=None)
    # Per device: (first uptime stamp, its time, newest time), so that uptime-stamped lines
    # keep their distances (only when nothing better than an inferred time is known).
    _uptimes: dict[str, tuple[float, float, float]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._years = YearTracker(
            year=self.year, reference_ts=self.reference_ts, nearest=self.stream
        )
        self._given_device = self.device

    def new_capture(self, context_ts: float | None) -> None:
        """A new input (file) begins: its time context; the device named by a prompt and
        the uptime anchors of the previous one no longer apply."""
        self.context_ts = context_ts
        self.device = self._given_device
        self._uptimes.clear()

    def set_reference(self, ts: float | None) -> None:
        """The reference time of year-less stamps: an archive's modification time, or
        the receiver's clock for a streamed record. Kept per-device year state stays."""
        self.reference_ts = ts
        self._years.reference_ts = ts

    # -- public -------------------------------------------------------------------

    def parse(
        self, record: str | bytes, *, source: str | None = None, received: float | None = None
    ) -> Event | Unparsed:
        """Parse one record.

        ``source`` is the transport source, the last resort for the device;
        ``received`` the receiver's clock (POSIX seconds), the time of a line that
        carries no stamp.
        """
        self._received = received
        self.stats.records += 1
        try:
            out = self._parse(record, source)
        except Exception as exc:  # pragma: no cover - a parser bug must not lose the line
            text = record if isinstance(record, str) else decode(record)
            out = Unparsed(text, f"parser error: {type(exc).__name__}: {exc}")
        if isinstance(out, Unparsed):
            self.stats.unparsed += 1
        else:
            self.stats.events += 1
            if out.kind is not None:
                self.stats.classified += 1
            if not out.tz_known:
                self.stats.unknown_tz += 1
        return out

    # -- internals ----------------------------------------------------------------

    def _parse(self, record: str | bytes, source: str | None) -> Event | Unparsed:
        raw = record if isinstance(record, str) else decode(record)
        line = raw.rstrip("\r\n")
        if "\n" in line:
            line = _CONTINUATION.sub(" ", line)
        if len(line) > MAX_LINE:
            line = line[:MAX_LINE]
        if not line or line.isspace():
            return Unparsed(raw, "empty record")

        fac = sev = mnem = None
        body: str
        header: Header
        tag = TAG_RE.search(line)
        wrapper: str | None = None
        if tag is not None:
            header = fast_prefix(line, tag.start()) or scan_prefix(line, tag.start(), tagged=True)
            fac, sev_text, mnem = tag.group("fac", "sev", "mnem")
            sev = int(sev_text)
            body = line[tag.end() :]
            if mnem in WRAPPER_MNEMONICS:
                inner = TAG_RE.search(body)
                if inner is not None:
                    wrapper = f"{fac}-{sev}-{mnem}"
                    fac, sev, mnem = (
                        inner.group("fac"),
                        int(inner.group("sev")),
                        inner.group("mnem"),
                    )
                    body = body[inner.end() :]
        else:
            header = scan_prefix(line, len(line), tagged=False)
            rest = line[header.body_start :]
            bare = BARE_TAG_RE.match(rest)
            if bare is not None:
                fac, sev, mnem = bare.group("fac"), int(bare.group("sev")), bare.group("mnem")
                body = rest[bare.end() :]
            else:
                hit = self.catalog.lookup_text(line[:MAX_MATCH])
                if hit is not None:
                    entry, m = hit
                    header = scan_prefix(line, m.start(), tagged=False)
                    ev = self._event(raw, line[header.body_start :], header, source)
                    ev.kind, ev.family, ev.entry = entry.kind, entry.family, entry.id
                    self._apply_groups(ev, {k: v for k, v in m.groupdict().items() if v})
                    if ev.conn_id is None:
                        # `ISAKMP (0:1):` numbers the negotiation: the engine learns its peer
                        # from the line that names it ("found peer pre-shared key matching").
                        ike = _ISAKMP_ID.search(line)
                        if ike is not None:
                            ev.conn_id = "ike-" + ike.group(1)
                    return ev
                if header.pri is None and header.device_stamp is None and not header.uptime:
                    bare_line = line.strip()
                    named = self.captures and (
                        _BLOCK.fullmatch(bare_line) or _PROMPT.fullmatch(bare_line)
                    )
                    if named:
                        self.device = named.group(1)
                        return Unparsed(raw, f"capture prompt: the device is {self.device}")
                    return Unparsed(raw, "not syslog: no header, no message tag, no known text")
                body = rest

        ev = self._event(raw, body, header, source)
        if fac is None or mnem is None:
            return ev
        ev.facility = "ASA" if fac in ASA_FACILITIES else fac
        ev.severity = sev
        ev.mnemonic = mnem
        if wrapper:
            ev.fields["wrapper"] = wrapper
        key = tag_key(fac, mnem)
        if key not in self.catalog.by_tag:
            return ev  # a message outside the catalog: header read, body kept as text
        pm = ASA_IKE_PREFIX.match(body) if ev.facility == "ASA" else None
        # ASA patterns are searched after the "Group = .., IP = ..," prefix (asa_ike.yaml).
        text = body[pm.end() :] if pm is not None else body
        hit2 = self.catalog.lookup(key, text[:MAX_MATCH])
        if hit2 is None:
            return ev
        entry2, groups = hit2
        ev.kind, ev.family, ev.entry = entry2.kind, entry2.family, entry2.id
        if pm is not None:
            if pm.group("group"):
                ev.fields["group"] = pm.group("group")
            if pm.group("ip") and "peer" not in groups:
                groups["peer"] = pm.group("ip").strip()
        self._apply_groups(ev, groups)
        return ev

    def _apply_groups(self, ev: Event, groups: dict[str, str]) -> None:
        for name, value in groups.items():
            value = value.strip()
            if name in ("peer", "local"):
                value = value.rstrip(".,;")
            if not value:
                continue
            if name in STANDARD_GROUPS:
                setattr(ev, name, value)
            else:
                ev.fields[name] = value

    def _event(self, raw: str, body: str, h: Header, source: str | None) -> Event:
        device = h.host or h.origin or self.device or source
        stamp: Stamp | None = h.device_stamp
        time_source = "device"
        if h.relay_stamp is not None and stamp is not None and not stamp.synced:
            # An unset device clock (`*Mar  1 00:01:02`) says nothing; the relay knows.
            stamp, time_source = h.relay_stamp, "relay"
        elif stamp is not None and h.relay_stamp is None and h.host is not None and h.uptime:
            time_source = "relay"
        if h.relay_stamp is not None:
            self._last_relay = (h.relay_stamp, device)
        ts: float | None = None
        tz: str | None = None
        tz_known = True
        if stamp is not None:
            ts, tz, tz_known = self._stamp_ts(stamp, device)
        if ts is None:
            ts = self._inferred_ts()
            time_source = "inferred"
            if h.uptime_s is not None and self._received is None and self._last_relay is None:
                ts = self._uptime_ts(device, h.uptime_s, ts)
        else:
            self._last_ts = ts
        return Event(
            device=device,
            ts=ts,
            raw=raw,
            message=body,
            clock_synced=h.clock_synced,
            time_source=time_source,
            host=h.host,
            origin=h.origin,
            counter=h.counter,
            tz=tz,
            tz_known=tz_known,
        )

    def _uptime_ts(self, device: str | None, uptime: float, base: float) -> float:
        """Time of an uptime-stamped line of a capture: its device's first uptime line
        takes ``base`` (the inferred time), later ones keep their distance to it; after a
        smaller uptime (a reload) they go on from the device's newest time."""
        key = device or ""
        anchor = self._uptimes.get(key)
        if anchor is None or uptime < anchor[0]:
            if len(self._uptimes) >= MAX_UPTIME_DEVICES:
                self._uptimes.clear()
            start = base if anchor is None else max(base, anchor[2])
            anchor = (uptime, start, start)
        ts = anchor[1] + (uptime - anchor[0])
        self._uptimes[key] = (anchor[0], anchor[1], max(anchor[2], ts))
        return ts

    def _inferred_ts(self) -> float:
        """Time of a line without a stamp: when it was received, else the relay's clock
        (the syslog server that wrote the archive), else the previous line's time, else
        the capture's time (``context_ts``: ``--start`` or the file's modification time)."""
        if self._received is not None:
            return self._received
        if self._last_relay is not None:
            stamp, device = self._last_relay
            ts = self._stamp_ts(stamp, device)[0]
            if ts is not None:
                return ts
        if self._last_ts is not None:
            return self._last_ts
        if self.context_ts is not None:
            return self.context_ts
        return self.reference_ts or 0.0

    def _zone_of(self, device: str | None) -> str | None:
        key = device or ""
        if key not in self._zones:
            if len(self._zones) > 100_000:
                self._zones.clear()
            self._zones[key] = self.tz_map.zone_for(device) if self.tz_map else None
        return self._zones[key]

    def _stamp_ts(self, st: Stamp, device: str | None) -> tuple[float | None, str | None, bool]:
        year = st.year if st.year is not None else self._years.year_for(device, st.month, st.day)
        base = epoch_of(year, st.month, st.day, st.hh, st.mm, st.ss)
        if base is None:
            return None, st.tz, True
        if st.offset_min is not None:
            return base - st.offset_min * 60 + st.frac, st.tz, True
        if st.tz is None and self.tz_map:
            zone_name = self._zone_of(device)
            if zone_name is not None:
                off = local_offset_minutes(zone_name, year, st.month, st.day, st.hh)
                return base - off * 60 + st.frac, zone_name, True
        off, known = tz_offset_minutes(st.tz)
        return base - off * 60 + st.frac, st.tz, known
