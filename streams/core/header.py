"""Transport and Cisco header parsing.

A syslog record from a Cisco device is a *prefix* (PRI, relay stamp and host,
message counter, origin-id, sequence number, device stamp; every part optional
and in a few orders) followed by a ``%FAC[-SUB]-SEV-MNEMONIC:`` tag and the text.
The tag is found first; the prefix is then read as a list of tokens:

    <189>1578041: router1: 000123: .Mar 26 20:49:19KST: %CRYPTO-4-...: text
    Sep 22 11:02:39 131.203.252.166 2435: Sep 22 11:02:39: %MOTCR-1-ERROR: text
    <164>Aug 28 2023 15:39:30 fw123-vc456 : %ASA-4-402119: text
    <166>2018-06-27T12:17:46Z asa : %ASA-3-710003: text
    <134>1 2024-01-02T03:04:05Z host app - - - %ASA-4-402120: text

Lines without a tag (``debug crypto`` output) are matched against the catalog's
text patterns; the part before the matched text is read as a prefix too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from streams.core.clock import MONTHS, tz_offset_minutes

_MON = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"

TAG_RE = re.compile(
    r"%(?P<fac>[A-Z][A-Z0-9_]*(?:-[A-Z][A-Z0-9_]*)*?)-(?P<sev>[0-7])-(?P<mnem>[A-Z0-9_]+)\s*:[ \t]*"
)
# Some relays and documents drop the leading '%': only trusted at the start of the body.
BARE_TAG_RE = re.compile(
    r"(?P<fac>[A-Z][A-Z0-9_]*(?:-[A-Z][A-Z0-9_]*)*?)-(?P<sev>[0-7])-"
    r"(?P<mnem>[A-Z][A-Z0-9_]+)\s*:[ \t]*"
)
# IOS-XE wraps data-plane messages: %IOSXE-3-PLATFORM: SIP0: cpp_cp: ... %IPSEC-3-HMAC_ERROR: ...
WRAPPER_MNEMONICS = frozenset({"PLATFORM"})

_PRI = re.compile(r"<(\d{1,3})>")
_RFC5424 = re.compile(r"1 (\S+) (\S+) (\S+) (\S+) (\S+) (-|(?:\[(?:[^\]\\]|\\.)*\])+) ?")
_BSD = re.compile(
    r"([*.])?(" + _MON + r")\s+(\d{1,2})(?:\s+(\d{4}))?\s+(\d{1,2}):(\d{2}):(\d{2})"
    r"(?:\.(\d{1,6}))?"
)
_ISO = re.compile(
    r"([*.])?(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(Z|[+-]\d{2}:?\d{2})?"
)
_UPTIME = re.compile(r"([*.])?(?:\d{1,2}:\d{2}:\d{2}(?:\.\d+)?|(?:\d+[ywdhms]){1,4})(?=\s*:|\s)")
_GLUED_TZ = re.compile(r"([A-Za-z]{2,10}|(?:UTC|GMT)[+-]\d{1,2}(?::?\d{2})?)(?=\s*:)")
_SPACED_TZ = re.compile(r"\s+((?:UTC|GMT)[+-]\d{1,2}(?::?\d{2})?|[A-Za-z][A-Za-z_]{0,15})\s*:")
_COUNTER = re.compile(r"(\d{1,12})\s*:")
_EMPTY_COUNTER = re.compile(r":\s")
_SD = re.compile(r"(?:\[(?:[^\]\\]|\\.)*\]\s*)+:?")
_IPV6_HOST = re.compile(r"((?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4})(?=:\s)")
_HOST = re.compile(r"([^\s:]+)")
_SEP_COLON = re.compile(r"\s*:\s*")
# Untagged debug output starts with its module, never a host: `ISAKMP: No cert...`,
# `ISAKMP:(1002):...`, `IPSEC(validate_proposal): ...`, `IPSec(validate_transform_proposal):`,
# and the ASA's `[IKEv1]:`.
_DEBUG_MODULE = re.compile(
    r"(?:ISAKMP|IPSEC|IPSec|IKEv[12]|[A-Za-z_]+\([A-Za-z_]+\))(?=[\s:(])"
    # ASA debug view: `[IKEv1]: Group = ..`, `[IKEv1 DEBUG]: IP = ..` (never a host).
    r"|\[IKEv[12][^\]]*\]"
)
_SPACES = re.compile(r"\s+")


@dataclass(slots=True)
class Stamp:
    """A wall-clock stamp read from a header (not yet given a year or offset)."""

    year: int | None
    month: int
    day: int
    hh: int
    mm: int
    ss: int
    frac: float
    tz: str | None
    synced: bool
    offset_min: int | None = None  # explicit numeric offset (ISO stamps)


@dataclass(slots=True)
class Header:
    """What the prefix of a record says."""

    pri: int | None = None
    relay_stamp: Stamp | None = None
    device_stamp: Stamp | None = None
    uptime: bool = False
    uptime_s: float | None = None  # the uptime stamp in seconds (`21:57:57`, `3d01h`)
    clock_synced: bool = True
    host: str | None = None
    origin: str | None = None
    counter: int | None = None
    seqno: int | None = None
    tokens: int = 0
    body_start: int = 0
    extra: list[str] = field(default_factory=list)


_UPTIME_UNITS = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_UPTIME_PART = re.compile(r"(\d+)([ywdhms])")


def uptime_seconds(text: str) -> float:
    """Seconds of an IOS uptime stamp: ``00:01:01`` (under a day, may carry msec),
    ``1d02h``, ``42w2d``, ``2y10w``."""
    if ":" in text:
        hh, mm, ss = text.split(":")
        return int(hh) * 3600 + int(mm) * 60 + float(ss)
    return float(sum(int(n) * _UPTIME_UNITS[u] for n, u in _UPTIME_PART.findall(text)))


def _bsd_stamp(m: re.Match[str]) -> Stamp:
    flag, mon, day, year, hh, mi, ss, frac = m.groups()
    return Stamp(
        year=int(year) if year else None,
        month=MONTHS[mon.lower()],
        day=int(day),
        hh=int(hh),
        mm=int(mi),
        ss=int(ss),
        frac=float("0." + frac) if frac else 0.0,
        tz=None,
        synced=flag is None,
    )


def _iso_stamp(m: re.Match[str]) -> Stamp:
    flag, year, mon, day, hh, mi, ss, frac, off = m.groups()
    offset: int | None = None
    if off:
        if off == "Z":
            offset = 0
        else:
            digits = off[1:].replace(":", "")
            offset = int(digits[:2]) * 60 + int(digits[2:])
            if off[0] == "-":
                offset = -offset
    return Stamp(
        year=int(year),
        month=int(mon),
        day=int(day),
        hh=int(hh),
        mm=int(mi),
        ss=int(ss),
        frac=float("0." + frac[:6]) if frac else 0.0,
        tz=off,
        synced=flag is None,
        offset_min=offset,
    )


def _read_tz(s: str, pos: int, stamp: Stamp, strong: bool) -> int:
    """Read a timezone label after a stamp; return the new position.

    ``strong`` is true when the stamp is surely a device stamp (msec, a clock
    flag, or after a counter): then any word before ':' is a timezone. Otherwise
    only known labels are, since ``Apr 27 02:03:03 fw01: %ASA`` names a host.
    """
    m = _GLUED_TZ.match(s, pos)
    if m:
        stamp.tz = m.group(1)
        return m.end()
    m = _SPACED_TZ.match(s, pos)
    if m:
        label = m.group(1)
        _, known = tz_offset_minutes(label)
        if known or (strong and label.isalpha()):
            stamp.tz = label
            return m.end() - 1  # leave the ':' for the separator
    return pos


def scan_prefix(s: str, end: int, *, tagged: bool) -> Header:
    """Read the header tokens of ``s[:end]``.

    With ``tagged`` the whole range is known to be header; otherwise scanning
    stops at the first token that cannot be a header part.
    """
    h = Header()
    pos = 0
    m: re.Match[str] | None
    m = _PRI.match(s, pos)
    if m and m.end() <= end:
        h.pri = int(m.group(1))
        pos = m.end()
    stamps: list[tuple[Stamp, bool]] = []  # (stamp, followed by a space and a host)
    after_first_stamp = False
    # `<189>: host: 000123:` -- the colon right after PRI is an empty message counter:
    # a number after it (or after an origin-id) is a `service sequence-numbers` value.
    counter_slot_closed = False
    while pos < end:
        while pos < end and s[pos] in " \t":
            pos += 1
        if pos >= end:
            break
        c = s[pos]
        # RFC 5424: VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD
        if c == "1" and pos + 1 < end and s[pos + 1] == " " and h.tokens == 0:
            m5 = _RFC5424.match(s, pos)
            mi = _ISO.match(s, pos + 2) if m5 else None
            if m5 and mi and m5.end() <= end:
                stamps.append((_iso_stamp(mi), True))
                if m5.group(2) != "-":
                    h.host = m5.group(2)
                pos = m5.end()
                h.tokens += 1
                continue
        stamp_at: tuple[Stamp, int] | None = None
        if c in "*." or c.isupper():
            mb = _BSD.match(s, pos)
            if mb and mb.end() <= end:
                st = _bsd_stamp(mb)
                strong = mb.group(8) is not None or not st.synced or h.counter is not None
                stamp_at = (st, _read_tz(s, mb.end(), st, strong))
        if stamp_at is None and (c.isdigit() or c in "*."):
            mi = _ISO.match(s, pos)
            if mi and mi.end() <= end:
                stamp_at = (_iso_stamp(mi), mi.end())
        if stamp_at is not None:
            st, pos = stamp_at
            ms = _SEP_COLON.match(s, pos)
            followed_by_host = ms is None
            if ms:
                pos = ms.end()
            stamps.append((st, followed_by_host and not stamps))
            h.tokens += 1
            if len(stamps) == 1:
                after_first_stamp = followed_by_host
            continue
        if c.isdigit() or c in "*.":
            mu = _UPTIME.match(s, pos)
            if mu and mu.end() <= end:
                h.uptime = True
                h.uptime_s = uptime_seconds(mu.group(0).lstrip("*."))
                if mu.group(1):
                    h.clock_synced = False
                pos = mu.end()
                ms = _SEP_COLON.match(s, pos)
                if ms:
                    pos = ms.end()
                h.tokens += 1
                continue
            mc = _COUNTER.match(s, pos)
            if mc and mc.end() <= end:
                n = int(mc.group(1))
                # The message counter comes first, or right after a relay's stamp and
                # host (`Sep 22 11:02:39 10.1.1.1 2435: Sep 22 11:02:39: %TAG`).
                relay_only = len(stamps) == 1 and stamps[0][1] and h.host is not None
                if (
                    h.counter is None
                    and not counter_slot_closed
                    and h.origin is None
                    and (not stamps or relay_only)
                ):
                    h.counter = n
                elif h.seqno is None:
                    h.seqno = n
                pos = mc.end()
                h.tokens += 1
                continue
        if c == ":":
            # `no logging message-counter syslog` keeps the colon: "<189>: host: ..."
            if h.tokens == 0:
                counter_slot_closed = True
            pos += 1
            h.tokens += 1
            continue
        if c == "[" and (tagged or not _DEBUG_MODULE.match(s, pos)):
            msd = _SD.match(s, pos)
            if msd and msd.end() <= end:
                pos = msd.end()
                h.tokens += 1
                continue
        if not tagged and (BARE_TAG_RE.match(s, pos) or _DEBUG_MODULE.match(s, pos)):
            break
        mh = _IPV6_HOST.match(s, pos) or _HOST.match(s, pos)
        if mh is None or mh.end() > end:
            break
        name = mh.group(1)
        if not stamps and name.isalpha() and tz_offset_minutes(name)[1]:
            # A bare timezone label left over from a truncated stamp ("UTC: %CRYPTO-...").
            ms = _SEP_COLON.match(s, mh.end())
            pos = ms.end() if ms else mh.end()
            h.tokens += 1
            continue
        npos = mh.end()
        ms = _SEP_COLON.match(s, npos)
        if after_first_stamp and h.host is None:
            h.host = name
            after_first_stamp = False
        elif ms is not None or tagged:
            if h.origin is None and name[0] not in "*(":
                h.origin = name
            else:
                h.extra.append(name)
        else:
            break
        pos = ms.end() if ms else npos
        h.tokens += 1
    if stamps:
        h.device_stamp = stamps[-1][0]
        if len(stamps) > 1:
            h.relay_stamp = stamps[0][0]
        h.clock_synced = h.clock_synced and h.device_stamp.synced
    h.body_start = pos
    return h


_FAST = re.compile(
    r"(?:<(?P<pri>\d{1,3})>)?"
    r"(?:(?:(?P<rmon>" + _MON + r")\s+(?P<rday>\d{1,2})(?:\s+(?P<ryear>\d{4}))?\s+"
    r"(?P<rhms>\d{1,2}:\d\d:\d\d)"
    r"|(?P<riso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)))"
    r"\s+(?P<host>[A-Za-z0-9][\w.-]*)(?:\s*:\s*|\s+))?"
    r"(?:(?P<empty>:\s*)|(?P<counter>\d{1,12}):\s*)?"
    r"(?:(?P<origin>[A-Za-z][\w.-]*|\d{1,3}(?:\.\d{1,3}){3}):\s+)?"
    r"(?:(?P<seq>\d{1,12}):\s*)?"
    r"(?:(?P<flag>[*.])?(?P<mon>" + _MON + r")\s+(?P<day>\d{1,2})(?:\s+(?P<year>\d{4}))?\s+"
    r"(?P<hms>\d{1,2}:\d\d:\d\d)(?:\.(?P<frac>\d{1,6}))?"
    r"(?:\s*(?P<tz>(?:UTC|GMT)[+-]\d{1,2}(?::\d\d)?|[A-Za-z]{2,10}))?"
    r"(?:\s*:\s*|\s+(?P<dhost>[A-Za-z][\w.-]*)\s*:\s*))?"
)
# `<166>10.255.255.1 %ASA-...`: an ASA device-id and no stamp at all.
_FAST_BARE = re.compile(
    r"(?:<(?P<pri>\d{1,3})>)?(?P<name>[A-Za-z][\w.-]*|\d{1,3}(?:\.\d{1,3}){3})(?:\s*:\s*|\s+)"
)


_HMS_CACHE: dict[str, tuple[int, int, int]] = {}


def _hms(text: str) -> tuple[int, int, int]:
    """``hh:mm:ss`` as integers, cached (at most 86,400 different texts... and a few)."""
    got = _HMS_CACHE.get(text)
    if got is None:
        a, b, c = text.split(":")
        got = (int(a), int(b), int(c))
        if len(_HMS_CACHE) < 200_000:
            _HMS_CACHE[text] = got
    return got


def fast_prefix(s: str, end: int) -> Header | None:
    """The common prefix shapes in one regex; None when the full scanner is needed.

    Gives the same Header as :func:`scan_prefix` for the shapes it accepts (a test
    compares the two): relay stamp and host, counter, origin-id, sequence number,
    device stamp and ASA device-id.
    """
    m = _FAST.fullmatch(s, 0, end)
    if m is None:
        mb = _FAST_BARE.fullmatch(s, 0, end)
        if mb is None:
            return None
        name = mb.group("name")
        if name.isalpha() and tz_offset_minutes(name)[1]:
            return None
        h = Header(origin=name, body_start=end)
        if mb.group("pri") is not None:
            h.pri = int(mb.group("pri"))
        return h
    (pri, rmon, rday, ryear, rhms, riso, host, _empty, counter, origin, seq,
     flag, mon, day, year, hms, frac, tz, dhost) = m.groups()  # fmt: skip
    if host is not None and ((host.isalpha() and tz_offset_minutes(host)[1]) or host.isdigit()):
        return None  # "Jan 16 22:11:43 EDT:" - a timezone, not a host: let the scanner decide
    if mon is None and rmon is None and riso is None:
        return None
    h = Header()
    if pri is not None:
        h.pri = int(pri)
    relay: Stamp | None = None
    if rmon is not None:
        rh, rm, rs = _hms(rhms)
        relay = Stamp(int(ryear) if ryear else None, MONTHS[rmon.lower()], int(rday), rh, rm, rs,
                      0.0, None, True)  # fmt: skip
        h.host = host
    elif riso is not None:
        mi_ = _ISO.match(riso)
        if mi_ is None:
            return None
        relay = _iso_stamp(mi_)
        h.host = host
    if counter is not None:
        if relay is not None and origin is None and seq is None and mon is None:
            return None
        h.counter = int(counter)
    if origin is not None:
        if origin.isalpha() and tz_offset_minutes(origin)[1]:
            return None
        h.origin = origin
    if seq is not None:
        h.seqno = int(seq)
    if mon is not None:
        if (
            tz is not None
            and not tz_offset_minutes(tz)[1]
            and frac is None
            and flag is None
            and h.counter is None
        ):
            return None
        if dhost is not None:
            if h.origin is not None or (tz is None and dhost.isalpha()):
                return None
            h.origin = dhost
        dh, dm, ds = _hms(hms)
        h.device_stamp = Stamp(
            int(year) if year else None, MONTHS[mon.lower()], int(day), dh, dm, ds,
            float("0." + frac) if frac else 0.0, tz, flag is None,
        )  # fmt: skip
        h.relay_stamp = relay
    else:
        h.device_stamp = relay
    h.clock_synced = h.device_stamp is not None and h.device_stamp.synced
    h.body_start = end
    return h
