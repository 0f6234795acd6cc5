"""The synthetic Cisco syslog generator (load/synth.py) and its default scenario."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import pytest

from load import bench_analyze as bench
from load.scenario import CAUSES, Scenario, default_scenario, parse_scenario_yaml
from load.synth import Record, Synth, generate, truth_path, write_archive
from streams.errors import ConfigError

LINES = 30_000


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return default_scenario()


@pytest.fixture(scope="module")
def synth(scenario: Scenario) -> Synth:
    return generate(scenario, lines=LINES, seed=11)


@pytest.fixture(scope="module")
def records(synth: Synth) -> list[Record]:
    return list(synth.records())


def _digest(s: Synth) -> str:
    h = hashlib.sha256()
    for line in s:
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()


def _ms(iso: str) -> int:
    return round(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def test_the_same_seed_gives_byte_identical_output(scenario: Scenario) -> None:
    first = generate(scenario, lines=5_000, seed=3)
    second = generate(scenario, lines=5_000, seed=3)
    assert _digest(first) == _digest(second)
    assert first.ground_truth == second.ground_truth


def test_iterating_a_run_twice_gives_the_same_lines(scenario: Scenario) -> None:
    run = generate(scenario, lines=3_000, seed=5)
    assert _digest(run) == _digest(run)


def test_a_different_seed_gives_different_output(scenario: Scenario) -> None:
    assert _digest(generate(scenario, lines=5_000, seed=3)) != _digest(
        generate(scenario, lines=5_000, seed=4)
    )


def test_the_output_has_exactly_the_requested_number_of_lines(records: list[Record]) -> None:
    assert len(records) == LINES
    assert all("\n" not in r.line for r in records)


def test_every_cause_the_default_scenario_injects_appears_in_the_ground_truth(
    scenario: Scenario, synth: Synth
) -> None:
    injected = {f.cause for f in scenario.faults}
    assert {t.cause for t in synth.ground_truth} == injected
    assert [t.id for t in synth.ground_truth] == [f.id for f in scenario.faults]
    # Every cause of the closed vocabulary (hardware_unsupported with the catalog's
    # inferred text: its variant says so).
    assert injected == set(CAUSES)
    inferred = [f for f in scenario.faults if f.cause == "hardware_unsupported"]
    assert inferred and all(f.variant == "inferred_7600_text" for f in inferred)


def test_ground_truth_gives_the_time_of_each_faults_first_line(
    synth: Synth, records: list[Record]
) -> None:
    first: dict[str, int] = {}
    count: dict[str, int] = defaultdict(int)
    for r in records:
        if r.origin == "fault" and r.ref is not None:
            first.setdefault(r.ref, r.time_ms)
            count[r.ref] += 1
    for truth in synth.ground_truth:
        assert _ms(truth.first_line_at) == first[truth.id], truth.id
        assert truth.first_line_at.endswith("Z")
        assert truth.lines == count[truth.id]


def test_a_known_peer_in_the_ground_truth_appears_in_the_faults_lines(
    synth: Synth, records: list[Record]
) -> None:
    lines_of: dict[str, list[str]] = defaultdict(list)
    for r in records:
        if r.ref is not None:
            lines_of[r.ref].append(r.line)
    for truth in synth.ground_truth:
        if truth.peer is not None:
            assert any(truth.peer in line for line in lines_of[truth.id]), truth.id
        assert all(
            truth.device in line or truth.device_ip in line for line in lines_of[truth.id]
        ), truth.id


def test_mac_err_lines_for_one_device_and_peer_are_at_least_30_seconds_apart(
    records: list[Record],
) -> None:
    last: dict[tuple[str, str | None], int] = {}
    seen = 0
    for r in records:
        if "%CRYPTO-4-RECVD_PKT_MAC_ERR:" in r.line:
            m = re.search(r"remote=(\S+)", r.line)
            key = (r.device, m.group(1) if m else None)
            if key in last:
                assert r.time_ms - last[key] >= 30_000, r.line
            last[key] = r.time_ms
            seen += 1
    assert seen > 20


def test_pkt_replay_err_lines_of_one_device_are_at_least_a_minute_apart(
    records: list[Record],
) -> None:
    last: dict[str, int] = {}
    for r in records:
        if "%CRYPTO-4-PKT_REPLAY_ERR:" in r.line:
            if r.device in last:
                assert r.time_ms - last[r.device] >= 60_000, r.line
            last[r.device] = r.time_ms
    assert last


def test_asa_4021xx_lines_with_the_same_id_and_peer_are_at_least_5_seconds_apart(
    records: list[Record],
) -> None:
    pattern = re.compile(r"%ASA-\d-(4021\d\d): .*? from (\S+)")
    last: dict[tuple[str, str, str], int] = {}
    ids = set()
    for r in records:
        m = pattern.search(r.line)
        if m:
            key = (r.device, m.group(1), m.group(2))
            if key in last:
                assert r.time_ms - last[key] >= 5_000, r.line
            last[key] = r.time_ms
            ids.add(m.group(1))
    assert ids >= {"402114", "402116", "402118", "402119", "402120"}


def test_lines_come_in_non_decreasing_time_order(records: list[Record]) -> None:
    times = [r.time_ms for r in records]
    assert times == sorted(times)
    # The syslog server's own stamp (rsyslog and relay framings) never goes back either.
    relay = re.compile(r"^(\w{3}) ([ \d]\d) (\d\d):(\d\d):(\d\d) ")
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    previous = (0, 0, 0, 0, 0)
    checked = 0
    for r in records:
        m = relay.match(r.line)
        if m:
            mon, day, hh, mi, ss = m.groups()
            stamp = (months.index(mon), int(day), int(hh), int(mi), int(ss))
            assert stamp >= previous, r.line
            previous = stamp
            checked += 1
    assert checked > LINES // 3


def test_fault_lines_are_a_small_fraction_of_the_output(
    scenario: Scenario, synth: Synth, records: list[Record]
) -> None:
    fault_lines = sum(1 for r in records if r.origin == "fault")
    assert fault_lines == sum(t.lines for t in synth.ground_truth)
    assert fault_lines < 1_000  # does not grow with the archive: a few hundred in 1M lines
    assert fault_lines / len(records) < 0.025
    bigger = generate(scenario, lines=LINES * 2, seed=11)
    assert bigger.fault_lines == synth.fault_lines
    assert sum(1 for r in records if r.origin == "background") > 0.95 * len(records)


def test_decoy_bursts_stay_below_any_sensible_threshold(
    synth: Synth, records: list[Record]
) -> None:
    per_decoy: dict[str, int] = defaultdict(int)
    for r in records:
        if r.origin == "decoy" and re.search(r"INV_SPI|402114|MAC_ERR|402120|IKMP_NO_SA", r.line):
            per_decoy[str(r.ref)] += 1
    assert {d.id for d in synth.decoys} == set(per_decoy) | {
        d.id for d in synth.decoys if d.kind == "healthy_rekey"
    }
    assert max(per_decoy.values()) <= 2


HEADER_VARIANTS = {
    "ios wire with PRI and message counter": r"^<1[89]\d>\d+: ",
    "ios wire without message counter": r"^<1[89]\d>: core-rtr-\d+: ",
    "ios origin-id hostname": r"^(<\d+>|\w{3} [ \d]\d [\d:]{8} \S+ )\d+: br-rtr-\d+: ",
    "ios origin-id ip without PRI": r"^10\.20\.0\.\d+: \*\w{3} ",
    "ios sequence numbers": r"\d+: \d{6}: \.?\w{3} ",
    "ios unsynced clock": r": \*\w{3} [ \d]\d ",
    "ios clock lost sync": r" \.\w{3} [ \d]\d ",
    "ios msec": r"\d\d:\d\d:\d\d\.\d{3}( \S+)?: %",
    "ios year": r": \.?\w{3} [ \d]\d \d{4} \d\d:\d\d:\d\d\.\d{3} ",
    "ios glued timezone": r"\d\d:\d\d:\d\d(\.\d{3})?KST: %",
    "ios glued timezone and tag": r"\d\d:\d\d:\d\dKST:%",
    "ios timezone label with offset": r"\d\d:\d\d:\d\d\.\d{3} UTC\+07:30: %",
    "ios relay-archive form": r"^\w{3} [ \d]\d [\d:]{8} 10\.10\.0\.\d+ \d+: "
    r"\w{3} [ \d]\d [\d:]{8}: %",
    "rsyslog file format": r"^\w{3} [ \d]\d [\d:]{8} br-rtr-\d+ \d+: ",
    "ios debug line": r"UTC: ISAKMP-ERROR: \(0\):No pre-shared key with ",
    "asa legacy timestamp with year and device-id": r"^<16\d>\w{3} \d\d \d{4} [\d:]{8} "
    r"fw-\d+ : %ASA",
    "asa without timestamp or device-id": r"^\w{3} [ \d]\d [\d:]{8} fw-\d+ %ASA-",
    "asa rfc5424 timestamp": r"^<16\d>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ fw-\d+ : %ASA-",
    "asa device-id ip, no timestamp": r"^<16\d>10\.30\.0\.\d+ %ASA-",
    "asa relayed, timestamp without device-id": r"^\w{3} [ \d]\d [\d:]{8} 10\.30\.0\.\d+ "
    r"\w{3} \d\d \d{4} [\d:]{8}: %ASA-",
}


@pytest.mark.parametrize("variant", sorted(HEADER_VARIANTS))
def test_the_default_scenario_covers_the_header_variant(
    variant: str, records: list[Record]
) -> None:
    pattern = re.compile(HEADER_VARIANTS[variant])
    assert any(pattern.search(r.line) for r in records), variant


def test_write_archive_writes_the_log_and_a_truth_file_beside_it(
    scenario: Scenario, tmp_path: Path
) -> None:
    path = tmp_path / "archive.log"
    run = write_archive(scenario, path, 4_000, 9)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    assert text.splitlines() == list(generate(scenario, lines=4_000, seed=9))
    rows = [json.loads(line) for line in truth_path(path).read_text().splitlines()]
    assert rows == [t.to_json() for t in run.ground_truth]
    assert {"device", "peer", "cause", "first_line_at"} <= set(rows[0])
    assert Path(f"{path}.decoys.jsonl").exists()


def test_too_few_lines_for_the_scheduled_events_are_rejected(scenario: Scenario) -> None:
    with pytest.raises(ConfigError, match="too few"):
        generate(scenario, lines=100, seed=1)


_SMALL = """
duration: 2h
fleets:
  - {kind: ios, count: 1, hostname: "r{n}", mgmt_net: 10.0.0.0/24,
     outside_net: 192.0.2.0/24, peer_net: 203.0.113.0/24, styles: [STYLE]}
