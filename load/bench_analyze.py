"""``make bench``: ``tunnelwatch analyze`` against Debian's SEC on a synthetic archive.

Run as ``python -m load.bench_analyze [--lines N] [--small N] [--seed S] [--out DIR]``.

1. Writes a 1M-line and a 200k-line archive of the default scenario into ``bench-out/``
   (with ``.truth.jsonl`` and ``.decoys.jsonl`` beside each).
2. Runs ``tunnelwatch analyze --format jsonl`` on both, measuring wall time and the
   child's own peak RSS (``os.wait4``), and scores the incidents against the ground
   truth: a fault is found when an incident has its cause and device (name or
   management IP) and, when the truth knows the peer, its peer.
3. Runs ``sec --notail`` with five SingleWithThreshold rules (window 600 s) on the big
   archive, installing SEC with ``load/install-sec.sh`` first if it is missing.
4. Does 2 and 3 again on an ASA-heavy archive of the same size
   (``load/scenarios/asa-heavy.yaml``: 106023 denies, re-keys, remote-access disconnects,
   relay-wrapped RFC 5424 stamps), for the ratio against SEC on that mix.
5. Prints ``analyze``'s lines/s by header shape, native and Python
   (:mod:`load.bench_shapes`), and by fleet size (1M lines of one message over 1k, 10k and
   100k devices), and the peak RSS with 100k devices and 10k open incidents (soak).

SEC counts with the wall clock, not the log's timestamps, so on a batch run its windows
span the whole file: its alert count is not a diagnosis, only its speed compares.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from load.scenario import Scenario, default_scenario, load_scenario
from load.synth import TruthDecoy, TruthFault, write_archive

HERE = Path(__file__).resolve().parent
INSTALL_SEC = HERE / "install-sec.sh"

# Device of a line, whatever its framing: the syslog server's host field; the IOS
# origin-id after the PRI and message counter; the ASA device-id before " : %ASA".
_DEV = (
    r"^(?|(?:<\d+>)?[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d (\S+) "
    r"|<\d+>\d*: ([\w.-]+): "
    r"|(?:\d+: )?([A-Za-z][\w.-]*|\d+\.\d+\.\d+\.\d+): "
    r"|<\d+>(?:\S+ +){0,4}?(\S+) :? ?(?=%ASA-))"
)

#: (cause, threshold, pattern); $1 = device, $2/$3 = peer (either may be unset).
SEC_RULES: tuple[tuple[str, int, str], ...] = (
    (
        "crypto_engine_fault",
        5,
        _DEV + r".*?(?:%CRYPTO-4-RECVD_PKT_MAC_ERR: decrypt: mac verify failed for connection "
        r"id=\d+(?: local=\S+ remote=([\d.]+))?|%ASA-4-402120: .*? from ([\d.]+) )",
    ),
    (
        "qos_reordering",
        3,
        _DEV + r".*?(?:%CRYPTO-4-PKT_REPLAY_ERR: |%ASA-4-402119: .*? from ([\d.]+) )",
    ),
    (
        "psk_mismatch",
        5,
        _DEV + r".*?%CRYPTO-4-IKMP_BAD_MESSAGE: IKE message from ([\d.]+) ()",
    ),
    (
        "mode_failure",
        3,
        _DEV + r".*?%CRYPTO-6-IKMP_MODE_FAILURE: Processing of (\w+) mode failed with peer at "
        r"([\d.]+)",
    ),
    (
        "sa_out_of_sync",
        5,
        _DEV + r".*?(?:%CRYPTO-4-RECVD_PKT_INV_SPI: .*?srcaddr=([\d.]+)|%ASA-4-402114: .*? "
        r"from ([\d.]+) )",
    ),
)

#: The (cause, variant) pairs whose lines the SEC rules can see at all.
SEC_COVERS = frozenset(
    {
        ("crypto_engine_fault", "mac_err"),
        ("crypto_engine_fault", "402120"),
        ("qos_reordering", "pkt_replay"),
        ("qos_reordering", "402119"),
        ("psk_mismatch", "ikmp_bad_message"),
        ("ike_policy_mismatch", "main_mode"),
        ("transform_set_mismatch", "quick_mode"),
        ("sa_out_of_sync", "inv_spi"),
        ("sa_out_of_sync", "402114"),
    }
)

#: IKMP_MODE_FAILURE names the mode; Main is phase 1, Quick is phase 2.
_MODE_CAUSE = {"Main": "ike_policy_mismatch", "Aggressive": "ike_policy_mismatch"}


def sec_ruleset(alerts: Path) -> str:
    """The SEC configuration: one SingleWithThreshold rule per rule in ``SEC_RULES``."""
    blocks = []
    for cause, thresh, pattern in SEC_RULES:
        if cause == "mode_failure":
            desc = "cause=mode_failure mode=$2 device=$1 peer=$3"
        else:
            desc = f"cause={cause} device=$1 peer=$2$3"
        blocks.append(
            "\n".join(
                (
                    f"# {cause}: {thresh} lines of one device and peer within 10 minutes",
                    "type=SingleWithThreshold",
                    "ptype=RegExp",
                    f"pattern={pattern}",
                    f"desc={desc}",
                    f"action=write {alerts} %s",
                    "window=600",
                    f"thresh={thresh}",
                )
            )
        )
    return "\n\n".join(blocks) + "\n"


def parse_sec_alerts(text: str) -> list[dict[str, Any]]:
    """Alert lines written by the ruleset, as incident-like dicts."""
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        cause = fields.get("cause", "")
        if cause == "mode_failure":
            cause = _MODE_CAUSE.get(fields.get("mode", ""), "transform_set_mismatch")
        peer = fields.get("peer") or None
        out.append({"cause": cause, "device": fields.get("device"), "peer": peer})
    return out


# ---------------------------------------------------------------------------
# scoring


@dataclass(frozen=True)
class Score:
    """How a set of incidents compares with the ground truth."""

    found: int  # truth faults with at least one matching incident
    total: int
    missed: list[TruthFault]
    matching: int  # incidents that match a fault (several may match one fault)
    partial: int  # right device and cause, but the peer is missing or another one
    false_positives: int  # no fault of that cause on that device at all
    on_decoys: int  # false positives on a device and peer that carry a decoy

    @property
    def recall(self) -> float:
        return self.found / self.total if self.total else 1.0


def _aliases(t: TruthFault | TruthDecoy) -> set[str]:
    return {t.device, t.device_ip}


def _same_device_and_cause(inc: Mapping[str, Any], truth: TruthFault) -> bool:
    return inc.get("cause") == truth.cause and inc.get("device") in _aliases(truth)


def _matches(inc: Mapping[str, Any], truth: TruthFault) -> bool:
    if not _same_device_and_cause(inc, truth):
        return False
    return truth.peer is None or inc.get("peer") == truth.peer


def score(
    incidents: Sequence[Mapping[str, Any]],
    truth: Sequence[TruthFault],
    decoys: Sequence[TruthDecoy],
) -> Score:
    """Recall over the truth faults, and what the other incidents are."""
    missed = [t for t in truth if not any(_matches(i, t) for i in incidents)]
    matching = partial = false_positives = on_decoys = 0
    for inc in incidents:
        if any(_matches(inc, t) for t in truth):
            matching += 1
        elif any(_same_device_and_cause(inc, t) for t in truth):
            partial += 1
        else:
            false_positives += 1
            if any(
                inc.get("device") in _aliases(d) and inc.get("peer") in (None, d.peer)
                for d in decoys
            ):
                on_decoys += 1
    found = len(truth) - len(missed)
    return Score(found, len(truth), missed, matching, partial, false_positives, on_decoys)


# ---------------------------------------------------------------------------
# running things


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_rss_mib: float
    returncode: int
    #: The child's user + system CPU time: on a shared, busy machine a fairer measure of
    #: its speed than the wall time.
    cpu_seconds: float = 0.0


def measure(cmd: Sequence[str], stdout: Path, stderr: Path) -> Run:
    """Run ``cmd`` with output to files; its wall time and its own peak RSS."""
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return Run(seconds, usage.ru_maxrss / 1024, proc.returncode, cpu)  # ru_maxrss: KiB on Linux


def _archive(scenario: Scenario, path: Path, lines: int, seed: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    synth = write_archive(scenario, path, lines, seed)
    seconds = time.perf_counter() - t0
    print(
        f"  wrote {path} ({lines:,} lines, {synth.fault_lines} fault lines, "
        f"{len(synth.ground_truth)} faults, {len(synth.decoys)} decoys) in {seconds:.1f}s"
    )
    return seconds, synth.fault_lines


def _load_truth(path: Path) -> tuple[list[TruthFault], list[TruthDecoy]]:
    faults = [
        TruthFault(**json.loads(line))
        for line in Path(f"{path}.truth.jsonl").read_text().splitlines()
    ]
    decoys = [
        TruthDecoy(**json.loads(line))
        for line in Path(f"{path}.decoys.jsonl").read_text().splitlines()
    ]
    return faults, decoys


def find_tunnelwatch() -> str | None:
    local = Path(sys.executable).parent / "tunnelwatch"
    if local.exists():
        return str(local)
    return shutil.which("tunnelwatch")


def ensure_sec() -> str | None:
    """Path of ``sec``; installs it with load/install-sec.sh when missing and allowed."""
    found = shutil.which("sec")
    if found:
        return found
    print(f"  sec is missing: running {INSTALL_SEC}")
    rc = subprocess.run(["bash", str(INSTALL_SEC)], check=False).returncode
    if rc != 0:
        print("  could not install sec; skipping the SEC comparison")
        return None
    return shutil.which("sec")


def _rate(lines: int, seconds: float) -> str:
    return f"{lines / seconds:,.0f}" if seconds > 0 else "-"


def _print_score(name: str, s: Score) -> None:
    print(f"  {name}: recall {s.found}/{s.total} = {s.recall:.0%}")
    print(
        f"    incidents matching a fault: {s.matching}; right device and cause but peer "
        f"unknown/other: {s.partial}; false positives: {s.false_positives} "
        f"(on decoys: {s.on_decoys})"
    )
    for t in s.missed:
        print(f"    missed {t.id} {t.cause} on {t.device} peer={t.peer} ({t.variant})")


def _analyze_path(err: Path) -> str:
    """Which path read the lines (``native`` or ``python``), from analyze's summary line."""
    m = re.search(r"\bpath=(\w+)", err.read_text(errors="replace"))
    return m.group(1) if m else "unknown"


