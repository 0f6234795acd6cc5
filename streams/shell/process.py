"""Starting long-lived background processes (the broker, the receiver, the worker)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

# `sh` backgrounds the command and exits at once, so the process is re-parented to init:
# no zombie and no "subprocess still running" ResourceWarning in long-lived callers.
_SCRIPT = 'out=$1; shift; "$@" </dev/null >>"$out" 2>&1 & echo $!'
LOG_MODE = 0o640  # log files: the owner writes, the group reads
STATE_MODE = 0o600  # pid and other state files: the owner only


def spawn_detached(argv: Sequence[str], log: Path) -> tuple[int | None, str]:
    """Start ``argv`` detached (own session), output appended to ``log``.

    Returns its pid, or None with the shell's error text when it could not be started.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, LOG_MODE))
    os.chmod(log, LOG_MODE)  # also a log an older version left readable by all
    proc = subprocess.run(
        ["/bin/sh", "-c", _SCRIPT, "sh", str(log), *argv],
        capture_output=True,
        text=True,
        check=False,
        start_new_session=True,
    )
    try:
        return int(proc.stdout.strip()), ""
    except ValueError:
        return None, proc.stderr.strip()


def write_state(path: Path, text: str) -> None:
    """Write a small state file (a pid, ...) readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, STATE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, STATE_MODE)
