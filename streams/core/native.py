"""The optional native hot loop of ``tunnelwatch analyze`` (``native/``, a Rust extension).

``tunnelwatch_native.Scanner`` frames archive bytes and reads, for every record that is
one ASCII line with a message tag outside the catalog (any header shape the parser reads:
``fast_prefix``'s in one regex, the others as ``scan_prefix`` reads them; a tag without
its '%'; or no tag and no catalog text, :func:`text_patterns`), or a catalog message that
cannot change the engine's state (:func:`catalog_lookup`), a *clock row*
``(device, ts, time_source, clock_synced, tz_known)``: what :class:`~streams.core.parse.Parser`
would give for it, and all the engine needs of it. Every other record comes back as text
for the Python parser. Parser state (years, last stamp, last relay stamp, counters) stays
in the Python ``Parser``, so both paths give the same events in the same order.

``analyze`` scans with ``Scanner.scan_fleet``: the clock rows go to a
``tunnelwatch_native.FleetCore`` (:func:`make_fleet_core`, :class:`streams.core.fleet.FleetCore`),
which keeps the fleet clock's lanes and the devices that only ever moved their clock and
applies their rows itself; the rows of the other devices go to
:meth:`~streams.core.engine.Correlator.on_rows`, in order.

The same extension holds the UDP hot loop of ``tunnelwatch receive``
(:class:`UdpReceiver`: ``recvmmsg`` batches, the allow-list, rate limit and size checks,
the device key where :class:`~streams.shell.receiver.record.DeviceFinder`'s fast path
reads it, records ready to queue) and its Kafka record batches (:class:`RecordBatch`,
``group_by_partition``); see ``native/src/receiver.rs`` and ``native/src/kafka.rs``.

``TUNNELWATCH_NATIVE=0`` selects the pure Python path; ``1`` requires the extension;
unset (or ``auto``) uses it when it is installed (``make install`` builds it when cargo
is there).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable
from typing import Any, Protocol, cast

from streams.core.catalog import ASA_FACILITIES, ASA_IKE_PREFIX, Catalog
from streams.core.clock import tz_offset_minutes
from streams.core.fleet import FleetCore, core_settings
from streams.core.framing import _HEADER_ONLY, _TAIL_STARTS
from streams.core.header import (
    _BSD,
    _FAST,
    _FAST_BARE,
    _ISO,
    _RFC5424,
    _SD,
    _SPACED_TZ,
    BARE_TAG_RE,
    WRAPPER_MNEMONICS,
    Stamp,
)
from streams.core.kb import KnowledgeBase
from streams.core.parse import Parser
from streams.errors import ConfigError

ENV = "TUNNELWATCH_NATIVE"
MODULE = "tunnelwatch_native"
#: The interface this module expects of the extension (``ABI`` in ``native/src/lib.rs``).
ABI = 6

#: A clock row: ``(device, ts, time_source, clock_synced, tz_known)``; with
#: ``with_text=True`` the record's text follows.
ClockRow = tuple[str | None, float, str, bool, bool]


class Scanner(Protocol):
    """``tunnelwatch_native.Scanner`` (see ``native/src/lib.rs``)."""

    def reset(self) -> None: ...

    def feed(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def scan(self, limit: int) -> tuple[list[Any], str | None]: ...

    def scan_fleet(
        self, limit: int, core: FleetCore, on_rows: Callable[[list[Any]], None]
    ) -> tuple[int, str | None]: ...

    def records(
        self, values: list[Any], sources: list[str | None], received: float | None, start: int = 0
    ) -> tuple[list[ClockRow], int]: ...

    def records_core(
        self,
        values: list[Any],
        sources: list[str | None],
        offsets: list[int],
        received: float | None,
        start: int,
        core: FleetCore,
        partition: int,
        framed: bool,
        on_rows: Callable[[list[tuple[tuple[Any, ...], int]]], bool],
    ) -> tuple[int, ClockRow | None, int, int, int]: ...

    def header(
        self, line: str, end: int
    ) -> (
        tuple[str | None, str | None, tuple[Any, ...] | None, tuple[Any, ...] | None, bool] | None
    ): ...

    def full_header(
        self, line: str, end: int
    ) -> tuple[
        str | None, str | None, tuple[Any, ...] | None, tuple[Any, ...] | None, bool, bool
    ]: ...


#: What :meth:`UdpReceiver.drain` returns: the records (``Record`` instances) in arrival
#: order; ``[(index, host), ...]`` of those whose key (None) Python must find, or None;
#: the sum of ``Record.size`` over the records keyed natively; ``(not_allowed,
#: rate_limited, truncated, empty)`` counts, or None when all are 0; the last socket
#: error (errno) the reader thread met since the previous call, or 0.
Drained = tuple[list[Any], list[tuple[int, str]] | None, int, tuple[int, int, int, int] | None, int]


class UdpReceiver(Protocol):
    """``tunnelwatch_native.UdpReceiver`` (see ``native/src/receiver.rs``)."""

    @property
    def ready_fd(self) -> int: ...

    @property
    def buffered(self) -> int: ...

    @property
    def buffered_bytes(self) -> int: ...

    @property
    def running(self) -> bool: ...

    @property
    def reader_nice(self) -> int: ...

    def drain(self, received_at: bytes, now: float, budget: int) -> Drained: ...

    def rate_allow(self, host: str, now: float) -> bool: ...

    def close(self) -> None: ...


class DeviceKeys(Protocol):
    """``tunnelwatch_native.DeviceKeys``: the receiver's native device keys (a test hook)."""

    def key(self, value: bytes) -> bytes | None: ...


