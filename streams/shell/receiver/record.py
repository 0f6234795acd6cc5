"""The record the receiver publishes: the raw message, its device key and two headers.

A :class:`Record` is what goes to ``syslog.raw`` and, when Kafka cannot take it, what the
spool stores: ``key`` (the device, UTF-8), ``value`` (the message bytes exactly as received,
minus framing) and ``headers`` (``received_at``: ISO 8601 UTC, ``source``: ``ip:port``).

The key is the device :class:`~streams.core.parse.Parser` would give the same line, found
with a catalog-free fast path (:func:`device_of`), else the source address.
"""

from __future__ import annotations

import re
import time
from typing import NamedTuple

from streams.core.event import iso_utc
from streams.core.header import TAG_RE, fast_prefix, scan_prefix
from streams.core.parse import MAX_LINE, Parser, decode
from streams.shell.topics import HEADER_RECEIVED_AT, HEADER_SOURCE

Headers = tuple[tuple[str, bytes], ...]

# The same continuation joining as Parser._parse (a test checks the devices agree).
_CONTINUATION = re.compile(r"[ \t]*\r?\n[ \t]*")
_PREFIX_CACHE_MAX = 4096


class Record(NamedTuple):
    """One message as published: key, value and headers."""

    key: bytes
    value: bytes
    headers: Headers

    @property
    def size(self) -> int:
        """Approximate bytes held in memory (for the queue bound)."""
        return len(self.key) + len(self.value) + 64


class DeviceFinder:
    """``device_of(text, source)``: the device Parser would give ``text``, without the catalog.

    For a line with a ``%FAC-SEV-MNEMONIC`` tag, Parser takes the device from the header
    before the tag alone (``fast_prefix``, else ``scan_prefix``); the catalog decides only
    the kind. Lines without a tag go through a full :class:`Parser` (the catalog can move
    the header boundary there).

    ``fast_prefix`` decides on the *shape* of the prefix only: its regexes use digit
    classes that no digit value changes (``\\d``, ``\\w``, ``[A-Za-z0-9]``) and its checks
    look at letters (time zone names) or ask ``isdigit``/``isalpha``. So prefixes equal once
    every digit is masked to ``0`` (``Mar  1 00:00:07 fw-07`` and ``Mar  1 00:00:08
    fw-08``) get their host or origin at the same place. The cache maps a masked prefix to
    that place (or to "no device", or to "not for fast_prefix"). When the device text occurs
    more than once in the prefix it is learned from, the place is found by changing the
    digits of one occurrence at a time and asking fast_prefix again.
    A test compares the result with Parser's on every corpus, sample, scenario and synthetic
    line.

    Cost per line, synthetic archive: Parser.parse ≈ 7.4 µs, fast_prefix ≈ 4-6 µs, this
    ≈ 1 µs once the shapes are learned.
    """

    _MASK = str.maketrans("123456789", "000000000")
    _BUMP = str.maketrans("0123456789", "1234567890")
    _SLOW = (-1, -1)  # fast_prefix does not take this shape: use scan_prefix
    _NONE = (0, 0)  # no host, no origin: the source address

    def __init__(self) -> None:
        self._parser = Parser()
        self._cache: dict[str, tuple[int, int]] = {}

    def device_of(self, text: str, source: str) -> str:
        line = text.rstrip("\r\n")
        if "\n" in line:
            line = _CONTINUATION.sub(" ", line)
        if len(line) > MAX_LINE:
            line = line[:MAX_LINE]
        tag = TAG_RE.search(line)
        if tag is None:
            return self._slow(text, source)
        end = tag.start()
        prefix = line[:end]
        shape = prefix.translate(self._MASK)
        span = self._cache.get(shape)
        if span is not None and span is not self._SLOW:
            start, stop = span
            return prefix[start:stop] if stop else source
        try:
            header = fast_prefix(line, end) if span is None else None
            if header is None:
                if span is None:
                    self._remember(shape, self._SLOW)
                header = scan_prefix(line, end, tagged=True)
                return header.host or header.origin or source
        except Exception:  # a header bug must not lose the line: Parser decides
            return self._slow(text, source)
        device = header.host or header.origin
        if not device:
            self._remember(shape, self._NONE)
            return source
        span = self._span(line, end, prefix, device)
        if span is not None:
            self._remember(shape, span)
        return device

    def _span(self, line: str, end: int, prefix: str, device: str) -> tuple[int, int] | None:
        """Where in ``prefix`` fast_prefix found ``device`` (None: could not tell)."""
        first = prefix.find(device)
        if first < 0:
            return None
        n = len(device)
        if prefix.count(device) == 1 or not any(c.isdigit() for c in device):
            # Unique, or without digits: every occurrence reads the same in any line of
            # this shape (letters are not masked).
            return first, first + n
        bumped = device.translate(self._BUMP)  # same shape, other digits
        at = first
        while at >= 0:
            header = fast_prefix(line[:at] + bumped + line[at + n :], end)
            if header is not None and (header.host or header.origin) == bumped:
                return at, at + n
            at = prefix.find(device, at + 1)
        return None

    def _remember(self, shape: str, span: tuple[int, int]) -> None:
        if len(self._cache) >= _PREFIX_CACHE_MAX:
            self._cache.clear()
        self._cache[shape] = span

    def _slow(self, text: str, source: str) -> str:
        out = self._parser.parse(text, source=source)
        device = getattr(out, "device", None)
        self._parser.stats.records = 0  # keep the long-running parser's counters bounded
        return device if isinstance(device, str) and device else source


class RecordMaker:
    """Builds :class:`Record` objects; caches the ``received_at`` text per millisecond."""

    def __init__(self) -> None:
        self._finder = DeviceFinder()
        self._ms = -1
        self._stamp = b""
        self._second = -1
        self._prefix = ""  # iso_utc of the current second, without its milliseconds

    def received_at(self) -> bytes:
        now = time.time()  # the receiver's only wall-clock reading
        ms = int(now * 1000)
        if ms != self._ms:
            self._ms = ms
            second, milli = divmod(ms, 1000)
            if second != self._second:
                self._second = second
                self._prefix = iso_utc(second)[:-4]  # "YYYY-MM-DDTHH:MM:SS."
            self._stamp = f"{self._prefix}{milli:03d}Z".encode("ascii")
        return self._stamp

    def key_of(self, value: bytes, ip: str) -> bytes:
        """The key of ``value`` from ``ip``: its device, else ``ip``."""
        return self._finder.device_of(decode(value), ip).encode("utf-8", "replace")

    def make(
        self, value: bytes, ip: str, source: bytes, received_at: bytes | None = None
    ) -> Record:
        """A record for ``value`` from ``ip`` (``source`` is the ``ip:port`` header)."""
        headers: Headers = (
            (HEADER_RECEIVED_AT, received_at if received_at is not None else self.received_at()),
            (HEADER_SOURCE, source),
        )
        return Record(self.key_of(value, ip), value, headers)


def format_source(addr: tuple[str, int] | tuple[str, int, int, int] | None) -> str:
    """``ip:port`` (``[ip]:port`` for IPv6) of a socket address."""
    if not addr:
        return "unknown:0"
    host, port = str(addr[0]), int(addr[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
