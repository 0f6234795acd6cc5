"""The streaming worker (``tunnelwatch worker``): its stages alone, then on a real Kafka.

The Kafka proofs run the worker as a subprocess (faust must not run under pytest's
``filterwarnings = error``), each with its own topics and app id:

(a) determinism: the records of every scenario archive and of the sample archive, keyed by
    device as the receiver keys them, go through the worker; the incidents it publishes
    (latest state per incident_id) are the ones ``tunnelwatch analyze`` prints for the same
    files with the same ``--year``;
(b) crash: the worker is killed with SIGKILL in the middle of a synthetic archive and
    started again; nothing is lost, the latest states equal analyze's, and the state came
    back from the table's changelog;
(c) records that are not syslog land on the dead-letter topic with a reason.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from kafka_support import KafkaNames, unique_topic

from streams.cli.main import main
from streams.core import native
from streams.core.engine import DeviceState
from streams.core.event import Event
from streams.core.framing import iter_records
from streams.core.kb import default_kb
from streams.core.parse import Parser
from streams.shell import incidents as incident_reader
from streams.shell.topics import (
    TopicNames,
    TopicSpec,
    changelog_topic,
    end_offsets,
    ensure_topics,
    stack_topics,
    wait_quiet,
)
from streams.shell.worker.stages import ParseStage, Shard, Slot, parse_received_at

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "tests" / "scenarios"
SCHEMAS = REPO / "schemas"
SAMPLE = REPO / "streams" / "data" / "sample.log"
YEAR = 2024
# The one scenario whose lines name no device takes it from --device (args.json): the
# receiver's key plays that part on the stream.
DEVICE = "br-rtr9"
JUNK = [b"just some text", b"\x00\x01 binary junk", b"   "]
# ASA lines without any time stamp (``<164>10.30.0.4 %ASA-4-402119: ...``).
STAMPLESS = re.compile(r"^<\d+>[\d.]+ %ASA-")


def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads((SCHEMAS / name).read_text(encoding="utf-8")))


# --------------------------------------------------------------------------- no Kafka


def test_parse_stage_keys_events_by_device_and_dead_letters_the_rest() -> None:
    stage = ParseStage(year=YEAR)
    line = (
        b"Mar  5 10:00:00 rtr-1 12: Mar  5 10:00:00.123: %CRYPTO-4-IKMP_NO_SA: IKE message "
        b"from 198.51.100.1 has no SA and is not an initialization offer"
    )
    routed = stage.handle(line, b"rtr-1", [("source", b"10.0.0.1:514")], partition=2, offset=7)
    assert not routed.deadletter and routed.key == b"rtr-1"
    rec = orjson.loads(routed.value)
    assert _validator("event.schema.json").is_valid(rec)
    assert rec["timestamp"].startswith("2024-03-05T10:00:00")

    junk = stage.handle(b"just some text", None, [("source", b"10.0.0.9:514")], offset=3)
    assert junk.deadletter
    letter = orjson.loads(junk.value)
    assert letter["reason"] and letter["raw"] == "just some text"
    assert letter["source"] == "10.0.0.9:514" and letter["offset"] == 3
    assert _validator("deadletter.schema.json").is_valid(letter)


def test_parse_stage_takes_the_year_from_received_at() -> None:
    stage = ParseStage()
    line = b"Dec 31 23:59:58 rtr-1 5: Dec 31 23:59:58: %SYS-5-CONFIG_I: Configured from console"
    routed = stage.handle(line, b"rtr-1", [("received_at", b"2025-01-01T00:00:03.000Z")])
    assert orjson.loads(routed.value)["timestamp"].startswith("2024-12-31T23:59:58")
    assert parse_received_at("2025-01-01T00:00:03Z") == parse_received_at("2025-01-01T00:00:03")
    assert parse_received_at("not a time") is None


def test_a_streamed_stamp_days_ahead_of_its_receive_time_stays_in_this_year() -> None:
    # A device clock a week fast (or a replay whose event time runs ahead): the nearest
    # year is this one, not last year (which is right for an archive's first line).
    stage = ParseStage()
    line = b"Dec  4 10:00:00 rtr-2 5: Dec  4 10:00:00: %SYS-5-CONFIG_I: Configured from console"
    routed = stage.handle(line, b"rtr-2", [("received_at", b"2026-11-27T10:00:00.000Z")])
    assert orjson.loads(routed.value)["timestamp"].startswith("2026-12-04T10:00:00")
    # ... and a Jan 2 stamp received on Dec 31 belongs to the next year
    early = b"Jan  2 00:00:01 rtr-3 5: Jan  2 00:00:01: %SYS-5-CONFIG_I: Configured from console"
    routed = stage.handle(early, b"rtr-3", [("received_at", b"2026-12-31T23:00:00.000Z")])
    assert orjson.loads(routed.value)["timestamp"].startswith("2027-01-02T00:00:01")
    # ... but a replayed archive's March received in December is this year's: a stamp
    # never lands months after its receive time.
    old = b"Mar  5 12:00:00 rtr-4 5: Mar  5 12:00:00: %SYS-5-CONFIG_I: Configured from console"
    routed = stage.handle(old, b"rtr-4", [("received_at", b"2026-12-04T20:00:00.000Z")])
    assert orjson.loads(routed.value)["timestamp"].startswith("2026-03-05T12:00:00")
    # ... and one 8 days ahead of its receive time is last year's.
    ahead = b"Dec 12 10:00:00 rtr-5 5: Dec 12 10:00:00: %SYS-5-CONFIG_I: Configured from console"
    routed = stage.handle(ahead, b"rtr-5", [("received_at", b"2026-12-04T09:00:00.000Z")])
    assert orjson.loads(routed.value)["timestamp"].startswith("2025-12-12T10:00:00")


def test_a_year_header_dates_year_less_stamps_as_analyze_year_does() -> None:
    stage = ParseStage()
    line = b"Mar  5 12:00:00 rtr-6 5: Mar  5 12:00:00: %SYS-5-CONFIG_I: Configured from console"
    received = ("received_at", b"2026-12-04T20:00:00.000Z")
    routed = stage.handle(line, b"rtr-6", [received, ("year", b"2024")])
    assert orjson.loads(routed.value)["timestamp"].startswith("2024-03-05T12:00:00")
    # A broken header is ignored: the receive time decides, as without one.
    routed = stage.handle(line, b"rtr-7", [received, ("year", b"20x4")])
    assert orjson.loads(routed.value)["timestamp"].startswith("2026-03-05T12:00:00")


def test_an_archive_line_dated_after_the_file_takes_last_year() -> None:
    from streams.core.parse import Parser

    parser = Parser(reference_ts=parse_received_at("2026-11-27T10:00:00Z"))
    ev = parser.parse("Dec  4 10:00:00 rtr-2 %SYS-5-CONFIG_I: Configured from console")
    assert isinstance(ev, Event) and ev.timestamp.startswith("2025-12-04T10:00:00")


def test_a_redelivered_event_changes_nothing() -> None:
    shard = Shard(default_kb())
    slot = shard.restore("rtr-1", None, 0)
    ev = Event(device="rtr-1", ts=1_700_000_000.0, raw="x", message="x")
    assert shard.apply(slot, ev, 0, 5) == []
    before = slot.state.to_dict()
    assert shard.apply(slot, ev, 0, 5) is None
    assert shard.apply(slot, ev, 0, 4) is None
    assert slot.state.to_dict() == before and shard.duplicates == 2
    again = Slot.load(slot.dump())
    assert again.offset == 5 and again.partition == 0
    assert again.state.to_dict() == DeviceState.from_dict(before).to_dict()


def test_rerouted_events_keep_their_own_offsets() -> None:
    # An event read from syslog.raw and one that came through the reroute topic have
    # offsets in different topics: neither makes the other look like a re-delivery.
    shard = Shard(default_kb())
    slot = shard.restore("rtr-1", None, 2)
    ev = Event(device="rtr-1", ts=1_700_000_000.0, raw="x", message="x")
    assert shard.apply(slot, ev, 2, 50) == []
    assert shard.apply(slot, ev, 2, 3, rerouted=True) == []
    assert shard.apply(slot, ev, 2, 3, rerouted=True) is None
    assert shard.apply(slot, ev, 2, 50) is None
    again = Slot.load(slot.dump())
    assert (again.partition, again.offset, again.reroute_offset) == (2, 50, 3)
    # A stored state of an older worker has no reroute offset.
    old = orjson.loads(slot.dump())
    del old["reroute_offset"]
    assert Slot.load(orjson.dumps(old)).reroute_offset == -1
    assert shard.applied == 2 and shard.duplicates == 2


def test_the_parse_stage_hands_over_the_event_it_parsed() -> None:
    line = b"Mar  5 10:00:00 rtr-1 12: Mar  5 10:00:00: %SYS-5-CONFIG_I: Configured from console"
    routed = ParseStage(year=YEAR).handle(line, b"rtr-1", None)
    assert routed.event is not None and routed.event.device == "rtr-1"
    assert routed.event.to_record() == orjson.loads(routed.value)


def test_a_partition_far_ahead_does_not_resolve_the_incidents_of_one_behind() -> None:
    shard = Shard(default_kb())
    offsets = {0: 0, 1: 0}

    def feed(device: str, partition: int, ts: float, kind: str | None = None) -> None:
        slot = shard.restore(device, None, partition)
        ev = Event(device=device, ts=ts, raw=f"{device} {ts}", message="", kind=kind)
        if kind:
            ev.peer = "203.0.113.5"
        offsets[partition] += 1
        shard.apply(slot, ev, partition, offsets[partition])

    for t in (0, 30, 60, 90, 120):
        feed("rtr-behind", 0, t, "HMAC_VERIFY_FAILED")
        feed("rtr-ahead", 1, t)
        feed("rtr-other", 0, t)
        feed("rtr-other2", 0, t)
    assert list(shard.slots["rtr-behind"].state.incidents)
    for t in range(130, 5000, 10):  # partition 1 replays hours further
        feed("rtr-ahead", 1, t)
        feed("rtr-ahead2", 1, t)
    assert [r for r in shard.tick() if r["status"] == "resolved"] == []
    # Partition 0 moves on (its devices say so): its silent device's incident ends.
    for t in range(130, 3000, 30):
        feed("rtr-other", 0, t)
        feed("rtr-other2", 0, t)
    resolved = [r for r in shard.tick() if r["status"] == "resolved"]
    assert [r["device"] for r in resolved] == ["rtr-behind"]


def test_a_stored_slot_keeps_its_clock_and_its_lane_frame() -> None:
    shard = Shard(default_kb())
    for i, t in enumerate((0.0, 30.0, 60.0)):
        slot = shard.restore("rtr-1", None, 2)
        shard.apply(slot, Event(device="rtr-1", ts=t - 3600, raw="", message=""), 2, i)
    slot = shard.restore("rtr-2", None, 2)
    shard.apply(slot, Event(device="rtr-2", ts=70.0, raw="", message=""), 2, 3)
    stored = shard.dump("rtr-1")
    other = Shard(default_kb())
    back = other.restore("rtr-1", stored, 2)
    assert back.clock.offset == shard.slots["rtr-1"].clock.offset
    assert other.fleet.lanes[2].clock == shard.fleet.lanes[2].clock
    assert other.frames[2] == shard.frames[2]


# --------------------------------------------------------------------------- Kafka helpers


@dataclass
class Run:
    names: TopicNames
    app_id: str
    data_dir: Path
    log: Path

    @property
    def ready_file(self) -> Path:
        return self.data_dir / "ready.json"


def _new_run(kafka_names: KafkaNames, tmp_path: Path, tag: str) -> Run:
    prefix = f"{kafka_names.prefix}-{tag}"
    return Run(
        names=TopicNames(
            raw=unique_topic(f"{prefix}-raw"),
            events=unique_topic(f"{prefix}-events"),
            deadletter=unique_topic(f"{prefix}-dl"),
            incidents=unique_topic(f"{prefix}-incidents"),
        ),
        app_id=unique_topic(f"{prefix}-app"),
        data_dir=tmp_path / tag,
        log=tmp_path / f"{tag}.log",
    )


def _keyed_records(files: Sequence[Path]) -> tuple[list[tuple[bytes | None, bytes]], int]:
    """The records of ``files`` in order, keyed by their device as the receiver keys them;
    and how many of them are not syslog."""
    parser = Parser(year=YEAR, device=DEVICE)
    out: list[tuple[bytes | None, bytes]] = []
    unparsed = 0
    for path in files:
        with path.open(encoding="utf-8", errors="replace") as fh:
            for record in iter_records(fh):
                device = getattr(parser.parse(record), "device", None)
                unparsed += device is None
                out.append((device.encode() if device else None, record.encode("utf-8")))
    return out, unparsed


HAVE_NATIVE = importlib.util.find_spec(native.MODULE) is not None


def _engine_events(records: Sequence[tuple[bytes | None, bytes]]) -> int:
    """How many of ``records`` parse into an event whose kind a rule reads: what the
    worker publishes on syslog.events by default (``--events engine``)."""
    parser = Parser(year=YEAR, device=DEVICE)
    used = default_kb().kinds_used()
    return sum(getattr(parser.parse(v.decode()), "kind", None) in used for _, v in records)


async def _committed(bootstrap: str, group: str, topic: str) -> int:
    """Records of ``topic`` the group has committed (summed over partitions)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(max(m.offset, 0) for tp, m in offsets.items() if tp.topic == topic)