class RecordBatch(Protocol):
    """``tunnelwatch_native.RecordBatch``: what aiokafka's ``send_batch`` takes of a
    ``BatchBuilder`` (see ``native/src/kafka.rs``)."""

    def record_count(self) -> int: ...

    def size(self) -> int: ...

    def closed(self) -> bool: ...

    def close(self) -> None: ...

    def _set_producer_state(
        self, producer_id: int, producer_epoch: int, base_sequence: int
    ) -> None: ...

    def _build(self) -> bytes: ...


class NativeModule(Protocol):
    __version__: str
    ABI: int

    def Scanner(self, parser: Parser, **settings: Any) -> Scanner: ...

    def FleetCore(
        self, lateness: float, lane_of: Callable[[str], int] | None, **settings: Any
    ) -> FleetCore: ...

    def find_message_tag(self, line: str) -> tuple[int, str, int, str] | None: ...

    def UdpReceiver(self, fd: int, **settings: Any) -> UdpReceiver: ...

    def DeviceKeys(self, **settings: Any) -> DeviceKeys: ...

    def RecordBatch(
        self, records: list[Any], *, max_bytes: int, timestamp_ms: int, compression: int
    ) -> RecordBatch: ...

    def group_by_partition(
        self, records: list[Any], partitions: list[int]
    ) -> list[tuple[int, list[Any]]]: ...

    def kafka_murmur2(self, data: bytes) -> int: ...


class NativeUnavailable(ConfigError):
    """TUNNELWATCH_NATIVE=1 but the extension is not installed."""


_SPACE = r"\t\n\x0B\x0C\r \x1C-\x1F"  # Python's \s on ASCII (str.isspace)
_CLASSES = {"s": _SPACE, "d": "0-9", "w": "0-9A-Za-z_"}


def rust_pattern(pattern: str, *, full: bool, search: bool = False) -> str:
    """A Python ``re`` pattern (for ``str``), as the Rust ``regex`` crate reads it on ASCII
    bytes: ``\\s``, ``\\d`` and ``\\w`` spelled out as Python's ASCII classes, anchored as
    ``fullmatch`` (``full``) or ``match``, or not anchored (``search``)."""
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1]
            if nxt in _CLASSES:
                out.append(_CLASSES[nxt] if in_class else f"[{_CLASSES[nxt]}]")
            elif nxt.lower() in _CLASSES:
                if in_class:
                    raise ValueError(f"\\{nxt} inside a class: {pattern!r}")
                out.append(f"[^{_CLASSES[nxt.lower()]}]")
            else:
                out.append(c + nxt)
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
            # `[^...]` reads the same in both (the spelled-out classes inside it too); a
            # ']' first in a class does not.
            first = i + 2 if pattern[i + 1 : i + 2] == "^" else i + 1
            if pattern[first : first + 1] == "]":
                raise ValueError(f"class too clever to translate: {pattern!r}")
            out.append(pattern[i:first])
            i = first
            continue
        elif c == "]" and in_class:
            in_class = False
        elif in_class and (c == "[" or (c in "&-~" and pattern[i + 1 : i + 2] == c)):
            # Rust reads these as nested classes and set operations.
            raise ValueError(f"class too clever to translate: {pattern!r}")
        out.append(c)
        i += 1
    body = "".join(out)
    if search:
        return f"(?-u)(?:{body})"
    return f"(?-u)^(?:{body})$" if full else f"(?-u)^(?:{body})"


