"""Header shapes of Cisco syslog lines: name the shape of a line's header, and write
archives of one shape or of a mix of shapes.

A shape is the sequence of the header's tokens before the message tag, each named by
what it is, with ``:`` when a colon follows it (`` :`` after white space)::

    <166>Mar 05 2024 10:00:01 fw-01 : %ASA-...         pri bsd+year host :
    Jun  1 00:00:00 10.1.1.1 2026-06-01T00:00:00Z 10.1.1.1 : %ASA-...
                                                       bsd ip iso+Z ip :
    <189>1578041: router1: 000123: .Mar 26 20:49:19KST: %CRYPTO-...
                                                       pri n: host: n: .bsd+tzglued:

:func:`shape_of` names the shape of a line (None for a line without a tag: untagged
debug output, whose text the catalog reads); :func:`render` writes a header of a shape
for a device and a time, so that ``shape_of(render(shape, ...) + tag)`` is ``shape``.
``make bench`` measures ``analyze`` on an archive of each shape found in the conformance
corpus and the golden cases (:func:`shapes_in`, :func:`shape_archive`);
``tests/test_native.py`` compares the native and Python paths on a mix
(:func:`mixed_archive`).
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from streams.core.header import TAG_RE

_MON = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TOKENS = re.compile(
    r"(?P<pri><\d{1,3}>)"
    r"|(?P<rfc5424>1 \d{4}-\d\d-\d\dT\S+ \S+ \S+ \S+ \S+ (?:-|(?:\[(?:[^\]\\]|\\.)*\])+))"
    r"|(?P<bsd>(?P<bflag>[*.])?" + _MON + r"\s+\d{1,2}(?P<byear>\s+\d{4})?\s+\d{1,2}:\d\d:\d\d"
    r"(?P<bms>\.\d+)?(?:(?P<tzglued>(?:UTC|GMT)[+-]\d{1,2}(?::?\d\d)?|[A-Za-z]{2,10})(?=\s*:)"
    r"|\s+(?P<tz>(?:UTC|GMT)[+-]\d{1,2}(?::?\d\d)?|[A-Za-z][A-Za-z_]{0,15})(?=\s*:))?)"
    r"|(?P<iso>(?P<iflag>[*.])?\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?P<ims>\.\d+)?"
    r"(?P<ioff>Z|[+-]\d\d:?\d\d)?)"
    r"|(?P<uptime>[*.]?(?:\d{1,2}:\d\d:\d\d(?:\.\d+)?|(?:\d+[ywdhms]){1,4})(?=\s*:|\s))"
    r"|(?P<n>\d{1,12}(?=\s*:))"
    r"|(?P<ip>\d{1,3}(?:\.\d{1,3}){3}(?![\w.-]))"
    r"|(?P<ip6>(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?=:\s))"
    r"|(?P<sd>(?:\[(?:[^\]\\]|\\.)*\])+)"
    r"|(?P<colon>:)"
    r"|(?P<host>[^\s:]+)"
)
_COLON_AFTER = re.compile(r"(\s*):")


def _symbol(m: re.Match[str]) -> str:
    kind = m.lastgroup
    if kind is None:  # pragma: no cover - every alternative is a named group
        return "?"
    if kind in ("bsd", "tzglued", "tz", "bflag", "byear", "bms"):
        name = (m.group("bflag") or "") + "bsd"
        if m.group("byear"):
            name += "+year"
        if m.group("bms"):
            name += "+ms"
        if m.group("tzglued"):
            name += "+tzglued"
        elif m.group("tz"):
            name += "+tz"
        return name
    if kind in ("iso", "iflag", "ims", "ioff"):
        name = (m.group("iflag") or "") + "iso"
        if m.group("ims"):
            name += "+ms"
        off = m.group("ioff")
        if off:
            name += "+Z" if off == "Z" else "+off"
        return name
    if kind == "uptime":
        return "*uptime" if m.group(0)[0] in "*." else "uptime"
    return kind


def shape_of_prefix(prefix: str) -> str:
    """The shape of a header (the text before the message tag)."""
    out: list[str] = []
    pos = 0
    n = len(prefix)
    while pos < n:
        while pos < n and prefix[pos].isspace():
            pos += 1
        if pos >= n:
            break
        m = _TOKENS.match(prefix, pos)
        if m is None:  # pragma: no cover - `host` takes any other character
            break
        sym = _symbol(m)
        pos = m.end()
        if sym != "colon":
            c = _COLON_AFTER.match(prefix, pos)
            if c is not None:
                sym += " :" if c.group(1) else ":"
                pos = c.end()
        out.append(sym)
    return " ".join(out) if out else "(none)"


def shape_of(line: str) -> str | None:
    """The shape of a tagged line's header; None for a line without a message tag."""
    tag = TAG_RE.search(line)
    if tag is None:
        return None
    return shape_of_prefix(line[: tag.start()])


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _render_token(sym: str, device: int, t: float, counter: int) -> str:
    base = sym.lstrip("*.")
    flag = sym[: len(sym) - len(base)]
    tm = time.gmtime(int(t))
    ms = int((t % 1) * 1000)
    if base == "pri":
        return "<166>"
    if base == "rfc5424":
        return f"1 {time.strftime('%Y-%m-%dT%H:%M:%S', tm)}.{ms:03d}Z dev-{device} tw - - -"
    if base.startswith("bsd"):
        parts = base.split("+")[1:]
        text = f"{flag}{_MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d}"
        if "year" in parts:
            text += f" {tm.tm_year}"
        text += f" {tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"
        if "ms" in parts:
            text += f".{ms:03d}"
        if "tzglued" in parts:
            text += "KST"
        elif "tz" in parts:
            text += " UTC"
        return text
    if base.startswith("iso"):
        parts = base.split("+")[1:]
        text = flag + time.strftime("%Y-%m-%dT%H:%M:%S", tm)
        if "ms" in parts:
            text += f".{ms:03d}"
        if "Z" in parts:
            text += "Z"
        elif "off" in parts:
            text += "+01:00"
        return text
    if base == "uptime":
        return f"{flag}{device % 7 + 1}d{tm.tm_hour:02d}h"
    if base == "n":
        return str(counter)
    if base == "ip":
        return f"10.{device >> 16 & 255}.{device >> 8 & 255}.{device & 255}"
    if base == "ip6":
        return f"fe80::{device:x}:1"
    if base == "sd":
        return f'[meta sequenceId="{counter}"]'
    if base == "colon":
        return ":"
    return f"dev-{device}"


