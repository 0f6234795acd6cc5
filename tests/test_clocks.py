"""Device clocks nobody tuned: zone maps, zone labels, outlier stamps, the skew report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from streams.cli.main import main
from streams.core.clock import tz_offset_minutes
from streams.core.event import Event
from streams.core.parse import Parser
from streams.core.zones import TzMap, ZoneError
from streams.errors import ConfigError
from streams.shell.tzmap import load_tz_map

HMAC = "%CRYPTO-4-RECVD_PKT_MAC_ERR: decrypt: mac verify failed for connection id=2"


def _ev(parser: Parser, line: str) -> Event:
    out = parser.parse(line)
    assert isinstance(out, Event), out
    return out


def test_a_zone_map_reads_unlabelled_local_time_with_daylight_saving() -> None:
    tz = TzMap.from_rows([("rtr-paris", "Europe/Paris"), ("10.8.0.0/16", "America/New_York")])
    p = Parser(year=2024, tz_map=tz)
    winter = _ev(p, "Jan 15 12:00:00 rtr-paris 1: Jan 15 12:00:00: %SYS-5-CONFIG_I: x")
    summer = _ev(p, "Jul 15 12:00:00 rtr-paris 2: Jul 15 12:00:00: %SYS-5-CONFIG_I: x")
    assert winter.timestamp == "2024-01-15T11:00:00.000Z"  # CET, UTC+1
    assert summer.timestamp == "2024-07-15T10:00:00.000Z"  # CEST, UTC+2
    ny = _ev(p, "Jul 15 12:00:00 10.8.3.4 : %ASA-6-302013: Built outbound TCP connection 1")
    assert ny.timestamp == "2024-07-15T16:00:00.000Z"  # EDT, UTC-4
    # A label on the line wins over the map; a device the map does not name is UTC.
    labelled = _ev(p, "Jul 15 12:00:00 rtr-paris 3: Jul 15 12:00:00 UTC: %SYS-5-CONFIG_I: x")
    assert labelled.timestamp == "2024-07-15T12:00:00.000Z"
    other = _ev(p, "Jul 15 12:00:00 rtr-x 3: Jul 15 12:00:00: %SYS-5-CONFIG_I: x")
    assert other.timestamp == "2024-07-15T12:00:00.000Z"


def test_zone_maps_load_from_csv_with_or_without_header_and_from_yaml(tmp_path: Path) -> None:
    a = tmp_path / "netbox.csv"
    a.write_text("name,site,time_zone\nrtr-1,PAR1,Europe/Paris\nfw-2,TYO,Asia/Tokyo\n")
    b = tmp_path / "plain.csv"
    b.write_text("rtr-1,Europe/Paris\n192.0.2.0/24,Asia/Tokyo\n")
    c = tmp_path / "map.yaml"
    c.write_text("- device: rtr-1\n  zone: Europe/Paris\n- cidr: 192.0.2.0/24\n  tz: Asia/Tokyo\n")
    for path in (a, b, c):
        m = load_tz_map(path)
        assert m.zone_for("RTR-1") == "Europe/Paris", path.name
    assert load_tz_map(b).zone_for("192.0.2.77") == "Asia/Tokyo"
    assert load_tz_map(c).zone_for("192.0.3.1") is None


def test_a_bad_zone_map_names_the_file_and_the_row(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("rtr-1,Europe/Paris\nrtr-2,Mars/Olympus\n")
    with pytest.raises(ConfigError, match=r"bad\.csv: row 2 \(rtr-2\): unknown IANA time zone"):
        load_tz_map(bad)
    with pytest.raises(ZoneError, match="not a network"):
        TzMap.from_rows([("10.0.0.0/99", "UTC")])


def test_analyze_with_a_bad_zone_map_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "a.log"
    log.write_text("Jan 15 12:00:00 rtr-1 1: Jan 15 12:00:00: %SYS-5-CONFIG_I: x\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("[1, 2")
    assert main(["analyze", "--tz-map", str(bad), str(log)]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.yaml" in err and len(err.splitlines()) == 1


def test_zone_labels_beyond_the_common_table_come_from_the_zone_database() -> None:
    assert tz_offset_minutes("NZDT") == (780, True)  # curated
    assert tz_offset_minutes("PKT") == (300, True)  # Pakistan: from zoneinfo
    assert tz_offset_minutes("ChST") == (600, True)  # Guam: from zoneinfo
    # An abbreviation for several offsets (and plain junk) stays unknown and is flagged.
    assert tz_offset_minutes("NewYork") == (0, False)


def _archive(lines: list[tuple[float, str, str]]) -> str:
    """Lines (seconds after 2024-06-01 00:00 UTC, device, message) as RFC 3164 with the
    device stamp carrying the year."""
    import time

    out = []
    for t, device, msg in lines:
        st = time.gmtime(1717200000 + t)
        stamp = time.strftime("%b %d %Y %H:%M:%S", st)
        out.append(f"{time.strftime('%b %d %H:%M:%S', st)} {device} 1: {stamp}: {msg}")
    return "\n".join(out) + "\n"


def test_one_forged_stamp_hides_nothing_and_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[tuple[float, str, str]] = []
    for i in range(60):  # an hour of HMAC errors every minute on the victim
        lines.append((i * 60.0, "rtr-victim", HMAC))
        lines.append((i * 60.0 + 1, "rtr-a", "%SYS-5-CONFIG_I: x"))
        lines.append((i * 60.0 + 2, "rtr-b", "%SYS-5-CONFIG_I: x"))
    text = _archive(lines)
    forged = _archive([(75 * 365 * 86400.0, "rtr-victim", HMAC)])  # 2099
    rows = text.splitlines(keepends=True)
    rows.insert(61, forged)
    log = tmp_path / "fleet.log"
    log.write_text("".join(rows))
    assert main(["analyze", "--format", "jsonl", str(log)]) == 0
    out, err = capsys.readouterr()
    incidents = [json.loads(x) for x in out.splitlines()]
    victim = [r for r in incidents if r["device"] == "rtr-victim"]
    assert len(victim) == 1, victim
    assert victim[0]["last_seen"].startswith("2024-06-01T00:59")
    assert victim[0]["count"] == 61  # the forged line counts as evidence, at its own time
    assert "clock of rtr-victim: 0 jump(s), 1 outlier stamp(s)" in err
    assert "2099" in err


def test_a_router_reloading_to_1993_keeps_its_incident_and_its_evidence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[tuple[float, str, str]] = []
    for i in range(40):
        lines.append((i * 20.0, "rtr-a", "%SYS-5-CONFIG_I: x"))
        lines.append((i * 20.0 + 1, "rtr-b", "%SYS-5-CONFIG_I: x"))
    text = _archive([(i * 20.0, "rtr-reload", HMAC) for i in range(20)])
    # After the reload the router's clock restarts at Mar 1 1993, unsynced ('*'), and it
    # logs straight to the collector (logging origin-id hostname).
    after = "".join(
        f"<189>{i}: rtr-reload: *Mar  1 1993 00:00:{i * 20:02d}: {HMAC}\n" for i in range(3)
    )
    log = tmp_path / "reload.log"
    log.write_text(_archive(lines) + text + after)
    assert main(["analyze", "--format", "jsonl", "--year", "2024", str(log)]) == 0
    out, err = capsys.readouterr()
    rec = [json.loads(x) for x in out.splitlines() if "rtr-reload" in x]
    assert len(rec) == 1
    assert rec[0]["count"] == 23  # the evidence after the reload joins the open incident
    assert rec[0]["status"] != "resolved"
    assert rec[0]["first_seen"].startswith("2024-06-01T00:00:00")
    assert "clock of rtr-reload: 1 jump(s)" in err


def test_analyze_reports_devices_whose_clock_is_off_the_fleets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[tuple[float, str, str]] = []
    for i in range(30):
        for d in ("rtr-a", "rtr-b", "rtr-c"):
            lines.append((i * 60.0, d, "%SYS-5-CONFIG_I: x"))
        lines.append((i * 60.0 + 9 * 3600, "rtr-kst", "%SYS-5-CONFIG_I: x"))
    log = tmp_path / "skew.log"
    log.write_text(_archive(lines))
    assert main(["analyze", str(log)]) == 0
    err = capsys.readouterr().err
    # Offsets are read from the order lines arrive in: right to a minute or so.
    assert re.search(r"clocks off the fleet's: rtr-kst \+(8h59m|9h00m|9h01m)", err), err
    assert "rtr-a" not in err.split("clocks off the fleet's:")[1]