def load(mode: str | None = None) -> NativeModule | None:
    """The extension module, or None for the pure Python path (see ``TUNNELWATCH_NATIVE``;
    ``mode``, one of its values, overrides it)."""
    if mode is None:
        mode = os.environ.get(ENV, "auto")
    mode = mode.strip().lower()
    if mode in ("0", "no", "off", "false", "python"):
        return None
    required = mode in ("1", "yes", "on", "true", "native")
    try:
        module = importlib.import_module(MODULE)
    except ImportError as exc:
        if required:
            raise NativeUnavailable(
                f"{ENV}={mode} but {MODULE} is not installed (make install builds it; "
                f"it needs cargo): {exc}"
            ) from exc
        return None
    abi = getattr(module, "ABI", None)
    if abi != ABI:
        msg = f"{MODULE} {getattr(module, '__version__', '?')} has ABI {abi}, not {ABI}: "
        if required:
            raise NativeUnavailable(msg + "rebuild it (make install)")
        print(f"tunnelwatch: warning: {msg}using the Python path (make install)", file=sys.stderr)
        return None
    return cast(NativeModule, module)


_STATE_GROUPS = frozenset({"local", "conn_id"})

#: One catalog entry for the scanner: its regex as a Rust pattern for ``search`` (None:
#: any text), whether it is inert, whether it has ``optional_regex``.
LookupEntry = tuple[str | None, bool, bool]


def inert_kinds(catalog: Catalog, kb: KnowledgeBase) -> frozenset[str]:
    """The kinds of the catalog that cannot change ``kb``'s engine state: no rule (trigger,
    ``expect``), resolver (``resolve_on``), corroboration or ``unless`` reads them."""
    return frozenset(catalog.kinds() - kb.kinds_used())


def catalog_lookup(catalog: Catalog, kb: KnowledgeBase) -> dict[str, list[LookupEntry]]:
    """``Catalog.lookup`` of every catalog tag, for the scanner, with each entry marked
    *inert* when its kind is in :func:`inert_kinds` and it captures no ``local`` (the
    device's addresses) and no ``conn_id`` (a connection's peer): ``engine.step`` does with
    such an event exactly what ``engine.clock`` does with an event without a kind, so the
    scanner makes a clock row of a record whose first matching entry is inert, or that no
    entry matches, and hands the others to the parser. Derived from the knowledge base
    when the scanner is made, never listed by hand.

    A tag with a regex the translation does not take (a flag, a class it cannot spell) is
    left out: its records stay with the Python parser."""
    inert = inert_kinds(catalog, kb)
    out: dict[str, list[LookupEntry]] = {}
    for tag, entries in catalog.by_tag.items():
        rows: list[LookupEntry] = []
        for e in entries:
            learns = e.regex is not None and bool(_STATE_GROUPS & set(e.regex.groupindex))
            pattern: str | None = None
            if e.regex is not None:
                if e.regex.flags & ~re.UNICODE:
                    break
                try:
                    pattern = rust_pattern(e.regex.pattern, full=False, search=True)
                except ValueError:
                    break
            rows.append((pattern, e.kind in inert and not learns, e.optional_regex))
        else:
            out[tag] = rows
    return out


def text_patterns(catalog: Catalog) -> list[str] | None:
    """The catalog's untagged text patterns (``Catalog.lookup_text``) as Rust patterns for
    ``search``; None when one does not translate (untagged records then stay with the
    Python parser)."""
    out: list[str] = []
    for e in catalog.text_entries:
        if e.text is None or e.text.flags & ~re.UNICODE:
            return None
        try:
            out.append(rust_pattern(e.text.pattern, full=False, search=True))
        except ValueError:
            return None
    return out


