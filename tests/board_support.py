"""``tunnelwatch board`` as a process for the tests, and the demo's incidents."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def tunnelwatch() -> str:
    return str(Path(sys.executable).with_name("tunnelwatch"))


def demo_incidents() -> list[dict[str, Any]]:
    """What `make demo` finds in the bundled sample archive."""
    out = subprocess.run(
        [
            tunnelwatch(),
            "analyze",
            "--format",
            "jsonl",
            "--year",
            "2024",
            str(REPO / "streams" / "data" / "sample.log"),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return [json.loads(line) for line in out.stdout.splitlines()]


class BoardProcess:
    """``tunnelwatch board`` on a free 127.0.0.1 port."""

    def __init__(self, bootstrap: str, topic: str, operator: str, workdir: Path, token: str):
        self.argv = [
            tunnelwatch(),
            "board",
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--operator-topic",
            operator,
            "--listen",
            "127.0.0.1:0",
        ]
        self.workdir = workdir
        self.token = token
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> BoardProcess:
        ready = self.workdir / "board-ready.json"
        ready.unlink(missing_ok=True)
        env = {**os.environ, "TUNNELWATCH_BOARD_TOKEN": self.token}
        self.proc = subprocess.Popen(
            [*self.argv, "--ready-file", str(ready)],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        deadline = time.monotonic() + 60
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"board did not start: {self.stop()}")
            time.sleep(0.1)
        self.url = json.loads(ready.read_text())["url"].rstrip("/")
        return self

    def stop(self) -> str:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err
        return err
