"""The notifier: its configuration, its sinks against a real local HTTP server, and the
whole path tunnelwatch -> Debian's Prometheus Alertmanager -> a webhook receiver, on the
real Kafka broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import aiohttp
import jsonschema
import pytest
from board_support import BoardProcess
from notify_support import (
    Alertmanager,
    HookServer,
    NotifierThread,
    alertmanager_binary,
    committed_lag,
    free_port,
    incident,
    produce,
    wait_for,
)

from streams.cli.main import main
from streams.core.alerting import verify
from streams.shell.notify.config import NotifyConfigError, load_config, parse_config
from streams.shell.notify.sinks import DELIVERY_HEADER, WebhookSink, deliver
from streams.shell.receiver.metrics import parse_metrics
from streams.shell.topics import TopicSpec, ensure_topics

if TYPE_CHECKING:
    from kafka_support import KafkaNames

NOW = datetime.now(UTC)


# -- configuration -----------------------------------------------------------------------


def test_a_valid_config_gives_sinks_routes_and_templates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TW_TEST_SECRET", "abc")
    path = tmp_path / "notify.yaml"
    path.write_text(
        "board_url: http://127.0.0.1:8514\n"
        "max_age: 2h\n"
        "repost_interval: 30s\n"
        "templates: {runbook_url: 'https://wiki/{cause}'}\n"
        "sinks:\n"
        "  am: {type: alertmanager, url: 'http://127.0.0.1:9093'}\n"
        "  pd: {type: webhook, format: pagerduty, url: 'http://127.0.0.1:1/x', routing_key: K,\n"
        "       secret_env: TW_TEST_SECRET, retry: {initial: 1s, max: 1m, attempts: 5}}\n"
        "routes:\n"
        "  - sinks: [am]\n"
        "  - sinks: pd\n"
        "    match: {cause: [psk_mismatch], device: 'edge-*'}\n"
    )
    cfg = load_config(path)
    assert cfg.max_age == 7200 and cfg.repost_interval == 30
    assert [s.name for s in cfg.sinks] == ["am", "pd"]
    pd = cfg.sink("pd")
    assert pd.secret == b"abc" and pd.routing_key == "K" and pd.format == "pagerduty"
    assert (pd.retry.initial, pd.retry.maximum, pd.retry.attempts) == (1.0, 60.0, 5)
    assert cfg.routes[1].match == {"cause": ("psk_mismatch",), "device": ("edge-*",)}
    assert cfg.templates == {"runbook_url": "https://wiki/{cause}"}


def test_every_bad_field_of_the_config_is_named_in_one_error() -> None:
    with pytest.raises(NotifyConfigError) as err:
        parse_config(
            {
                "max_age": "soon",
                "colour": "blue",
                "templates": {"summary": "{device} {password}"},
                "sinks": {
                    "am": {"type": "alertmanager", "url": "ftp://x"},
                    "pd": {"type": "webhook", "format": "pagerduty", "url": "http://x/"},
                    "odd": {"type": "carrier-pigeon"},
                    "env": {"type": "webhook", "url": "http://x/", "secret_env": "TW_NOT_SET_1"},
                },
                "routes": [{"sinks": ["nope"], "match": {"colour": "red"}}],
            }
        )
    problems = err.value.problems
    expected = [
        "max_age:",
        "config.colour: unknown field",
        "templates.summary: unknown field {password}",
        "sinks.am.url: not an http:// or https:// URL",
        "sinks.pd.routing_key: required by format pagerduty",
        "sinks.odd.type: must be one of",
        "sinks.env.secret_env: environment variable TW_NOT_SET_1 is not set",
        "routes[0].sinks: no sink named 'nope'",
        "routes[0].match.colour: unknown field",
    ]
    for prefix in expected:
        assert any(p.startswith(prefix) for p in problems), (prefix, problems)
    assert len(problems) == len(expected), problems


def test_the_config_is_read_with_safe_load_only(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("sinks: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(NotifyConfigError, match="not valid YAML"):
        load_config(path)


def test_notify_with_a_bad_config_exits_2_naming_each_bad_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("sinks: {am: {type: alertmanager}}\nrepost_interval: -3s\n")
    assert main(["notify", "--config", str(path), "--bootstrap", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "sinks.am.url: required" in err
    assert "repost_interval: not a duration" in err


# -- the webhook sink against a real local server ------------------------------------------


@pytest.fixture
def hook() -> Iterator[HookServer]:
    server = HookServer().start()
    try:
        yield server
    finally:
        server.stop()


def _webhook(url: str, **extra: Any) -> WebhookSink:
    cfg = parse_config(
        {
            "sinks": {
                "hook": {
                    "type": "webhook",
                    "url": url,
                    "secret": "s3cret",
                    "retry": {"initial": "50ms", "max": "200ms"},
                    **extra,
                }
            }
        }
    )
    return WebhookSink(cfg.sink("hook"), cfg, None)  # type: ignore[arg-type]


async def _deliver(sink: WebhookSink, rec: dict[str, Any]) -> tuple[Any, list[float]]:
    waits: list[float] = []
    async with aiohttp.ClientSession() as session:
        sink.session = session
        error = await deliver(sink, rec, on_retry=lambda _e, d: waits.append(d))
    return error, waits


def test_a_webhook_is_signed_and_retried_with_growing_waits_until_accepted(
    hook: HookServer,
) -> None:
    hook.fail_next = 4
    rec = incident(1, NOW)
    error, waits = asyncio.run(_deliver(_webhook(hook.url), rec))
    assert error is None
    assert len(waits) == 4
    assert all(0.025 <= w <= 0.2 for w in waits), waits
    assert waits[3] >= 0.1  # the 4th step is capped at 200 ms, jittered in its upper half
    [got] = hook.received
    assert got.json() == rec
    assert verify(b"s3cret", got.body, got.headers["X-Tunnelwatch-Signature"])
    assert got.headers["X-Tunnelwatch-Incident"] == rec["incident_id"]
    # Same state, same dedup key; another state, another.
    again, _ = asyncio.run(_deliver(_webhook(hook.url), rec))
    assert again is None
    keys = [r.headers[DELIVERY_HEADER] for r in hook.received]
    assert keys[0] == keys[1]
    asyncio.run(_deliver(_webhook(hook.url), incident(1, NOW, status="resolved")))
    assert hook.received[2].headers[DELIVERY_HEADER] != keys[0]


def test_a_webhook_refused_with_a_4xx_is_not_retried(hook: HookServer) -> None:
    hook.fail_next, hook.fail_status = 1, 400
    error, waits = asyncio.run(_deliver(_webhook(hook.url), incident(2, NOW)))
    assert error is not None and not error.retriable and "HTTP 400" in str(error)
    assert waits == [] and hook.received == []


def test_limited_attempts_give_up_after_the_last_one(hook: HookServer) -> None:
    hook.fail_next = 10
    error, waits = asyncio.run(
        _deliver(_webhook(hook.url, retry={"initial": "10ms", "attempts": 3}), incident(3, NOW))
    )
    assert error is not None and error.retriable and "HTTP 503" in str(error)
    assert len(waits) == 2 and hook.received == []


def test_pagerduty_mode_posts_events_api_v2_trigger_and_resolve(hook: HookServer) -> None:
    sink = _webhook(hook.url, format="pagerduty", routing_key="R0UT1NG")
    asyncio.run(_deliver(sink, incident(5, NOW)))
    asyncio.run(_deliver(sink, incident(5, NOW, status="resolved")))
    trigger, resolve = hook.bodies()
    iid = incident(5, NOW)["incident_id"]
    assert (trigger["event_action"], trigger["dedup_key"]) == ("trigger", iid)
    assert trigger["routing_key"] == "R0UT1NG"
    assert (resolve["event_action"], resolve["dedup_key"]) == ("resolve", iid)


# -- end to end: Kafka -> notifier -> Alertmanager -> webhook receiver --------------------


@pytest.fixture(scope="session")
def alertmanager_bin() -> str:
    binary = alertmanager_binary()
    if binary is None:
        pytest.skip("prometheus-alertmanager is missing and load/install-alertmanager.sh failed")
    return binary


@pytest.fixture
def alertmanager(alertmanager_bin: str, hook: HookServer, tmp_path: Path) -> Iterator[Alertmanager]:
    am = Alertmanager(alertmanager_bin, tmp_path / "alertmanager", hook.url)
    am.start()
    try:
        yield am
    finally:
        am.stop()


def _topic(bootstrap: str, names: KafkaNames) -> str:
    asyncio.run(ensure_topics(bootstrap, [TopicSpec(names.topic, 2)]))
    return names.topic


def _am_config(am: Alertmanager, **extra: Any) -> Any:
    return parse_config(
        {
            "board_url": "http://127.0.0.1:8514",
            "repost_interval": "2s",
            "sinks": {
                "am": {
                    "type": "alertmanager",
                    "url": am.url,
                    "timeout": "2s",
                    "retry": {"initial": "200ms", "max": "2s"},
                }
            },
            **extra,
        }
    )


@pytest.mark.kafka
def test_incidents_reach_alertmanager_grouped_by_cause_and_their_resolve_follows(
    kafka_bootstrap: str, kafka_names: KafkaNames, alertmanager: Alertmanager, hook: HookServer
) -> None:
    topic = _topic(kafka_bootstrap, kafka_names)
    psk = [incident(n, NOW, tag=topic) for n in range(3)]
    down = [incident(n, NOW, cause="peer_unreachable", tag=topic) for n in range(3, 5)]
    produce(kafka_bootstrap, topic, [*psk, *down, b"not json at all"])
    notifier = NotifierThread(_am_config(alertmanager), kafka_bootstrap, topic,
                              kafka_names.group_id, 3600).start()  # fmt: skip
    try:
        wait_for(lambda: len(alertmanager.alert_ids()) == 5, 30, "5 alerts in Alertmanager")
        by_id = {a["labels"]["incident_id"]: a for a in alertmanager.alerts()}
        first = by_id[psk[0]["incident_id"]]
        assert first["labels"]["device"] == psk[0]["device"]
        assert first["annotations"]["evidence"] == psk[0]["evidence"][0]
        assert first["generatorURL"] == f"http://127.0.0.1:8514/incident/{psk[0]['incident_id']}"

        # Alertmanager groups by alertname (the cause): one notification per cause.
        def group_sizes() -> dict[str, int]:
            # The latest notification of each group lists every alert firing in it.
            last = {b["groupLabels"]["alertname"]: b for b in hook.bodies()}
            return {k: len(v["alerts"]) for k, v in last.items()}

        wait_for(
            lambda: group_sizes() == {"psk_mismatch": 3, "peer_unreachable": 2},
            30,
            "one notification group per cause",
        )
        assert all(set(b["groupLabels"]) == {"alertname"} for b in hook.bodies())
        # A silence on one device: Alertmanager marks its alert suppressed.
        alertmanager.silence({"device": psk[1]["device"]}, 30, datetime.now(UTC))
        wait_for(
            lambda: any(
                a["status"]["state"] == "suppressed"
                for a in alertmanager.alerts()
                if a["labels"]["incident_id"] == psk[1]["incident_id"]
            ),
            15,
            "the silenced alert",
        )
        # The resolve: endsAt set, the receiver hears "resolved".
        produce(kafka_bootstrap, topic, [incident(0, NOW, status="resolved", tag=topic)])
        wait_for(
            lambda: any(
                a["status"] == "resolved" and a["labels"]["incident_id"] == psk[0]["incident_id"]
                for a in hook.alertmanager_alerts()
            ),
            30,
            "the resolved notification",
        )
        wait_for(lambda: committed_lag(kafka_bootstrap, kafka_names.group_id) == 0, 15, "commit")
        stats = notifier.notifier.stats
        assert stats.bad_records == 1 and stats.sent["am"] == 6
        assert set(notifier.notifier.open_alerts["am"]) == {
            r["incident_id"] for r in [*psk[1:], *down]
        }
    finally:
        notifier.stop()


@pytest.mark.kafka
@pytest.mark.slow
def test_alertmanager_killed_for_15s_mid_replay_still_gets_every_incident(
    kafka_bootstrap: str, kafka_names: KafkaNames, alertmanager: Alertmanager, hook: HookServer
) -> None:
    topic = _topic(kafka_bootstrap, kafka_names)
    records = [incident(n, NOW + timedelta(seconds=n), tag=topic) for n in range(40)]
    ids = {r["incident_id"] for r in records}
    produce(kafka_bootstrap, topic, records[:20])
    notifier = NotifierThread(_am_config(alertmanager), kafka_bootstrap, topic,
                              kafka_names.group_id, None).start()  # fmt: skip
    try:
        wait_for(lambda: len(alertmanager.alert_ids()) == 20, 30, "the first half")
        alertmanager.kill()  # its alerts were in memory only: gone
        killed = datetime.now(UTC)
        produce(kafka_bootstrap, topic, records[20:])
        wait_for(lambda: notifier.notifier.stats.retries["am"] >= 3, 20, "retries")
        # Nothing accepted, nothing committed: the second half is still owed.
        assert committed_lag(kafka_bootstrap, kafka_names.group_id) > 0
        wait_for(lambda: datetime.now(UTC) - killed > timedelta(seconds=15), 20, "15 s down")
        alertmanager.start()
        wait_for(lambda: alertmanager.alert_ids() == ids, 60, "every incident back in it")
        wait_for(
            lambda: {a["labels"]["incident_id"] for a in hook.alertmanager_alerts()} == ids,
            60,
            "every incident notified to the receiver",
        )
        wait_for(lambda: committed_lag(kafka_bootstrap, kafka_names.group_id) == 0, 15, "commit")
        stats = notifier.notifier.stats
        assert stats.sent["am"] == 40 and stats.not_sent["replay"] == 0
        assert stats.failures[("am", "retried")] >= 3
        assert any("retrying" in line for line in notifier.lines)
    finally:
        notifier.stop()


@pytest.mark.kafka
def test_a_year_old_archive_replayed_sends_nothing_unless_max_age_allows_it(
    kafka_bootstrap: str, kafka_names: KafkaNames, alertmanager: Alertmanager
) -> None:
    topic = _topic(kafka_bootstrap, kafka_names)
    live = [incident(n, NOW, tag=f"{topic}-live") for n in range(2)]
    year_ago = NOW - timedelta(days=365)
    old = [incident(n, year_ago + timedelta(minutes=n), tag=f"{topic}-old") for n in range(10)]
    produce(kafka_bootstrap, topic, [*live, *old])
    cfg = _am_config(alertmanager)
    default = NotifierThread(cfg, kafka_bootstrap, topic, kafka_names.group_id, 3600).start()
    try:
        wait_for(lambda: committed_lag(kafka_bootstrap, kafka_names.group_id) == 0, 30, "commit")
        assert alertmanager.alert_ids() == {r["incident_id"] for r in live}
        stats = default.notifier.stats
        assert stats.not_sent["replay"] == 10 and stats.sent["am"] == 2
        said = [line for line in default.lines if line.startswith("not sent (replay")]
        assert len(said) == 10 and all("more than 3600s behind" in s for s in said)
        assert {line.rsplit(": ", 1)[1].split()[0] for line in said} == {
            r["incident_id"] for r in old
        }
    finally:
        default.stop()
    group = f"{kafka_names.group_id}-400d"
    wide = NotifierThread(cfg, kafka_bootstrap, topic, group, 400 * 86400).start()
    try:
        wait_for(lambda: committed_lag(kafka_bootstrap, group) == 0, 30, "commit")
        assert alertmanager.alert_ids() == {r["incident_id"] for r in [*live, *old]}
        assert wide.notifier.stats.not_sent["replay"] == 0
    finally:
        wide.stop()


@pytest.mark.kafka
def test_the_notify_command_routes_by_matchers_serves_metrics_and_stops_on_sigterm(
    kafka_bootstrap: str, kafka_names: KafkaNames, hook: HookServer, tmp_path: Path
) -> None:
    topic = _topic(kafka_bootstrap, kafka_names)
    base = f"http://127.0.0.1:{hook.port}"
    config = tmp_path / "notify.yaml"
    config.write_text(
        "sinks:\n"
        f"  all: {{type: webhook, url: '{base}/all', secret_env: TW_TEST_HOOK_SECRET}}\n"
        f"  pager: {{type: webhook, format: pagerduty, url: '{base}/pd', routing_key: RK}}\n"
        "routes:\n"
        "  - sinks: [all]\n"
        "  - sinks: [pager]\n"
        "    match: {cause: [peer_unreachable], device: ['core-*']}\n"
    )
    records = [
        incident(1, NOW, tag=topic, device="core-1", cause="peer_unreachable"),
        incident(2, NOW, tag=topic, device="edge-2", cause="peer_unreachable"),
        incident(3, NOW, tag=topic, device="core-3"),
        incident(4, NOW - timedelta(days=2), tag=topic, device="core-4", cause="peer_unreachable"),
    ]
    produce(kafka_bootstrap, topic, records)
    port = free_port()
    ready = tmp_path / "ready.json"
    env = {**os.environ, "TW_TEST_HOOK_SECRET": "k3y"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("tunnelwatch")), "notify", "--config", str(config),
         "--bootstrap", kafka_bootstrap, "--topic", topic, "--group", kafka_names.group_id,
         "--operator-topic", f"{topic}-operator",
         "--metrics", f"127.0.0.1:{port}", "--ready-file", str(ready)],
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        wait_for(lambda: committed_lag(kafka_bootstrap, kafka_names.group_id) == 0, 60, "commit")
        assert ready.exists()
        assert sorted(b["incident_id"] for b in hook.bodies("/all")) == sorted(
            r["incident_id"] for r in records[:3]
        )
        assert [b["dedup_key"] for b in hook.bodies("/pd")] == [records[0]["incident_id"]]
        assert all(
            verify(b"k3y", r.body, r.headers["X-Tunnelwatch-Signature"])
            for r in hook.received
            if r.path == "/all"
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        samples = parse_metrics(text)
        assert samples["tunnelwatch_notify_records_total"] == 4
        assert samples['tunnelwatch_notify_sent_total{sink="all"}'] == 3
        assert samples['tunnelwatch_notify_sent_total{sink="pager"}'] == 1
        assert samples['tunnelwatch_notify_not_sent_total{reason="replay"}'] == 1
        key = 'tunnelwatch_notify_open_incidents{cause="peer_unreachable",severity="major"}'
        assert samples[key] == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"not sent (replay: last_seen {records[3]['last_seen']}" in err
    assert "stopped after" in err


@pytest.mark.kafka
def test_a_silence_and_a_maintenance_window_made_on_the_board_keep_incidents_from_alertmanager(
    kafka_bootstrap: str, kafka_names: KafkaNames, alertmanager: Alertmanager, tmp_path: Path
) -> None:
    topic = _topic(kafka_bootstrap, kafka_names)
    operator = f"{topic}-operator"
    board = BoardProcess(kafka_bootstrap, topic, operator, tmp_path, "tok").start()
    notifier = NotifierThread(_am_config(alertmanager), kafka_bootstrap, topic,
                              kafka_names.group_id, 3600, operator).start()  # fmt: skip
    try:
        now = datetime.now(UTC)
        local = now.astimezone(ZoneInfo("Asia/Tokyo")).replace(tzinfo=None)

        async def operator_actions() -> None:
            auth = {"Authorization": "Bearer tok"}
            async with aiohttp.ClientSession() as s:
                silence = {"matchers": "device=asa-*", "duration": "1h", "created_by": "noc"}
                async with s.post(f"{board.url}/api/silences", json=silence, headers=auth) as r:
                    assert r.status == 200, await r.text()
                window = {
                    "matchers": {"device": ["tokyo-*"], "cause": ["peer_unreachable"]},
                    "zone": "Asia/Tokyo",
                    "start": (local - timedelta(minutes=10)).isoformat(timespec="minutes"),
                    "end": (local + timedelta(hours=1)).isoformat(timespec="minutes"),
                    "created_by": "noc",
                }
                async with s.post(f"{board.url}/api/maintenance", json=window, headers=auth) as r:
                    assert r.status == 200, await r.text()

        # Junk on the operator topic (anyone can write there) is skipped by both.
        produce(kafka_bootstrap, operator, [b"not json", b'{"matchers": 5}'])
        asyncio.run(operator_actions())
        wait_for(lambda: len(notifier.notifier.ops.maintenances) == 1, 15, "the notifier to see it")
        assert notifier.notifier.ops.rejected == 1  # the JSON one; the other is not JSON
        later = datetime.now(UTC) + timedelta(seconds=1)
        silenced = incident(1, later, device="asa-dc", tag=topic)
        in_window = incident(2, later, device="tokyo-7", cause="peer_unreachable", tag=topic)
        other_cause = incident(3, later, device="tokyo-7", tag=topic)
        plain = incident(4, later, device="rtr-hq", tag=topic)
        produce(kafka_bootstrap, topic, [silenced, in_window, other_cause, plain])
        wait_for(lambda: committed_lag(kafka_bootstrap, kafka_names.group_id) == 0, 30, "commit")
        assert alertmanager.alert_ids() == {other_cause["incident_id"], plain["incident_id"]}
        assert notifier.notifier.stats.not_sent["suppressed"] == 2
        said = [line for line in notifier.lines if line.startswith("not sent (suppressed by")]
        assert len(said) == 2 and any("maintenance" in s for s in said)

        async def states() -> dict[str, str]:
            async with aiohttp.ClientSession() as s, s.get(f"{board.url}/api/incidents") as r:
                return {v["incident_id"]: v["state"] for v in await r.json()}

        wait_for(lambda: len(asyncio.run(states())) == 4, 15, "the board to list them")
        assert asyncio.run(states()) == {
            silenced["incident_id"]: "suppressed",
            in_window["incident_id"]: "suppressed",
            other_cause["incident_id"]: "open",
            plain["incident_id"]: "open",
        }
    finally:
        notifier.stop()
        board.stop()


@pytest.mark.kafka
def test_a_notifier_stopped_while_its_sink_is_down_leaves_the_records_to_the_next_one(
    kafka_bootstrap: str, kafka_names: KafkaNames, hook: HookServer
) -> None:
    topic = _topic(kafka_bootstrap, kafka_names)
    cfg = parse_config({"sinks": {"hook": {"type": "webhook", "url": hook.url,
                                           "retry": {"initial": "100ms", "max": "500ms"}}}})  # fmt: skip
    records = [incident(n, NOW, tag=topic) for n in range(6)]
    produce(kafka_bootstrap, topic, records)
    hook.fail_next = 10**6  # down
    first = NotifierThread(cfg, kafka_bootstrap, topic, kafka_names.group_id, 3600).start()
    try:
        wait_for(lambda: first.notifier.stats.retries["hook"] >= 3, 20, "retries")
    finally:
        first.stop()
    assert hook.received == []
    assert committed_lag(kafka_bootstrap, kafka_names.group_id) != 0  # nothing committed
    hook.fail_next = 0  # back
    second = NotifierThread(cfg, kafka_bootstrap, topic, kafka_names.group_id, 3600).start()
    try:
        wait_for(lambda: committed_lag(kafka_bootstrap, kafka_names.group_id) == 0, 30, "commit")
    finally:
        second.stop()
    got = [r.json() for r in hook.received]
    assert sorted(r["incident_id"] for r in got) == sorted(r["incident_id"] for r in records)
    schema = json.loads((Path(__file__).resolve().parents[1] / "schemas" /
                         "incident.schema.json").read_text())  # fmt: skip
    for rec in got:
        jsonschema.validate(rec, schema)


@pytest.mark.kafka
def test_a_restarted_notifier_keeps_posting_the_open_alerts_it_had_sent(
    kafka_bootstrap: str, kafka_names: KafkaNames, alertmanager: Alertmanager
) -> None:
    topic = _topic(kafka_bootstrap, kafka_names)
    still_open = [incident(n, NOW, tag=topic) for n in range(3)]
    done = incident(3, NOW, tag=topic)
    produce(kafka_bootstrap, topic, [*still_open, done, dict(done, status="resolved",
                                                              resolved_at=NOW.isoformat())])  # fmt: skip
    cfg = _am_config(alertmanager)
    first = NotifierThread(cfg, kafka_bootstrap, topic, kafka_names.group_id, 3600).start()
    try:
        wait_for(lambda: committed_lag(kafka_bootstrap, kafka_names.group_id) == 0, 30, "commit")
    finally:
        first.stop()
    # Alertmanager restarts empty (alerts live in its memory only).
    alertmanager.kill()
    alertmanager.start()
    assert alertmanager.alert_ids() == set()
    second = NotifierThread(cfg, kafka_bootstrap, topic, kafka_names.group_id, 3600).start()
    try:
        # Nothing new on the topic: the open alerts come back from what the group handled.
        assert set(second.notifier.open_alerts["am"]) == {r["incident_id"] for r in still_open}
        wait_for(lambda: alertmanager.alert_ids() == {r["incident_id"] for r in still_open},
                 15, "the re-posted alerts")  # fmt: skip
        assert second.notifier.stats.sent["am"] == 0 and second.notifier.stats.reposts["am"] >= 3
        assert any("3 open alerts to keep posting" in line for line in second.lines)
    finally:
        second.stop()
