"""Header shapes (``load/shapes.py``) and the archives ``make bench`` times (``load/bench_shapes.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from load import bench_shapes, shapes
from streams.core.engine import Correlator
from streams.core.event import Event
from streams.core.kb import default_kb
from streams.core.parse import Parser

ASA = "%ASA-6-302013: Built inbound TCP connection 1 for outside:198.18.0.1/1 to inside:10.0.0.1/2"


@pytest.mark.parametrize(
    ("line", "shape"),
    [
        (f"<166>Mar 05 2024 10:00:01 fw-01 : {ASA}", "pri bsd+year host :"),
        (
            f"Jun  1 00:00:00 10.1.1.1 2026-06-01T00:00:00Z 10.1.1.1 : {ASA}",
            "bsd ip iso+Z ip :",
        ),
        (
            f"<189>1578041: router1: 000123: .Mar 26 20:49:19KST: {ASA}",
            "pri n: host: n: .bsd+tzglued:",
        ),
        (f"<190>4: rtr2: Mar  5 07:30:09.687 UTC+07:30: {ASA}", "pri n: host: bsd+ms+tz:"),
        (f"<134>1 2024-01-02T03:04:05Z host app - - - {ASA}", "pri rfc5424"),
        (f"<165>7433: ASR920: 007439: 2y10w: {ASA}", "pri n: host: n: uptime:"),
        (f"<166>10.30.0.4 {ASA}", "pri ip"),
        (f"<189>: rtr3: {ASA}", "pri: host:"),
        (ASA, "(none)"),
    ],
)
def test_a_line_is_named_by_the_shape_of_its_header(line: str, shape: str) -> None:
    assert shapes.shape_of(line) == shape
    rendered = shapes.render(shape, 42, 1_709_596_801.5, 9) + ASA
    assert shapes.shape_of(rendered) == shape


def test_a_line_without_a_tag_has_no_shape_and_prose_is_not_a_header() -> None:
    assert shapes.shape_of("ISAKMP (0:1): found peer pre-shared key matching 192.0.2.5") is None
    prose = "the router logs this when the key is wrong and then it says %CRYPTO-4-X: y"
    shape = shapes.shape_of(prose)
    assert shape is not None and not shapes.is_header_shape(shape)
    assert shapes.shapes_in([prose, f"<166>10.30.0.4 {ASA}"]) == {"pri ip": 1}


def test_a_shape_archive_has_its_shape_its_devices_and_moving_time() -> None:
    lines = list(shapes.shape_archive("bsd ip iso+Z ip :", 500, devices=20, seed=3))
    assert len(lines) == 500
    assert {shapes.shape_of(x) for x in lines} == {"bsd ip iso+Z ip :"}
    parser = Parser(year=2024)
    events = [parser.parse(x) for x in lines]
    assert all(isinstance(e, Event) and e.kind is None for e in events)
    assert 10 < len({e.device for e in events if isinstance(e, Event)}) <= 20
    times = [e.ts for e in events if isinstance(e, Event)]
    assert times == sorted(times) and times[-1] > times[0]


def test_a_mixed_archive_keeps_one_shape_per_device_and_carries_catalog_lines() -> None:
    golden = ["<166>Mar 05 2024 00:00:00 fw-1 : %ASA-4-402120: IPSEC: Received an ESP packet "
              "(SPI= 0x1, sequence number= 0x2) from 192.0.2.1 (user= 192.0.2.1) to 10.0.0.1 "
              "that failed authentication."]  # fmt: skip
    got = list(
        shapes.mixed_archive(
            ["pri ip", "bsd host:", "pri iso+Z host :"],
            3000,
            catalog_bodies=golden,
            catalog_share=0.1,
            devices=30,
        )
    )
    parser = Parser(year=2024)
    by_device: dict[str, set[str | None]] = {}
    kinds = 0
    for line in got:
        ev = parser.parse(line)
        assert isinstance(ev, Event) and ev.device is not None
        by_device.setdefault(ev.device, set()).add(shapes.shape_of(line))
        kinds += ev.kind == "HMAC_VERIFY_FAILED"
    assert all(len(v) == 1 for v in by_device.values())
    assert 150 < kinds < 450


def test_the_fleet_archive_spreads_one_message_over_the_devices(tmp_path: Path) -> None:
    path = tmp_path / "fleet.log"
    bench_shapes.fleet_archive(path, 2500, 1000)
    lines = path.read_text().splitlines()
    assert len(lines) == 2500
    parser = Parser(year=2024)
    devices = {ev.device for ev in map(parser.parse, lines) if isinstance(ev, Event)}
    assert len(devices) == 1000


def test_the_soak_archive_ends_with_one_open_incident_per_failing_device(tmp_path: Path) -> None:
    path = tmp_path / "soak.log"
    n = bench_shapes.soak_archive(path, 300, 40)
    lines = path.read_text().splitlines()
    assert n == len(lines) == 300 + 5 * 40
    parser = Parser(year=2024)
    corr = Correlator(default_kb())
    latest = {}
    for line in lines:
        ev = parser.parse(line)
        assert isinstance(ev, Event)
        for rec in corr.feed(ev):
            latest[rec["incident_id"]] = rec
    for rec in corr.finish():
        latest[rec["incident_id"]] = rec
    assert len(latest) == 40
    assert {r["cause"] for r in latest.values()} == {"crypto_engine_fault"}
    assert all(r["status"] != "resolved" for r in latest.values())
    assert len(corr.states) == 300
