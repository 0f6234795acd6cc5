"""Hostile content is text (issue 13, item 6).

Host names, peers and message text come from the devices, that is from whoever can send
a UDP datagram. ``evil[/]dev`` as a host name used to make ``analyze`` and ``incidents``
exit with rich's MarkupError, and ``ESC[2J`` in one reached the terminal. Every command
that prints them is fed the worst strings here, in every format: the table shows them as
visible escapes, never as markup or raw control characters; jsonl stays the exact JSON
of the record.
"""

from __future__ import annotations

import asyncio
import json
import unicodedata
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka_support import KafkaNames

from streams.cli.incidents_cmd import _line
from streams.cli.main import main
from streams.cli.render import safe_text
from streams.shell.topics import TopicSpec, ensure_topics

#: Host names that reach the incidents whole (the parser takes them as host names).
HOSTILE_HOSTS = [
    "evil[/]dev",  # a closing tag with nothing to close: rich's MarkupError
    "rtr\x1b[2Jclear",  # ESC [2J: clears the screen
    "bidi\u202eved",  # RIGHT-TO-LEFT OVERRIDE: reverses what follows on screen
    "c1\x9b31m",  # C1 CSI: an escape sequence on terminals that take 8-bit controls
    "[link=https://evil.example]x[/link]",
    "osc\x1b]0;owned\x07",
    "ls\u2028sep",
    "zw\u200bsp",
]
#: More of the worst strings (as the parser fuzz tests make them): in message text and
#: as whole lines that are not syslog.
HOSTILE_TEXT = [
    *HOSTILE_HOSTS,
    "[/]",
    "[bold red]red[/bold red]",
    "\\[escaped]",
    "\x00nul\x7fdel\x08bs\rcr\x0bvt\x0cff",
    "\x85nel\x8dri\x90dcs\x9dosc",
    "\u2066isolate\u2069\u200f\u061c\ufeffbom",
    "%:<%:<%:<",
    "\U0001f642 ünïcödé",
]
LINE = (
    "Mar  5 10:0{i}:00 {host} {i}: Mar  5 10:0{i}:00: %CRYPTO-4-RECVD_PKT_INV_SPI: decaps: "
    "rec'd IPSEC packet has invalid spi for destaddr=10.1.1.1, prot=50, spi=0x1234(4660), "
    "srcaddr=198.51.100.7 {tail}"
)
#: What must never reach a terminal raw: controls, format characters, line separators.
UNSAFE = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}


def _hostile_archive(path: Path) -> Path:
    lines: list[bytes] = []
    for n, host in enumerate(HOSTILE_HOSTS):
        for i in range(6):  # an invalid SPI six times: an incident per host
            tail = HOSTILE_TEXT[(n + i) % len(HOSTILE_TEXT)]
            lines.append(LINE.format(i=i, host=host, tail=tail).encode())
    lines.extend(text.encode() for text in HOSTILE_TEXT if text.strip("\r\x0b\x0c"))
    lines.append(b"\xff\xfe invalid UTF-8 \xc3\x28 " + b"\x1b[2J")
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _raw_controls(text: str) -> list[str]:
    return sorted({repr(ch) for ch in text if ch != "\n" and unicodedata.category(ch) in UNSAFE})


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(list(argv))
    return rc, capsys.readouterr().out


def _assert_exact_jsonl(out: str) -> list[dict[str, Any]]:
    """Every line is JSON that the same encoder gives back byte for byte. (Lines end at
    LF only: U+2028 and NEL are text inside JSON strings, not line ends.)"""
    lines = out.split("\n")
    assert lines.pop() == ""
    records = [json.loads(line) for line in lines]
    assert [orjson.dumps(r).decode() for r in records] == lines
    return records


@pytest.fixture(autouse=True)
def _no_forced_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    # rich's own escape sequences are not the point here: plain output, as in a pipe.
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)


