"""Hard fleets for issue 9: archives whose device clocks disagree, with ground truth.

A seeded, deterministic generator of a fleet archive and its ground truth (one row per
injected fault: device, peer, cause, first/last line in true UTC), and the scoring of
``tunnelwatch analyze`` on it::

    fleet = build_fleet(FleetSpec(seed=3, devices=120))
    path = fleet.write(tmp_path / "fleet.log")        # + fleet.log.truth.jsonl
    incidents = analyze_file(path)                    # the CLI's own code path
    print(score_table(score(fleet, incidents)))

    python -m tests.fleetgen --seed 3 --devices 120   # the same, printed

Message texts, rate limits, faults, decoys and healthy re-keys come from
:mod:`load.synth` (its public ``generate``/``Record`` API, with every device in one plain
header style); this module throws that header away and writes each line again the way
its device really would, through the device's own clock:

* clock classes (``CLOCK_CLASSES``): UTC with or without a label, a correct zone label
  with local time (DST zones: CET/CEST, EST/EDT, AEST/AEDT, ...), a wrong label (prints
  ``KST`` or ``CET`` while the clock runs UTC), a label the parser does not know, local
  time without a label (zones from -12 h to +14 h), a clock simply off by -14 h..+14 h,
  ``*`` unsynced and ``.`` lost-sync clocks, a clock that jumps, a router that reloads to
  ``*Mar  1 00:00:00`` 1993 and resyncs, uptime stamps, no stamp at all;
* header shapes: ``<PRI>`` or not, message counter, origin-id (name or IP), sequence
  numbers, msec, year, glued or spaced labels, ``KST:%TAG``; ASA with or without
  device-id, legacy, legacy-with-year or RFC 5424 stamps; relays (``<relay stamp>
  <relay host> <counter>: <device stamp>: %...``, host by name or IP, and RFC 5424 relays
  carrying the year);
* busy devices (30 lines/s of background for a rush window around their fault) and
  quiet ones, decoys (a single HMAC error, a transient invalid SPI around a re-key,
  healthy re-keys, a lone IKE message), long faults whose evidence keeps coming every
  20 s for longer than the quiet period (30 min), and one or two forged far-future or
  far-past stamps for some devices.

The archive is in true time order (what a syslog server writes); every truth time is
true UTC whatever the devices print. Nothing reads the wall clock: the same spec gives
byte-identical archives.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from load.scenario import SUPPORTED, parse_scenario
from load.synth import (
    ASA_FACILITY_BASE,
    IOS_FACILITY_BASE,
    MONTHS,
    Record,
    asa_line,
    generate,
)

QUIET_PERIOD_S: Final = 1800.0

#: Every clock class, and those an ASA can have (no ``*``/``.`` marks, no uptime stamps,
#: its clock survives a reload).
CLOCK_CLASSES: Final = (
    "utc",
    "utc_label",
    "zone_label",
    "wrong_label",
    "unknown_label",
    "local_bare",
    "offset",
    "unsynced",
    "lost_sync",
    "jump",
    "reload",
    "uptime",
    "stampless",
)
ASA_CLOCK_CLASSES: Final = ("utc", "local_bare", "offset", "jump", "stampless")
#: Classes whose device stamps say the true time once the printed label is read right.
HONEST_CLASSES: Final = frozenset({"utc", "utc_label", "zone_label"})
#: Classes that need the relay's stamp for any time at all: always relayed.
RELAY_ONLY: Final = frozenset({"uptime", "stampless"})

#: Zones whose abbreviations the parser's table knows with the right offset.
LABELLED_ZONES: Final = (
    "Europe/Paris",
    "Europe/London",
    "Europe/Athens",
    "Europe/Moscow",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
    "Asia/Seoul",
    "Asia/Tokyo",
    "Asia/Hong_Kong",
    "Australia/Sydney",
    "Pacific/Auckland",
)
#: Local time without a label: every offset from -12 h to +14 h, half and quarter hours.
BARE_ZONES: Final = (
    *LABELLED_ZONES,
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
    "Etc/GMT+12",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "America/St_Johns",
    "Pacific/Chatham",
)
#: Labels an admin may type in ``clock timezone`` that no table knows.
UNKNOWN_LABELS: Final = (
    ("Europe/Vienna", "VIENNA"),
    ("America/New_York", "NewYork"),
    ("Asia/Singapore", "SING"),
    ("Europe/Berlin", "Berlin"),
)
#: What a router whose clock runs UTC may claim (``clock timezone KST 0``).
WRONG_LABELS: Final = ("KST", "CET", "EST", "PST", "JST", "AEST")

#: Start times: plain days, DST changes inside the span (EU autumn and spring, US spring,
#: AU autumn), and a New Year's Eve.
STARTS: Final = (
    "2024-03-05T06:00:00+00:00",
    "2024-10-27T00:00:00+00:00",
    "2024-03-31T00:00:00+00:00",
    "2024-03-10T05:30:00+00:00",
    "2024-04-06T14:00:00+00:00",
    "2024-12-31T21:30:00+00:00",
)
RELOAD_EPOCH_MS: Final = round(datetime(1993, 3, 1, tzinfo=UTC).timestamp() * 1000)

#: Faults whose evidence can keep coming every 20 s (the duplicate trap), per device kind.
LONG_CAUSES: Final[Mapping[str, tuple[tuple[str, str], ...]]] = {
    "asa": (
        ("crypto_engine_fault", "402120"),
        ("qos_reordering", "402119"),
        ("fragmentation_mtu", "402118"),
        ("transform_set_mismatch", "proposals"),
        ("ike_policy_mismatch", "713257"),
        ("sa_out_of_sync", "402114"),
        ("crypto_acl_mismatch", "402116"),
        ("split_tunnel_misconfig", "713140"),
    ),
    "ios": (
        ("psk_mismatch", "ikmp_bad_message"),
        ("ike_policy_mismatch", "main_mode"),
        ("transform_set_mismatch", "quick_mode"),
        ("peer_address_mismatch", "no_psk"),
        ("local_address_misconfig", "validate_proposal"),
    ),
}


def _short_causes(kind: str) -> tuple[tuple[str, str], ...]:
    return tuple(
        (cause, variant)
        for cause, kinds in sorted(SUPPORTED.items())
        for variant in kinds.get(kind, {})
    )


# ---------------------------------------------------------------------------
# the spec


@dataclass(frozen=True, slots=True)
class Clock:
    """How one device's clock reads the true time.

    ``cls`` is one of :data:`CLOCK_CLASSES`. The device prints ``true + drift`` (``+
    jump_s`` from ``jump_at_ms`` on) in ``zone`` (UTC when None), labelled ``label`` or,
    with ``zone_label``, with the zone's own abbreviation of the moment (DST). A reload
    at ``reload_at_ms`` restarts the clock at ``*Mar  1 00:00:00`` 1993 (plus the boot
    time) until NTP sets it again ``resync_s`` later. ``boot_ms`` is the origin of uptime
    stamps.
    """

    cls: str
    drift_s: float = 0.0
    zone: str | None = None
    label: str | None = None
    zone_label: bool = False
    flag: str = ""
    jump_at_ms: int | None = None
    jump_s: float = 0.0
    reload_at_ms: int | None = None
    resync_s: float = 0.0
    boot_ms: int = 0


@dataclass(frozen=True, slots=True)
class Shape:
    """How one device's lines look on the archive.

    ``framing``: ``wire`` (``<PRI>`` then the device's message), ``bare`` (the device's
    message alone), ``relay`` (``Mmm dd hh:mm:ss HOST <message>``) or ``relay5424``
    (``<PRI>1 <ISO stamp with year> HOST - - - - <message>``); ``relay_by_ip`` names the
    device by its management IP on relay lines. IOS: ``counter``, ``origin`` (``name``,
    ``ip`` or None), ``seqno``, ``msec``, ``year``, ``tz_glued``, ``tag_space``. ASA:
    ``asa_stamp`` (``legacy``, ``legacy_year``, ``rfc5424``) and ``origin`` (device-id).
    """

    framing: str = "wire"
    relay_by_ip: bool = False
    counter: bool = True
    origin: str | None = "name"
    seqno: bool = False
    msec: bool = True
    year: bool = False
    tz_glued: bool = False
    tag_space: bool = True
    asa_stamp: str = "legacy"

    @property
    def relayed(self) -> bool:
        return self.framing in ("relay", "relay5424")

    def describe(self, kind: str) -> str:
        parts = [self.framing + ("(ip)" if self.relay_by_ip and self.relayed else "")]
        if kind == "asa":
            parts.append(self.asa_stamp)
            parts.append(f"id={self.origin or '-'}")
        else:
            parts += [
                f"origin={self.origin or '-'}",
                *(["counter"] if self.counter else []),
                *(["seqno"] if self.seqno else []),
                *(["msec"] if self.msec else []),
                *(["year"] if self.year else []),
                *(["glued"] if self.tz_glued else []),
                *(["nospace"] if not self.tag_space else []),
            ]
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Forgery:
    """One line with a forged or broken stamp (``when``: ``future`` 2099 or ``past``
    2001), sent for ``device`` at true time ``at_ms``."""

    device: str
    at_ms: int
    when: str


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """The knobs of a fleet. Everything not given is drawn from ``seed``.

    ``clocks`` weighs the clock classes (default: all alike); ``pin`` fixes the clock of
    named devices; ``shift`` adds seconds to named devices' drift (after the draw, so the
    rest of the fleet stays byte-identical); ``silent`` names devices that log nothing
    after their fault's last line; ``forge`` adds forged lines on top of the ``forged``
    drawn ones.
    """

    seed: int = 0
    devices: int = 120
    asa_share: float = 0.4
    hours: float = 3.0
    start: str | None = None
    faults: int | None = None  # default: a quarter of the devices
    long_share: float = 0.4
    decoys: int | None = None  # default: an eighth of the devices
    busy: int = 2
    busy_rate: float = 30.0
    busy_minutes: float | None = 30.0  # None: busy for the whole span
    quiet_per_min: float = 0.5
    relay_share: float = 0.5
    forged: int = 2
    clocks: Mapping[str, float] | None = None
    pin: Mapping[str, Clock] = field(default_factory=dict)
    shift: Mapping[str, float] = field(default_factory=dict)
    silent: frozenset[str] = frozenset()
    forge: tuple[Forgery, ...] = ()
    #: Let a device's own clock step (a jump, a reload, DST on an unlabelled local clock)
    #: inside its own faults; by default steps fall outside them, so that a split incident
    #: is the fleet clock's doing.
    self_jumps: bool = False


# ---------------------------------------------------------------------------
# the result


@dataclass(frozen=True, slots=True)
class FleetDevice:
    name: str
    ip: str
    kind: str  # ios | asa
    clock: Clock
    shape: Shape
    busy: bool
    forged: tuple[str, ...]  # "future"/"past" of its forged lines

    @property
    def aliases(self) -> frozenset[str]:
        return frozenset({self.name, self.ip})


@dataclass(frozen=True, slots=True)
class FleetFault:
    """Ground truth of one injected fault, in true UTC."""

    id: str
    device: str
    device_ip: str
    kind: str
    peer: str | None
    cause: str
    variant: str
    first_at: str
    last_at: str
    lines: int
    long: bool
    clock: str
    relayed: bool
    busy: bool
    forged: bool
    shape: str  # Shape.describe(): how its lines look

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "device": self.device,
            "device_ip": self.device_ip,
            "kind": self.kind,
            "peer": self.peer,
            "cause": self.cause,
            "variant": self.variant,
            "first_line_at": self.first_at,
            "last_line_at": self.last_at,
            "lines": self.lines,
            "long": self.long,
            "clock": self.clock,
            "relayed": self.relayed,
            "busy": self.busy,
            "forged": self.forged,
            "shape": self.shape,
        }


@dataclass(frozen=True, slots=True)
class FleetDecoy:
    id: str
    kind: str
    device: str
    device_ip: str
    peer: str | None


@dataclass(frozen=True, slots=True)
class Line:
    """One archive line: its true time, device and what it is (``background``,
    ``rekey``, ``fault``, ``decoy`` or ``forged``)."""

    time_ms: int
    device: str
    text: str
    origin: str
    ref: str | None


@dataclass
class Fleet:
    spec: FleetSpec
    start: datetime
    end_ms: int
    devices: list[FleetDevice]
    truth: list[FleetFault]
    decoys: list[FleetDecoy]
    lines: list[Line]

    def device(self, name: str) -> FleetDevice:
        for dev in self.devices:
            if dev.name == name:
                return dev
        raise KeyError(name)

    def text(self) -> str:
        return "".join(line.text + "\n" for line in self.lines)

    def write(self, path: str | Path) -> Path:
        """Write the archive, ``<path>.truth.jsonl`` and ``<path>.decoys.jsonl``; the
        archive's modification time is a minute after its last line (a rotated file)."""
        path = Path(path)
        path.write_text(self.text(), encoding="utf-8")
        rows = "".join(json.dumps(t.to_json(), separators=(",", ":")) + "\n" for t in self.truth)
        Path(f"{path}.truth.jsonl").write_text(rows, encoding="utf-8")
        decoys = "".join(
            json.dumps(
                {"id": d.id, "kind": d.kind, "device": d.device, "peer": d.peer},
                separators=(",", ":"),
            )
            + "\n"
            for d in self.decoys
        )
        Path(f"{path}.decoys.jsonl").write_text(decoys, encoding="utf-8")
        mtime = self.end_ms / 1000 + 60
        os.utime(path, (mtime, mtime))
        return path


