"""``tunnelwatch load generate|run``: synthetic Cisco traffic for archives and for sizing.

Exit codes: 0 done (for ``run``: no loss and every fault detected; for ``--sweep``: a
sustainable rate was found), 1 the run fell short, 2 bad options or Kafka unreachable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from streams.errors import BrokerError, ConfigError, TunnelwatchError
from streams.shell.stack import DEFAULT_STATE_DIR
from streams.shell.topics import DEFAULT_APP_ID, DEFAULT_BOOTSTRAP

DEFAULT_CLOCK_FILE = Path(".state") / "load" / "event-clock.json"


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "load",
        help="generate synthetic Cisco traffic, or size a running stack with it",
        description="Synthetic Cisco IOS/ASA syslog with injected faults and ground truth.",
    )
    lsub = p.add_subparsers(dest="load_command", metavar="ACTION", required=True)

    g = lsub.add_parser(
        "generate",
        help="write a scenario's archive plus its ground truth",
        description=(
            "Write the archive of SCENARIO (a YAML path or 'default') to FILE, with "
            "FILE.truth.jsonl and FILE.decoys.jsonl. Same seed, same bytes."
        ),
    )
    g.add_argument("scenario", metavar="SCENARIO", help="scenario YAML file or 'default'")
    g.add_argument("--out", required=True, metavar="FILE", help="archive to write")
    g.add_argument("--lines", type=int, help="number of lines (default: the scenario's)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    g.set_defaults(func=_generate)

    r = lsub.add_parser(
        "run",
        help="send a scenario to a running stack and measure loss, lag, latency, accuracy",
        description=(
            "Send R×D generated lines (event times start now, the scenario's span compressed "
            "into the run) to the stack, paced by token buckets, and measure what reached "
            "syslog.raw, the worker group's lag, detection latency and precision/recall."
        ),
    )
    r.add_argument("scenario", metavar="SCENARIO", help="scenario YAML file or 'default'")
    r.add_argument(
        "--target",
        default="udp://127.0.0.1:5514",
        metavar="URL",
        help="udp://H:P, tcp://H:P or kafka://BOOTSTRAP (default: %(default)s)",
    )
    r.add_argument("--rate", type=_positive, required=True, help="offered msg/s (first step)")
    r.add_argument("--duration", type=_positive, default=10.0, help="seconds of sending")
    r.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    r.add_argument(
        "--bootstrap", default=DEFAULT_BOOTSTRAP, help="the stack's Kafka (default: %(default)s)"
    )
    r.add_argument("--group", default=DEFAULT_APP_ID, help="the worker's consumer group")
    r.add_argument("--senders", type=int, help="sender processes (default: one per 40k msg/s)")
    r.add_argument(
        "--drain-timeout",
        type=_positive,
        default=60.0,
        help="seconds the lag may take to drain after sending (default: %(default)s)",
    )
    r.add_argument(
        "--max-lag-seconds",
        type=_positive,
        default=5.0,
        help="sweep bound: a rate is sustainable only if the workers' lag stays under "
        "this many seconds of traffic (default: %(default)s)",
    )
    r.add_argument("--report", type=Path, metavar="DIR", help="write report.json and report.html")
    r.add_argument("--sweep", action="store_true", help="step the rate up until it breaks")
    r.add_argument("--factor", type=_positive, default=1.5, help="sweep step (default: ×1.5)")
    r.add_argument("--max-steps", type=int, default=10, help="sweep steps at most")
    r.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="the stack's state dir (`tunnelwatch up --state-dir`): the CPU time of its "
        "processes is measured when it runs here and serves --bootstrap (default: %(default)s)",
    )
    r.add_argument(
        "--clock-file",
        type=Path,
        default=DEFAULT_CLOCK_FILE,
        help="where the end of the last run's event time is kept (default: %(default)s)",
    )
    r.set_defaults(func=_run)


def _generate(args: argparse.Namespace) -> int:
    from load.live import resolve_scenario
    from load.synth import write_archive

    try:
        synth = write_archive(resolve_scenario(args.scenario), args.out, args.lines, args.seed)
    except (ConfigError, OSError) as exc:
        print(f"tunnelwatch: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.out}: {synth.lines} lines, {len(synth.ground_truth)} faults, "
        f"{len(synth.decoys)} decoys (seed {args.seed})",
        file=sys.stderr,
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from load.live import RunOptions, resolve_scenario, run_once, sustainable, sweep
    from load.report import print_report, write_reports

    opts = RunOptions(
        target=args.target,
        rate=args.rate,
        duration=args.duration,
        bootstrap=args.bootstrap,
        seed=args.seed,
        group=args.group,
        senders=args.senders,
        drain_timeout=args.drain_timeout,
        max_lag_s=args.max_lag_seconds,
        state_dir=args.state_dir,
    )
    err = Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} lines"),
        TimeElapsedColumn(),
    )
    try:
        scenario = resolve_scenario(args.scenario)
        with Progress(*columns, console=err, transient=False) as bar:
            task = bar.add_task("starting", total=1)

            def progress(phase: str, done: int, total: int) -> None:
                bar.update(task, description=phase, completed=done, total=total)

            if args.sweep:

                def on_step(step: dict[str, Any]) -> None:
                    bar.console.print(
                        f"{step['offered_rate']:.0f} msg/s: lost {step['lost']}, "
                        f"max lag {step['max_lag']}, drained {step['drained']}, "
                        f"recall {step['recall']:.2f}"
                    )

                report = sweep(
                    scenario,
                    opts,
                    factor=args.factor,
                    max_steps=args.max_steps,
                    clock_file=args.clock_file,
                    progress=progress,
                    on_step=on_step,
                )
            else:
                report = run_once(scenario, opts, clock_file=args.clock_file, progress=progress)
                report["sustainable"] = sustainable(report)
    except (ConfigError, BrokerError, TunnelwatchError, OSError) as exc:
        print(f"tunnelwatch: {exc}", file=sys.stderr)
        return 2
    out = Console()
    print_report(report, out if out.is_terminal else Console(width=160))
    if args.report is not None:
        js, page = write_reports(report, args.report)
        print(f"report: {js} and {page}", file=sys.stderr)
    if args.sweep:
        return 0 if report["sustainable_rate"] is not None else 1
    return 0 if report["lost"] == 0 and report["recall"] == 1.0 else 1