def test_safe_text_shows_controls_bidi_and_separators_as_visible_escapes() -> None:
    assert safe_text("rtr\x1b[2Jclear") == "rtr\\x1b[2Jclear"
    assert safe_text("c1\x9b31m") == "c1\\x9b31m"
    assert safe_text("bidi\u202eved\u2066") == "bidi\\u202eved\\u2066"
    assert safe_text("a\u2028b\x00c\x7f") == "a\\u2028b\\x00c\\x7f"
    for plain in ("evil[/]dev", "ünïcödé \U0001f642", "a b\\c", ""):
        assert safe_text(plain) == plain
    for text in HOSTILE_TEXT:
        assert not _raw_controls(safe_text(text)), text


def test_analyze_prints_hostile_host_names_as_text_in_the_table_and_exact_in_jsonl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = str(_hostile_archive(tmp_path / "hostile.log"))
    rc, table = _run(capsys, "analyze", "--year", "2024", archive)
    assert rc == 0
    assert not _raw_controls(table)
    assert "evil[/]dev" in table and "rtr\\x1b[2Jclear" in table and "bidi\\u202eved" in table
    assert "c1\\x9b31m" in table and "x[/link]" in table and "osc\\x1b]0;owned\\x07" in table

    rc, out = _run(capsys, "analyze", "--year", "2024", "--format", "jsonl", archive)
    assert rc == 0
    devices = {r["device"] for r in _assert_exact_jsonl(out)}
    assert {"evil[/]dev", "rtr\x1b[2Jclear", "bidi\u202eved", "c1\x9b31m"} <= devices


def test_parse_keeps_hostile_lines_exact_in_its_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = _hostile_archive(tmp_path / "hostile.log")
    rc, out = _run(capsys, "parse", "--year", "2024", str(archive))
    assert rc == 0
    records = _assert_exact_jsonl(out)
    raws = "\n".join(r["raw"] for r in records)
    for text in ("evil[/]dev", "\x1b[2J", "\u202e", "\x9b", "\x85nel", "\ufeffbom"):
        assert text in raws, repr(text)
    assert any(r.get("unparsed") for r in records)


def test_the_follow_line_of_incidents_shows_hostile_text_escaped() -> None:
    rec = {
        "status": "open",
        "device": "rtr\x1b[2J\u202e",
        "peer": "\x9b1m",
        "cause": "sa_out_of_sync",
        "confidence": 0.6,
        "count": 6,
        "first_seen": "2024-03-05T10:00:00Z",
        "last_seen": "2024-03-05T10:05:00Z",
        "incident_id": "abc",
    }
    line = _line(rec)
    assert not _raw_controls(line)
    assert "rtr\\x1b[2J\\u202e \\x9b1m sa_out_of_sync" in line


async def _publish_records(bootstrap: str, topic: str, records: list[dict[str, Any]]) -> None:
    from aiokafka import AIOKafkaProducer

    await ensure_topics(bootstrap, [TopicSpec(topic, 1)])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for rec in records:
            await producer.send(topic, orjson.dumps(rec), key=rec["incident_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()


@pytest.mark.kafka
def test_incidents_prints_hostile_records_from_kafka_as_text_and_exact_jsonl(
    kafka_bootstrap: str,
    kafka_names: KafkaNames,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    archive = str(_hostile_archive(tmp_path / "hostile.log"))
    _, out = _run(capsys, "analyze", "--year", "2024", "--format", "jsonl", archive)
    published = _assert_exact_jsonl(out)
    asyncio.run(_publish_records(kafka_bootstrap, kafka_names.topic, published))
    common = ["incidents", "--bootstrap", kafka_bootstrap, "--topic", kafka_names.topic]

    rc, table = _run(capsys, *common)
    assert rc == 0
    assert not _raw_controls(table)
    assert "evil[/]dev" in table and "rtr\\x1b[2Jclear" in table

    rc, out = _run(capsys, *common, "--format", "jsonl")
    assert rc == 0
    streamed = _assert_exact_jsonl(out)
    assert {r["incident_id"] for r in streamed} == {r["incident_id"] for r in published}
    assert {r["device"] for r in streamed} == {r["device"] for r in published}