# ---------------------------------------------------------------------------
# clocks and rendering


def _civil(local_ms: int) -> tuple[int, int, int, int, int, int, int]:
    """(year, month, day, hh, mm, ss, ms) of a millisecond count read as UTC."""
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=local_ms)
    return dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second, local_ms % 1000


class _ZoneCache:
    """Offset and abbreviation of a zone per quarter hour (every DST change falls on one)."""

    def __init__(self, zone: str | None) -> None:
        self.zone = ZoneInfo(zone) if zone else None
        self.cache: dict[int, tuple[int, str]] = {}

    def at(self, t_ms: int) -> tuple[int, str]:
        if self.zone is None:
            return 0, "UTC"
        key = t_ms // 900_000
        got = self.cache.get(key)
        if got is None:
            dt = datetime.fromtimestamp(key * 900, tz=self.zone)
            off = dt.utcoffset()
            got = (round(off.total_seconds() * 1000) if off else 0, dt.tzname() or "")
            self.cache[key] = got
        return got


def _uptime(seconds: int) -> str:
    """IOS uptime stamps: ``00:12:34`` under a day, ``1d02h`` under a week, ``2w3d``."""
    if seconds < 86_400:
        return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    days, rest = divmod(seconds, 86_400)
    if days < 7:
        return f"{days}d{rest // 3600:02d}h"
    return f"{days // 7}w{days % 7}d"


