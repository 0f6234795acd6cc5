"""``tunnelwatch up`` / ``down``: the local streaming stack in the background.

Parts, in start order: the Kafka broker (:mod:`streams.shell.broker`), the topics
(:mod:`streams.shell.topics`), the worker (``tunnelwatch worker``) and the receiver
(``tunnelwatch receive``). Everything lives in one state folder (default ``.state/stack``)::

    kafka/                     the broker's data dir (see streams.shell.broker)
    worker.pid  worker.log     the worker process, its output
    worker.ready               written by the worker once its partitions are assigned
    worker-data/               the worker's --data-dir
    worker-2.pid …             more workers (``up --workers N``), same files, same group
    receiver.pid receiver.log  the receiver process, its output

Both are idempotent: ``up`` leaves running parts alone, ``down`` ignores stopped ones.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from streams.errors import BrokerError, TunnelwatchError
from streams.shell import broker
from streams.shell.process import spawn_detached, write_state
from streams.shell.topics import (
    DEFAULT_APP_ID,
    DEFAULT_PARTITIONS,
    TopicNames,
    ensure_topics,
    run_sync,
    stack_topics,
)

DEFAULT_STATE_DIR = broker.REPO_ROOT / ".state" / "stack"
DEFAULT_LISTEN = "127.0.0.1:5514"
DEFAULT_METRICS = "127.0.0.1:9514"
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0


class StackError(TunnelwatchError):
    """A part of the stack could not be started."""


@dataclass(frozen=True, slots=True)
class StackPaths:
    state: Path

    @property
    def kafka(self) -> Path:
        return self.state / "kafka"

    def pid(self, part: str) -> Path:
        return self.state / f"{part}.pid"

    def log(self, part: str) -> Path:
        return self.state / f"{part}.log"

    def ready(self, part: str) -> Path:
        return self.state / f"{part}.ready"

    def data(self, part: str) -> Path:
        return self.state / f"{part}-data"

    @property
    def worker_ready(self) -> Path:
        return self.ready("worker")

    @property
    def worker_data(self) -> Path:
        return self.data("worker")

    def workers(self) -> list[str]:
        """The worker parts that have a pid file: ``worker``, ``worker-2``, …"""
        names = {p.stem for p in self.state.glob("worker*.pid")}
        return sorted(names, key=lambda n: (n != "worker", len(n), n))


def worker_part(index: int) -> str:
    """The part name of the ``index``-th worker (1-based): worker, worker-2, worker-3…"""
    return "worker" if index == 1 else f"worker-{index}"


# --------------------------------------------------------------------------- processes


def _cmdline(pid: int) -> list[str] | None:
    """The command line of a live (not zombie) process, None when it is gone."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return None
    proc = Path("/proc") / str(pid)
    try:
        stat = (proc / "stat").read_text(encoding="utf-8")
        raw = (proc / "cmdline").read_bytes()
    except OSError:
        return None
    if stat.rsplit(")", 1)[-1].split()[0] in {"Z", "X"}:
        return None
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def running_pid(paths: StackPaths, part: str) -> int | None:
    """The pid of ``part`` when its pid file names a live process that is that part."""
    try:
        pid = int(paths.pid(part).read_text(encoding="utf-8").strip())
    except (FileNotFoundError, ValueError):
        return None
    cmd = _cmdline(pid)
    if cmd is None or "streams.cli.main" not in cmd or part_command(part) not in cmd:
        return None
    if part.startswith("worker") and str(paths.state) not in " ".join(cmd):  # another stack's
        return None
    return pid


def component_pids(paths: StackPaths) -> dict[str, int]:
    """The pids of the stack's running processes, by part: ``receiver``, ``kafka`` (the
    broker's JVM), ``worker``, ``worker-2`` …, and ``board`` / ``notify`` when they run.
    Parts that do not run (or whose pid file names another process) are left out."""
    pids: dict[str, int] = {}
    for part in ("receiver", "kafka", *paths.workers(), "board", "notify"):
        pid = broker.running_pid(paths.kafka) if part == "kafka" else running_pid(paths, part)
        if pid is not None:
            pids[part] = pid
    return pids


def part_command(part: str) -> str:
    return (
        "worker"
        if part.startswith("worker")
        else {"receiver": "receive", "board": "board", "notify": "notify"}[part]
    )


