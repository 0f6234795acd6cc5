"""CPU per component of a load run (load/cpu.py): /proc reading, arithmetic, pids, report."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from load import cpu
from load.live import cpu_usage, stack_pids
from load.report import cpu_rows, print_report
from streams.shell import stack

# A child that burns CPU until its own clock says ``SECONDS``, then says how much it used
# and waits for a line on stdin before it exits.
BURN = textwrap.dedent(
    """
    import sys, time
    x = 0
    while time.process_time() < float(sys.argv[1]):
        x += 1
    print(time.process_time(), flush=True)
    sys.stdin.readline()
    """
)
# A parent that starts BURN as its own child and idles while it runs; on a line on stdin
# it reaps the child and says so; on a second line it exits.
PARENT = textwrap.dedent(
    """
    import subprocess, sys
    kid = subprocess.Popen(
        [sys.executable, "-c", sys.argv[1], sys.argv[2]],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    print("live", kid.stdout.readline().strip(), kid.pid, flush=True)
    sys.stdin.readline()
    kid.stdin.close()
    kid.wait()
    print("reaped", flush=True)
    sys.stdin.readline()
    """
)


def _spawn(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def _finish(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    for f in (proc.stdin, proc.stdout):
        if f is not None:
            f.close()


# --------------------------------------------------------------------------- /proc


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_the_cpu_a_child_burns_is_read_from_its_proc_stat() -> None:
    idle = _spawn("-c", "import sys; sys.stdin.readline()")
    burner = _spawn("-c", BURN, "0.6")
    try:
        assert burner.stdout is not None
        reported = float(burner.stdout.readline())  # its own clock: >= 0.6 s
        measured = cpu.cpu_seconds(burner.pid, children=False)
        assert measured is not None
        assert reported >= 0.6
        assert abs(measured - reported) < 0.1, (measured, reported)
        idle_cpu = cpu.cpu_seconds(idle.pid)
        assert idle_cpu is not None and idle_cpu < 0.4  # interpreter start-up only
    finally:
        _finish(burner)
        _finish(idle)
    assert cpu.cpu_seconds(burner.pid) is None  # gone (and reaped)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_a_process_counts_the_cpu_of_its_children_live_and_reaped() -> None:
    parent = _spawn("-c", PARENT, BURN, "0.6")
    assert parent.stdin is not None and parent.stdout is not None
    try:
        word, burned, kid = parent.stdout.readline().split()
        assert word == "live" and float(burned) >= 0.6
        own = cpu.cpu_seconds(parent.pid, children=False)
        live = cpu.cpu_seconds(parent.pid)
        assert own is not None and live is not None
        assert own < 0.4  # the parent itself only waited
        assert live >= own + float(burned) - 0.1  # the live child, through /proc
        assert cpu.cpu_seconds(int(kid)) is not None
        parent.stdin.write("reap\n")
        parent.stdin.flush()
        assert parent.stdout.readline().strip() == "reaped"
        assert cpu.cpu_seconds(int(kid)) is None  # the child is gone ...
        reaped = cpu.cpu_seconds(parent.pid)
        assert reaped is not None
        assert reaped >= own + float(burned) - 0.1  # ... its time is in the parent's cutime
        own_after = cpu.cpu_seconds(parent.pid, children=False)
        assert own_after is not None and own_after < 0.4
    finally:
        _finish(parent)


def _fake_proc(root: Path, pid: int, ppid: int, times: tuple[int, int, int, int]) -> None:
    utime, stime, cutime, cstime = times
    # fields after "(comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt
    # cmajflt utime stime cutime cstime ...; the name holds spaces and a ")"
    rest = f"S {ppid} 1 1 0 -1 0 0 0 0 0 {utime} {stime} {cutime} {cstime} 20 0 1 0"
    (root / str(pid)).mkdir()
    (root / str(pid) / "stat").write_text(f"{pid} (a b) c) {rest}\n")


@pytest.mark.parametrize("children_files", [True, False], ids=["task-children", "ppid-scan"])
def test_a_process_tree_sums_own_live_descendants_and_waited_for_times(
    tmp_path: Path, children_files: bool
) -> None:
    _fake_proc(tmp_path, 10, 1, (100, 50, 20, 5))
    _fake_proc(tmp_path, 11, 10, (30, 10, 1, 1))
    _fake_proc(tmp_path, 12, 11, (5, 5, 0, 0))
    _fake_proc(tmp_path, 13, 1, (999, 999, 0, 0))  # not in the tree
    if children_files:
        for pid, kids in ((10, "11"), (11, "12"), (12, ""), (13, "")):
            (tmp_path / str(pid) / "task" / str(pid)).mkdir(parents=True)
            (tmp_path / str(pid) / "task" / str(pid) / "children").write_text(kids)
    tick = cpu.CLK_TCK
    assert cpu.cpu_seconds(10, children=False, proc=tmp_path) == pytest.approx(150 / tick)
    assert cpu.cpu_seconds(10, proc=tmp_path) == pytest.approx((175 + 42 + 10) / tick)
    assert cpu.cpu_seconds(11, proc=tmp_path) == pytest.approx(52 / tick)
    assert cpu.cpu_seconds(99, proc=tmp_path) is None
    assert cpu.machine_seconds(tmp_path) is None  # no /proc/stat
    # user nice system idle iowait irq softirq steal ...: busy is all but idle, iowait, steal
    (tmp_path / "stat").write_text("cpu  1000 20 300 9999 77 4 6 55 0 0\ncpu0 1 2 3 4 5 6 7\n")
    assert cpu.machine_seconds(tmp_path) == pytest.approx(1330 / tick)


# --------------------------------------------------------------------------- arithmetic


def _measured() -> dict[str, Any]:
    before = cpu.Sample(
        100.0, {"receiver": 1.0, "kafka": 2.0, "worker": 5.0, "worker-2": 1.0}, 1000.0
    )
    after = cpu.Sample(
        110.0, {"receiver": 2.5, "kafka": 2.5, "worker": 13.0, "worker-2": None}, 1013.0
    )
    return cpu.usage(before, after, 20_000, extra={"senders": 0.8}, cores=2)


def test_usage_is_cpu_seconds_per_message_and_per_second_of_the_window() -> None:
    usage = _measured()
    rows = {r["component"]: r for r in usage["components"]}
    assert list(rows) == ["senders", "receiver", "kafka", "worker", "worker-2"]
    assert usage["wall_s"] == 10.0 and usage["messages"] == 20_000
    assert rows["senders"] == {
        "component": "senders", "cpu_s": 0.8, "us_per_msg": 40.0, "core_pct": 8.0
    }  # fmt: skip
    assert (rows["receiver"]["cpu_s"], rows["receiver"]["us_per_msg"]) == (1.5, 75.0)
    assert rows["receiver"]["core_pct"] == 15.0
    assert (rows["kafka"]["us_per_msg"], rows["kafka"]["core_pct"]) == (25.0, 5.0)
    assert (rows["worker"]["us_per_msg"], rows["worker"]["core_pct"]) == (400.0, 80.0)
    assert rows["worker-2"]["cpu_s"] is None  # its process went away during the run
    assert usage["total"]["cpu_s"] == 10.8
    assert usage["total"]["us_per_msg"] == 540.0 and usage["total"]["core_pct"] == 108.0
    assert usage["busiest"] == "worker"
    assert "worker-2" in usage["note"]
    assert (usage["machine"]["cpu_s"], usage["machine"]["core_pct"]) == (13.0, 130.0)
    assert (usage["others"]["cpu_s"], usage["others"]["core_pct"]) == (2.2, 22.0)
    line = cpu.verdict(usage)
    assert line.startswith("busiest: worker, 80% of a core, 400.0 µs/msg")
    assert "all components 108% of 200% (2 cores); the machine 130% (other processes 22%)" in line


def test_no_messages_or_no_time_give_no_ratio_rather_than_a_division_by_zero() -> None:
    assert cpu.row("x", 1.0, 0.0, 0) == {
        "component": "x", "cpu_s": 1.0, "us_per_msg": None, "core_pct": None
    }  # fmt: skip
    assert cpu.row("x", -0.01, 1.0, 10)["cpu_s"] == 0.0  # a clock tick of jitter


def test_a_runs_table_sums_its_senders_and_names_their_pids() -> None:
    before = cpu.Sample(0.0, {"receiver": 0.0})
    after = cpu.Sample(4.0, {"receiver": 2.0})
    results = [{"sent": 3000, "cpu_s": 0.5}, {"sent": 1000, "cpu_s": 0.3}]
    usage = cpu_usage(results, [101, 102], {"receiver": 55}, before, after)
    rows = {r["component"]: r for r in usage["components"]}
    assert rows["senders"]["cpu_s"] == 0.8 and rows["senders"]["pids"] == [101, 102]
    assert rows["senders"]["us_per_msg"] == 200.0  # 0.8 s / 4000 messages
    assert rows["receiver"]["us_per_msg"] == 500.0 and rows["receiver"]["core_pct"] == 50.0
    assert rows["receiver"]["pids"] == 55
    unknown = cpu_usage([{"sent": 10, "cpu_s": None}], [7], {}, before, after)
    assert unknown["components"][0]["cpu_s"] is None  # a sender without /proc


# --------------------------------------------------------------------------- the stack's pids


@pytest.fixture
def fake_stack(tmp_path: Path) -> Iterator[tuple[stack.StackPaths, dict[str, int]]]:
    """A state dir whose pid files name idle processes with the command lines of a
    receiver, a worker and the broker of its kafka/ (port 49999)."""
    paths = stack.StackPaths(tmp_path.resolve())
    paths.kafka.mkdir()
    props = paths.kafka / "server.properties"
    props.write_text(
        "listeners=PLAINTEXT://127.0.0.1:49999,CONTROLLER://127.0.0.1:50000\n", encoding="utf-8"
    )
    idle = "import sys; sys.stdin.readline()"
    argvs = {
        "receiver": ["streams.cli.main", "receive", "--udp", "127.0.0.1:1"],
        "worker": ["streams.cli.main", "worker", "--data-dir", str(paths.data("worker"))],
        "kafka": ["kafka.Kafka", str(props)],
        "stranger": ["streams.cli.main", "something-else"],
    }
    procs = {name: _spawn("-c", idle, *argv) for name, argv in argvs.items()}
    try:
        pids = {name: p.pid for name, p in procs.items()}
        paths.pid("receiver").write_text(f"{pids['receiver']}\n")
        paths.pid("worker").write_text(f"{pids['worker']}\n")
        paths.pid("worker-2").write_text(f"{pids['stranger']}\n")  # a pid reused by another
        paths.pid("board").write_text("999999999\n")  # stale
        (paths.kafka / "broker.pid").write_text(f"{pids['kafka']}\n")
        yield paths, pids
    finally:
        for p in procs.values():
            _finish(p)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_component_pids_finds_the_running_parts_of_a_stack_only(
    fake_stack: tuple[stack.StackPaths, dict[str, int]],
) -> None:
    paths, pids = fake_stack
    found = stack.component_pids(paths)
    assert found == {"receiver": pids["receiver"], "kafka": pids["kafka"], "worker": pids["worker"]}
    assert list(found) == ["receiver", "kafka", "worker"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_the_stack_is_measured_only_when_it_serves_the_runs_bootstrap(
    fake_stack: tuple[stack.StackPaths, dict[str, int]], tmp_path: Path
) -> None:
    paths, pids = fake_stack
    found, note = stack_pids(paths.state, "127.0.0.1:49999")
    assert note is None and found["kafka"] == pids["kafka"]
    assert stack_pids(paths.state, "localhost:49999,127.0.0.1:49001")[1] is None
    for bootstrap in ("127.0.0.1:9092", "10.0.0.5:49999", "kafka.example.net:49999"):
        found, note = stack_pids(paths.state, bootstrap)
        assert found == {} and note is not None and "is not the one at" in note
    found, note = stack_pids(tmp_path / "nothing-here", "127.0.0.1:49999")
    assert found == {} and note is not None and "no running stack under" in note
    found, note = stack_pids(None, "127.0.0.1:49999")
    assert found == {} and note is not None and "remote" in note


# --------------------------------------------------------------------------- the report


def _step(rate: float, usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "scenario": "t", "target": "udp://127.0.0.1:1", "offered_rate": rate,
        "achieved_rate": rate, "senders": 1, "sent": 20_000, "received": 20_000, "lost": 0,
        "max_lag": 10, "drained": True, "recall": 1.0, "precision": 1.0, "decoy_hits": [],
        "latency_p50_s": 1.0, "latency_max_s": 2.0, "faults": [], "lag_samples": [],
        "cpu": usage,
    }  # fmt: skip


def test_the_report_prints_a_cpu_table_and_names_the_busiest_component() -> None:
    quiet = cpu.usage(
        cpu.Sample(0.0, {"receiver": 0.0, "kafka": 0.0, "worker": 0.0}),
        cpu.Sample(10.0, {"receiver": 3.0, "kafka": 1.0, "worker": 2.0}),
        20_000,
        extra={"senders": 0.5},
        cores=2,
    )
    report = {
        "sweep": True, "sustainable_rate": 2000, "stopped_by": "loss",
        "steps": [_step(2000, quiet), _step(3000, _measured())],
    }  # fmt: skip
    head, rows = cpu_rows(report)
    assert head == [
        "offered/s", "window s", "senders", "receiver", "kafka", "worker", "worker-2",
        "total", "others", "busiest",
    ]  # fmt: skip
    assert rows[0] == ["2000", "10.0", "25.0 · 5%", "150.0 · 30%", "50.0 · 10%", "100.0 · 20%",
                       "-", "325.0 · 65%", "-", "receiver"]  # fmt: skip
    assert rows[1][5] == "400.0 · 80%" and rows[1][-1] == "worker"
    assert rows[1][-2] == "110.0 · 22%"  # the rest of the machine
    console = Console(record=True, width=220)
    print_report(report, console)
    text = console.export_text()
    assert "CPU per component" in text and "150.0 · 30%" in text and "400.0 · 80%" in text
    assert "2000 msg/s: busiest: receiver, 30% of a core" in text
    assert "3000 msg/s: busiest: worker, 80% of a core" in text


def test_a_run_without_pids_says_so_in_one_line_and_prints_no_cpu_table() -> None:
    report = _step(500, cpu.not_measured("not measured: no running stack under /x (remote?)"))
    console = Console(record=True, width=220)
    print_report(report, console)
    text = console.export_text()
    assert "CPU per component: not measured: no running stack under /x (remote?)" in text
    assert "µs per message" not in text
    assert sum("not measured" in line for line in text.splitlines()) == 1