def make_scanner(
    module: NativeModule,
    parser: Parser,
    *,
    kb: KnowledgeBase | None = None,
    with_text: bool = False,
) -> Scanner:
    """A scanner reading for ``parser`` (its catalog, its year tracker and state); with
    ``kb``, the catalog messages that cannot change that knowledge base's engine state
    are clock rows too (:func:`catalog_lookup`)."""
    return module.Scanner(
        parser,
        tags=sorted(parser.catalog.by_tag),
        asa_facilities=sorted(ASA_FACILITIES),
        wrapper_mnemonics=sorted(WRAPPER_MNEMONICS),
        fast=rust_pattern(_FAST.pattern, full=True),
        fast_bare=rust_pattern(_FAST_BARE.pattern, full=True),
        header_only=rust_pattern(_HEADER_ONLY.pattern, full=False),
        tail_starts=rust_pattern(_TAIL_STARTS.pattern, full=False),
        tz_offset_minutes=tz_offset_minutes,
        header_only_match=_HEADER_ONLY.match,
        stamp=Stamp,
        scan=tuple(
            rust_pattern(r.pattern, full=False) for r in (_RFC5424, _ISO, _BSD, _SPACED_TZ, _SD)
        ),
        lookup=sorted(catalog_lookup(parser.catalog, kb).items()) if kb is not None else [],
        asa_prefix=rust_pattern(ASA_IKE_PREFIX.pattern, full=False),
        bare_tag=rust_pattern(BARE_TAG_RE.pattern, full=False),
        text_entries=text_patterns(parser.catalog),
        with_text=with_text,
    )


def make_fleet_core(
    module: NativeModule,
    lateness: float,
    lane_of: Callable[[str], int] | None,
    partitions: int | None = None,
) -> FleetCore:
    """A native fleet core with :mod:`streams.core.fleet`'s constants. ``partitions``:
    ``lane_of`` is Kafka's default partitioner over that many partitions, on the
    extension's own murmur2 (the core then runs it without calling ``lane_of``)."""
    return module.FleetCore(lateness, lane_of, partitions=partitions, **core_settings())


def _header_patterns() -> dict[str, Any]:
    return {
        "fast": rust_pattern(_FAST.pattern, full=True),
        "fast_bare": rust_pattern(_FAST_BARE.pattern, full=True),
        "tz_offset_minutes": tz_offset_minutes,
    }


def make_device_keys(module: NativeModule) -> DeviceKeys:
    """The receiver's native device keys, alone (for tests)."""
    return module.DeviceKeys(**_header_patterns())


def make_udp_receiver(
    module: NativeModule,
    fd: int,
    *,
    max_message_bytes: int,
    rate: float,
    burst: float,
    max_sources: int,
    resolve: Callable[[int, bytes, int, int, int], tuple[str, bytes, bool]],
    record: type,
    header_names: tuple[str, str],
    batch: int = 256,
    max_buffer_bytes: int = 256 << 20,
    reader_nice: int | None = None,
) -> UdpReceiver:
    """The receiver's UDP hot loop on the non-blocking UDP socket ``fd`` (open until its
    ``close()``); its reader thread starts at once.

    ``resolve(family, address_bytes, port, flowinfo, scope_id)`` gives ``(host,
    source_header, allowed)`` of a new source address; ``record`` is the ``Record`` class
    (a NamedTuple); ``rate`` 0 disables the per-host rate limit; ``batch`` is the most
    datagrams one ``recvmmsg`` takes (64 KiB of buffer each); the reader buffers up to
    ``max_buffer_bytes`` of datagrams the event loop has not taken yet, and leaves the
    rest in the socket's buffer; it runs at the nice value ``reader_nice`` when given and
    allowed (CAP_SYS_NICE), see ``UdpReceiver.reader_nice``.
    """
    return module.UdpReceiver(
        fd,
        max_message_bytes=max_message_bytes,
        rate=rate,
        burst=burst,
        max_sources=max_sources,
        resolve=resolve,
        record=record,
        header_names=header_names,
        batch=batch,
        max_buffer_bytes=max_buffer_bytes,
        reader_nice=reader_nice,
        **_header_patterns(),
    )