class _Renderer:
    """Writes one device's lines: relay prefix, header, the device's clock."""

    def __init__(self, dev: FleetDevice, rng: random.Random) -> None:
        self.dev = dev
        self.clock = dev.clock
        self.shape = dev.shape
        self.zone = _ZoneCache(dev.clock.zone)
        self.pri_base = ASA_FACILITY_BASE if dev.kind == "asa" else IOS_FACILITY_BASE
        self.counter = rng.randint(1000, 900_000)
        self.seqno = rng.randint(100, 900_000)
        self.origin = {"name": dev.name, "ip": dev.ip, None: None}[dev.shape.origin]
        self.host = dev.ip if dev.shape.relay_by_ip else dev.name

    # -- the clock -----------------------------------------------------------------

    def reading(self, t_ms: int) -> tuple[str, int, str | None, str]:
        """``(mode, local_ms, label, flag)``: mode ``stamp`` (``local_ms`` read as UTC
        gives the printed civil time), ``uptime`` (``local_ms`` is the uptime) or
        ``none``."""
        c = self.clock
        if c.cls == "stampless":
            return "none", 0, None, ""
        if c.cls == "uptime":
            return "uptime", t_ms - c.boot_ms, None, ""
        t = t_ms + round(c.drift_s * 1000)
        if c.jump_at_ms is not None and t_ms >= c.jump_at_ms:
            t += round(c.jump_s * 1000)
        off, abbrev = self.zone.at(t)
        label = abbrev if c.zone_label else c.label
        if c.reload_at_ms is not None and c.reload_at_ms <= t_ms < c.reload_at_ms + round(
            c.resync_s * 1000
        ):
            return "stamp", RELOAD_EPOCH_MS + 45_000 + (t_ms - c.reload_at_ms), label, "*"
        return "stamp", t + off, label, c.flag

    # -- lines ---------------------------------------------------------------------

    def _relay(self, t_ms: int, pri: int) -> str:
        sh = self.shape
        if sh.framing == "relay":
            y, mo, d, hh, mi, ss, _ = _civil(t_ms)
            return f"{MONTHS[mo - 1]} {d:2d} {hh:02d}:{mi:02d}:{ss:02d} {self.host} "
        if sh.framing == "relay5424":
            y, mo, d, hh, mi, ss, ms = _civil(t_ms)
            return (
                f"<{pri}>1 {y:04d}-{mo:02d}-{d:02d}T{hh:02d}:{mi:02d}:{ss:02d}.{ms:03d}000+00:00 "
                f"{self.host} - - - - "
            )
        if sh.framing == "wire":
            return f"<{pri}>"
        return ""

    def render(
        self, t_ms: int, sev: int, tag: str | None, text: str, forged_ms: int | None = None
    ) -> str:
        """One line at true time ``t_ms``; ``forged_ms`` replaces the device's stamp with
        one (with its year) at that instant."""
        pri = self.pri_base + sev
        head = self._relay(t_ms, pri)
        msg = text if tag is None else f"%{tag}: {text}"
        if forged_ms is not None:
            mode, local, label, flag = "stamp", forged_ms, None, ""
        else:
            mode, local, label, flag = self.reading(t_ms)
        sh = self.shape
        if forged_ms is None:  # a forged line is not the device's: its counters stay
            self.counter += 1
            self.seqno += 1
        if self.dev.kind == "asa":
            stamp = ""
            if mode == "stamp":
                y, mo, d, hh, mi, ss, _ = _civil(local)
                kind = "legacy_year" if forged_ms is not None else sh.asa_stamp
                if kind == "rfc5424":
                    stamp = f"{y:04d}-{mo:02d}-{d:02d}T{hh:02d}:{mi:02d}:{ss:02d}Z"
                elif kind == "legacy_year":
                    stamp = f"{MONTHS[mo - 1]} {d:02d} {y:04d} {hh:02d}:{mi:02d}:{ss:02d}"
                else:
                    stamp = f"{MONTHS[mo - 1]} {d:02d} {hh:02d}:{mi:02d}:{ss:02d}"
            return asa_line(head, stamp, self.origin, msg)
        parts = [head]
        if sh.counter:
            parts.append(f"{self.counter}: ")
        elif sh.framing == "wire":
            parts.append(": ")
        if self.origin:
            parts.append(f"{self.origin}: ")
        if sh.seqno:
            parts.append(f"{self.seqno:06d}: ")
        if mode == "stamp":
            y, mo, d, hh, mi, ss, ms = _civil(local)
            year = sh.year or forged_ms is not None
            parts.append(f"{flag}{MONTHS[mo - 1]} {d:2d} ")
            if year:
                parts.append(f"{y:04d} ")
            parts.append(f"{hh:02d}:{mi:02d}:{ss:02d}")
            if sh.msec:
                parts.append(f".{ms:03d}")
            if label:
                parts.append(label if sh.tz_glued else " " + label)
            parts.append(": " if sh.tag_space else ":")
        elif mode == "uptime":
            parts.append(_uptime(max(0, local // 1000)) + ": ")
        parts.append(msg)
        return "".join(parts)


# ---------------------------------------------------------------------------
# drawing the fleet


def _net(base: str, index: int, prefix: int) -> ipaddress.IPv4Network:
    size = 1 << (32 - prefix)
    return ipaddress.IPv4Network((int(ipaddress.IPv4Address(base)) + index * size, prefix))


def _outside(
    rng: random.Random, lo: int, hi: int, avoid: list[tuple[int, int]], before: int
) -> int:
    """A time in [lo, hi] such that [t, t + before] misses every window of ``avoid``
    (the latest free time, or ``lo``, when random picks keep failing)."""
    for _ in range(60):
        t = rng.randint(lo, hi)
        if all(not (a - before <= t <= b) for a, b in avoid):
            return t
    free = [b + 1 for _, b in avoid if lo <= b + 1 <= hi]
    return max(free) if free else lo


def _steady(zone: str, avoid: list[tuple[int, int]]) -> bool:
    """Whether ``zone`` keeps one offset over every window of ``avoid`` (no DST change)."""
    cache = _ZoneCache(zone)
    return all(cache.at(a)[0] == cache.at(b)[0] for a, b in avoid)


def _draw_clock(
    rng: random.Random, cls: str, start_ms: int, span_ms: int, avoid: list[tuple[int, int]]
) -> Clock:
    if cls == "utc":
        return Clock(cls)
    if cls == "utc_label":
        return Clock(cls, label="UTC")
    if cls == "zone_label":
        return Clock(cls, zone=rng.choice(LABELLED_ZONES), zone_label=True)
    if cls == "wrong_label":
        return Clock(cls, label=rng.choice(WRONG_LABELS))
    if cls == "unknown_label":
        zone, label = rng.choice([z for z in UNKNOWN_LABELS if _steady(z[0], avoid)])
        return Clock(cls, zone=zone, label=label)
    if cls == "local_bare":
        return Clock(cls, zone=rng.choice([z for z in BARE_ZONES if _steady(z, avoid)]))
    if cls == "offset":
        return Clock(
            cls, drift_s=rng.randint(-14 * 3600, 14 * 3600), label=rng.choice((None, "UTC"))
        )
    if cls == "unsynced":
        drift = rng.choice((-1, 1)) * rng.randint(60, 14 * 3600)
        return Clock(cls, drift_s=drift, flag="*", label=rng.choice((None, "UTC")))
    if cls == "lost_sync":
        return Clock(cls, drift_s=rng.randint(-600, 600), flag=".")
    if cls == "jump":
        at = _outside(rng, start_ms + span_ms // 5, start_ms + span_ms * 4 // 5, avoid, 0)
        step = rng.choice((-1, 1)) * rng.randint(3600, 14 * 3600)
        if rng.random() < 0.5:  # NTP corrects a clock that was off
            return Clock(
                cls, drift_s=-step, jump_at_ms=at, jump_s=step, label=rng.choice((None, "UTC"))
            )
        return Clock(cls, jump_at_ms=at, jump_s=step, label=rng.choice((None, "UTC")))
    if cls == "reload":
        resync = rng.randint(300, 1200)
        lo, hi = start_ms + span_ms // 20, start_ms + span_ms * 9 // 10
        at = _outside(rng, lo, hi, avoid, resync * 1000)
        base = Clock(cls, reload_at_ms=at, resync_s=resync)
        if rng.random() < 0.5:
            return replace(base, zone=rng.choice(LABELLED_ZONES), zone_label=True)
        return replace(base, label=rng.choice((None, "UTC")))
    if cls == "uptime":
        return Clock(cls, boot_ms=start_ms - rng.randint(60, 40 * 86_400) * 1000)
    if cls == "stampless":
        return Clock(cls)
    raise ValueError(f"unknown clock class {cls!r}")


def _draw_shape(rng: random.Random, kind: str, cls: str, relayed: bool) -> Shape:
    framing = rng.choice(("relay", "relay5424")) if relayed else rng.choice(("wire", "bare"))
    if kind == "asa":
        stamp = rng.choice(("legacy", "legacy_year", "rfc5424"))
        if cls == "local_bare" and stamp == "rfc5424":
            stamp = "legacy_year"  # RFC 5424 stamps carry Z: UTC
        origin = rng.choice(("name", "ip", None)) if relayed else rng.choice(("name", "ip"))
        return Shape(
            framing=framing, relay_by_ip=rng.random() < 0.4, origin=origin, asa_stamp=stamp
        )
    origin = rng.choice(("name", "ip", None)) if relayed else rng.choice(("name", "ip"))
    return Shape(
        framing=framing,
        relay_by_ip=rng.random() < 0.4,
        counter=rng.random() < 0.7,
        origin=origin,
        seqno=rng.random() < 0.3,
        # An unknown label is only read as one after msec, a mark or a counter.
        msec=cls == "unknown_label" or rng.random() < 0.7,
        year=rng.random() < 0.3,
        tz_glued=rng.random() < 0.3,
        tag_space=rng.random() < 0.85,
    )


_SCENARIO_STYLE: Final = {
    "ios": {"framing": "wire", "message_counter": False, "origin_id": "hostname", "year": True},
    "asa": {"framing": "wire", "timestamp": "legacy_year", "device_id": "hostname"},
}


def _fleet_entry(dev: FleetDevice, index: int) -> dict[str, object]:
    return {
        "kind": dev.kind,
        "count": 1,
        "hostname": dev.name,
        "mgmt_net": str(_net("10.20.0.0", index, 30)),
        "outside_net": str(_net("172.16.0.0", index, 30)),
        "peer_net": str(_net("100.64.0.0", index, 30)),
        "peers_per_device": 2,
        "styles": [_SCENARIO_STYLE[dev.kind]],
    }


def _split(rec: Record, kind: str) -> tuple[int, str | None, str]:
    """(severity, tag, text) of a line synth wrote in :data:`_SCENARIO_STYLE`."""
    line = rec.line
    close = line.index(">")
    pri = int(line[1:close])
    sev = pri - (ASA_FACILITY_BASE if kind == "asa" else IOS_FACILITY_BASE)
    # ASA: <PRI>Mmm dd yyyy hh:mm:ss name : message; IOS: <PRI>: name: stamp: message
    asa = kind == "asa"
    body = line[line.index(" : ") + 3 :] if asa else line[close + 3 :].split(": ", 2)[2]
    if body.startswith("%"):
        colon = body.index(": ")
        return sev, body[1:colon], body[colon + 2 :]
    return sev, None, body


_FORGED_TEXT: Final = {
    "ios": (
        5,
        "SYS-6-CLOCKUPDATE",
        "System clock has been updated, configured from console by admin on vty0 (10.99.0.7).",
    ),
    "asa": (5, "ASA-5-111008", "User 'enable_15' executed the 'clock set' command."),
}


@dataclass
class _Plan:
    """What is drawn before the clocks: devices, faults and decoys (cheap)."""

    rng: random.Random
    start: datetime
    start_ms: int
    span_s: int
    span_ms: int
    kinds: list[str]
    names: list[str]
    ips: list[str]
    faulty: list[int]
    calm: list[int]
    fault_rows: list[dict[str, object]]
    fault_window: dict[int, tuple[int, int]]
    long_ids: set[str]
    decoy_rows: list[dict[str, object]]


def _plan(spec: FleetSpec) -> _Plan:
    rng = random.Random(f"fleet:{spec.seed}")
    start = datetime.fromisoformat(spec.start or rng.choice(STARTS)).astimezone(UTC)
    start_ms = round(start.timestamp() * 1000)
    span_s = round(spec.hours * 3600)
    span_ms = span_s * 1000
    n = spec.devices
    n_asa = round(n * spec.asa_share)
    kinds = ["asa"] * n_asa + ["ios"] * (n - n_asa)
    rng.shuffle(kinds)
    names = [f"{'fw' if k == 'asa' else 'rtr'}-{i + 1:03d}" for i, k in enumerate(kinds)]
    ips = [str(_net("10.20.0.0", i, 30).network_address + 1) for i in range(n)]

    # -- faults: one per faulty device, each (device, cause, peer) once --------------
    n_faults = min(n, spec.faults if spec.faults is not None else max(1, n // 4))
    order = list(range(n))
    rng.shuffle(order)
    faulty = order[:n_faults]
    fault_rows: list[dict[str, object]] = []
    fault_window: dict[int, tuple[int, int]] = {}
    long_ids: set[str] = set()
    for k, i in enumerate(faulty):
        kind = kinds[i]
        long = rng.random() < spec.long_share
        if long:
            cause, variant = rng.choice(LONG_CAUSES[kind])
            duration = rng.randint(35 * 60, min(75 * 60, max(35 * 60, span_s - 50 * 60)))
        else:
            cause, variant = rng.choice(_short_causes(kind))
            duration = rng.randint(8 * 60, 20 * 60)
        latest = span_s - duration - 40 * 60
        at = rng.randint(min(10 * 60, max(0, latest)), max(10 * 60, latest))
        fid = f"F{k + 1:03d}"
        row: dict[str, object] = {
            "id": fid,
            "cause": cause,
            "device": names[i],
            "peer": rng.randint(0, 1),
            "at": at,
            "duration": duration,
            "variant": variant,
        }
        options: dict[str, object] = {}
        if long:
            options["interval"] = 20
            long_ids.add(fid)
        if cause == "peer_address_mismatch":
            # Its peer-less "No Cert" lines open an incident of their own (issue 9, item
            # 3, debug captures): left out so that these fleets measure the clocks.
            options["no_cert_line"] = False
        if options:
            row["options"] = options
        fault_rows.append(row)
        fault_window[i] = (start_ms + at * 1000, start_ms + (at + duration) * 1000)

    # -- decoys on devices without a fault -------------------------------------------
    n_decoys = spec.decoys if spec.decoys is not None else max(1, n // 8)
    calm = order[n_faults:]
    decoy_rows: list[dict[str, object]] = []
    for k in range(min(n_decoys, len(calm))):
        i = calm[k]
        decoy_kinds = ["isolated_hmac", "rekey_inv_spi"]
        decoy_kinds.append("healthy_rekey" if kinds[i] == "asa" else "lone_ikmp_no_sa")
        decoy_rows.append(
            {
                "id": f"D{k + 1:03d}",
                "kind": rng.choice(decoy_kinds),
                "device": names[i],
                "peer": rng.randint(0, 1),
                "at": rng.randint(5 * 60, span_s - 10 * 60),
            }
        )

    return _Plan(
        rng, start, start_ms, span_s, span_ms, kinds, names, ips, faulty, calm,
        fault_rows, fault_window, long_ids, decoy_rows,
    )  # fmt: skip


def planned_faults(spec: FleetSpec) -> list[tuple[str, str, str, bool]]:
    """``(fault id, device, cause, long)`` of every fault ``spec`` plants, without
    rendering anything (to pick a device to pin or shift before building)."""
    p = _plan(spec)
    return [
        (str(r["id"]), str(r["device"]), str(r["cause"]), str(r["id"]) in p.long_ids)
        for r in p.fault_rows
    ]


def build_fleet(spec: FleetSpec) -> Fleet:
    """Draw and render the fleet of ``spec`` (deterministic in ``spec``)."""
    p = _plan(spec)
    rng, start, start_ms, span_s, span_ms = p.rng, p.start, p.start_ms, p.span_s, p.span_ms
    kinds, names, ips, faulty, calm = p.kinds, p.names, p.ips, p.faulty, p.calm
    fault_rows, fault_window, long_ids = p.fault_rows, p.fault_window, p.long_ids
    decoy_rows = p.decoy_rows
    n = spec.devices

    # -- clocks, shapes, busy, forged --------------------------------------------------
    weights = dict(spec.clocks) if spec.clocks else dict.fromkeys(CLOCK_CLASSES, 1.0)
    devices: list[FleetDevice] = []
    ios_classes = [c for c in CLOCK_CLASSES if weights.get(c, 0) > 0]
    asa_classes = [c for c in ASA_CLOCK_CLASSES if weights.get(c, 0) > 0] or ["utc"]
    busy_pool = sorted(
        (i for i in faulty if kinds[i] == "asa"),
        key=lambda i: (fault_rows[faulty.index(i)]["id"] not in long_ids, i),
    )
    busy_pool += [i for i in faulty if i not in busy_pool] + calm
    busy = set(busy_pool[: spec.busy])
    forged_pool = [i for i in faulty if i not in busy] + calm
    forged_devs = forged_pool[: spec.forged]
    forgeries: list[Forgery] = list(spec.forge)
    for k, i in enumerate(forged_devs):
        first = fault_window[i][0] if i in fault_window else start_ms + span_ms // 2
        when = "future" if k % 2 == 0 else rng.choice(("future", "past"))
        for _ in range(rng.randint(1, 2)):
            lo = start_ms + 2 * 60_000
            at = rng.randint(lo, max(lo, first - 60_000))
            forgeries.append(Forgery(names[i], at, when))
    forged_by: dict[str, list[str]] = defaultdict(list)
    for fg in forgeries:
        forged_by[fg.device].append(fg.when)
    for i in range(n):
        kind = kinds[i]
        classes = asa_classes if kind == "asa" else ios_classes
        cls = rng.choices(classes, [weights.get(c, 0.0) or 1.0 for c in classes])[0]
        avoid = []
        if i in fault_window and not spec.self_jumps:
            a, b = fault_window[i]
            avoid.append((a - 10 * 60_000, b + 35 * 60_000))
        clock = spec.pin.get(names[i]) or _draw_clock(rng, cls, start_ms, span_ms, avoid)
        if names[i] in spec.shift:
            clock = replace(clock, drift_s=clock.drift_s + spec.shift[names[i]])
        relayed = clock.cls in RELAY_ONLY or i in busy or rng.random() < spec.relay_share
        shape = _draw_shape(rng, kind, clock.cls, relayed)
        devices.append(
            FleetDevice(names[i], ips[i], kind, clock, shape, i in busy, tuple(forged_by[names[i]]))
        )

    # -- message texts from load.synth ------------------------------------------------
    scenario = parse_scenario(
        {
            "name": f"fleet-{spec.seed}",
            "start": start.isoformat(),
            "duration": span_s,
            "fleets": [_fleet_entry(d, i) for i, d in enumerate(devices)],
            "faults": fault_rows,
            "decoys": decoy_rows,
        }
    )
    quiet = round(spec.quiet_per_min * n * span_s / 60)
    # Planning is cheap next to rendering: plan once to learn how many lines the
    # faults, decoys and re-keys take, then again with the background on top.
    probe = generate(scenario, lines=1 << 40, seed=spec.seed)
    main = generate(scenario, lines=probe.scheduled_lines + quiet, seed=spec.seed)
    kind_of = {d.name: d.kind for d in devices}
    records: list[tuple[int, int, Record]] = [(r.time_ms, 0, r) for r in main.records()]
    for b, i in enumerate(sorted(busy)):
        dev = devices[i]
        if spec.busy_minutes is None:
            w0, w_s = start_ms, span_s
        else:
            w_s = round(spec.busy_minutes * 60)
            first = fault_window.get(i, (start_ms + span_ms // 3, 0))[0]
            w0 = max(start_ms, min(first - 10 * 60_000, start_ms + span_ms - w_s * 1000))
        rush = parse_scenario(
            {
                "name": f"rush-{dev.name}",
                "start": datetime.fromtimestamp(w0 / 1000, UTC).isoformat(),
                "duration": w_s,
                "rekey": {"phase1_lifetime": "9999h", "phase2_lifetime": "9999h"},
                "fleets": [_fleet_entry(dev, i)],
            }
        )
        lines = round(spec.busy_rate * w_s)
        for r in generate(rush, lines=lines, seed=spec.seed * 1000 + b).records():
            if r.origin == "background":
                records.append((r.time_ms, 1 + b, r))
    records.sort(key=lambda x: (x[0], x[1]))

    # -- render through each device's clock ---------------------------------------------
    render_rng = random.Random(f"render:{spec.seed}")
    renderers = {d.name: _Renderer(d, render_rng) for d in devices}
    silent_after = {
        str(row["device"]): fault_window[names.index(str(row["device"]))][1]
        for row in fault_rows
        if row["device"] in spec.silent
    }
    truth_last: dict[str, int] = {}
    for r in (x[2] for x in records):
        if r.origin == "fault" and r.ref is not None:
            truth_last[r.device] = max(truth_last.get(r.device, 0), r.time_ms)
    for name in silent_after:
        silent_after[name] = truth_last.get(name, silent_after[name])
    forged_at = sorted(forgeries, key=lambda f: f.at_ms)
    out: list[Line] = []
    fi = 0
    for t, _, r in records:
        while fi < len(forged_at) and forged_at[fi].at_ms <= t:
            out.append(_forged_line(forged_at[fi], renderers[forged_at[fi].device], kind_of))
            fi += 1
        stop = silent_after.get(r.device)
        if stop is not None and t > stop:
            continue
        sev, tag, text = _split(r, kind_of[r.device])
        out.append(
            Line(t, r.device, renderers[r.device].render(t, sev, tag, text), r.origin, r.ref)
        )
    for fg in forged_at[fi:]:
        out.append(_forged_line(fg, renderers[fg.device], kind_of))

    by_name = {d.name: d for d in devices}
    truth = []
    for tf in main.ground_truth:
        dev = by_name[tf.device]
        truth.append(
            FleetFault(
                id=tf.id,
                device=tf.device,
                device_ip=dev.ip,
                kind=tf.kind,
                peer=tf.peer,
                cause=tf.cause,
                variant=tf.variant,
                first_at=tf.first_line_at,
                last_at=tf.last_line_at,
                lines=tf.lines,
                long=tf.id in long_ids,
                clock=dev.clock.cls,
                relayed=dev.shape.relayed,
                busy=dev.busy,
                forged=bool(dev.forged),
                shape=dev.shape.describe(dev.kind),
            )
        )
    decoys = [FleetDecoy(d.id, d.kind, d.device, by_name[d.device].ip, d.peer) for d in main.decoys]
    return Fleet(spec, start, start_ms + span_ms, devices, truth, decoys, out)


def _forged_line(fg: Forgery, renderer: _Renderer, kind_of: Mapping[str, str]) -> Line:
    y = 2099 if fg.when == "future" else 2001
    true = datetime.fromtimestamp(fg.at_ms / 1000, UTC)
    fake = true.replace(year=y, day=min(true.day, 28))
    fake_ms = round(fake.timestamp() * 1000)
    sev, tag, text = _FORGED_TEXT[kind_of[fg.device]]
    return Line(
        fg.at_ms, fg.device, renderer.render(fg.at_ms, sev, tag, text, fake_ms), "forged", None
    )


# ---------------------------------------------------------------------------
# analyze and score


def analyze_file(
    path: str | Path, *, native: str | None = None, year: int | None = None
) -> tuple[list[dict[str, Any]], str]:
    """The incidents ``tunnelwatch analyze`` gives for ``path`` (its own code path, in
    process) and which path read the lines; ``native``: ``"0"``/``"1"`` forces it."""
    from streams.cli.analyze import analyze_with_path
    from streams.core import native as native_mod

    old = os.environ.get(native_mod.ENV)
    if native is not None:
        os.environ[native_mod.ENV] = native
    try:
        args = argparse.Namespace(files=[str(path)], year=year, device=None)
        records, _, used = analyze_with_path(args)
    finally:
        if native is not None:
            if old is None:
                del os.environ[native_mod.ENV]
            else:
                os.environ[native_mod.ENV] = old
    return records, used


@dataclass
class ClassScore:
    devices: int = 0
    faults: int = 0
    found: int = 0
    duplicated: int = 0  # faults raised more than once
    extra: int = 0  # incidents beyond the first for those faults
    false_positives: int = 0


@dataclass
class Score:
    faults: int
    found: int
    incidents: int
    matching: int
    duplicates: int  # incidents beyond the first of a fault
    missed: list[FleetFault]
    duplicated: list[tuple[FleetFault, list[dict[str, Any]]]]
    false_positives: list[dict[str, Any]]
    decoy_hits: list[dict[str, Any]]
    by_class: dict[str, ClassScore]

    @property
    def recall(self) -> float:
        return self.found / self.faults if self.faults else 1.0

    @property
    def precision(self) -> float:
        """Incidents that belong to a fault, over all incidents (a duplicate belongs to
        its fault: duplicates are counted on their own)."""
        return self.matching / self.incidents if self.incidents else 1.0

    @property
    def duplicate_rate(self) -> float:
        return self.duplicates / self.matching if self.matching else 0.0


def matches(inc: Mapping[str, Any], t: FleetFault) -> bool:
    """Same device (by name or IP), same cause, and the fault's peer when its lines show one."""
    return (
        inc.get("device") in (t.device, t.device_ip)
        and inc.get("cause") == t.cause
        and (t.peer is None or inc.get("peer") == t.peer)
    )


def score(fleet: Fleet, incidents: Sequence[Mapping[str, Any]]) -> Score:
    by_fault: dict[str, list[dict[str, Any]]] = defaultdict(list)
    fps: list[dict[str, Any]] = []
    for inc in incidents:
        hit = next((t for t in fleet.truth if matches(inc, t)), None)
        if hit is None:
            fps.append(dict(inc))
        else:
            by_fault[hit.id].append(dict(inc))
    by_class: dict[str, ClassScore] = defaultdict(ClassScore)
    owner: dict[str, str] = {}
    for dev in fleet.devices:
        by_class[dev.clock.cls].devices += 1
        owner[dev.name] = owner[dev.ip] = dev.clock.cls
    missed = []
    duplicated = []
    for t in fleet.truth:
        cs = by_class[t.clock]
        cs.faults += 1
        got = by_fault.get(t.id, [])
        if got:
            cs.found += 1
        else:
            missed.append(t)
        if len(got) > 1:
            cs.duplicated += 1
            cs.extra += len(got) - 1
            duplicated.append((t, sorted(got, key=lambda r: str(r["first_seen"]))))
    for inc in fps:
        cls = owner.get(str(inc.get("device")))
        if cls is not None:
            by_class[cls].false_positives += 1
    decoy_hits = [
        inc
        for inc in fps
        if any(inc.get("device") in (d.device, d.device_ip) for d in fleet.decoys)
    ]
    matching = sum(len(v) for v in by_fault.values())
    return Score(
        faults=len(fleet.truth),
        found=len(fleet.truth) - len(missed),
        incidents=len(incidents),
        matching=matching,
        duplicates=sum(len(v) - 1 for v in by_fault.values()),
        missed=missed,
        duplicated=duplicated,
        false_positives=fps,
        decoy_hits=decoy_hits,
        by_class=dict(by_class),
    )


def score_table(s: Score, title: str = "") -> str:
    """recall / precision / duplicates, then one row per clock class."""
    out = []
    if title:
        out.append(title)
    out.append(
        f"faults={s.faults} found={s.found} recall={s.recall:.3f} incidents={s.incidents} "
        f"precision={s.precision:.3f} duplicates={s.duplicates} "
        f"(rate {s.duplicate_rate:.1%} of matching incidents) false_positives="
        f"{len(s.false_positives)} decoy_hits={len(s.decoy_hits)}"
    )
    out.append(
        f"{'clock class':<14}{'devices':>8}{'faults':>8}{'found':>7}{'dup':>5}{'extra':>7}{'fp':>5}"
    )
    for cls in CLOCK_CLASSES:
        cs = s.by_class.get(cls)
        if cs is None:
            continue
        out.append(
            f"{cls:<14}{cs.devices:>8}{cs.faults:>8}{cs.found:>7}{cs.duplicated:>5}"
            f"{cs.extra:>7}{cs.false_positives:>5}"
        )
    for t in s.missed:
        out.append(
            f"missed     {t.id} {t.device} {t.cause} peer={t.peer} clock={t.clock} "
            f"forged={t.forged} long={t.long} [{t.shape}]"
        )
    for t, incs in s.duplicated:
        spans = ", ".join(f"{i['first_seen']}..{i['resolved_at'] or i['last_seen']}" for i in incs)
        out.append(
            f"duplicated {t.id} {t.device} {t.cause} clock={t.clock} long={t.long} "
            f"[{t.shape}]: {spans}"
        )
    for inc in s.false_positives:
        out.append(f"extra      {inc.get('device')} {inc.get('cause')} peer={inc.get('peer')}")
    return "\n".join(out)


def main(argv: Iterable[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.fleetgen", description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, action="append", help="repeat for several fleets")
    p.add_argument("--devices", type=int, default=120)
    p.add_argument("--hours", type=float, default=3.0)
    p.add_argument("--busy", type=int, default=2)
    p.add_argument("--busy-minutes", type=float, default=20.0, help="0: busy all along")
    p.add_argument("--forged", type=int, default=2)
    p.add_argument("--quiet-per-min", type=float, default=0.5, help="background of quiet devices")
    p.add_argument("--start", help="ISO 8601 start (default: drawn from the seed)")
    p.add_argument(
        "--self-jumps", action="store_true", help="let devices' own clocks step inside their faults"
    )
    p.add_argument("--native", choices=("0", "1"), help="force the analyze path")
    p.add_argument("--out", type=Path, help="keep the archives and truth here")
    args = p.parse_args(list(argv) if argv is not None else None)
    totals = Counter[str]()
    for seed in args.seed or [0]:
        spec = FleetSpec(
            seed=seed,
            devices=args.devices,
            hours=args.hours,
            busy=args.busy,
            busy_minutes=args.busy_minutes or None,
            forged=args.forged,
            quiet_per_min=args.quiet_per_min,
            start=args.start,
            self_jumps=args.self_jumps,
        )
        fleet = build_fleet(spec)
        with tempfile.TemporaryDirectory() as tmp:
            where = args.out or Path(tmp)
            where.mkdir(parents=True, exist_ok=True)
            path = fleet.write(where / f"fleet-{seed}.log")
            incidents, used = analyze_file(path, native=args.native)
        s = score(fleet, incidents)
        title = (
            f"== seed {seed}: {len(fleet.devices)} devices, {len(fleet.lines)} lines from "
            f"{fleet.start.isoformat()} over {spec.hours} h, path={used}"
        )
        print(score_table(s, title))
        totals.update(
            faults=s.faults, found=s.found, incidents=s.incidents, matching=s.matching,
            duplicates=s.duplicates, false_positives=len(s.false_positives),
        )  # fmt: skip
    if args.seed and len(args.seed) > 1:
        print(
            f"== all seeds: faults={totals['faults']} found={totals['found']} "
            f"incidents={totals['incidents']} duplicates={totals['duplicates']} "
            f"false_positives={totals['false_positives']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
