"""``tunnelwatch up`` starts the board and, given a config, the notifier; ``down`` stops
them. Run here against the test broker with the parts on free ports."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from notify_support import free_port

from streams.cli.main import build_parser
from streams.shell import stack
from streams.shell.noc import start_noc

pytestmark = pytest.mark.kafka


def test_up_starts_the_board_and_the_notifier_and_down_stops_them(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    paths = stack.StackPaths(tmp_path / "stack")
    paths.state.mkdir(parents=True)
    config = tmp_path / "notify.yaml"
    config.write_text("sinks: {hook: {type: webhook, url: 'http://127.0.0.1:9/x'}}\n")
    board, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    said: list[str] = []
    try:
        start_noc(paths, kafka_bootstrap, board=board, notify_config=config,
                  notify_metrics=metrics, say=said.append)  # fmt: skip
        assert said[0].startswith(f"board     http://{board}/ ready, started")
        assert said[1].startswith(f"notify    {config} ready")
        with urllib.request.urlopen(f"http://{board}/", timeout=5) as resp:
            assert b'id="incidents"' in resp.read()
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as resp:
            assert b"tunnelwatch_notify_records_total" in resp.read()
        pids = {part: stack.running_pid(paths, part) for part in ("board", "notify")}
        assert all(pids.values()), pids
        # Idempotent, like the rest of `up`.
        said.clear()
        start_noc(paths, kafka_bootstrap, board=board, notify_config=config,
                  notify_metrics=metrics, say=said.append)  # fmt: skip
        assert all("already running" in line for line in said)
    finally:
        stack.down(paths.state, say=said.append)
    assert f"board     stopped (pid {pids['board']})" in said
    assert f"notify    stopped (pid {pids['notify']})" in said
    assert stack.running_pid(paths, "board") is None


def test_up_with_a_bad_notify_config_fails_naming_the_field(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    paths = stack.StackPaths(tmp_path / "stack")
    paths.state.mkdir(parents=True)
    config = tmp_path / "notify.yaml"
    config.write_text("sinks: {hook: {type: webhook, url: 'gopher://x'}}\n")
    with pytest.raises(stack.StackError, match=r"sinks\.hook\.url: not an http"):
        start_noc(paths, kafka_bootstrap, board=None, notify_config=config,
                  notify_metrics=f"127.0.0.1:{free_port()}", say=lambda _: None)  # fmt: skip


def test_the_up_command_has_board_and_notify_config_options() -> None:
    args = build_parser().parse_args(["up", "--notify-config", "n.yaml"])
    assert args.board == "127.0.0.1:8514" and args.notify_config == Path("n.yaml")
    assert build_parser().parse_args(["up", "--board", "none"]).board == "none"