#: A raw record to publish: ``(key, value)``, with the receiver's ``received_at`` header,
#: or ``(key, value, headers)`` with headers of its own.
RawRecord = tuple[bytes | None, bytes] | tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]
RECEIVED_AT = [("received_at", b"2024-12-31T12:00:00.000Z")]


async def _publish(
    bootstrap: str,
    run: Run,
    records: Sequence[RawRecord],
    *,
    chunk: int = 0,
    pause: float = 0.0,
    max_request_size: int = 1_048_576,
) -> None:
    """Publish ``records`` as the receiver would; with ``chunk``, ``pause`` seconds after
    every ``chunk`` records (a stream that is still coming in)."""
    from aiokafka import AIOKafkaProducer

    await ensure_topics(bootstrap, stack_topics(run.names, run.app_id))
    topic = run.names.raw

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, acks="all", max_request_size=max_request_size
    )
    await producer.start()
    try:
        for i, record in enumerate(records, 1):
            key, value = record[0], record[1]
            headers = record[2] if len(record) > 2 else RECEIVED_AT  # type: ignore[misc]
            await producer.send(topic, value, key=key, headers=headers)
            if chunk and i % chunk == 0:
                await producer.flush()
                await asyncio.sleep(pause)
        await producer.flush()
    finally:
        await producer.stop()


