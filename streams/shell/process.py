"""Starting long-lived background processes (the broker, the receiver, the worker)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

# `sh` backgrounds the command and exits at once, so the process is re-parented to init:
# no zombie and no "subprocess still running" ResourceWarning in long-lived callers.
_SCRIPT = 'out=$1; shift; "$@" </dev/null >>"$out" 2>&1 & echo $!'


def spawn_detached(argv: Sequence[str], log: Path) -> tuple[int | None, str]:
    """Start ``argv`` detached (own session), output appended to ``log``.

    Returns its pid, or None with the shell's error text when it could not be started.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
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
