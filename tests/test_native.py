"""The native hot loop (``native/``, ``tunnelwatch_native``) gives what the pure Python path gives.

Two levels, on every scenario archive, every corpus file, the golden inputs and synthetic
archives of several seeds:

- per record: framing gives the same records; a record the scanner reads itself (a clock
  row) has the device, time, time source, clock flag and timezone flag the Python parser
  gives it, and no kind; a record it hands back parses as on the Python path; and the
  parser's state (years, last stamp, last relay stamp, counters) is the same after every
  record;
- per run: ``tunnelwatch analyze`` prints the same incidents and the same counts with
  ``TUNNELWATCH_NATIVE=1`` as with ``TUNNELWATCH_NATIVE=0``.

Skipped, with the reason, when the extension is not built (``make install`` builds it
when cargo is there).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import os
import random
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from load import shapes
from load.scenario import default_scenario
from load.synth import generate
from streams.cli.main import main
from streams.core import native
from streams.core.catalog import default_catalog
from streams.core.event import Event, Unparsed
from streams.core.framing import iter_records
from streams.core.header import TAG_RE, fast_prefix, scan_prefix
from streams.core.kb import default_kb
from streams.core.parse import Parser

HAVE_NATIVE = importlib.util.find_spec(native.MODULE) is not None
pytestmark = pytest.mark.skipif(
    not HAVE_NATIVE,
    reason=f"{native.MODULE} is not built (make install builds it when cargo is installed)",
)

TESTS = Path(__file__).parent
SCENARIOS = sorted(p for p in (TESTS / "scenarios").glob("*/archive.log"))
CORPUS = sorted((TESTS / "data" / "corpus").glob("*.log"))
GOLDEN = sorted((TESTS / "golden").glob("*/*/*/input.log"))
SEEDS = (1, 7, 42)
INERT = native.inert_kinds(default_catalog(), default_kb())
SYNTH_LINES = 20_000


def _module() -> native.NativeModule:
    mod = native.load()
    assert mod is not None
    return mod


def _synth(seed: int, lines: int = SYNTH_LINES) -> bytes:
    return ("\n".join(generate(default_scenario(), lines=lines, seed=seed)) + "\n").encode()


# -- the two paths, record by record ------------------------------------------------------

Item = tuple[Any, ...]


def _state(p: Parser) -> tuple[Any, ...]:
    return (
        dataclasses.astuple(p.stats),
        dict(p._years.last),
        p._last_ts,
        p._last_relay,
    )


def _row_view(ev: Event | Unparsed) -> Item:
    """What a clock row says of a record, read off the Python parser's result."""
    assert isinstance(ev, Event), ev
    return (ev.device, ev.ts, ev.time_source, ev.clock_synced, ev.tz_known)


def python_items(data: bytes, parser: Parser) -> Iterator[tuple[str, Event | Unparsed, Item]]:
    """Framing and parsing as the pure Python path does it (open_archive's decoding)."""
    stream = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace", newline=None)
    for record in iter_records(stream):
        out = parser.parse(record)
        yield record, out, _state(parser)


def native_items(
    data: bytes, parser: Parser, *, chunks: Sequence[int] = (1 << 20,), limit: int = 1
) -> Iterator[tuple[str, Item | Event | Unparsed, Item]]:
    """The scanner's records: ``(text, row, state)`` for a clock row, ``(text, result,
    state)`` for a record handed to the parser. ``chunks``: sizes of the pieces fed, in
    turn; with ``limit=1`` the state is read after every record."""
    scanner = native.make_scanner(_module(), parser, kb=default_kb(), with_text=True)
    scanner.reset()
    pos = 0
    sizes = list(chunks)
    i = 0
    closed = False
    while True:
        if pos < len(data):
            size = max(1, sizes[i % len(sizes)])
            i += 1
            scanner.feed(data[pos : pos + size])
            pos += size
        else:
            scanner.close()
            closed = True
        while True:
            rows, record = scanner.scan(limit)
            for row in rows:
                yield row[5], tuple(row[:5]), _state(parser)
            if record is not None:
                yield record, parser.parse(record), _state(parser)
            elif len(rows) < limit:
                break
        if closed:
            rows, record = scanner.scan(limit)
            assert not rows and record is None
            return


def assert_same_records(
    data: bytes,
    *,
    year: int | None = 2024,
    reference_ts: float | None = None,
    device: str | None = None,
    chunks: Sequence[int] = (1 << 20,),
    limit: int = 1,
    context_ts: float | None = None,
    captures: bool = False,
) -> int:
    """Both paths over ``data``; returns how many records the scanner read itself."""
    py_parser, nat_parser = (
        Parser(
            year=year,
            reference_ts=reference_ts,
            device=device,
            context_ts=context_ts,
            captures=captures,
        )
        for _ in range(2)
    )
    expected = list(python_items(data, py_parser))
    got = list(native_items(data, nat_parser, chunks=chunks, limit=limit))
    assert [g[0] for g in got] == [e[0] for e in expected], "framing differs"
    rows = 0
    for (text, want, want_state), (_, have, have_state) in zip(expected, got, strict=True):
        if isinstance(have, tuple):
            rows += 1
            assert isinstance(want, Event), text
            assert have == _row_view(want), text
            # No kind, or one no rule reads, and nothing learned (the engine's clock only).
            assert want.kind is None or want.kind in INERT, text
            assert want.local is None and want.conn_id is None, text
            if want.kind is None:
                assert want.peer is None, text
        else:
            assert have == want, text
        if limit == 1:
            assert have_state == want_state, text
    assert _state(nat_parser) == _state(py_parser)
    return rows


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.parent.name)
def test_every_scenario_archive_gives_the_same_records_and_parser_state(path: Path) -> None:
    args = path.parent / "args.json"
    device = None
    if args.exists():
        extra = json.loads(args.read_text())
        if "--device" in extra:
            device = extra[extra.index("--device") + 1]
    assert_same_records(path.read_bytes(), device=device)
    # Without --year, the archive's time decides the year of year-less stamps.
    assert_same_records(path.read_bytes(), year=None, reference_ts=path.stat().st_mtime)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem[:60])