def render(shape: str, device: int, t: float, counter: int) -> str:
    """A header of ``shape`` for device number ``device`` at POSIX time ``t`` (ending with
    the separator before the tag)."""
    if shape == "(none)":
        return ""
    out: list[str] = []
    syms = shape.split(" ")
    i = 0
    while i < len(syms):
        sym = syms[i]
        sep = " "
        if i + 1 < len(syms) and syms[i + 1] == ":" and sym != "colon":
            sep = " : "
            i += 1
        elif sym.endswith(":") and sym != ":":
            sym, sep = sym[:-1], ": "
        if sym == ":":
            sym = "colon"
        text = _render_token(sym, device, t, counter)
        if sym == "pri":
            sep = ": " if sep != " " else ""
        out.append(text + sep)
        i += 1
    return "".join(out)


#: Bodies outside the catalog (the bulk of a real log), ASA and IOS.
ASA_BODIES = (
    "%ASA-6-302013: Built inbound TCP connection {c} for outside:198.51.100.{d}/443 "
    "(198.51.100.{d}/443) to inside:10.0.0.{d}/5{d} (10.0.0.{d}/5{d})",
    "%ASA-6-302014: Teardown TCP connection {c} for outside:198.51.100.{d}/443 to "
    "inside:10.0.0.{d}/5{d} duration 0:00:01 bytes 1{d} TCP FINs",
    "%ASA-4-106023: Deny tcp src outside:203.0.113.{d}/4{d} dst inside:10.0.0.{d}/22 by "
    'access-group "OUTSIDE-IN" [0x0, 0x0]',
    "%ASA-6-305011: Built dynamic TCP translation from inside:10.0.0.{d}/5{d} to "
    "outside:192.0.2.1/3{d}",
)
IOS_BODIES = (
    "%SEC-6-IPACCESSLOGP: list 101 denied tcp 198.18.0.{d}(4{d}) -> 198.51.100.1(22), 1 packet",
    "%LINEPROTO-5-UPDOWN: Line protocol on Interface GigabitEthernet0/{d}, changed state to up",
)


