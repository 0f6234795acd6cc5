"""``tunnelwatch load``: deterministic archives, and a short paced run against a real stack."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka_support import PORT_OFFSET

from streams.cli.main import main
from streams.shell import stack

REPO = Path(__file__).resolve().parent.parent
STACK_PORT, STACK_CONTROLLER = 29192 + PORT_OFFSET, 29193 + PORT_OFFSET


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_load_generate_writes_the_same_bytes_for_the_same_seed(tmp_path: Path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    for out in (a, b):
        assert main(["load", "generate", "default", "--out", str(out), "--lines", "3000"]) == 0
    assert a.read_bytes() == b.read_bytes()
    assert Path(f"{a}.truth.jsonl").read_bytes() == Path(f"{b}.truth.jsonl").read_bytes()
    assert len(a.read_text().splitlines()) == 3000
    c = tmp_path / "c.log"
    assert (
        main(["load", "generate", "default", "--out", str(c), "--lines", "3000", "--seed", "1"])
        == 0
    )
    assert c.read_bytes() != a.read_bytes()


def test_load_generate_rejects_an_unknown_scenario_file(tmp_path: Path) -> None:
    assert (
        main(["load", "generate", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "x")]) == 2
    )


def _fault(fid: str, device: str, ip: str, cause: str, peer: str | None) -> object:
    from load.synth import TruthFault

    return TruthFault(fid, cause, device, ip, "asa", peer, "", "", 5, "t")


def _plan(start_ms: int, truth: list[object]) -> object:
    from load.live import Plan

    return Plan("t", 0, start_ms, start_ms + 86_400_000, 10, [], [], truth, [])  # type: ignore[arg-type]


def _incident(
    iid: str, device: str, cause: str, peer: str | None, first: float
) -> dict[str, object]:
    from datetime import UTC, datetime

    stamp = datetime.fromtimestamp(first, UTC).isoformat()
    return {"incident_id": iid, "device": device, "cause": cause, "peer": peer, "first_seen": stamp}


def test_a_run_counts_the_incidents_of_stampless_devices_that_began_during_its_wall_clock() -> None:
    from load.live import Seen, _score

    # The plan's event time starts a day after the wall clock (a later step of a sweep);
    # fw-04 logs without any stamp, so its incident begins at the time it was received.
    wall = (1_800_000_000.0, 1_800_000_030.0)
    plan = _plan(
        int((wall[0] + 86_400) * 1000), [_fault("F1", "fw-04", "10.30.0.4", "qos_reordering", "p")]
    )
    seen = Seen()
    seen.latest["a"] = _incident("a", "10.30.0.4", "qos_reordering", "p", wall[0] + 5)
    seen.latest["old"] = _incident("old", "10.30.0.4", "qos_reordering", "p", wall[0] - 600)
    seen.first_seen_at = {"a": wall[0] + 6, "old": wall[0] + 1}
    score = _score(plan, seen, {"F1": wall[0] + 4}, wall)  # type: ignore[arg-type]
    assert score["recall"] == 1.0
    assert score["faults"][0]["incidents"] == ["a"]  # the earlier run's incident is left out
    assert score["faults"][0]["latency_s"] == 2.0
    assert _score(plan, seen, {}, None)["recall"] == 0.0  # type: ignore[arg-type]


def test_a_sweep_step_whose_lag_exceeded_its_bound_is_not_sustainable() -> None:
    from load.live import sustainable

    step = {"lost": 0, "drained": True, "achieved_rate": 3000.0, "offered_rate": 3000.0}
    assert sustainable({**step, "max_lag": 14_999, "max_lag_s": 5.0})
    assert not sustainable({**step, "max_lag": 15_001, "max_lag_s": 5.0})
    assert sustainable({**step, "max_lag": 15_001, "max_lag_s": 10.0})
    assert not sustainable({**step, "max_lag": 0, "max_lag_s": 5.0, "lost": 1})


def test_live_runs_stamp_the_devices_that_log_without_any_time_stamp() -> None:
    from load.live import make_plan, stamped_for_live
    from load.scenario import default_scenario

    scenario = default_scenario()
    bare = {
        d.name
        for d in scenario.devices
        if d.style.timestamp == "none" and d.style.framing in ("wire", "bare")
    }
    assert bare  # the default scenario has some (fw-04, fw-10)
    live, changed = stamped_for_live(scenario)
    assert set(changed) == bare
    assert all(live.device(n).style.timestamp == "legacy_year" for n in changed)
    untouched = [d for d in scenario.devices if d.name not in bare]
    assert all(live.device(d.name) == d for d in untouched)
    plan = make_plan(scenario, lines=3000, seed=1, start_ms=1_800_000_000_000, senders=1)
    assert plan.stamped == changed
    ip = scenario.device(changed[0]).mgmt_ip
    lines = [x for x in plan.shards[0] if f" {ip} : %ASA" in x]
    assert lines and all(re.search(r"\d\d:\d\d:\d\d", x) for x in lines)


@pytest.fixture(scope="module")
def live_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """A whole stack (Kafka, two workers in one group, receiver) on test ports;
    (bootstrap, udp listen)."""
    state = tmp_path_factory.mktemp("load-stack")
    listen = f"127.0.0.1:{_free_port()}"
    metrics = f"127.0.0.1:{_free_port()}"
    try:
        stack.up(
            state,
            port=STACK_PORT,
            controller_port=STACK_CONTROLLER,
            listen=listen,
            metrics=metrics,
            workers=2,
            say=lambda _: None,
        )
        yield f"127.0.0.1:{STACK_PORT}", listen, state
    finally:
        stack.down(state, say=lambda _: None)


@pytest.fixture(scope="module")
def load_report(
    live_stack: tuple[str, str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, object]:
    bootstrap, listen, state = live_stack
    out = tmp_path_factory.mktemp("load-report")
    rc = main(
        [
            "load", "run", "default",
            "--target", f"udp://{listen}",
            "--rate", "500", "--duration", "5",
            "--bootstrap", bootstrap,
            "--report", str(out),
            "--clock-file", str(out / "clock.json"),
            "--state-dir", str(state),
        ]
    )  # fmt: skip
    report: dict[str, object] = json.loads((out / "report.json").read_text())
    report["_rc"] = rc
    report["_dir"] = str(out)
    return report


@pytest.mark.kafka
def test_a_short_load_run_at_500_msgs_loses_nothing_and_finds_every_fault(
    load_report: dict[str, object],
) -> None:
    assert load_report["sent"] == 2500
    assert load_report["lost"] == 0
    assert load_report["received"] == 2500
    assert load_report["recall"] == 1.0
    assert load_report["decoy_hits"] == []
    assert load_report["drained"] is True
    assert load_report["_rc"] == 0
    faults = load_report["faults"]
    assert isinstance(faults, list)
    assert all(f["latency_s"] is not None and f["latency_s"] < 30 for f in faults)


@pytest.mark.kafka
def test_a_load_run_measures_the_cpu_of_every_component_of_the_stack(
    live_stack: tuple[str, str, Path], load_report: dict[str, object]
) -> None:
    _, _, state = live_stack
    usage = load_report["cpu"]
    assert isinstance(usage, dict)
    rows = {r["component"]: r for r in usage["components"]}
    assert list(rows) == ["senders", "receiver", "kafka", "worker", "worker-2"]
    pids = stack.component_pids(stack.StackPaths(state))
    assert all(rows[name]["pids"] == pid for name, pid in pids.items())
    assert usage["messages"] == load_report["sent"] == 2500
    assert usage["wall_s"] >= 4.5  # from the first line sent (5 s of sending) to drained
    for r in rows.values():
        # every one of them did some work for 2500 messages (a clock tick is 10 ms)
        assert r["cpu_s"] > 0, r
        assert r["us_per_msg"] == pytest.approx(r["cpu_s"] / 2500 * 1e6, abs=0.01)
        assert r["core_pct"] == pytest.approx(100 * r["cpu_s"] / usage["wall_s"], abs=0.1)
    assert usage["busiest"] == max(rows.values(), key=lambda r: r["cpu_s"])["component"]
    # the machine's busy time (/proc/stat) covers the components' (tick sampling aside)
    assert usage["machine"]["cpu_s"] >= 0.8 * usage["total"]["cpu_s"]
    page = (Path(str(load_report["_dir"])) / "report.html").read_text()
    assert "<table id=cpu>" in page and f"busiest: {usage['busiest']}" in page


@pytest.mark.kafka
def test_up_with_two_workers_gives_each_a_share_of_the_partitions(
    live_stack: tuple[str, str, Path], load_report: dict[str, object]
) -> None:
    _, _, state = live_stack
    paths = stack.StackPaths(state)
    assert paths.workers() == ["worker", "worker-2"]
    # The second worker joined the group last: its assignment is the group's final one.
    assigned = json.loads(paths.ready("worker-2").read_text())["assigned"]
    raw = [tp for tp in assigned if tp.startswith("syslog.raw:")]
    assert 0 < len(raw) < 4, assigned
    # ... and the load run above still lost nothing and found every fault
    assert load_report["lost"] == 0 and load_report["recall"] == 1.0


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    script = REPO / "load" / "install-chromium.sh"
    subprocess.run(["sh", str(script)], capture_output=True, timeout=600, check=False)
    return shutil.which("chromium")


@pytest.mark.kafka
def test_the_html_report_renders_its_charts_in_headless_chromium(
    load_report: dict[str, object], tmp_path: Path
) -> None:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("Debian chromium is not installed and load/install-chromium.sh could not")
    page = Path(str(load_report["_dir"])) / "report.html"
    text = page.read_text()
    assert text.count('class="chart"') == 3
    # A copy of the page that, once loaded, marks how many charts decoded with a size.
    probe = tmp_path / "probe.html"
    probe.write_text(
        text.replace(
            "</body>",
            "<script>window.addEventListener('load', () => {"
            "const ok = [...document.images].filter(i => i.complete && i.naturalWidth > 0);"
            "document.body.setAttribute('data-charts-ok', String(ok.length));});</script></body>",
        )
    )
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]  # fmt: skip
    dom = subprocess.run(
        [chromium, *flags, "--virtual-time-budget=3000", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    m = re.search(r'data-charts-ok="(\d+)"', dom.stdout)
    assert m is not None, dom.stderr[-2000:]
    assert int(m.group(1)) == 3
    shot = tmp_path / "shot.png"
    subprocess.run(
        [chromium, *flags, "--window-size=1200,1600", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert shot.exists()
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # A blank page compresses to almost nothing; three charts do not.
    assert len(data) > 20_000, len(data)