def test_every_corpus_file_gives_the_same_records_and_parser_state(path: Path) -> None:
    assert_same_records(path.read_bytes())
    assert_same_records(path.read_bytes(), year=None, reference_ts=1_700_000_000.0)


def test_every_golden_input_gives_the_same_records_and_parser_state() -> None:
    data = b"".join(p.read_bytes() + b"\n" for p in GOLDEN)
    assert_same_records(data)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_synthetic_archive_gives_the_same_records_and_most_are_clock_rows(seed: int) -> None:
    data = _synth(seed)
    rows = assert_same_records(data, chunks=(4096, 1, 333, 65536, 7))
    assert rows > SYNTH_LINES * 0.9


@pytest.mark.parametrize("seed", SEEDS)
def test_a_synthetic_archive_gives_the_same_records_scanned_in_big_batches(seed: int) -> None:
    assert_same_records(_synth(seed), limit=4096, year=None, reference_ts=1_709_700_000.0)


# -- every header shape on the native path ---------------------------------------------------

SHAPE_SOURCES = [TESTS / "data" / "corpus", TESTS / "golden"]
ALL_SHAPES = sorted(
    set(shapes.shapes_in(shapes.corpus_lines(SHAPE_SOURCES))) | set(shapes.EXTRA_SHAPES)
)


def _mixed(lines: int, seed: int) -> bytes:
    golden = [p.read_text() for p in GOLDEN]
    text = "\n".join(
        shapes.mixed_archive(
            ALL_SHAPES, lines, catalog_bodies=golden, catalog_share=0.1, seed=seed, devices=400
        )
    )
    return (text + "\n").encode()


def test_every_header_shape_of_the_corpus_renders_and_reads_back_as_itself() -> None:
    assert len(ALL_SHAPES) >= 40
    for shape in ALL_SHAPES:
        line = shapes.render(shape, 7, 1_709_596_800.25, 3) + ASA
        assert shapes.shape_of(line) == shape, line


@pytest.mark.parametrize("seed", (1, 2))
def test_a_mix_of_every_header_shape_gives_the_same_records_and_only_rule_kinds_leave_the_scanner(
    seed: int,
) -> None:
    data = _mixed(12_000, seed)
    rows = assert_same_records(data, chunks=(65536, 777))
    assert rows > 12_000 * 0.85
    handed = [
        (text, out)
        for text, out, _ in native_items(data, Parser(year=2024))
        if not isinstance(out, tuple)
    ]
    # What the scanner hands to the parser: catalog messages whose kind a rule reads or
    # that teach the engine something (the device's address, a connection's peer), and the
    # golden inputs' untagged debug lines and wrapped (multi-line) records; never a tagged
    # line outside the catalog.
    assert handed
    for text, out in handed:
        if "\n" in text:
            continue
        assert isinstance(out, Event), text
        assert out.kind is not None, text
        untagged = TAG_RE.search(text) is None
        assert untagged or out.kind not in INERT or out.local or out.conn_id, text


def test_analyze_gives_the_same_incidents_on_a_mix_of_every_header_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mixed.log"
    path.write_bytes(_mixed(100_000, 3))
    assert_same_analysis(["--year", "2024", str(path)], capsys)


# -- the two paths through tunnelwatch analyze ----------------------------------------------

_STATS = re.compile(r"lines=\d+ events=\d+ classified=\d+ unparsed=\d+ incidents=\d+")


