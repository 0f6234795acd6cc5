"""Poison records go aside and never block the worker (issue 13, item 1).

A record the worker cannot publish as it is (its event or dead letter over Kafka's size
limit, or refused by the broker for any reason it marks final) becomes a short dead
letter (truncated raw text, its size and SHA-256); one that cannot even be dead-lettered
is skipped, logged and counted. SIGTERM stops the worker within seconds in every state,
and a restart after kill -9 does not stick on the record.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from kafka_support import PORT_OFFSET, KafkaNames
from receiver_support import config, running, wait_for
from test_worker import (  # the worker proofs' helpers and fixture
    SAMPLE,
    YEAR,
    Run,
    Worker,
    _analyze,
    _assert_same_incidents,
    _fleet_archive,
    _keyed_records,
    _new_run,
    _publish,
    _publish_mid_stream,
    _read_all,
    _start,
    _wait_done,
    _wait_partly_committed,
    workers,
)

from streams.core.kb import default_kb
from streams.shell import broker
from streams.shell import incidents as incident_reader
from streams.shell.topics import TopicSpec, ensure_topics, stack_topics
from streams.shell.worker.outbox import Outbox, partition_of
from streams.shell.worker.stages import (
    LETTER_RAW_CHARS,
    MAX_PUBLISH_BYTES,
    STATE_RAW_CHARS,
    ParseStage,
    Shard,
    dead_letter,
    fit_incident,
    replacement_letters,
)

__all__ = ["workers"]  # the fixture, imported for the tests below

REPO = Path(__file__).resolve().parents[1]
LETTER_SCHEMA = Draft202012Validator(
    json.loads((REPO / "schemas" / "deadletter.schema.json").read_text(encoding="utf-8"))
)
INCIDENT_SCHEMA = Draft202012Validator(
    json.loads((REPO / "schemas" / "incident.schema.json").read_text(encoding="utf-8"))
)
#: A real IOS line (the catalog knows it): a 1 MB tail makes its event about 1.1 MB.
CATALOG_LINE = (
    b"Mar  5 10:00:00 {dev} 12: Mar  5 10:00:00: %CRYPTO-4-RECVD_PKT_INV_SPI: decaps: rec'd "
    b"IPSEC packet has invalid spi for destaddr=10.1.1.1, prot=50, spi=0x1234(4660), "
    b"srcaddr=198.51.100.7 "
)


def _poison(device: str, size: int) -> bytes:
    """A syslog line of ``size`` bytes whose event (raw text plus message) is too large."""
    head = CATALOG_LINE.replace(b"{dev}", device.encode())
    return head + b"x" * (size - len(head))


def _keys_for_every_partition(prefix: str, partitions: int = 4) -> list[bytes]:
    keys: dict[int, bytes] = {}
    n = 0
    while len(keys) < partitions:
        key = f"{prefix}-{n}".encode()
        keys.setdefault(partition_of(key, partitions), key)
        n += 1
    return [keys[p] for p in sorted(keys)]


# --------------------------------------------------------------------------- no Kafka


def test_an_event_too_large_to_publish_becomes_a_short_dead_letter_with_size_and_digest() -> None:
    stage = ParseStage(year=YEAR)
    value = _poison("rtr-big", 1_000_000)
    routed = stage.handle(value, b"rtr-big", [("source", b"10.0.0.1:514")], partition=1, offset=9)
    assert routed.deadletter and routed.event is None
    letter = orjson.loads(routed.value)
    assert LETTER_SCHEMA.is_valid(letter), letter
    assert letter["truncated"] is True
    assert letter["raw_bytes"] == len(value)
    assert letter["raw_sha256"] == hashlib.sha256(value).hexdigest()
    assert letter["raw"] == value[:LETTER_RAW_CHARS].decode()
    assert "too large" in letter["reason"]
    assert (letter["partition"], letter["offset"], letter["source"]) == (1, 9, "10.0.0.1:514")
    assert len(routed.value) < 100_000
    assert (stage.oversize, stage.deadletters, stage.events) == (1, 1, 0)


def test_a_dead_letter_of_control_characters_is_cut_to_fit_and_a_small_one_stays_whole() -> None:
    # 300 KB of control bytes: JSON escapes each as \u00XX, six times the size.
    value = b"\x01\x1b[2J" * 75_000
    letter_bytes = ParseStage().handle(value, None, None).value
    assert len(letter_bytes) <= MAX_PUBLISH_BYTES
    letter = orjson.loads(letter_bytes)
    assert letter["truncated"] and letter["raw_bytes"] == len(value)
    assert LETTER_SCHEMA.is_valid(letter)
    small = orjson.loads(dead_letter(b"just text", "unparsed"))
    assert small["raw"] == "just text" and "truncated" not in small
    assert "raw_bytes" not in small and LETTER_SCHEMA.is_valid(small)


def test_an_incident_too_large_to_publish_keeps_short_evidence_lines() -> None:
    rec = {"incident_id": "x", "evidence": ["a" * 400_000, "b" * 400_000, "c" * 400_000, "ok"]}
    out = orjson.loads(fit_incident(rec))
    assert len(fit_incident(rec)) < 20_000
    assert out["evidence"][3] == "ok"
    assert out["evidence"][0].startswith("a" * 4096)
    assert out["evidence"][0].endswith("[truncated: 400000 bytes]")
    small = {"incident_id": "y", "evidence": ["line"]}
    assert fit_incident(small) == orjson.dumps(small)


def test_a_device_fed_250kb_lines_keeps_a_stored_state_small_enough_for_kafka() -> None:
    stage, shard = ParseStage(year=YEAR), Shard(default_kb())
    slot = shard.restore("rtr-long", None, 0)
    fed = 0
    incidents: list[dict[str, Any]] = []
    for n in range(40):  # eight peers, five invalid SPIs each: eight incidents
        line = _poison("rtr-long", 250_000).replace(
            b"198.51.100.7", f"198.51.100.{n % 8 + 10}".encode()
        )
        line = line.replace(b"10:00:00", f"10:0{n // 8}:00".encode())
        routed = stage.handle(line, b"rtr-long", None, offset=n)
        assert not routed.deadletter and routed.event is not None  # 250 KB events publish
        fed += len(routed.event.raw)
        incidents.extend(shard.apply(slot, routed.event, 0, n) or [])
    assert fed > 5 * MAX_PUBLISH_BYTES  # kept whole, the evidence alone would not fit
    assert len({r["incident_id"] for r in incidents}) == 8
    assert len(slot.dump()) < MAX_PUBLISH_BYTES // 4
    evidence = incidents[-1]["evidence"]
    assert all(len(e) < STATE_RAW_CHARS + 100 for e in evidence)
    assert evidence[0].endswith(f"[truncated: {len(line)} characters]")


def test_a_refused_record_is_replaced_by_the_short_dead_letter_of_its_raw_record() -> None:
    replace = replacement_letters("dl")
    value = b"<13>Mar  5 10:00:00 rtr-1 %SYS-5-X: " + b"y" * 50_000
    origin = _Origin("raw", 2, 41, value)
    origin.headers = [("source", b"10.0.0.1:514"), ("received_at", b"2024-03-05T10:00:01Z")]
    error = RuntimeError("refused")
    topic, key, letter_bytes = replace("events", b"rtr-1", b"{}", origin, error)
    letter = orjson.loads(letter_bytes)
    assert topic == "dl" and key is None  # the raw record had no key
    assert LETTER_SCHEMA.is_valid(letter)
    assert letter["truncated"] and letter["raw_bytes"] == len(value)
    assert letter["raw_sha256"] == hashlib.sha256(value).hexdigest()
    assert (letter["topic"], letter["partition"], letter["offset"]) == ("raw", 2, 41)
    assert letter["source"] == "10.0.0.1:514" and "refused by Kafka on events" in letter["reason"]
    # A key that is itself too large is not carried over.
    origin.key = b"k" * 2_000_000
    assert replace("events", origin.key, b"{}", origin, error)[1] is None
    origin.key = b"rtr-1"
    assert replace("events", origin.key, b"{}", origin, error)[1] == b"rtr-1"


def test_a_stored_state_that_cannot_be_read_starts_the_device_afresh_instead_of_failing() -> None:
    shard = Shard(default_kb())
    slot = shard.restore("rtr-1", b"\x00 not a state", 3)
    assert slot.partition == 3 and slot.offset == -1 and slot.state.device == "rtr-1"
    assert shard.restore("rtr-2", b'{"format": 1}', 0).state.device == "rtr-2"
    assert shard.bad_states == 2
    good = Shard(default_kb()).restore("rtr-3", slot.dump(), 1)
    assert good.partition == 3  # a readable state is taken as stored


# --------------------------------------------------------------------------- Kafka


class _Origin:
    """What the worker's consumer records carry (faust's Message has these attributes)."""

    def __init__(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        self.topic, self.partition, self.offset, self.value = topic, partition, offset, value
        self.key: bytes | None = None
        self.headers: list[tuple[str, bytes]] = []


async def _outbox_scenario(bootstrap: str, names: KafkaNames) -> None:
    from aiokafka import AIOKafkaProducer

    small_topic, letters = names.another_topic("small"), names.another_topic("letters")
    # The broker takes nothing over 2,000 bytes on small_topic (a refusal aiokafka marks
    # final), and anything on the letters topic.
    await ensure_topics(
        bootstrap,
        [TopicSpec(small_topic, 1, {"max.message.bytes": "2000"}), TopicSpec(letters, 1)],
    )
    said: list[str] = []
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:

        def replace(
            topic: str, key: bytes | None, value: bytes, origin: Any, error: BaseException
        ) -> tuple[str, bytes | None, bytes] | None:
            if origin.offset == 13:  # this one has no publishable replacement
                return small_topic, None, b"y" * 5000
            return letters, None, f"letter of {origin.offset}: {type(error).__name__}".encode()

        box = Outbox(producer, 1, said.append, replace)
        for i in range(20):
            value = b"z" * 3000 if i in (5, 13) else f"good {i}".encode()
            box.add(small_topic, None, value, origin=_Origin("raw", 0, i, value))
        box.add(small_topic, None, b"w" * 2_000_000, origin=_Origin("raw", 0, 99, b""))
        started = time.monotonic()
        sent = await asyncio.wait_for(box.deliver(), 30)
        assert time.monotonic() - started < 10  # bounded: a few attempts, no endless retry
    finally:
        await producer.stop()
    assert sent == 18 + 2  # 18 good records and the letters of 5 and 99
    assert (box.replaced, box.skipped) == (3, 1)
    good = [v for _, v in await _read_all(bootstrap, small_topic)]
    assert sorted(good) == sorted(f"good {i}".encode() for i in range(20) if i not in (5, 13))
    assert sorted(v for _, v in await _read_all(bootstrap, letters)) == [
        b"letter of 5: MessageSizeTooLargeError",
        b"letter of 99: MessageSizeTooLargeError",
    ]
    skipped = [s for s in said if s.startswith("SKIPPED")]
    assert len(skipped) == 1 and "raw:0@13" in skipped[0]


@pytest.mark.kafka
def test_the_outbox_replaces_what_the_broker_refuses_and_skips_what_it_cannot_replace(
    kafka_bootstrap: str, kafka_names: KafkaNames
) -> None:
    asyncio.run(_outbox_scenario(kafka_bootstrap, kafka_names))


def _letters(bootstrap: str, run: Run) -> list[dict[str, Any]]:
    return [orjson.loads(v) for _, v in asyncio.run(_read_all(bootstrap, run.names.deadletter))]


def _assert_short_letters_of(letters: Sequence[dict[str, Any]], poison: Sequence[bytes]) -> None:
    digests = {hashlib.sha256(p).hexdigest(): p for p in poison}
    short = [x for x in letters if x.get("truncated")]
    assert {x["raw_sha256"] for x in short} == set(digests)
    for letter in short:
        assert LETTER_SCHEMA.is_valid(letter), letter
        assert letter["raw_bytes"] == len(digests[letter["raw_sha256"]])
        assert len(orjson.dumps(letter)) < 100_000


@pytest.mark.kafka
def test_a_1mb_record_on_every_partition_goes_aside_and_the_good_lines_behind_it_give_their_incidents(
    kafka_bootstrap: str,
    kafka_names: KafkaNames,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    workers: list[Worker],
) -> None:
    run = _new_run(kafka_names, tmp_path, "poison")
    good, _ = _keyed_records([SAMPLE])
    keys = _keys_for_every_partition("poison-rtr")
    poison = [_poison(k.decode(), 1_000_000) for k in keys]
    # And a record the parser reads as junk whose dead letter would be 6 MB of JSON.
    poison.append(b"\x01" * 1_000_000)
    keys.append(keys[0])
    asyncio.run(_publish(kafka_bootstrap, run, [*zip(keys, poison, strict=True), *good]))
    worker = _start(workers, kafka_bootstrap, run)
    _wait_done(kafka_bootstrap, run)

    streamed = asyncio.run(incident_reader.snapshot(kafka_bootstrap, run.names.incidents))
    _assert_same_incidents(_analyze([SAMPLE], capsys), streamed)
    _assert_short_letters_of(_letters(kafka_bootstrap, run), poison)
    # A clean stop, in seconds.
    started = time.monotonic()
    worker.stop(signal.SIGTERM)
    assert time.monotonic() - started < 15
    assert worker.proc.returncode == 0
    log = run.log.read_text(encoding="utf-8", errors="replace")
    assert "MessageSizeTooLarge" not in log, log[-3000:]


@pytest.mark.kafka
def test_a_worker_killed_while_poison_waits_does_not_stick_on_it_after_a_restart(
    kafka_bootstrap: str,
    kafka_names: KafkaNames,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    workers: list[Worker],
) -> None:
    run = _new_run(kafka_names, tmp_path, "poison-kill")
    good, _ = _keyed_records([SAMPLE])
    keys = _keys_for_every_partition("poison-kill")
    poison = [_poison(k.decode(), 1_000_000) for k in keys]
    half = len(good) // 2
    records = [*good[:half], *zip(keys, poison, strict=True), *good[half:]]
    asyncio.run(_publish(kafka_bootstrap, run, records))
    first = _start(workers, kafka_bootstrap, run)
    first.stop(signal.SIGKILL)  # at once: the poison is not committed yet
    _start(workers, kafka_bootstrap, run)
    _wait_done(kafka_bootstrap, run)
    streamed = asyncio.run(incident_reader.snapshot(kafka_bootstrap, run.names.incidents))
    _assert_same_incidents(_analyze([SAMPLE], capsys), streamed)
    _assert_short_letters_of(_letters(kafka_bootstrap, run), poison)


@pytest.mark.kafka
def test_sigterm_stops_a_worker_whose_broker_died_mid_publish_within_seconds(
    kafka_names: KafkaNames, tmp_path: Path, workers: list[Worker]
) -> None:
    # A broker of its own, killed while the worker publishes: every publish and commit
    # is then retried without end, the state in which SIGTERM used to be ignored.
    data_dir = REPO / ".state" / "test-kafka-stop"
    info = broker.start(data_dir, 19102 + PORT_OFFSET, 19103 + PORT_OFFSET)
    try:
        bootstrap = info.bootstrap
        run = _new_run(kafka_names, tmp_path, "stop")
        records, _ = _keyed_records([_fleet_archive(tmp_path, seed=11)])
        # Still coming in when the broker dies, however fast the worker drains it.
        _publish_mid_stream(bootstrap, run, records)
        worker = _start(workers, bootstrap, run)
        _wait_partly_committed(bootstrap, run, len(records))
        os.kill(info.pid, signal.SIGKILL)
        time.sleep(2.0)  # the worker's publishes and commits now fail and are retried
        assert worker.proc.poll() is None
        started = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        worker.proc.wait(timeout=60)
        took = time.monotonic() - started
    finally:
        broker.stop(data_dir)
    log = run.log.read_text(encoding="utf-8", errors="replace")
    assert took < 12, log[-3000:]
    assert worker.proc.returncode == 0
    assert "exiting now" in log  # faust's own stop would have waited for the broker


async def _receiver_frame_scenario(bootstrap: str, run: Run, frames: list[bytes]) -> None:
    await ensure_topics(bootstrap, stack_topics(run.names, run.app_id))
    cfg = config(bootstrap, run.names.raw, run.data_dir / "spool", max_message_bytes=262_144)
    async with running(cfg) as rx:
        assert rx.tcp_address
        good, _ = _keyed_records([SAMPLE])
        _, writer = await asyncio.open_connection(*rx.tcp_address)
        for value in [*frames, *(v for _, v in good)]:
            writer.write(b"%d " % len(value) + value)  # RFC 6587 octet counting
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        await wait_for(
            lambda: rx.metrics.published == len(good) + len(frames),
            timeout=60,
            what="all published",
        )


@pytest.mark.kafka
def test_a_250kb_frame_through_a_receiver_allowing_256kb_does_not_choke_the_worker(
    kafka_bootstrap: str,
    kafka_names: KafkaNames,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    workers: list[Worker],
) -> None:
    run = _new_run(kafka_names, tmp_path, "frame")
    # A catalog line whose 250 KB tail is bytes that are not UTF-8 and control characters:
    # each becomes three bytes (U+FFFD) or six (\u001b) in the event's JSON.
    frame = _poison("rtr-frame", 1000) + b"\xff\x1b" * 125_000
    # And six plain 250 KB catalog lines of one device and peer: events that publish,
    # an incident, and a device state that must still fit in the changelog.
    plain = [
        _poison("rtr-long", 250_000).replace(b"10:00:00", f"10:0{i}:00".encode()) for i in range(6)
    ]
    asyncio.run(_receiver_frame_scenario(kafka_bootstrap, run, [frame, *plain]))
    _start(workers, kafka_bootstrap, run)
    _wait_done(kafka_bootstrap, run)
    streamed = asyncio.run(incident_reader.snapshot(kafka_bootstrap, run.names.incidents))
    assert all(INCIDENT_SCHEMA.is_valid(r) for r in streamed.values())
    long = {k: r for k, r in streamed.items() if r["device"] == "rtr-long"}
    assert [r["cause"] for r in long.values()] == ["sa_out_of_sync"]
    assert all("[truncated: " in e for r in long.values() for e in r["evidence"])
    rest = {k: r for k, r in streamed.items() if k not in long}
    _assert_same_incidents(_analyze([SAMPLE], capsys), rest)
    _assert_short_letters_of(_letters(kafka_bootstrap, run), [frame])
    log = run.log.read_text(encoding="utf-8", errors="replace")
    assert "not stored in the changelog" not in log, log[-3000:]


async def _junk_on_events(bootstrap: str, run: Run, junk: Sequence[bytes]) -> None:
    from aiokafka import AIOKafkaProducer

    # syslog.raw with fewer partitions than syslog.events: the worker correlates from
    # syslog.events (its correlate agent), where anyone may have written anything.
    specs = [
        TopicSpec(s.name, 2) if s.name == run.names.raw else s
        for s in stack_topics(run.names, run.app_id)
    ]
    await ensure_topics(bootstrap, specs)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in junk:
            await producer.send_and_wait(run.names.events, value, key=b"rtr-junk")
    finally:
        await producer.stop()


@pytest.mark.kafka
def test_records_on_the_events_topic_that_are_not_events_are_skipped_not_fatal(
    kafka_bootstrap: str,
    kafka_names: KafkaNames,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    workers: list[Worker],
) -> None:
    run = _new_run(kafka_names, tmp_path, "events-junk")
    junk = [b"not json", b'{"no": "event fields"}', b"\xff\xfe"]
    asyncio.run(_junk_on_events(kafka_bootstrap, run, junk))
    good, _ = _keyed_records([SAMPLE])
    asyncio.run(_publish(kafka_bootstrap, run, good))
    _start(workers, kafka_bootstrap, run)
    _wait_done(kafka_bootstrap, run)
    streamed = asyncio.run(incident_reader.snapshot(kafka_bootstrap, run.names.incidents))
    _assert_same_incidents(_analyze([SAMPLE], capsys), streamed)
    log = run.log.read_text(encoding="utf-8", errors="replace")
    skipped = [line for line in log.splitlines() if "SKIPPED" in line]
    assert len(skipped) == len(junk), log[-3000:]
    assert all(f"{run.names.events}:" in line for line in skipped)
