"""CPU time per component of a stack under load, read from ``/proc/<pid>/stat``.

A component's CPU time is ``utime + stime`` of its process plus that of its descendants:
the live ones (found through ``/proc/<pid>/task/<tid>/children``, else by scanning the
``ppid`` of every process) and the ones it already waited for (``cutime + cstime``). The
Kafka broker is one JVM process (its threads are in its own times); the receiver and the
workers are one process each; their children, if any, are theirs.

:func:`usage` turns two :func:`sample` readings into the table of a run: per component, the
CPU seconds spent between them, µs per message sent and % of one core over the wall time
between them, and the busiest component (the one closest to a full core). The machine's
busy time (``/proc/stat``) over the same window tells what the other processes took.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROC = Path("/proc")
#: Clock ticks per second of ``/proc/<pid>/stat`` times.
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# Indices in the fields after the command name of /proc/<pid>/stat ("state" is 0).
_PPID, _UTIME, _STIME, _CUTIME, _CSTIME = 1, 11, 12, 13, 14


def _fields(pid: int, proc: Path = PROC) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after ``(comm)``; None when the process is gone."""
    try:
        text = (proc / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # comm may hold spaces and parentheses: the last ")" ends it
    fields = text.rsplit(")", 1)[-1].split()
    return fields if len(fields) > _CSTIME else None


def _children(pid: int, proc: Path = PROC) -> list[int]:
    """The live children of ``pid``."""
    kids: list[int] = []
    try:
        tasks = list((proc / str(pid) / "task").iterdir())
        for task in tasks:
            kids += [int(c) for c in (task / "children").read_text(encoding="utf-8").split()]
        return kids
    except (OSError, ValueError):
        pass
    # no CONFIG_PROC_CHILDREN: scan every process's parent
    try:
        entries = [e.name for e in proc.iterdir() if e.name.isdigit()]
    except OSError:
        return []
    for name in entries:
        fields = _fields(int(name), proc)
        if fields is not None and fields[_PPID] == str(pid):
            kids.append(int(name))
    return kids


def cpu_seconds(pid: int, *, children: bool = True, proc: Path = PROC) -> float | None:
    """User + system CPU seconds of ``pid`` so far (with its descendants' when
    ``children``); None when ``pid`` is gone."""
    fields = _fields(pid, proc)
    if fields is None:
        return None
    ticks = int(fields[_UTIME]) + int(fields[_STIME])
    if children:
        ticks += int(fields[_CUTIME]) + int(fields[_CSTIME])
        seen = {pid}
        todo = _children(pid, proc)
        while todo:
            kid = todo.pop()
            if kid in seen:
                continue
            seen.add(kid)
            kf = _fields(kid, proc)
            if kf is None:  # gone meanwhile: its times moved to its parent's cutime
                continue
            ticks += int(kf[_UTIME]) + int(kf[_STIME]) + int(kf[_CUTIME]) + int(kf[_CSTIME])
            todo += _children(kid, proc)
    return ticks / CLK_TCK


def machine_seconds(proc: Path = PROC) -> float | None:
    """Busy CPU seconds of the whole machine (all cores) since boot: user, nice, system,
    irq and softirq of ``/proc/stat``; None without it."""
    try:
        with (proc / "stat").open(encoding="utf-8") as fh:
            first = fh.readline().split()
    except OSError:
        return None
    if len(first) < 8 or first[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in first[1:8])
    return (user + nice + system + irq + softirq) / CLK_TCK


# --------------------------------------------------------------------------- a run's table


@dataclass(frozen=True, slots=True)
class Sample:
    """CPU seconds of each component (None: its process is gone) and busy seconds of the
    machine (:func:`machine_seconds`) at wall time ``at``."""

    at: float
    seconds: dict[str, float | None] = field(default_factory=dict)
    machine: float | None = None


def sample(pids: Mapping[str, int], *, proc: Path = PROC) -> Sample:
    seconds = {name: cpu_seconds(pid, proc=proc) for name, pid in pids.items()}
    return Sample(time.time(), seconds, machine_seconds(proc))


def row(name: str, cpu_s: float | None, wall_s: float, messages: int) -> dict[str, Any]:
    """One component's line: CPU seconds, µs per message and % of one core."""
    if cpu_s is None:
        return {"component": name, "cpu_s": None, "us_per_msg": None, "core_pct": None}
    cpu_s = max(cpu_s, 0.0)
    return {
        "component": name,
        "cpu_s": round(cpu_s, 3),
        "us_per_msg": round(cpu_s / messages * 1e6, 2) if messages > 0 else None,
        "core_pct": round(100 * cpu_s / wall_s, 1) if wall_s > 0 else None,
    }


def usage(
    before: Sample,
    after: Sample,
    messages: int,
    *,
    extra: Mapping[str, float | None] | None = None,
    pids: Mapping[str, int | list[int]] | None = None,
    cores: int | None = None,
) -> dict[str, Any]:
    """The CPU table of a run: each component's CPU time between ``before`` and ``after``
    (``extra``: components measured apart, e.g. the senders, as CPU seconds spent within
    that window), per message of ``messages`` and as % of one core over the window. A
    component whose process is gone (None) is listed without numbers."""
    wall = after.at - before.at
    spent: dict[str, float | None] = dict(extra or {})
    for name, start in before.seconds.items():
        end = after.seconds.get(name)
        spent[name] = None if start is None or end is None else end - start
    rows = [row(name, cpu_s, wall, messages) for name, cpu_s in spent.items()]
    for r in rows:
        if pids is not None and r["component"] in pids:
            r["pids"] = pids[r["component"]]
    known = [r for r in rows if r["cpu_s"] is not None]
    total_s = sum(r["cpu_s"] for r in known)
    total = row("total", total_s, wall, messages)
    busiest = max(known, key=lambda r: r["cpu_s"], default=None)
    gone = [r["component"] for r in rows if r["cpu_s"] is None]
    machine = others = None
    if before.machine is not None and after.machine is not None:
        machine_s = after.machine - before.machine
        machine = row("machine", machine_s, wall, messages)
        others = row("others", max(machine_s - total_s, 0.0), wall, messages)
    return {
        "wall_s": round(wall, 3),
        "messages": messages,
        "cores": cores if cores is not None else os.cpu_count(),
        "components": rows,
        "total": total,
        "machine": machine,  # every process of the machine
        "others": others,  # the machine less the components
        "busiest": None if busiest is None else busiest["component"],
        "note": f"not measured (process gone?): {', '.join(gone)}" if gone else None,
    }


def not_measured(why: str) -> dict[str, Any]:
    """The CPU table of a run whose components could not be found."""
    return {"components": [], "busiest": None, "note": why}


def verdict(cpu: Mapping[str, Any]) -> str:
    """One line naming the busiest component by its measurement."""
    if not cpu.get("components"):
        return f"CPU per component: {cpu.get('note') or 'not measured'}"
    by_name = {r["component"]: r for r in cpu["components"]}
    name = cpu.get("busiest")
    total = cpu["total"]
    cores = cpu.get("cores") or 1
    parts = [f"all components {_pct(total['core_pct'])} of {100 * cores}% ({cores} cores)"]
    if cpu.get("machine") and cpu.get("others"):
        parts.append(
            f"the machine {_pct(cpu['machine']['core_pct'])} "
            f"(other processes {_pct(cpu['others']['core_pct'])})"
        )
    if name is not None:
        b = by_name[name]
        parts.insert(
            0,
            f"busiest: {name}, {_pct(b['core_pct'])} of a core, {_us(b['us_per_msg'])} µs/msg",
        )
    if cpu.get("note"):
        parts.append(str(cpu["note"]))
    return "; ".join(parts)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}%"


def _us(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"
