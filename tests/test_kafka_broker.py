"""The project's own single-node Kafka broker, exercised for real (no mocks)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.cli.main import main
from streams.shell import broker

if TYPE_CHECKING:  # fixtures come through conftest.py; only the type is needed here
    from kafka_support import KafkaNames

pytestmark = pytest.mark.kafka

ROUND_TRIP_TIMEOUT_S = 30.0


async def _produce_then_consume(
    bootstrap: str, names: KafkaNames, value: bytes, timestamp_ms: int | None = None
) -> tuple[bytes, int]:
    """Produce one record to ``names.topic`` and read it back as group ``names.group_id``."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(names.topic, value=value, timestamp_ms=timestamp_ms)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        names.topic,
        bootstrap_servers=bootstrap,
        group_id=names.group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), timeout=ROUND_TRIP_TIMEOUT_S)
    finally:
        await consumer.stop()
    return message.value, message.timestamp


def _local(info: broker.BrokerInfo | None) -> broker.BrokerInfo:
    if info is None:
        pytest.skip("KAFKA_BOOTSTRAP points at an external broker: there is no local data dir")
    return info


def test_the_broker_accepts_a_produce_consume_round_trip_on_a_unique_topic(
    kafka_bootstrap: str, kafka_names: KafkaNames
) -> None:
    value, _ = asyncio.run(_produce_then_consume(kafka_bootstrap, kafka_names, b"hello"))
    assert value == b"hello"


def test_the_broker_keeps_record_timestamps_far_in_the_future(
    kafka_bootstrap: str, kafka_names: KafkaNames
) -> None:
    # Device clocks lie; the broker must not reject such records.
    future_ms = int(datetime(2099, 12, 31, tzinfo=UTC).timestamp() * 1000)
    value, timestamp = asyncio.run(
        _produce_then_consume(kafka_bootstrap, kafka_names, b"late", timestamp_ms=future_ms)
    )
    assert (value, timestamp) == (b"late", future_ms)


def test_status_reports_ready_for_the_running_broker(
    kafka_broker: broker.BrokerInfo | None, capsys: pytest.CaptureFixture[str]
) -> None:
    info = _local(kafka_broker)

    rc = main(["kafka", "status", "--data-dir", str(info.data_dir), "--port", str(info.port)])

    out = capsys.readouterr().out
    assert rc == 0
    assert out.startswith(f"{info.bootstrap} ready")


def test_status_finds_the_port_in_the_data_dir_when_none_is_given(
    kafka_broker: broker.BrokerInfo | None, capsys: pytest.CaptureFixture[str]
) -> None:
    info = _local(kafka_broker)

    rc = main(["kafka", "status", "--data-dir", str(info.data_dir)])

    assert rc == 0
    assert capsys.readouterr().out.startswith(f"{info.bootstrap} ready")


def test_status_reports_not_running_for_an_empty_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["kafka", "status", "--data-dir", str(tmp_path)])

    assert rc == 3
    assert capsys.readouterr().out.strip() == "127.0.0.1:9092 not running"


def test_start_called_twice_returns_the_running_broker_with_the_same_pid(
    kafka_broker: broker.BrokerInfo | None,
) -> None:
    info = _local(kafka_broker)

    first = broker.start(info.data_dir, info.port, info.controller_port)
    second = broker.start(info.data_dir, info.port, info.controller_port)

    assert first.pid == second.pid == info.pid
    assert not first.started
    assert not second.started


def test_stop_is_a_no_op_when_nothing_runs(tmp_path: Path) -> None:
    assert broker.stop(tmp_path) is False
    assert broker.stop(tmp_path / "never-created") is False
    assert not (tmp_path / "broker.pid").exists()


def test_group_lag_reads_the_topics_of_a_members_subscription() -> None:
    from streams.shell.topics import subscribed_topics

    def string(s: str) -> bytes:
        return len(s).to_bytes(2, "big") + s.encode()

    # consumer protocol metadata: version, [topics], user data (as faust's members send)
    meta = (
        b"\x00\x04"
        + (3).to_bytes(4, "big")
        + string("syslog.raw")
        + string("tunnelwatch-reroute")
        + string("tunnelwatch-device_state-changelog")
        + (5).to_bytes(4, "big")
        + b'{"a":'
    )
    assert subscribed_topics(meta) == {
        "syslog.raw",
        "tunnelwatch-reroute",
        "tunnelwatch-device_state-changelog",
    }
    assert subscribed_topics(b"") == set()
    # truncated: two topics announced, one there, then a length past the end
    assert subscribed_topics(b"\x00\x04\x00\x00\x00\x02\x00\x02ab") == {"ab"}
    assert subscribed_topics(b"\x00\x04\x00\x00\x00\x02\x00\x02ab\x00\x09cd") == {"ab"}
