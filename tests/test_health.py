"""Pipeline health: the alerting rules pass ``promtool check rules`` and their unit tests,
and every /metrics output (receiver, worker, notifier) passes ``promtool check metrics``.
promtool is Debian's (package ``prometheus``), installed by ``load/install-promtool.sh``."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from notify_support import free_port, incident, produce

from streams.cli.main import build_parser
from streams.shell.health import WorkerHealth, serve_in_thread
from streams.shell.notify import metrics as notify_metrics
from streams.shell.notify.config import parse_config
from streams.shell.notify.run import Notifier
from streams.shell.receiver.metrics import Metrics, MetricsServer, parse_metrics, scrape
from streams.shell.topics import TopicSpec, ensure_topics

if TYPE_CHECKING:
    from kafka_support import KafkaNames

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "monitoring" / "tunnelwatch-rules.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        script = REPO / "load" / "install-promtool.sh"
        subprocess.run(["bash", str(script)], capture_output=True, timeout=900, check=False)
        found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is missing and load/install-promtool.sh could not install it")
    return found


def check_metrics(promtool: str, text: str) -> None:
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stdout + proc.stderr


def test_the_pipeline_alerting_rules_pass_promtool_check_and_their_unit_tests(
    promtool: str,
) -> None:
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 10 rules found" in check.stdout
    tests = subprocess.run([promtool, "test", "rules", "tunnelwatch-rules.test.yml"],
                           cwd=RULES.parent, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "SUCCESS" in tests.stdout


def test_promtool_does_catch_a_bad_exposition(promtool: str) -> None:
    bad = "# TYPE tunnelwatch_x counter\ntunnelwatch_x 1\n"  # no _total, no HELP
    proc = subprocess.run([promtool, "check", "metrics"], input=bad, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode != 0


def test_the_receiver_metrics_pass_promtool(promtool: str) -> None:
    async def body() -> str:
        m = Metrics()
        m.received["udp"] = 7
        m.dropped["rate_limited"] = 2
        m.latency.observe(0.003, 5)
        server = MetricsServer(m, "127.0.0.1", 0)
        await server.start()
        try:
            return await scrape(*server.address)
        finally:
            await server.close()

    text = asyncio.run(body())
    assert parse_metrics(text)['tunnelwatch_received_total{transport="udp"}'] == 7
    check_metrics(promtool, text)


def test_the_notifier_metrics_pass_promtool(promtool: str) -> None:
    cfg = parse_config({"sinks": {"am": {"type": "alertmanager", "url": "http://127.0.0.1:9"},
                                  "hook": {"type": "webhook", "url": "http://127.0.0.1:9/x"}}})  # fmt: skip
    notifier = Notifier(cfg, "127.0.0.1:9", "t", max_age=3600, say=lambda _: None)
    now = datetime.now(UTC)
    notifier._observe(incident(1, now, cause="peer_unreachable", device='a"b\\c'))
    notifier._observe(incident(2, now))
    notifier.stats.records = 3
    notifier.stats.sent["am"] = 2
    notifier.stats.failures[("hook", "retried")] = 4
    notifier.stats.retries["hook"] = 4
    notifier.stats.not_sent["replay"] = 1

    async def body() -> str:
        runner, port = await notify_metrics.serve(notifier, "127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            data = await reader.read()
            writer.close()
            return data.partition(b"\r\n\r\n")[2].decode()
        finally:
            await runner.cleanup()

    text = asyncio.run(body())
    samples = parse_metrics(text)
    assert samples['tunnelwatch_notify_sent_total{sink="am"}'] == 2
    assert samples['tunnelwatch_notify_failures_total{sink="hook",reason="retried"}'] == 4
    key = 'tunnelwatch_notify_open_incidents{cause="peer_unreachable",severity="major"}'
    assert samples[key] == 1
    assert samples["tunnelwatch_notify_lag"] == -1
    check_metrics(promtool, text)


@pytest.fixture
def worker_topics(kafka_bootstrap: str, kafka_names: KafkaNames) -> Iterator[tuple[str, str]]:
    raw, incidents = kafka_names.topic, kafka_names.another_topic("incidents")
    asyncio.run(ensure_topics(kafka_bootstrap, [TopicSpec(raw, 2), TopicSpec(incidents, 2)]))
    yield raw, incidents


async def _commit(bootstrap: str, topic: str, group: str, upto: int) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    try:
        tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
        consumer.assign(tps)
        await consumer.commit({tps[0]: upto, tps[1]: 0})
    finally:
        await consumer.stop()


@pytest.mark.kafka
def test_the_worker_metrics_show_records_lag_and_open_incidents_and_pass_promtool(
    kafka_bootstrap: str, kafka_names: KafkaNames, worker_topics: tuple[str, str], promtool: str
) -> None:
    raw, incidents = worker_topics

    async def fill() -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for i in range(10):
                await producer.send_and_wait(raw, b"<13>line %d" % i, partition=0)
        finally:
            await producer.stop()

    asyncio.run(fill())
    asyncio.run(_commit(kafka_bootstrap, raw, kafka_names.group_id, 6))
    now = datetime.now(UTC)
    produce(kafka_bootstrap, incidents, [
        incident(1, now, cause="peer_unreachable"), incident(2, now),
        incident(3, now, status="resolved"), incident(2, now, status="resolved"),
    ])  # fmt: skip
    port = free_port()
    health = WorkerHealth(kafka_bootstrap, kafka_names.group_id, raw, incidents)
    server = serve_in_thread(health, "127.0.0.1", port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
            text = resp.read().decode()
    finally:
        server.stop()  # its Kafka clients must not outlive the test
    samples = parse_metrics(text)
    assert samples["tunnelwatch_worker_raw_records_total"] == 10
    assert samples["tunnelwatch_worker_records_total"] == 6
    assert samples["tunnelwatch_worker_lag"] == 4
    assert samples["tunnelwatch_worker_incident_updates_total"] == 4
    assert (
        samples['tunnelwatch_worker_open_incidents{cause="peer_unreachable",severity="major"}'] == 1
    )
    assert 'cause="psk_mismatch"' not in text  # incident 2 was resolved
    check_metrics(promtool, text)


def test_the_worker_command_takes_a_metrics_address() -> None:
    args = build_parser().parse_args(["worker", "--metrics", "127.0.0.1:9516"])
    assert args.metrics == "127.0.0.1:9516"
