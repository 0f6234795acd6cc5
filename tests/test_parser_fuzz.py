"""Property tests: the parser takes any input and never loses it.

``Parser.parse`` catches its own exceptions and turns them into an
``Unparsed("parser error: ...")``, so "never raises" alone would prove little:
these tests also require that no input reaches that safety net.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core.event import Event, Unparsed
from streams.core.framing import iter_records
from streams.core.header import TAG_RE, fast_prefix, scan_prefix
from streams.core.parse import Parser, decode

GOLDEN = Path(__file__).parent / "golden"
GOLDEN_LINES = sorted(
    {
        line
        for path in GOLDEN.glob("*/*/*/input.log")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    }
)
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _check(record: str | bytes, out: Event | Unparsed) -> None:
    text = record if isinstance(record, str) else decode(record)
    assert isinstance(out, Event | Unparsed)
    assert out.raw == text
    if isinstance(out, Unparsed):
        assert not out.reason.startswith("parser error"), out.reason
    else:
        assert isinstance(out.ts, float)
        assert out.timestamp.endswith("Z")


def _parse(record: str | bytes) -> Event | Unparsed:
    out = Parser(year=2024).parse(record)
    _check(record, out)
    return out


# -- random input -----------------------------------------------------------------

syslogish = st.text(
    alphabet="<>%:*.-_ 0123456789ABCDEFGHIKMNOPRSTUVXYZabcdefgijklmnoprstuvz()=,/\t\n[]\"'"
)


@FUZZ
@given(st.text(max_size=2000))
def test_any_text_parses_to_an_event_or_an_unparsed_record_that_keeps_it(text: str) -> None:
    _parse(text)


@FUZZ
@given(syslogish)
def test_text_made_of_header_characters_never_trips_the_parser(text: str) -> None:
    _parse(text)


@FUZZ
@given(st.binary(max_size=2000))
def test_any_bytes_parse_and_invalid_utf8_is_replaced_not_dropped(data: bytes) -> None:
    out = _parse(data)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        assert "\ufffd" in out.raw
    assert len(out.raw) >= len(data.decode("utf-8", errors="ignore"))


@FUZZ
@given(st.sampled_from(GOLDEN_LINES), st.binary(min_size=1, max_size=8), st.integers(0, 400))
def test_a_golden_line_with_invalid_utf8_inside_keeps_every_other_character(
    line: str, junk: bytes, at: int
) -> None:
    raw = line.encode("utf-8")
    at = min(at, len(raw))
    data = raw[:at] + b"\xff\xfe" + junk + b"\x00" + raw[at:]
    out = _parse(data)
    assert out.raw.startswith(raw[:at].decode("utf-8", errors="replace"))
    assert out.raw.endswith(raw[at:].decode("utf-8", errors="replace"))
    assert "\ufffd" in out.raw and "\x00" in out.raw


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(min_size=1, max_size=64), st.integers(1_000, 100_000))
def test_a_huge_line_up_to_100_kb_parses_and_is_kept_whole(chunk: str, size: int) -> None:
    text = (chunk * (size // len(chunk) + 1))[:size]
    _parse(text)
    _parse("<188>1: Sep 22 11:02:39: %CRYPTO-4-PKT_REPLAY_ERR: " + text)


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="%:<", min_size=1, max_size=5000))
def test_a_line_of_only_percent_colon_and_angle_brackets_is_not_syslog(text: str) -> None:
    out = _parse(text)
    assert isinstance(out, Unparsed)


def test_nul_bytes_and_an_empty_record_are_unparsed_and_kept() -> None:
    for record in ("", "\x00", "\x00" * 100, "   \t ", b"\x00\x00", b"\xff\xfe\xfd"):
        out = _parse(record)
        assert isinstance(out, Unparsed)


# -- mutations of golden lines ------------------------------------------------------


@st.composite
def mutated_golden_line(draw: st.DrawFn) -> str:
    line = draw(st.sampled_from(GOLDEN_LINES))
    n = len(line)
    i = draw(st.integers(0, n))
    j = draw(st.integers(i, n))
    op = draw(st.sampled_from(["truncate", "cut_head", "duplicate", "swap", "insert", "delete"]))
    if op == "truncate":
        return line[:i]
    if op == "cut_head":
        return line[i:]
    if op == "duplicate":
        return line[:j] + line[i:j] + line[j:]
    if op == "swap" and i < j < n:
        chars = list(line)
        chars[i], chars[j] = chars[j], chars[i]
        return "".join(chars)
    if op == "insert":
        return (
            line[:i]
            + draw(st.sampled_from(["%", ":", "<", "*", ".", " ", "\n", "\x00", "("]))
            + line[i:]
        )
    return line[:i] + line[j:]


@FUZZ
@given(mutated_golden_line())
def test_a_mutated_golden_line_still_parses_to_an_event_or_unparsed(line: str) -> None:
    _parse(line)


@FUZZ
@given(st.lists(mutated_golden_line(), max_size=8))
def test_framing_a_mutated_archive_never_loses_a_non_blank_line(lines: list[str]) -> None:
    physical = [part for line in lines for part in line.split("\n")]
    records = list(iter_records(physical))
    assert all(r.strip() for r in records)
    joined = "\n".join(records)
    for part in physical:
        if part.strip():
            assert part.strip() in joined
    parser = Parser(year=2024)
    for record in records:
        _check(record, parser.parse(record))


@FUZZ
@given(st.lists(st.one_of(st.text(max_size=300), mutated_golden_line()), max_size=10))
def test_a_parser_fed_junk_still_parses_a_good_line_the_same_way(junk: list[str]) -> None:
    good = "<188>989474: *Feb  2 11:39:59KST: %CRYPTO-4-RECVD_PKT_NOT_IPSEC: Rec'd packet not an IPSEC packet. (ip) vrf/dest_addr= /10.1.1.1, src_addr= 10.2.2.2, prot= 47"
    parser = Parser(year=2024)
    for record in junk:
        _check(record, parser.parse(record))
    out = parser.parse(good)
    assert isinstance(out, Event)
    assert (out.entry, out.peer, out.local, out.counter) == (
        "ios-not-ipsec",
        "10.2.2.2",
        "10.1.1.1",
        989474,
    )


# -- the header fast path agrees with the full scanner ------------------------------

MON = st.sampled_from(["Jan", "Feb", "Mar", "Sep", "Dec"])
TZ = st.sampled_from(["", " UTC", " KST", "KST", " CEST", " mdt", " NewYork", " MEST", " EDT"])
NAME = st.sampled_from(["router1", "ASR920", "fw-1", "sw01.example.com", "10.1.1.1", "EDT", "CORE"])


@st.composite
def cisco_prefix(draw: st.DrawFn) -> str:
    parts = []
    if draw(st.booleans()):
        parts.append(f"<{draw(st.integers(0, 191))}>")
    if draw(st.booleans()):
        parts.append(
            f"{draw(MON)} {draw(st.integers(1, 28)):>2} {draw(st.integers(0, 23)):02}:"
            f"{draw(st.integers(0, 59)):02}:{draw(st.integers(0, 59)):02} {draw(NAME)} "
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
        year = draw(st.sampled_from(["", " 2023"]))
        frac = draw(st.sampled_from(["", ".123", ".000001"]))
        parts.append(
            f"{flag}{draw(MON)} {draw(st.integers(1, 28)):>2}{year} {draw(st.integers(0, 23)):02}:"
            f"{draw(st.integers(0, 59)):02}:{draw(st.integers(0, 59)):02}{frac}{draw(TZ)}:"
            + draw(st.sampled_from([" ", ""]))
        )
    return "".join(parts)


@settings(max_examples=300, deadline=None)
@given(cisco_prefix())
def test_the_header_fast_path_reads_a_prefix_exactly_as_the_full_scanner(prefix: str) -> None:
    line = prefix + "%CRYPTO-4-IKMP_NO_SA: IKE message from 192.0.2.1 has no SA"
    tag = TAG_RE.search(line)
    assert tag is not None
    fast = fast_prefix(line, tag.start())
    if fast is None:
        return
    slow = scan_prefix(line, tag.start(), tagged=True)
    a, b = dataclasses.asdict(fast), dataclasses.asdict(slow)
    a.pop("tokens")
    b.pop("tokens")
    assert a == b
