"""``make bench-load``: the highest sustainable rate for 1 worker and for 2 workers.

Starts a private stack (Kafka on 49192/49193, receiver on 127.0.0.1:49614, state under
``.state/bench-load``), sweeps ``tunnelwatch load run`` over UDP with 1 worker, adds a
second worker (same app id: they share the partitions), sweeps again, stops everything
and prints both rates. Reports: ``.state/bench-load/workers-N/report.html``.
"""

from __future__ import annotations

import shutil

from load.live import RunOptions, resolve_scenario, run_once, sweep
from load.report import print_report, write_reports
from streams.shell import broker, stack
from streams.shell.topics import DEFAULT_PARTITIONS

STATE = broker.REPO_ROOT / ".state" / "bench-load"
PORT, CONTROLLER = 49192, 49193
LISTEN, METRICS = "127.0.0.1:49614", "127.0.0.1:49615"


def main() -> int:
    shutil.rmtree(STATE, ignore_errors=True)
    paths = stack.StackPaths(STATE)
    bootstrap = f"127.0.0.1:{PORT}"
    scenario = resolve_scenario("default")
    rates: dict[int, float | None] = {}
    try:
        stack.up(STATE, port=PORT, controller_port=CONTROLLER, listen=LISTEN, metrics=METRICS)
        for workers in (1, 2):
            if workers == 2:
                stack.start_worker(paths, bootstrap, DEFAULT_PARTITIONS, stack.worker_part(2))
                # the group rebalances and the new worker restores its table: warm up first
                warm = RunOptions(f"udp://{LISTEN}", 1000, 5, bootstrap, drain_timeout=120)
                run_once(scenario, warm, clock_file=STATE / "clock.json")
            opts = RunOptions(
                target=f"udp://{LISTEN}",
                rate=2000,
                duration=10,
                bootstrap=bootstrap,
                drain_timeout=20,
            )
            report = sweep(
                scenario, opts, factor=1.5, max_steps=12, clock_file=STATE / "clock.json"
            )
            print_report(report)
            write_reports(report, STATE / f"workers-{workers}")
            rates[workers] = report["sustainable_rate"]
    finally:
        stack.down(STATE)
    for workers, rate in rates.items():
        shown = "none" if rate is None else f"{rate:.0f} msg/s"
        print(f"sustainable rate with {workers} worker(s): {shown}")
    print(f"reports: {STATE}/workers-1/report.html, {STATE}/workers-2/report.html")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