def _analyze(argv: list[str], mode: str, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    old = os.environ.get(native.ENV)
    os.environ[native.ENV] = mode
    try:
        rc = main(["analyze", "--format", "jsonl", *argv])
    finally:
        if old is None:
            del os.environ[native.ENV]
        else:
            os.environ[native.ENV] = old
    out, err = capsys.readouterr()
    assert rc == 0, err
    m = _STATS.search(err)
    assert m is not None, err
    assert err.rstrip().endswith(f"path={'native' if mode == '1' else 'python'}"), err
    # The clock report too: devices off the fleet's clock, jumps and outliers (with the
    # line each is reported with).
    report = [line for line in err.splitlines() if line.startswith("tunnelwatch: clock")]
    return out, m.group(0) + "".join(f"\n{line}" for line in report)


def assert_same_analysis(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    native_out = _analyze(argv, "1", capsys)
    python_out = _analyze(argv, "0", capsys)
    assert native_out == python_out
    return native_out[0]


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.parent.name)
def test_analyze_gives_the_same_incidents_on_every_scenario(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = path.parent / "args.json"
    extra = json.loads(args.read_text()) if args.exists() else []
    assert_same_analysis(["--year", "2024", *extra, str(path)], capsys)
    assert_same_analysis([*extra, str(path)], capsys)


def test_analyze_gives_the_same_incidents_on_all_scenarios_and_corpus_files_at_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # One run over many files: framing starts afresh per file, the tick count goes on.
    files = [str(p) for p in [*SCENARIOS, *CORPUS]]
    assert_same_analysis(["--year", "2024", *files], capsys)


@pytest.mark.parametrize("seed", SEEDS)
def test_analyze_gives_the_same_incidents_on_a_synthetic_archive(
    seed: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "synth.log"
    path.write_bytes(_synth(seed, 30_000))
    out = assert_same_analysis(["--year", "2024", str(path)], capsys)
    assert len(out.splitlines()) >= 5
    assert_same_analysis([str(path)], capsys)


def test_analyze_reads_gzip_and_standard_input_the_same_way(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import gzip

    data = _synth(3, 10_000)
    gz = tmp_path / "synth.log.gz"
    gz.write_bytes(gzip.compress(data))
    from_gzip = assert_same_analysis(["--year", "2024", str(gz)], capsys)
    outs = []
    for mode in ("1", "0"):
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
        outs.append(_analyze(["--year", "2024", "-"], mode, capsys))
    assert outs[0] == outs[1]
    assert outs[0][0] == from_gzip


def test_the_native_path_is_required_with_tunnelwatch_native_1_and_refused_with_0(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(native.ENV, "0")
    assert native.load() is None
    monkeypatch.setenv(native.ENV, "1")
    assert native.load() is not None
    monkeypatch.setattr(native, "MODULE", "tunnelwatch_native_not_there")
    with pytest.raises(native.NativeUnavailable):
        native.load()
    monkeypatch.setenv(native.ENV, "auto")
    assert native.load() is None


def test_an_extension_built_for_another_interface_is_not_used(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(native, "ABI", native.ABI + 1)
    monkeypatch.setenv(native.ENV, "auto")
    assert native.load() is None
    assert "using the Python path" in capsys.readouterr().err
    monkeypatch.setenv(native.ENV, "1")
    with pytest.raises(native.NativeUnavailable):
        native.load()


# -- edge cases -----------------------------------------------------------------------------

ASA = "%ASA-6-302013: Built inbound TCP connection 1 for outside:198.18.0.1/1 to inside:10.0.0.1/2"
IOS = "%SEC-6-IPACCESSLOGP: list 101 denied tcp 198.18.0.1(1) -> 198.51.100.1(22), 1 packet"
MAC = "%CRYPTO-4-RECVD_PKT_MAC_ERR: decrypt: mac verify failed for connection id=1 local=10.0.0.1 remote=192.0.2.9 spi=1 seq=1"

EDGE_CASES: dict[str, bytes] = {
    "crlf": f"<166>Mar 05 2024 00:00:00 fw-1 : {ASA}\r\n<166>Mar 05 2024 00:00:01 fw-1 : {ASA}\r\n".encode(),
    "lone cr": f"Mar  5 00:00:00 fw-2 {ASA}\r<190>: rtr: Mar  5 2024 00:00:07.490 UTC: {IOS}\r".encode(),
    "crlf split by a chunk": (
        f"Mar  5 00:00:00 fw-2 {ASA}\r" + "\n" * 1 + f"Mar  5 00:00:01 fw-2 {ASA}"
    ).encode(),
    "continuation lines": (
        f"<190>1: rtr1: Mar  5 00:00:00.001 UTC: {IOS}\n"
        "   wrapped onto a second line\n"
        "\tand a third\n"
        f"<190>2: rtr1: Mar  5 00:00:01.001 UTC: {MAC[:60]}\n"
        "connection id=1 local=10.0.0.1 remote=192.0.2.9\n"
        "sequence number=7\n"
        "PktEngReturn_MacMiscompare\n"
        f"<190>3: rtr1: Mar  5 00:00:02.001 UTC: {IOS}\n"
    ).encode(),
    "relay header alone, message on the next line": (
        "Sep 22 11:02:39 131.203.252.166 2435:\n"
        f"Sep 22 11:02:39: {IOS}\n"
        "Sep 22 11:02:40 10.1.1.1\n"
        "   \n"
        f"Sep 22 11:02:41 10.1.1.1 {ASA}\n"
        "Sep 22 11:02:42 hôte-1 17:\n"
        f"   Sep 22 11:02:42: {IOS}\n"
        "Sep 22 11:02:43\x1crelay\n"
        f"{ASA}\n"
        "Sep 22 11:02:44 relay\u3000\n"
        f"\u3000{ASA}\n"
    ).encode(),
    "empty and blank lines": f"\n\n   \n\t\n<166>Mar 05 2024 00:00:00 fw-1 : {ASA}\n\n \x0b\x1c \n".encode(),
    "invalid utf-8": (
        f"<166>Mar 05 2024 00:00:00 fw-\xff1 : {ASA}\n".encode("latin-1")
        + f"<166>Mar 05 2024 00:00:01 fw-1 : {ASA} \xe2\x82\n".encode("latin-1")
        + b"\xed\xa0\x80\xf0\x80\x80 %ASA-6-302013: x\n"
        + "Mar  5 00:00:02 fw-é %ASA-6-302013: x\n".encode()
        + b"\xef\xbb\xbf<166>Mar 05 2024 00:00:03 fw-1 : %ASA-6-302013: y\n"
    ),
    "nul and control bytes": (
        f"<166>Mar 05 2024 00:00:00 fw-1 : {ASA}\x00\n".encode()
        + f"<166>Mar 05 2024\x1c00:00:01 fw-1 : {ASA}\n".encode()
        + f"<166>Mar 05 2024 00:00:02 fw-1\x1f: {ASA}\n".encode()
        + f"<166>Mar\xa005 2024 00:00:02 fw-1 : {ASA}\n".encode()
    ),
    "a 64 KiB line and longer ones": (
        f"<166>Mar 05 2024 00:00:00 fw-1 : {ASA} " + "x" * (65536 - 70) + "\n"
        f"<166>Mar 05 2024 00:00:01 fw-1 : {ASA} " + "y" * 70_000 + "\n"
        "<166>Mar 05 2024 00:00:02 fw-1 " + " " * 70_000 + f": {ASA}\n"
        f"<166>Mar 05 2024 00:00:03 {'h' * 300} : {ASA}\n"
        f"<166>Mar 05 2024 00:00:04 fw-1 : {ASA}\n"
    ).encode(),
    "dec 31 to jan 1": (
        f"Dec 31 23:59:58 fw-3 {ASA}\n"
        f"<166>fw-4 {ASA}\n"
        f"Dec 31 23:59:59 fw-3 Dec 31 23:59:59: {ASA}\n"
        f"Jan  1 00:00:00 fw-3 {ASA}\n"
        f"Jan  1 00:00:01 fw-3 Jan  1 00:00:01: {ASA}\n"
        f"Dec 31 23:59:59 fw-3 {ASA}\n"
        f"Jan  1 00:00:02 fw-5 *Dec 31 23:59:59.1 UTC: {IOS}\n"
        f"Jan  1 00:00:03 fw-3 {ASA}\n"
        f"Jul  1 00:00:03 fw-3 {ASA}\n"
        f"Jan  1 00:00:03 fw-3 {ASA}\n"
    ).encode(),
    "timezone labels": (
        f"<190>1: rtr2: Mar  5 2024 00:00:00.001 NewYork: {IOS}\n"
        f"<190>2: rtr2: Mar  5 2024 00:00:00.001 VIENNA: {IOS}\n"
        f"<190>3: rtr2: Mar  5 00:00:00 MEST: {IOS}\n"
        f"<190>rtr2: Mar  5 00:00:00 Foo: {IOS}\n"
        f"<190>4: rtr2: Mar  5 07:30:09.687 UTC+07:30: {IOS}\n"
        f"<190>5: rtr2: Mar  5 07:30:09.687 GMT-3: {IOS}\n"
        f"<190>6: rtr2: .Mar  5 07:30:09.687 KST: {IOS}\n"
        f"<190>7: rtr2: *Mar  5 07:30:09KST: {IOS}\n"
        f"Mar  5 00:00:00 EDT: {IOS}\n"
        f"Mar  5 00:00:00 EDT {IOS}\n"
        f"<166>EDT {ASA}\n"
        f"<166>2024-03-05T00:00:01+05:30 fw-3 : {ASA}\n"
        f"<166>2024-03-05T00:00:01.123456-08:00 fw-3 : {ASA}\n"
        f"<166>2024-03-05T00:00:01Z fw-3 : Mar  5 00:00:01: {ASA}\n"
        f"<166>2024-03-05T00:00:01Z fw-3 : *Mar  5 00:00:01: {ASA}\n"
    ).encode(),
    "lines without stamps": (
        f"<166>10.30.0.4 {ASA}\n"
        f"Mar  5 00:00:00 relay1 *Mar  1 00:00:01.000 UTC: {IOS}\n"
        f"<166>10.30.0.4 {ASA}\n"
        f"<166>fw-9 {ASA}\n"
        f"{ASA}\n"
        f"<189>: rtr3: {IOS}\n"
        f"<189>12: rtr3: 000012: {IOS}\n"
        f"fw-9: {ASA}\n"
    ).encode(),
    "dates that do not exist": (
        f"<166>Feb 30 2024 00:00:00 fw-1 : {ASA}\n"
        f"<166>Feb 29 2023 00:00:00 fw-1 : {ASA}\n"
        f"<166>Feb 29 2024 25:00:00 fw-1 : {ASA}\n"
        f"<166>Mar 05 2024 23:61:00 fw-1 : {ASA}\n"
        f"<166>Mar 05 2024 23:59:60 fw-1 : {ASA}\n"
        f"<166>Mar 05 0000 00:00:00 fw-1 : {ASA}\n"
        f"<166>0000-03-05T00:00:01Z fw-3 : {ASA}\n"
        f"<166>2024-13-05T00:00:01Z fw-3 : {ASA}\n"
        f"Mar  5 00:00:00 fw-7 Feb 31 00:00:00: {ASA}\n"
        f"Feb 31 00:00:00 fw-7 Feb 31 00:00:00: {ASA}\n"
        f"<166>9999-12-31T23:59:59-01:00 fw-3 : {ASA}\n"
    ).encode(),
    "catalog, wrapper and untagged lines between clock rows": (
        f"<190>1: rtr4: Mar  5 00:00:00.001 UTC: {IOS}\n"
        f"<190>2: rtr4: Mar  5 00:00:00.002 UTC: {MAC}\n"
        "<190>3: rtr4: Mar  5 00:00:00.003 UTC: %IOSXE-3-PLATFORM: SIP0: cpp_cp: QFP:0.0 Thread:000 "
        "TS:00000000000000 %IPSEC-3-HMAC_ERROR: IPSec SA receives HMAC error, DP Handle 1, src_addr 10.0.0.2, "
        "dest_addr 10.0.0.1, SPI 0x1\n"
        "<190>4: rtr4: Mar  5 00:00:00.004 UTC: %IOSXE-3-PLATFORM: no inner tag\n"
        "ISAKMP (0:1): found peer pre-shared key matching 192.0.2.5\n"
        "IPSEC(validate_proposal): invalid local address 10.0.0.9\n"
        f"<190>5: rtr4: Mar  5 00:00:00.005 UTC: %SEC-6-IPACCESSLOGP {IOS}\n"
        f"<190>6: rtr4: Mar  5 00:00:00.006 UTC: %PIX-4-402120: x\n"
        f"<190>7: rtr4: Mar  5 00:00:00.007 UTC: %FWSM-6-302013: x\n"
        f"<190>8: rtr4: Mar  5 00:00:00.008 UTC: %A-B-C-1-X: x\n"
        f"<190>9: rtr4: Mar  5 00:00:00.009 UTC: %A-B-8-X: x %A-1-Y : z\n"
        "<166>Mar 05 2024 00:00:10 fw-6 : %ASA-5-713201: Group = vpn, IP = 192.0.2.8, "
        "Duplicate Phase 1 packet detected.  Retransmitting last packet.\n"
        "<166>Mar 05 2024 00:00:11 fw-6 : %ASA-5-713904: IP = 192.0.2.8, Received an "
        "un-encrypted INVALID_COOKIE notify message, dropping\n"
        "<166>Mar 05 2024 00:00:12 fw-6 : %ASA-5-713904: IP = 192.0.2.8, Remote peer "
        "not responding\n"
        "<166>Mar 05 2024 00:00:13 fw-6 : %ASA-5-713068: Received non-routine Notify "
        "message: Invalid ID info (18)\n"
        "<166>Mar 05 2024 00:00:14 fw-6 : %ASA-5-713068: Received non-routine Notify "
        "message: Delete (16)\n"
        "<166>Mar 05 2024 00:00:15 fw-6 : %ASA-7-713906: \n"
    ).encode(),
    "lines without a '%' tag": (
        f"<166>Mar 05 2024 00:00:00 fw-1 : {ASA[1:]}\n"
        f"Mar  5 00:00:01 rtr-1 {IOS[1:]}\n"
        f"Mar  5 00:00:02 rtr-1 {MAC[1:]}\n"
        "Mar  5 00:00:03 rtr-1 sshd[811]: Accepted publickey for admin from 192.0.2.4\n"
        "<13>host-7: a line without tag or stamp\n"
        "a line without tag, stamp or PRI\n"
        "Mar  5 00:00:04 rtr-1 ISAKMP (0:1): found peer pre-shared key matching 192.0.2.5\n"
        "Mar  5 00:00:05 rtr-1 IPSEC(validate_proposal): invalid local address 10.0.0.9\n"
        "Mar  5 00:00:06 rtr-1 foo(bar) x\n"
        "<189>12: rtr3: 000012: 00:01:02: uptime, no tag\n"
        "Mar  5 00:00:07 rtr-1 : : ASA-5-713068: Received non-routine Notify message: "
        "Delete (16)\n"
    ).encode(),
    "rfc 5424 and other shapes for the full scanner": (
        f"<134>1 2024-01-02T03:04:05Z host app - - - {ASA}\n"
        f"<165>7433: ASR920: 007439: 2y10w: {IOS}\n"
        f"foo: 00:01:01: {IOS}\n"
        f"<189>1578041: router1: 000123: .Mar 26 20:49:19KST: {IOS}\n"
        f"Sep 22 11:02:39 131.203.252.166 2435: Sep 22 11:02:39: {IOS}\n"
        f"<164>Aug 28 2023 15:39:30 fw123-vc456 : {ASA}\n"
        f"Mar  5 00:00:00 [fe80::1]: {ASA}\n"
        f"Mar  5 00:00:00 fe80::1: {ASA}\n"
    ).encode(),
    "no newline at the end": f"<166>Mar 05 2024 00:00:00 fw-1 : {ASA}".encode(),
    "only a header line at the end": b"Sep 22 11:02:39 10.1.1.1 2435:",
    "empty input": b"",
}


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_an_edge_case_gives_the_same_records_and_state(name: str) -> None:
    data = EDGE_CASES[name]
    for chunks in ((1 << 20,), (1,), (2, 3, 5)):
        assert_same_records(data, chunks=chunks)
        assert_same_records(data, year=None, reference_ts=1_709_600_000.0, chunks=chunks)
        assert_same_records(data, year=None, device="dev0", chunks=chunks)
        assert_same_records(data, context_ts=1_709_827_200.0, chunks=chunks)


def test_unstamped_clock_rows_take_the_capture_time_on_both_paths() -> None:
    # No stamp, no relay and no earlier stamped line: the capture's time (--start or the
    # file's time), on the rows the scanner reads itself as on the parser's records.
    data = (f"<166>10.255.255.1 {ASA}\nRouterA#show logging\n<166>10.255.255.1 {ASA}\n").encode()
    parser = Parser(year=2024, context_ts=1_709_827_200.0, captures=True)
    items = list(native_items(data, parser))
    rows = [i[1] for i in items if isinstance(i[1], tuple)]
    assert len(rows) == 2, items
    assert {r[1] for r in rows} == {1_709_827_200.0}
    assert rows[-1][0] == "10.255.255.1", "a line that names its device keeps it after a prompt"
    assert_same_records(data, context_ts=1_709_827_200.0, captures=True)


def test_year_less_stamps_roll_into_the_next_year_on_both_paths() -> None:
    data = EDGE_CASES["dec 31 to jan 1"]
    parser = Parser(year=2023)
    rows = [i for i in native_items(data, parser) if isinstance(i[1], tuple)]
    assert rows, "the scanner read none of the lines itself"
    assert parser._years.last["fw-3"] == (2024, 1)
    assert_same_records(data, year=2023)


def test_clock_rows_are_the_lines_whose_kind_no_rule_reads() -> None:
    data = EDGE_CASES["catalog, wrapper and untagged lines between clock rows"]
    parser = Parser(year=2024)
    items = list(native_items(data, parser))
    kinds = ["row" if isinstance(i[1], tuple) else "parser" for i in items]
    # a tag outside the catalog; a catalog tag the rules read; IOS-XE wrappers (with and
    # without an inner tag); untagged debug lines: the parser. Then rows: a '%' before the
    # tag (the full header reader); an ASA catalog id under PIX whose text no entry matches;
    # outside the catalog (three header shapes). ASA 713201 (DUPLICATE_PACKET), 7139xx with
    # any other text (IKE_EVENT), 713068 with another notify (IKE_NOTIFY): kinds no rule
    # reads, so rows; 7139xx "Remote peer not responding" and 713068 "Invalid ID info" are
    # kinds rules read: the parser. An empty 7139xx body matches no entry: a row.
    assert kinds == ["row"] + ["parser"] * 5 + ["row"] * 7 + ["parser"] * 2 + ["row"] * 2
    # The rows of matched inert entries still count as classified, as on the Python path.
    py_parser = Parser(year=2024)
    want = [i[1] for i in python_items(data, py_parser)]
    inert_rows = [w.kind for w, k in zip(want, kinds, strict=True) if k == "row" and w.kind]
    assert inert_rows == ["DUPLICATE_PACKET", "IKE_EVENT", "IKE_NOTIFY"]
    assert parser.stats.classified == py_parser.stats.classified == 9


# -- random input ---------------------------------------------------------------------------

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MON = st.sampled_from(["Jan", "Feb", "Mar", "Sep", "Dec", "Foo"])
TZ = st.sampled_from(
    ["", " UTC", " KST", "KST", " CEST", " mdt", " NewYork", " EDT", " UTC+07:30", " Q"]
)
NAME = st.sampled_from(
    ["router1", "ASR920", "fw-1", "sw01.example.com", "10.1.1.1", "EDT", "UTC", "x"]
)
TAGS = st.sampled_from(
    [
        ASA,
        IOS,
        MAC,
        "%ASA-4-402120: IPSEC: Received an ESP packet (SPI= 0x1, sequence number= 0x2) from 192.0.2.1 (user= 192.0.2.1) to 10.0.0.1 that failed authentication.",
        "%CRYPTO-4-IKMP_NO_SA: IKE message from 192.0.2.1 has no SA",
        "%LINK-3-UPDOWN: Interface Gi0/1, changed state to up",
        "%SYS-5-CONFIG_I : Configured from console",
        "no tag here",
        "ISAKMP: No cert, and no keys (public or pre-shared) with remote peer 192.0.2.7",
        # Tags without their '%' (some relays drop it), outside and inside the catalog.
        ASA[1:],
        IOS[1:],
        MAC[1:],
        "ASA-5-713201: Group = vpn, IP = 192.0.2.8, Duplicate Phase 1 packet detected.",
        "IPSEC(validate_proposal): invalid local address 10.0.0.9",
        "sshd[811]: Accepted publickey for admin from 192.0.2.4 port 50122",
    ]
)


@st.composite
def syslog_line(draw: st.DrawFn) -> str:
    parts = []
    if draw(st.booleans()):
        parts.append(f"<{draw(st.integers(0, 999))}>")
    if draw(st.booleans()):
        if draw(st.booleans()):
            parts.append(
                f"{draw(MON)} {draw(st.integers(0, 32)):>2}{draw(st.sampled_from(['', ' 2023', ' 0000']))} "
                f"{draw(st.integers(0, 25)):02}:{draw(st.integers(0, 61)):02}:{draw(st.integers(0, 61)):02} "
                f"{draw(NAME)}{draw(st.sampled_from([' ', ' : ', ': ']))}"
            )
        else:
            parts.append(
                f"2024-{draw(st.integers(0, 13)):02}-{draw(st.integers(0, 32)):02}T"
                f"{draw(st.integers(0, 24)):02}:00:00{draw(st.sampled_from(['Z', '+01:00', '-08:00', '.5Z']))} "
                f"{draw(NAME)} : "
            )
    if draw(st.booleans()):
        parts.append(f"{draw(st.integers(0, 9_999_999))}: ")
    elif draw(st.booleans()):
        parts.append(": ")
    if draw(st.booleans()):
        parts.append(f"{draw(NAME)}: ")
    if draw(st.booleans()):
        parts.append(f"{draw(st.integers(0, 999_999)):06}: ")
    if draw(st.booleans()):
        flag = draw(st.sampled_from(["", "*", "."]))
        year = draw(st.sampled_from(["", " 2023", " 2024"]))
        frac = draw(st.sampled_from(["", ".123", ".000001", ".5"]))
        parts.append(
            f"{flag}{draw(MON)} {draw(st.integers(0, 31)):>2}{year} {draw(st.integers(0, 24)):02}:"
            f"{draw(st.integers(0, 59)):02}:{draw(st.integers(0, 60)):02}{frac}{draw(TZ)}"
            + draw(st.sampled_from([": ", ":", " ", " fw-2: ", " host : "]))
        )
    parts.append(draw(TAGS))
    line = "".join(parts)
    if draw(st.integers(0, 9)) == 0:
        i = draw(st.integers(0, len(line)))
        line = (
            line[:i]
            + draw(st.sampled_from(["\t", "  ", "\x1c", "é", "%", ":", "\n ", "\r"]))
            + line[i:]
        )
    return line


@FUZZ
@given(
    st.lists(syslog_line(), min_size=1, max_size=12),
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.lists(st.integers(1, 200), min_size=1, max_size=4),
    st.sampled_from([2024, None]),
)
def test_random_syslog_lines_give_the_same_records_and_state(
    lines: list[str], newline: str, chunks: list[int], year: int | None
) -> None:
    data = newline.join(lines).encode()
    assert_same_records(data, chunks=chunks, year=year, reference_ts=1_709_600_000.0)


@FUZZ
@given(st.binary(max_size=600), st.lists(st.integers(1, 64), min_size=1, max_size=3))
def test_random_bytes_give_the_same_records_and_state(data: bytes, chunks: list[int]) -> None:
    assert_same_records(data, chunks=chunks)


@FUZZ
@given(st.lists(st.sampled_from([ASA, IOS, MAC, "x", "", " ", "\xff", "%"]), max_size=20))
def test_random_bodies_after_a_known_header_give_the_same_records(bodies: list[str]) -> None:
    data = "".join(f"<166>Mar 05 2024 00:00:{i % 60:02} fw-1 : {b}\n" for i, b in enumerate(bodies))
    assert_same_records(data.encode("utf-8", "surrogateescape"), chunks=(17,))


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="%ABCSX019_-: \t\x1c:", max_size=40))
def test_the_native_tag_finder_agrees_with_tag_re(text: str) -> None:
    m = TAG_RE.search(text)
    want = None if m is None else (m.start(), m.group("fac"), int(m.group("sev")), m.group("mnem"))
    assert _module().find_message_tag(text) == want


@settings(max_examples=400, deadline=None)
@given(syslog_line())
def test_the_native_header_reader_agrees_with_fast_prefix(line: str) -> None:
    if not line.isascii():
        return
    tag = TAG_RE.search(line)
    if tag is None:
        return
    scanner = native.make_scanner(_module(), Parser(year=2024))
    have = scanner.header(line, tag.start())
    h = fast_prefix(line, tag.start())
    if h is None:
        assert have is None
        return

    def stamp(s: Any) -> Any:
        return None if s is None else dataclasses.astuple(s)

    assert have == (h.host, h.origin, stamp(h.relay_stamp), stamp(h.device_stamp), h.clock_synced)


def test_a_prefix_and_its_digits_read_as_zeros_give_the_same_header_shape() -> None:
    # The scanner memoizes header shapes by the prefix with every digit read as '0'.
    rng = random.Random(5)
    lines = [line for line in generate(default_scenario(), lines=3000, seed=9) if line.isascii()]
    scanner = native.make_scanner(_module(), Parser(year=2024))
    for line in lines:
        tag = TAG_RE.search(line)
        if tag is None:
            continue
        prefix = line[: tag.start()]
        digits = "".join(rng.choice("0123456789") if c.isdigit() else c for c in prefix)
        zeros = "".join("0" if c.isdigit() else c for c in prefix)
        for variant in (digits, zeros, prefix):
            fresh = native.make_scanner(_module(), Parser(year=2024))
            assert scanner.header(variant, len(variant)) == fresh.header(variant, len(variant))


def test_rust_patterns_spell_out_pythons_ascii_classes() -> None:
    assert native.rust_pattern(r"\s+\d{1,2}[\w.-]*", full=True) == (
        r"(?-u)^(?:[\t\n\x0B\x0C\r \x1C-\x1F]+[0-9]{1,2}[0-9A-Za-z_.-]*)$"
    )
    assert native.rust_pattern(r"\S+x", full=False) == r"(?-u)^(?:[^\t\n\x0B\x0C\r \x1C-\x1F]+x)"
    with pytest.raises(ValueError):
        native.rust_pattern(r"[\S]", full=True)


PREFIX_PART = st.sampled_from(
    [
        "<134>", "<13>", "<1000>", "1 ", "2024-01-02T03:04:05Z ", "2024-01-02T03:04:05.123456789+05:30 ",
        "*2024-01-02 03:04:05-0800 ", "Jun  1 00:00:00 ", "Jun 1 2026 00:00:00.123 ", "*Mar  1 ",
        ".Mar 26 20:49:19KST: ", "Mar 26 20:49:19 UTC+07:30: ", "Mar 26 20:49:19GMT-3: ",
        "Mar 26 20:49:19 Foo : ", "Mar 26 20:49:19 EDT ", "10.1.1.1 ", "fe80::1: ", "::1:2:3: ",
        "a:b:c:d:e:f:1:2: ", "1:2:3:4:5:6:7:8:9: ", "host-1 ", "fw01: ", "2435: ", "000123: ",
        "00:01:01: ", "*1d02h: ", "1y2w3d4h5m: ", "2y10w ", "12:34:56.789 ", ": ", ":",
        "[meta x=\"1\"] ", "[a][b\\]c]: ", "app - - - ", "- ", "UTC: ", "EDT ", "(x) ", "*y ",
        "  ", "\t", "\x1c", "1234567890123: ", ".5s ",
    ]
)  # fmt: skip


_SHARED: dict[str, native.Scanner] = {}


@settings(max_examples=600, deadline=None)
@given(st.lists(PREFIX_PART, max_size=9), TAGS, st.randoms(use_true_random=False))
def test_the_native_full_header_reader_agrees_with_scan_prefix(
    parts: list[str], body: str, rnd: random.Random
) -> None:
    # One scanner for all examples: its layouts are memoized by the prefix with every
    # digit read as '0', so the same prefix with other digits must read as Python reads it.
    scanner = _SHARED.get("scanner")
    if scanner is None:
        scanner = _SHARED["scanner"] = native.make_scanner(_module(), Parser(year=2024))
    line = "".join(parts) + body
    tag = TAG_RE.search(line)
    if tag is None:
        return

    def stamp(s: Any) -> Any:
        return None if s is None else dataclasses.astuple(s)

    prefix = line[: tag.start()]
    for variant in (
        prefix,
        "".join(rnd.choice("0123456789") if c.isdigit() else c for c in prefix),
    ):
        text = variant + line[tag.start() :]
        have = scanner.full_header(text, len(variant))
        h = scan_prefix(text, len(variant), tagged=True)
        want = (
            h.host, h.origin, stamp(h.relay_stamp), stamp(h.device_stamp), h.clock_synced, h.uptime
        )  # fmt: skip
        assert have == want, text


def test_rust_patterns_keep_negated_classes_and_refuse_what_rust_reads_otherwise() -> None:
    assert native.rust_pattern(r"[^\s:]+", full=False) == (
        r"(?-u)^(?:[^\t\n\x0B\x0C\r \x1C-\x1F:]+)"
    )
    assert native.rust_pattern(r"a[^(]+?b", full=False, search=True) == r"(?-u)(?:a[^(]+?b)"
    for clever in (r"[]a]", r"[^]a]", r"[[a]", r"[a&&b]", r"[a--b]", r"[a~~b]"):
        with pytest.raises(ValueError):
            native.rust_pattern(clever, full=False)


def _kb_reading(*kinds: str) -> Any:
    """The default knowledge base plus a rule that reads ``kinds``."""
    import yaml

    from streams.core.kb import load_document

    doc = yaml.safe_load((Path(native.__file__).parent / "kb" / "rules.yaml").read_text())
    doc["rules"].append(
        {
            "id": "test-reads",
            "type": "threshold",
            "kinds": list(kinds),
            "key": "device",
            "window": 600,
            "threshold": 3,
            "cause": "tunnel_flapping",
            "confidence": 0.5,
            "summary": "{count} test events",
        }
    )
    return load_document(doc, default_catalog().kinds())


def test_the_inert_catalog_entries_follow_the_knowledge_base() -> None:
    catalog = default_catalog()
    lookup = native.catalog_lookup(catalog, default_kb())
    assert set(lookup) == set(catalog.by_tag)  # every tag's regexes translate
    inert_tags = {tag for tag, entries in lookup.items() if any(e[1] for e in entries)}
    assert {"ASA-713201", "ASA-713202", "ASA-713068", "ASA-713900"} <= inert_tags
    # 602304 SA_DELETED: no rule reads the kind, but its `local` teaches the device's address.
    assert "SA_DELETED" in INERT and "ASA-602304" not in inert_tags
    # A rule that reads DUPLICATE_PACKET makes 713201/713202 matter: no longer rows.
    lookup2 = native.catalog_lookup(catalog, _kb_reading("DUPLICATE_PACKET"))
    assert not any(e[1] for e in lookup2["ASA-713201"])
    assert any(e[1] for e in lookup2["ASA-713068"])
    line = (
        b"<166>Mar 05 2024 00:00:10 fw-6 : %ASA-5-713201: Group = vpn, IP = 192.0.2.8, "
        b"Duplicate Phase 1 packet detected.  Retransmitting last packet.\n"
    )
    for kb, rows in ((default_kb(), 1), (_kb_reading("DUPLICATE_PACKET"), 0)):
        scanner = native.make_scanner(_module(), Parser(year=2024), kb=kb)
        scanner.reset()
        scanner.feed(line)
        scanner.close()
        got, record = scanner.scan(10)
        assert (len(got), record is None) == (rows, rows == 1)


@FUZZ
@given(st.lists(st.tuples(st.lists(PREFIX_PART, max_size=7), TAGS), min_size=1, max_size=10))
def test_random_prefixes_of_every_kind_give_the_same_records_and_state(
    lines: list[tuple[list[str], str]],
) -> None:
    # Tagged, bare-tagged and untagged bodies after prefixes the full reader must read.
    data = "\n".join("".join(parts) + body for parts, body in lines).encode()
    assert_same_records(data, year=None, reference_ts=1_709_600_000.0)


def test_uptime_stamped_lines_without_a_clock_keep_their_distances_on_both_paths() -> None:
    # Found by the random test: an uptime stamp (`00:00:01`) after an unreadable date,
    # with no relay clock, is read by Parser._uptime_ts (distances from the device's
    # first uptime); the native scanner hands such lines to Python.
    line = "%ASA-6-302013: Built inbound TCP connection 1 for outside:198.18.0.1/1 to inside:10.0.0.1/2"
    lines = [
        "\t" + line,
        "router1: Foo  0 00:00:00: " + line,
        line,
        "\t" + line,
        "router1: Foo  0 00:00:01: " + line,
        "\t" + line,
    ]
    data = ("\n".join(lines) + "\n").encode()
    assert_same_records(data, chunks=[1], year=2024, reference_ts=1_709_600_000.0)


def test_uptime_stamped_lines_are_clock_rows_with_the_parser_s_anchors() -> None:
    # `service timestamps log uptime` (IOS's default on many releases): no clock to read,
    # so each device's first uptime anchors its line at the previous line's time (or the
    # capture's), later ones keep their distance, a smaller one (a reload) starts anew.
    # The scanner reads them itself now, with the parser's own anchors.
    lines = []
    for i, up in enumerate(["00:01:01", "00:01:05.250", "1d02h", "1d03h", "00:00:09", "2y10w"]):
        for dev in ("r1", "r2"):
            lines.append(f"<189>{100 + i}: {dev}: {up}: %LINK-3-UPDOWN: Interface Gi0/{i}, up")
            lines.append(f"{dev}: *{up}: %SYS-5-CONFIG_I: Configured from console by vty{i}")
    data = ("\n".join(lines) + "\n").encode()
    rows = assert_same_records(data, year=2024, context_ts=1_709_600_000.0)
    assert rows == len(lines)
    parser = Parser(year=2024, context_ts=1_709_600_000.0)
    for _ in native_items(data, parser):
        pass
    assert set(parser._uptimes) == {"r1", "r2"}


def test_analyze_gives_lines_without_a_device_name_to_the_unknown_device_on_both_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A line with no host (and `--device ""`) is the unknown device's, as is a line whose
    # host is "unknown": one device, whose clock the report reads the same on both paths.
    path = tmp_path / "nameless.log"
    lines = [
        "<189>1: *Mar  5 06:00:00.000: %SYS-5-CONFIG_I: Configured from console by admin on vty0",
        "<189>2: unknown: Mar  5 2024 09:00:00.000 UTC: %SYS-5-CONFIG_I: Configured from "
        "console by admin on vty0",
        "<189>3: rtr1: Mar  5 2024 06:00:20.000 UTC: %SYS-5-CONFIG_I: Configured from console "
        "by admin on vty0",
    ]
    path.write_text("\n".join(lines) + "\n")
    argv = ["--year", "2024", "--device", "", str(path)]
    native_run = _analyze(argv, "1", capsys)
    assert native_run == _analyze(argv, "0", capsys)
    assert "clocks off the fleet's: rtr1 -2h59m" in native_run[1]


def test_analyze_reports_a_clock_jump_with_its_line_on_both_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A stamp from 2099 among ordinary lines outside the catalog: an outlier, reported with
    # the line that carried it (the native path hands that line to Python with its text).
    path = tmp_path / "outlier.log"
    lines = [
        f"<166>Mar 05 2024 10:{m:02d}:00 fw-1 : %ASA-6-302013: Built inbound TCP connection "
        f"{m} for outside:198.51.100.7/443 (198.51.100.7/443) to inside:10.0.0.9/51515 "
        "(10.0.0.9/51515)"
        for m in range(30)
    ]
    lines[10] = lines[10].replace("Mar 05 2024", "Mar 05 2099")
    path.write_text("\n".join(lines) + "\n")
    native_run = _analyze([str(path)], "1", capsys)
    assert native_run == _analyze([str(path)], "0", capsys)
    assert "clock of fw-1: 0 jump(s), 1 outlier stamp(s): <166>Mar 05 2099" in native_run[1]