def _publish_mid_stream(
    bootstrap: str, run: Run, records: Sequence[RawRecord], **options: Any
) -> threading.Thread:
    """Publish a first fifth of ``records`` now and the rest in the background at about
    2,500 records/s: however fast the worker, the stream is still coming in when the test
    steps in (a kill, a second worker). Join the thread before waiting for the end."""
    head = len(records) // 5
    asyncio.run(_publish(bootstrap, run, records[:head], **options))
    rest = records[head:]
    thread = threading.Thread(
        target=lambda: asyncio.run(_publish(bootstrap, run, rest, chunk=500, pause=0.2, **options)),
        daemon=True,
    )
    thread.start()
    return thread


async def _read_all(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes]]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    ends = await end_offsets(bootstrap, [topic])
    tps = [TopicPartition(t, p) for (t, p) in ends]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    out: list[tuple[bytes | None, bytes]] = []
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while True:
            positions = [await consumer.position(tp) for tp in tps]
            if all(
                pos >= ends[(tp.topic, tp.partition)]
                for pos, tp in zip(positions, tps, strict=True)
            ):
                return out
            for messages in (await consumer.getmany(*tps, timeout_ms=500)).values():
                out.extend((m.key, m.value) for m in messages)
    finally:
        await consumer.stop()


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    run: Run

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop(signal.SIGKILL)