def _tag_body(line: str) -> str | None:
    tag = TAG_RE.search(line)
    return None if tag is None else line[tag.start() :]


def corpus_lines(paths: Iterable[Path]) -> Iterator[str]:
    """The lines of the conformance corpus files and golden inputs (``*.log``, read as
    UTF-8 with replacement), under the given files or directories."""
    for root in paths:
        files = sorted(root.rglob("*.log")) if root.is_dir() else [root]
        for f in files:
            yield from f.read_text(encoding="utf-8", errors="replace").splitlines()


#: Shapes that are no header: a '%' tag quoted in prose gives a run of words.
MAX_TOKENS = 8
MAX_HOSTS = 3


def is_header_shape(shape: str) -> bool:
    """Whether a shape can be a header (not a tag quoted in the middle of prose)."""
    syms = shape.split(" ")
    return len(syms) <= MAX_TOKENS and sum(s.startswith("host") for s in syms) <= MAX_HOSTS


def shapes_in(lines: Iterable[str]) -> Counter[str]:
    """How many tagged lines of each header shape (:func:`is_header_shape`)."""
    out: Counter[str] = Counter()
    for line in lines:
        s = shape_of(line)
        if s is not None and is_header_shape(s):
            out[s] += 1
    return out


#: Shapes found in the field that the corpus lacks: relay-wrapped ASA lines with RFC 5424
#: stamps (issue 12), and the header styles of ``load/synth.py``'s default scenario.
EXTRA_SHAPES = (
    "bsd ip iso+Z ip :",
    "bsd host iso+Z host :",
    "bsd ip bsd+year:",
    "bsd host bsd host :",
    "bsd host host",
    "bsd host n: host: *bsd+ms:",
    "bsd host n: n: bsd+ms+tz:",
    "pri n: host: bsd+ms+tzglued:",
    "bsd ip n: bsd:",
    "bsd host .bsd+year+ms+tz:",
    "ip: *bsd+ms:",
)


def shape_archive(
    shape: str, lines: int, *, devices: int = 200, seed: int = 0, start: float = 1_709_596_800.0
) -> Iterator[str]:
    """``lines`` lines of one header shape over ``devices`` devices, one a second of event
    time spread over the devices, with bodies outside the catalog (ASA and IOS)."""
    rng = random.Random(seed)
    bodies = ASA_BODIES + IOS_BODIES
    for i in range(lines):
        dev = rng.randrange(devices)
        t = start + i * 0.05
        body = bodies[i % len(bodies)].format(c=1000 + i, d=i % 250)
        yield render(shape, dev, t, i + 1) + body


def mixed_archive(
    shapes: Iterable[str],
    lines: int,
    *,
    catalog_bodies: Iterable[str] = (),
    catalog_share: float = 0.05,
    devices: int = 300,
    seed: int = 0,
    start: float = 1_709_596_800.0,
) -> Iterator[str]:
    """``lines`` lines of a mix of header shapes (each device keeps one shape), bodies
    outside the catalog and, with ``catalog_share``, catalog messages taken from
    ``catalog_bodies`` (tags and texts of real lines: the golden inputs)."""
    rng = random.Random(seed)
    shape_list = sorted(set(shapes))
    cat = [b for b in (_tag_body(x) for x in catalog_bodies) if b is not None]
    bodies = ASA_BODIES + IOS_BODIES
    for i in range(lines):
        dev = rng.randrange(devices)
        shape = shape_list[dev % len(shape_list)]
        t = start + i * 0.5
        if cat and rng.random() < catalog_share:
            body = rng.choice(cat)
        else:
            body = rng.choice(bodies).format(c=1000 + i, d=i % 250)
        yield render(shape, dev, t, i + 1) + body