faults: [FAULT]
"""


def _small(style: str = "{}", fault: str = "{cause: psk_mismatch, device: r1, at: 10m}") -> str:
    return _SMALL.replace("STYLE", style).replace("FAULT", fault)


def test_a_small_scenario_from_yaml_generates_its_fault() -> None:
    run = generate(parse_scenario_yaml(_small()), lines=500, seed=1)
    (truth,) = run.ground_truth
    assert (truth.device, truth.peer, truth.cause) == ("r1", "203.0.113.1", "psk_mismatch")
    assert sum("IKMP_BAD_MESSAGE" in line for line in run) == truth.lines


@pytest.mark.parametrize(
    ("style", "fault", "message"),
    [
        ("{}", "{cause: no_such_cause, device: r1, at: 10m}", "unknown cause"),
        ("{}", "{cause: split_tunnel_misconfig, device: r1, at: 10m}", "only be generated on asa"),
        ("{}", "{cause: tunnel_flapping, device: r1, at: 10m}", "only be generated on asa"),
        ("{}", "{cause: psk_mismatch, device: r9, at: 10m}", "unknown device"),
        ("{}", "{cause: psk_mismatch, device: r1, at: 119m}", "before the archive"),
        ("{colour: red}", "{cause: psk_mismatch, device: r1, at: 10m}", "unknown key"),
        ("{framing: wire}", "{cause: psk_mismatch, device: r1, at: 10m}", "origin_id"),
    ],
)
def test_an_invalid_scenario_is_rejected_with_a_config_error(
    style: str, fault: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_scenario_yaml(_small(style, fault))


@pytest.mark.skipif(shutil.which("perl") is None, reason="perl is needed to run SEC's regexes")
def test_the_bench_sec_rules_read_the_device_of_every_header_style(
    scenario: Scenario, records: list[Record]
) -> None:
    one_per_device: dict[str, Record] = {}
    for r in records:
        one_per_device.setdefault(r.device, r)
    script = f'chomp; print(/{bench._DEV}/ ? "$1\\n" : "-\\n")'
    lines = "".join(r.line + "\n" for r in one_per_device.values())
    got = subprocess.run(
        ["perl", "-ne", script], input=lines, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for r, device in zip(one_per_device.values(), got, strict=True):
        dev = scenario.device(r.device)
        assert device in (dev.name, dev.mgmt_ip), r.line


def test_the_bench_scores_incidents_by_device_cause_and_known_peer(synth: Synth) -> None:
    truth = synth.ground_truth
    with_peer = next(t for t in truth if t.peer is not None)
    without_peer = next(t for t in truth if t.peer is None)
    incidents: list[dict[str, str | None]] = [
        {"device": with_peer.device_ip, "cause": with_peer.cause, "peer": with_peer.peer},
        {"device": with_peer.device, "cause": with_peer.cause, "peer": None},
        {"device": without_peer.device, "cause": without_peer.cause, "peer": "192.0.2.99"},
        {"device": "nowhere", "cause": "psk_mismatch", "peer": None},
    ]
    s = bench.score(incidents, truth, synth.decoys)
    assert (s.found, s.matching, s.partial, s.false_positives) == (2, 2, 1, 1)
    assert len(s.missed) == len(truth) - 2