def _worker_argv(bootstrap: str, run: Run) -> list[str]:
    return [
        sys.executable, "-m", "streams.cli.main", "worker",
        "--bootstrap", bootstrap,
        "--app-id", run.app_id,
        "--raw-topic", run.names.raw,
        "--events-topic", run.names.events,
        "--deadletter-topic", run.names.deadletter,
        "--incidents-topic", run.names.incidents,
        "--data-dir", str(run.data_dir),
    ]  # fmt: skip


def _start(workers: list[Worker], bootstrap: str, run: Run, *extra: str) -> Worker:
    run.ready_file.unlink(missing_ok=True)
    cmd = [
        *_worker_argv(bootstrap, run),
        "--ready-file", str(run.ready_file),
        "--year", str(YEAR),
        "--tick", "0.5",
        "--flush-idle", "1.0",
        *extra,
    ]  # fmt: skip
    with run.log.open("ab") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    worker = Worker(proc, run)
    workers.append(worker)
    deadline = time.monotonic() + 60
    while not run.ready_file.is_file():
        if proc.poll() is not None:
            pytest.fail(f"the worker exited ({proc.returncode}):\n{run.log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"the worker was not ready in 60 s:\n{run.log.read_text()[-3000:]}")
        time.sleep(0.1)
    return worker


def _wait_done(bootstrap: str, run: Run) -> None:
    quiet = asyncio.run(
        wait_quiet(bootstrap, run.names.incidents, 3.0, group_id=run.app_id, timeout=120)
    )
    assert quiet, f"the worker did not finish in time:\n{run.log.read_text()[-3000:]}"


def _fleet_archive(tmp_path: Path, seed: int) -> Path:
    """A day of synthetic fleet traffic, without the ASA lines that carry no time stamp
    at all (their time is the previous line's, which only a single ordered reader shares)."""
    from load.scenario import default_scenario
    from load.synth import write_archive

    synth = tmp_path / "synth.log"
    write_archive(default_scenario(), synth, lines=20_000, seed=seed)
    archive = tmp_path / "fleet.log"
    lines = synth.read_text(encoding="utf-8").splitlines(keepends=True)
    archive.write_text("".join(x for x in lines if not STAMPLESS.match(x)), encoding="utf-8")
    return archive


def _wait_partly_committed(bootstrap: str, run: Run, total: int) -> None:
    """Until the group has committed part, not all, of the ``total`` raw records."""
    deadline = time.monotonic() + 60
    while True:
        done = asyncio.run(_committed(bootstrap, run.app_id, run.names.raw))
        if 0 < done < total:
            return
        assert done < total, "the worker finished before the test could step in"
        assert time.monotonic() < deadline, "the worker made no progress"
        time.sleep(0.05)


def _analyze(files: Sequence[Path], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    args = ["analyze", "--format", "jsonl", "--year", str(YEAR), "--device", DEVICE]
    rc = main([*args, *map(str, files)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return {r["incident_id"]: r for r in map(json.loads, out.splitlines())}


def _assert_same_incidents(analyzed: dict[str, Any], streamed: dict[str, Any]) -> None:
    def keys(recs: dict[str, Any]) -> set[tuple[str, str, str | None, str]]:
        return {(r["incident_id"], r["device"], r["peer"], r["cause"]) for r in recs.values()}

    assert keys(streamed) == keys(analyzed)
    for iid, a in analyzed.items():
        w = streamed[iid]
        # Joining both ends of a tunnel (related, and a sentence added to the summary) is a
        # whole-archive step of analyze; the worker publishes each device's own view.
        assert a["summary"].startswith(w["summary"]), iid
        strip = {"related", "summary"}
        assert {k: v for k, v in w.items() if k not in strip} == {
            k: v for k, v in a.items() if k not in strip
        }, iid


# --------------------------------------------------------------------------- Kafka proofs


@pytest.fixture(scope="module")
def archives() -> list[Path]:
    names = sorted(d for d in SCENARIOS.iterdir() if (d / "archive.log").is_file())
    return [*(d / "archive.log" for d in names), SAMPLE]


@pytest.mark.kafka
@pytest.mark.parametrize("events", ["engine", "all"])
def test_worker_publishes_the_incidents_analyze_finds_and_dead_letters_junk(
    kafka_bootstrap: str,
    kafka_names: KafkaNames,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    workers: list[Worker],
    archives: list[Path],
    events: str,
) -> None:
    # --events engine: the native batch path (where built), only the events rules read
    # are published; --events all: every record parsed in Python and published.
    run = _new_run(kafka_names, tmp_path, f"det-{events}")
    records, unparsed_in_archives = _keyed_records(archives)
    junk: list[tuple[bytes | None, bytes]] = [(None, j) for j in JUNK]
    asyncio.run(_publish(kafka_bootstrap, run, records[:100] + junk + records[100:]))
    _start(workers, kafka_bootstrap, run, "--events", events)
    _wait_done(kafka_bootstrap, run)

    # (a) the same incidents as analyze, in their final state.
    streamed = asyncio.run(incident_reader.snapshot(kafka_bootstrap, run.names.incidents))
    analyzed = _analyze(archives, capsys)
    assert len(analyzed) > 30
    _assert_same_incidents(analyzed, streamed)

    # Every published record (not only the latest) is a full, valid incident, keyed by id.
    incident_schema = _validator("incident.schema.json")
    published = asyncio.run(_read_all(kafka_bootstrap, run.names.incidents))
    assert len(published) >= len(streamed)
    for key, value in published:
        rec = orjson.loads(value)
        assert key == rec["incident_id"].encode()
        assert incident_schema.is_valid(rec), rec

    # Events: valid, keyed by device, one device on one partition.
    event_schema = _validator("event.schema.json")
    on_topic = asyncio.run(_read_all(kafka_bootstrap, run.names.events))
    if events == "all":
        assert len(on_topic) == len(records) - unparsed_in_archives
    else:
        assert 0 < len(on_topic) == _engine_events(records) < len(records) // 2
    parsed = [orjson.loads(v) for _, v in on_topic]
    assert all(event_schema.is_valid(e) for e in parsed)
    used = default_kb().kinds_used()
    assert (events == "all") or all(e["kind"] in used for e in parsed)
    path = "native batch" if events == "engine" and HAVE_NATIVE else "python"
    assert f"parse path: {path}" in run.log.read_text()
    assert all(
        k == (e["device"] or "unknown").encode() for (k, _), e in zip(on_topic, parsed, strict=True)
    )

    # (c) what is not syslog is on the dead-letter topic, whole, with the reason.
    letters = [
        orjson.loads(v) for _, v in asyncio.run(_read_all(kafka_bootstrap, run.names.deadletter))
    ]
    letter_schema = _validator("deadletter.schema.json")
    raws = {letter["raw"] for letter in letters}
    assert {j.decode() for j in JUNK if j.strip()} <= raws
    for letter in letters:
        assert letter_schema.is_valid(letter), letter
        assert letter["reason"]
        assert letter["topic"] == run.names.raw and letter["offset"] >= 0
    assert len(letters) == len(JUNK) + unparsed_in_archives


@pytest.mark.kafka
def test_worker_killed_mid_stream_loses_nothing_and_restores_its_state(
    kafka_bootstrap: str,
    kafka_names: KafkaNames,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    workers: list[Worker],
) -> None:
    archive = _fleet_archive(tmp_path, seed=3)
    run = _new_run(kafka_names, tmp_path, "crash")
    records, _ = _keyed_records([archive])
    publisher = _publish_mid_stream(kafka_bootstrap, run, records)

    first = _start(workers, kafka_bootstrap, run)
    changelog = changelog_topic(run.app_id)
    # The worker parses and correlates as it reads syslog.raw (keyed by device, as here).
    _wait_partly_committed(kafka_bootstrap, run, len(records))  # then kill it
    first.stop(signal.SIGKILL)
    assert first.proc.returncode == -signal.SIGKILL
    state_records = sum(asyncio.run(end_offsets(kafka_bootstrap, [changelog])).values())
    assert state_records > 0, "nothing in the changelog"

    _start(workers, kafka_bootstrap, run)
    publisher.join(120)
    _wait_done(kafka_bootstrap, run)
    streamed = asyncio.run(incident_reader.snapshot(kafka_bootstrap, run.names.incidents))
    _assert_same_incidents(_analyze([archive], capsys), streamed)
    # The second worker started mid-stream, from the state it found in the changelog.
    log = run.log.read_text(encoding="utf-8", errors="replace")
    ready = [line for line in log.splitlines() if "ready:" in line]
    assert len(ready) == 2
    restored = int(ready[1].split(" device states")[0].rsplit(" ", 1)[-1])
    assert restored > 0, ready[1]


@pytest.mark.kafka
def test_a_second_worker_joining_mid_stream_loses_nothing_and_duplicates_no_incident(
    kafka_bootstrap: str,
    kafka_names: KafkaNames,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    workers: list[Worker],
) -> None:
    """A rebalance while records are fetched, waiting and in flight: the first worker
    gives up half its partitions (and whatever it had fetched of them), the second reads
    them from the committed offsets after restoring their states from the changelog."""
    archive = _fleet_archive(tmp_path, seed=5)
    run = _new_run(kafka_names, tmp_path, "join")
    records, _ = _keyed_records([archive])
    publisher = _publish_mid_stream(kafka_bootstrap, run, records)

    _start(workers, kafka_bootstrap, run)
    _wait_partly_committed(kafka_bootstrap, run, len(records))  # then the second joins
    second = _start(workers, kafka_bootstrap, run)
    publisher.join(120)
    _wait_done(kafka_bootstrap, run)
    assert second.proc.poll() is None  # both still running, neither crashed
    assert workers[0].proc.poll() is None
    streamed = asyncio.run(incident_reader.snapshot(kafka_bootstrap, run.names.incidents))
    _assert_same_incidents(_analyze([archive], capsys), streamed)
    # The second worker got a share of the raw partitions.
    assigned = json.loads(run.ready_file.read_text(encoding="utf-8"))["assigned"]
    raw = [tp for tp in assigned if tp.startswith(f"{run.names.raw}:")]
    assert 0 < len(raw) < 4, assigned


@pytest.mark.kafka
def test_worker_refuses_a_changelog_with_another_partition_count(
    kafka_bootstrap: str, kafka_names: KafkaNames, tmp_path: Path
) -> None:
    run = _new_run(kafka_names, tmp_path, "parts")
    specs = stack_topics(run.names, run.app_id, 2)
    asyncio.run(ensure_topics(kafka_bootstrap, [TopicSpec(changelog_topic(run.app_id), 3)]))
    asyncio.run(ensure_topics(kafka_bootstrap, specs))
    proc = subprocess.run(
        _worker_argv(kafka_bootstrap, run),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
        check=False,
    )
    assert proc.returncode == 1
    assert "must agree" in proc.stderr


@pytest.mark.kafka
def test_the_stream_gives_analyzes_incidents_on_a_fleet_of_disagreeing_clocks(
    kafka_bootstrap: str,
    kafka_names: KafkaNames,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    workers: list[Worker],
) -> None:
    # Zones, wrong and missing labels, unsynced marks, offsets, jumps, reloads, relays,
    # forged stamps, long faults (tests/fleetgen.py). Lines without any stamp are left
    # out: on a stream they take their receive time, in an archive the relay's.
    from fleetgen import CLOCK_CLASSES, FleetSpec, build_fleet

    clocks = {c: 1.0 for c in CLOCK_CLASSES if c not in ("stampless", "uptime")}
    spec = FleetSpec(seed=11, devices=40, hours=1.5, start="2024-06-03T06:00:00Z", clocks=clocks)
    archive = build_fleet(spec).write(tmp_path / "fleet.log")
    analyzed = _stream_equals_analyze(
        kafka_bootstrap, kafka_names, tmp_path, capsys, workers, archive
    )
    assert len(analyzed) >= 8


@pytest.mark.kafka
def test_the_stream_and_analyze_agree_on_a_silent_devices_incident(
    kafka_bootstrap: str,
    kafka_names: KafkaNames,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    workers: list[Worker],
) -> None:
    # Seed 11's core-rtr-04 falls silent after its hardware_unsupported fault: analyze
    # and the stream disagreed on whether its incident had resolved while the stream's
    # fleet clock was the slowest partition's, and analyze's the median of the whole
    # fleet (before the one fleet clock of streams/core/fleet.py).
    archive = _fleet_archive(tmp_path, seed=11)
    analyzed = _stream_equals_analyze(
        kafka_bootstrap, kafka_names, tmp_path, capsys, workers, archive
    )
    assert any(r["cause"] == "hardware_unsupported" for r in analyzed.values())


def _stream_equals_analyze(
    bootstrap: str,
    kafka_names: KafkaNames,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    workers: list[Worker],
    archive: Path,
) -> dict[str, Any]:
    """Publish ``archive`` as the receiver would, run a worker to the end, and check that
    its incidents are analyze's; analyze's incidents."""
    run = _new_run(kafka_names, tmp_path, archive.stem)
    records, _ = _keyed_records([archive])
    asyncio.run(_publish(bootstrap, run, records))
    _start(workers, bootstrap, run)
    _wait_done(bootstrap, run)
    streamed = asyncio.run(incident_reader.snapshot(bootstrap, run.names.incidents))
    analyzed = _analyze([archive], capsys)
    _assert_same_incidents(analyzed, streamed)
    return analyzed
