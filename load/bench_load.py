"""``make bench-load``: the highest sustainable rate for 1 worker and for 2 workers.

Starts a private stack (Kafka on 49192/49193, receiver on 127.0.0.1:49614, state under
``.state/bench-load``), sweeps ``tunnelwatch load run`` over UDP with 1 worker, adds a
second worker (same app id: they share the partitions), sweeps again, stops everything
and prints both rates, and for every step the CPU time of each component (senders,
receiver, Kafka, each worker) per message and as % of a core. Reports:
``.state/bench-load/workers-N/report.html``.

``python -m load.bench_load --help``: other ports, state dir, rates, steps or worker counts
(e.g. one short step: ``--workers 1 --rate 2000 --duration 5 --max-steps 1``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from load.live import RunOptions, resolve_scenario, run_once, sweep
from load.report import print_report, write_reports
from streams.shell import broker, stack
from streams.shell.topics import DEFAULT_PARTITIONS

STATE = broker.REPO_ROOT / ".state" / "bench-load"
PORT, CONTROLLER = 49192, 49193
LISTEN, METRICS = "127.0.0.1:49614", "127.0.0.1:49615"


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m load.bench_load", description=__doc__)
    ap.add_argument("--state", type=Path, default=STATE, help="state dir (default: %(default)s)")
    ap.add_argument("--port", type=int, default=PORT, help="Kafka port (default: %(default)s)")
    ap.add_argument("--controller-port", type=int, default=CONTROLLER)
    ap.add_argument("--listen", default=LISTEN, help="receiver UDP/TCP (default: %(default)s)")
    ap.add_argument("--metrics", default=METRICS, help="receiver metrics (default: %(default)s)")
    ap.add_argument("--workers", default="1,2", help="worker counts, in order (default: 1,2)")
    ap.add_argument("--rate", type=float, default=2000, help="first step's msg/s")
    ap.add_argument("--duration", type=float, default=10, help="seconds per step")
    ap.add_argument("--max-steps", type=int, default=12)
    ap.add_argument("--factor", type=float, default=1.5)
    ap.add_argument(
        "--scenario", default="default", help="default, or a scenario YAML (load/scenarios/)"
    )
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _args(argv)
    state = args.state.resolve()
    shutil.rmtree(state, ignore_errors=True)
    paths = stack.StackPaths(state)
    bootstrap = f"127.0.0.1:{args.port}"
    scenario = resolve_scenario(args.scenario)
    counts = sorted({int(w) for w in args.workers.split(",") if w.strip()})
    rates: dict[int, float | None] = {}
    try:
        stack.up(
            state,
            port=args.port,
            controller_port=args.controller_port,
            listen=args.listen,
            metrics=args.metrics,
            workers=counts[0],
        )
        for workers in counts:
            if workers > len(paths.workers()):
                for index in range(len(paths.workers()) + 1, workers + 1):
                    part = stack.worker_part(index)
                    stack.start_worker(paths, bootstrap, DEFAULT_PARTITIONS, part)
                # the group rebalances and the new worker restores its table: warm up first
                warm = RunOptions(f"udp://{args.listen}", 1000, 5, bootstrap, drain_timeout=120)
                run_once(scenario, warm, clock_file=state / "clock.json")
            opts = RunOptions(
                target=f"udp://{args.listen}",
                rate=args.rate,
                duration=args.duration,
                bootstrap=bootstrap,
                drain_timeout=20,
                state_dir=state,
            )
            report = sweep(
                scenario,
                opts,
                factor=args.factor,
                max_steps=args.max_steps,
                clock_file=state / "clock.json",
            )
            print_report(report, Console() if sys.stdout.isatty() else Console(width=160))
            write_reports(report, state / f"workers-{workers}")
            rates[workers] = report["sustainable_rate"]
    finally:
        stack.down(state)
    for workers, rate in rates.items():
        shown = "none" if rate is None else f"{rate:.0f} msg/s"
        print(f"sustainable rate with {workers} worker(s): {shown}")
    shown_reports = ", ".join(f"{state}/workers-{w}/report.html" for w in rates)
    print(f"reports: {shown_reports}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
