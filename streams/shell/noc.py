"""The NOC parts of the stack: the board (always, with ``tunnelwatch up``) and the notifier
(when ``up --notify-config F`` names its sinks). Started detached like the other parts,
with pid, log and ready files in the stack's state folder (``board.*``, ``notify.*``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.shell.stack import StackPaths

DEFAULT_BOARD = "127.0.0.1:8514"
DEFAULT_NOTIFY_METRICS = "127.0.0.1:9515"
PARTS = ("notify", "board")


def board_argv(paths: StackPaths, bootstrap: str, listen: str) -> list[str]:
    return ["board", "--bootstrap", bootstrap, "--listen", listen,
            "--ready-file", str(paths.ready("board"))]  # fmt: skip


def notify_argv(paths: StackPaths, bootstrap: str, config: Path, metrics: str) -> list[str]:
    return ["notify", "--config", str(Path(config).resolve()), "--bootstrap", bootstrap,
            "--metrics", metrics, "--ready-file", str(paths.ready("notify"))]  # fmt: skip


def _start(paths: StackPaths, part: str, argv: list[str]) -> tuple[int, str]:
    from streams.shell import stack

    pid = stack.running_pid(paths, part)
    if pid is not None:
        return pid, "already running"
    paths.ready(part).unlink(missing_ok=True)
    pid = stack._launch([sys.executable, "-m", "streams.cli.main", *argv], paths.log(part))
    paths.pid(part).write_text(f"{pid}\n", encoding="utf-8")
    stack._wait(f"the {part}", pid, paths.log(part), paths.ready(part).exists)
    return pid, "started"


def start_noc(
    paths: StackPaths,
    bootstrap: str,
    *,
    board: str | None,
    notify_config: Path | None,
    notify_metrics: str = DEFAULT_NOTIFY_METRICS,
    say: Callable[[str], None] = print,
) -> None:
    """Start the board (``board``: its HOST:PORT, None: not) and the notifier (when
    ``notify_config`` is given); wait until each is ready."""
    if board is not None:
        pid, verb = _start(paths, "board", board_argv(paths, bootstrap, board))
        say(f"board     http://{board}/ ready, {verb} (pid {pid}, log {paths.log('board')})")
    if notify_config is not None:
        argv = notify_argv(paths, bootstrap, notify_config, notify_metrics)
        pid, verb = _start(paths, "notify", argv)
        say(f"notify    {notify_config} ready, metrics http://{notify_metrics}/metrics, {verb} "
            f"(pid {pid}, log {paths.log('notify')})")  # fmt: skip