def _incidents(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m load.bench_analyze", description=__doc__)
    ap.add_argument("--lines", type=int, default=1_000_000, help="big archive (1,000,000)")
    ap.add_argument("--small", type=int, default=200_000, help="small archive (200,000)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    ap.add_argument("--no-sec", action="store_true", help="skip the SEC comparison")
    ap.add_argument("--no-asa", action="store_true", help="skip the ASA-heavy mix")
    ap.add_argument(
        "--shape-lines", type=int, default=50_000, help="lines per header shape (0: skip)"
    )
    ap.add_argument(
        "--fleet-lines", type=int, default=1_000_000, help="lines per fleet size (0: skip)"
    )
    ap.add_argument(
        "--no-soak", action="store_true", help="skip the RSS soak (100k devices, 10k incidents)"
    )
    args = ap.parse_args(None if argv is None else list(argv))

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    scenario = default_scenario()
    year = scenario.start.year
    big = out / f"archive-{args.lines}.log"
    small = out / f"archive-{args.small}.log"

    print(f"generating archives (scenario {scenario.name!r}, seed {args.seed})")
    _archive(scenario, big, args.lines, args.seed)
    _archive(scenario, small, args.small, args.seed)

    tw = find_tunnelwatch()
    if tw is None:
        print("tunnelwatch is not installed (make install); stopping", file=sys.stderr)
        return 1
    results: dict[str, Run] = {}
    scores: dict[str, Score] = {}
    found: dict[str, int] = {}
    paths: dict[str, str] = {}
    for label, path, lines in (("big", big, args.lines), ("small", small, args.small)):
        jsonl = out / f"{path.stem}.incidents.jsonl"
        cmd = [tw, "analyze", "--format", "jsonl", "--year", str(year), str(path)]
        print(f"running: {' '.join(cmd)} > {jsonl}")
        run = measure(cmd, jsonl, out / f"{path.stem}.analyze.err")
        if run.returncode != 0:
            err = (out / f"{path.stem}.analyze.err").read_text()[-2000:]
            print(f"tunnelwatch analyze failed (exit {run.returncode}):\n{err}", file=sys.stderr)
            return 1
        incidents = _incidents(jsonl)
        truth, decoys = _load_truth(path)
        results[label] = run
        scores[label] = score(incidents, truth, decoys)
        found[label] = len(incidents)
        paths[label] = _analyze_path(out / f"{path.stem}.analyze.err")
        print(
            f"  {lines:,} lines in {run.seconds:.2f}s, peak RSS {run.peak_rss_mib:.1f} MiB "
            f"({paths[label]} path)"
        )

    sec_run: Run | None = None
    sec_score: Score | None = None
    sec_alerts = 0
    sec = None if args.no_sec else ensure_sec()
    if sec is not None:
        got = _run_sec(sec, out, big, "sec")
        if got is not None:
            sec_run, parsed = got
            sec_alerts = len(parsed)
            truth, decoys = _load_truth(big)
            sec_score = score(parsed, truth, decoys)

    b, s = results["big"], results["small"]
    print()
    print(f"== tunnelwatch analyze vs SEC, {args.lines:,}-line archive ==")
    print(
        f"tunnelwatch analyze ran the {paths['big']} path"
        + (
            " (TUNNELWATCH_NATIVE=0 forces the Python path)"
            if paths["big"] == "native"
            else " (the native extension is not built: make install with cargo builds it)"
        )
    )
    print(f"{'':24}{'lines':>12}{'seconds':>10}{'lines/s':>12}{'peak RSS MiB':>14}")
    print(
        f"{'tunnelwatch analyze':24}{args.lines:>12,}{b.seconds:>10.2f}"
        f"{_rate(args.lines, b.seconds):>12}{b.peak_rss_mib:>14.1f}"
    )
    if sec_run is not None:
        print(
            f"{'sec (5 rules)':24}{args.lines:>12,}{sec_run.seconds:>10.2f}"
            f"{_rate(args.lines, sec_run.seconds):>12}{sec_run.peak_rss_mib:>14.1f}"
        )
        ratio = sec_run.seconds / b.seconds if b.seconds else float("nan")
        print(f"throughput ratio tunnelwatch/sec: {ratio:.2f}x")
    else:
        print("sec: not run")
    print(f"tunnelwatch incidents found: {found['big']}")
    _print_score("tunnelwatch", scores["big"])
    if sec_score is not None:
        truth, _ = _load_truth(big)
        covered = sum((t.cause, t.variant) in SEC_COVERS for t in truth)
        print(
            f"sec alerts written: {sec_alerts}; its 5 rules see the lines of {covered} of the "
            f"{len(truth)} faults (windows run on the wall clock, not the log's time)"
        )
        _print_score("sec", sec_score)
    print()
    print("== memory: peak RSS of tunnelwatch analyze by archive size ==")
    print(f"  {args.small:>10,} lines: {s.peak_rss_mib:7.1f} MiB  ({s.seconds:.2f}s)")
    print(f"  {args.lines:>10,} lines: {b.peak_rss_mib:7.1f} MiB  ({b.seconds:.2f}s)")
    growth = b.peak_rss_mib / s.peak_rss_mib if s.peak_rss_mib else float("nan")
    verdict = "flat" if growth < 1.25 else "GROWS with archive size"
    print(f"  ratio {growth:.2f} for {args.lines / args.small:.0f}x the lines: {verdict}")
    if not args.no_asa:
        _asa_heavy(tw, sec, out, args.lines, args.seed, (b, paths["big"]), sec_run)
    from load import bench_shapes

    if args.shape_lines > 0:
        print()
        rows = bench_shapes.shape_table(out, args.shape_lines)
        bench_shapes.print_shape_table(rows, args.shape_lines)
    if args.fleet_lines > 0:
        print()
        runs = bench_shapes.fleet_table(tw, out, args.fleet_lines)
        bench_shapes.print_fleet_table(runs, args.fleet_lines)
    if not args.no_soak:
        print()
        bench_shapes.soak(tw, out)
    return 0


def _run_sec(
    sec: str, out: Path, archive: Path, name: str
) -> tuple[Run, list[dict[str, Any]]] | None:
    """SEC with :func:`sec_ruleset` on ``archive``: its run and alerts, or None if it failed."""
    alerts = (out / f"{name}-alerts.txt").resolve()
    alerts.unlink(missing_ok=True)
    conf = out / f"{name}-rules.conf"
    conf.write_text(sec_ruleset(alerts))
    cmd = [
        sec,
        f"--conf={conf}",
        f"--input={archive}",
        "--notail",
        "--nointevents",
        f"--log={out / f'{name}.log'}",
        "--debug=3",
    ]
    print(f"running: {' '.join(cmd)}")
    run = measure(cmd, out / f"{name}.stdout", out / f"{name}.stderr")
    if run.returncode != 0:
        print(f"  sec failed (exit {run.returncode}); see {out}/{name}.stderr")
        return None
    return run, parse_sec_alerts(alerts.read_text() if alerts.exists() else "")


def _asa_heavy(
    tw: str, sec: str | None, out: Path, lines: int, seed: int,
    default_run: tuple[Run, str], default_sec: Run | None,
) -> None:  # fmt: skip
    """analyze and SEC on the ASA-heavy mix; the ratios of both mixes, side by side."""
    scenario = load_scenario(HERE / "scenarios" / "asa-heavy.yaml")
    path = out / f"asa-heavy-{lines}.log"
    print()
    print(f"generating the ASA-heavy archive (scenario {scenario.name!r}, seed {seed})")
    _archive(scenario, path, lines, seed)
    jsonl = out / f"{path.stem}.incidents.jsonl"
    cmd = [tw, "analyze", "--format", "jsonl", "--year", str(scenario.start.year), str(path)]
    print(f"running: {' '.join(cmd)} > {jsonl}")
    run = measure(cmd, jsonl, out / f"{path.stem}.analyze.err")
    used = _analyze_path(out / f"{path.stem}.analyze.err")
    truth, decoys = _load_truth(path)
    asa_score = score(_incidents(jsonl), truth, decoys)
    sec_run = _run_sec(sec, out, path, "sec-asa") if sec is not None else None
    print()
    print(f"== tunnelwatch analyze vs SEC by mix, {lines:,} lines each (same run) ==")
    print(
        f"{'mix':12}{'analyze lines/s':>17}{'sec lines/s':>13}{'ratio':>8}"
        f"{'CPU-s analyze':>15}{'CPU-s sec':>11}{'CPU ratio':>11}  path"
    )
    mixes = (
        ("default", default_run[0], default_sec, default_run[1]),
        ("asa-heavy", run, sec_run[0] if sec_run else None, used),
    )
    for name, a, srun, used in mixes:
        ratio = f"{srun.seconds / a.seconds:.2f}x" if srun and a.seconds else "-"
        sec_rate = _rate(lines, srun.seconds) if srun else "-"
        cpu_ratio = f"{srun.cpu_seconds / a.cpu_seconds:.2f}x" if srun and a.cpu_seconds else "-"
        sec_cpu = f"{srun.cpu_seconds:.2f}" if srun else "-"
        print(
            f"{name:12}{_rate(lines, a.seconds):>17}{sec_rate:>13}{ratio:>8}"
            f"{a.cpu_seconds:>15.2f}{sec_cpu:>11}{cpu_ratio:>11}  {used}"
        )
    print("  (issue 12's target: >= 3x SEC on any mix; ratio = SEC's time / analyze's time)")
    _print_score("tunnelwatch on asa-heavy", asa_score)


if __name__ == "__main__":
    raise SystemExit(main())
