"""CPU per component of a load run (load/cpu.py): /proc reading, arithmetic, pids, report."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from load import cpu
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


# --------------------------------------------------------------------------- arithmetic


def _measured() -> dict[str, Any]:
    before = cpu.Sample(100.0, {"receiver": 1.0, "kafka": 2.0, "worker": 5.0, "worker-2": 1.0})
    after = cpu.Sample(110.0, {"receiver": 2.5, "kafka": 2.5, "worker": 13.0, "worker-2": None})
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
    line = cpu.verdict(usage)
    assert line.startswith("busiest: worker, 80% of a core, 400.0 µs/msg")
    assert "all components 108% of 200% (2 cores)" in line


def test_no_messages_or_no_time_give_no_ratio_rather_than_a_division_by_zero() -> None:
    assert cpu.row("x", 1.0, 0.0, 0) == {
        "component": "x", "cpu_s": 1.0, "us_per_msg": None, "core_pct": None
    }  # fmt: skip
    assert cpu.row("x", -0.01, 1.0, 10)["cpu_s"] == 0.0  # a clock tick of jitter


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