def _launch(argv: Sequence[str], log: Path) -> int:
    """Start ``argv`` detached (own session, re-parented to init); return its pid."""
    pid, error = spawn_detached(argv, log)
    if pid is None:
        raise StackError(f"could not launch {argv[0]}: {error}")
    return pid


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "    (no output)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def _wait(
    what: str, pid: int, log: Path, ready: Callable[[], bool], timeout: float = READY_TIMEOUT_S
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if _cmdline(pid) is None:
            raise StackError(f"{what} exited during startup; last lines of {log}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise StackError(f"{what} (pid {pid}) not ready after {timeout:.0f}s; see {log}")
        time.sleep(0.2)


def _tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop_pid(pid: int, timeout: float = STOP_TIMEOUT_S) -> None:
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if _cmdline(pid) is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        until = time.monotonic() + wait
        while time.monotonic() < until and _cmdline(pid) is not None:
            time.sleep(0.1)


# --------------------------------------------------------------------------- commands


def receiver_argv(
    listen: str, bootstrap: str, raw_topic: str, paths: StackPaths, metrics: str = DEFAULT_METRICS
) -> list[str] | None:
    """The receiver's command line, or None when this build has no ``receive`` command."""
    from streams.cli.main import build_parser

    parser = build_parser()
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    receive = sub.choices.get("receive") if sub is not None else None
    if receive is None:
        return None
    known = {opt for action in receive._actions for opt in action.option_strings}
    argv = ["receive", "--udp", listen, "--tcp", listen]
    if "--bootstrap" in known:
        argv += ["--bootstrap", bootstrap]
    if "--topic" in known:
        argv += ["--topic", raw_topic]
    if "--spool-dir" in known:
        argv += ["--spool-dir", str(paths.state / "spool")]
    if "--metrics" in known:
        argv += ["--metrics", metrics]
    return argv


def _metrics_answer(address: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=1.0) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def worker_argv(
    paths: StackPaths,
    bootstrap: str,
    partitions: int,
    part: str = "worker",
    tz_map: str | None = None,
) -> list[str]:
    return [
        "worker",
        "--bootstrap", bootstrap,
        "--partitions", str(partitions),
        "--data-dir", str(paths.data(part)),
        "--ready-file", str(paths.ready(part)),
        *(["--tz-map", str(Path(tz_map).resolve())] if tz_map else []),
    ]  # fmt: skip


def start_worker(
    paths: StackPaths,
    bootstrap: str,
    partitions: int,
    part: str = "worker",
    tz_map: str | None = None,
) -> tuple[int, str]:
    """Start worker ``part`` unless it runs; wait until it is ready. (pid, what was done)."""
    pid = running_pid(paths, part)
    if pid is None:
        paths.ready(part).unlink(missing_ok=True)
        argv = [
            sys.executable,
            "-m",
            "streams.cli.main",
            *worker_argv(paths, bootstrap, partitions, part, tz_map),
        ]
        pid = _launch(argv, paths.log(part))
        write_state(paths.pid(part), f"{pid}\n")
        verb = "started"
    else:
        verb = "already running"

    def ready() -> bool:
        try:
            return f'"pid":{pid},' in paths.ready(part).read_text(encoding="utf-8")
        except OSError:
            return False

    _wait(f"the {part}", pid, paths.log(part), ready)
    return pid, verb


def up(
    state_dir: Path = DEFAULT_STATE_DIR,
    *,
    port: int = broker.DEFAULT_PORT,
    controller_port: int = broker.DEFAULT_CONTROLLER_PORT,
    partitions: int = DEFAULT_PARTITIONS,
    listen: str = DEFAULT_LISTEN,
    metrics: str = DEFAULT_METRICS,
    workers: int = 1,
    tz_map: str | None = None,
    board: str | None = None,
    notify_config: Path | None = None,
    say: Callable[[str], None] = print,
) -> bool:
    """Start what is not running; True when every part is up and ready.

    ``workers``: worker processes in one consumer group (they share the partitions;
    more than ``partitions`` would leave some idle). ``board`` (HOST:PORT) and
    ``notify_config`` start the board and the notifier (:mod:`streams.shell.noc`)."""
    paths = StackPaths(Path(state_dir).resolve())
    paths.state.mkdir(parents=True, exist_ok=True)
    python = [sys.executable, "-m", "streams.cli.main"]

    info = broker.start(paths.kafka, port, controller_port)
    bootstrap = info.bootstrap
    say(f"kafka     {bootstrap} {'started' if info.started else 'already running'} "
        f"(pid {info.pid}, {paths.kafka})")  # fmt: skip
    names = TopicNames()
    counts = run_sync(ensure_topics(bootstrap, stack_topics(names, DEFAULT_APP_ID, partitions)))
    say(f"topics    {', '.join(f'{t}[{n}]' for t, n in sorted(counts.items()))}")

    for index in range(1, max(1, workers) + 1):
        part = worker_part(index)
        wpid, wverb = start_worker(paths, bootstrap, partitions, part, tz_map)
        say(f"{part:<9} ready, {wverb} (pid {wpid}, log {paths.log(part)})")
    from streams.shell.noc import start_noc

    start_noc(paths, bootstrap, board=board, notify_config=notify_config, say=say)

    host, _, port_text = listen.rpartition(":")
    argv = receiver_argv(listen, bootstrap, names.raw, paths, metrics)
    if argv is None:
        say(
            "receiver  NOT STARTED: this build has no `tunnelwatch receive` command yet "
            "(streams/cli/receive_cmd.py); kafka and the worker are up"
        )
        return False
    pid = running_pid(paths, "receiver")
    if pid is None:
        pid = _launch([*python, *argv], paths.log("receiver"))
        write_state(paths.pid("receiver"), f"{pid}\n")
        verb = "started"
    else:
        verb = "already running"
    shown_metrics = metrics if "--metrics" in argv else None

    def receiver_ready() -> bool:
        return _tcp_open(host, int(port_text)) and (
            shown_metrics is None or _metrics_answer(shown_metrics)
        )

    _wait("the receiver", pid, paths.log("receiver"), receiver_ready)
    shown = f", metrics http://{shown_metrics}/metrics" if shown_metrics else ""
    say(f"receiver  udp+tcp {listen} ready{shown}, {verb} (pid {pid}, log {paths.log('receiver')})")
    return True


def down(state_dir: Path = DEFAULT_STATE_DIR, *, say: Callable[[str], None] = print) -> None:
    """Stop the receiver, the worker and the broker (whatever of them runs)."""
    paths = StackPaths(Path(state_dir).resolve())
    for part in ("receiver", "notify", "board", *(paths.workers() or ["worker"])):
        pid = running_pid(paths, part)
        if pid is None:
            say(f"{part:<9} not running")
        else:
            _stop_pid(pid)
            say(f"{part:<9} stopped (pid {pid})")
        paths.pid(part).unlink(missing_ok=True)
        if part != "receiver":
            paths.ready(part).unlink(missing_ok=True)
    try:
        was = broker.stop(paths.kafka)
    except BrokerError as exc:
        raise StackError(str(exc)) from exc
    say(f"kafka     {'stopped' if was else 'not running'}")
