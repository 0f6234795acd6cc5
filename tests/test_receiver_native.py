"""The receiver's native UDP path (``tunnelwatch_native``) gives what its Python path gives.

- device keys: the native key equals ``DeviceFinder``'s on every line of the scenarios,
  the corpus, the sample and a synthetic archive (where it does not decide, Python does);
- Kafka batches: the partition of every key and the records of a batch read back exactly
  as aiokafka's own partitioner and builder give them;
- the real receiver, on both paths: a mixed burst lands in Kafka with the same keys,
  values and headers; the allow-list, the rate limit, empty and oversize datagrams are
  counted alike; what is in the socket at shutdown is spooled, not lost.

Skipped, with the reason, when the extension is not built (``make install`` builds it
when cargo is there); the Python path is covered by ``test_receiver.py`` either way.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import random
import re
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch
from receiver_support import config, dead_bootstrap, read_topic, running, wait_for

from load.scenario import default_scenario
from load.synth import generate
from streams.core import native
from streams.core.event import iso_utc
from streams.core.parse import decode
from streams.shell.receiver.kafka import MAX_BATCH_BYTES
from streams.shell.receiver.metrics import parse_metrics, scrape
from streams.shell.receiver.pipeline import Pipeline, PipelineConfig
from streams.shell.receiver.protection import parse_networks
from streams.shell.receiver.record import DeviceFinder, Record, RecordMaker
from streams.shell.receiver.spool import Spool

if TYPE_CHECKING:
    from kafka_support import KafkaNames

HAVE_NATIVE = importlib.util.find_spec(native.MODULE) is not None
pytestmark = pytest.mark.skipif(
    not HAVE_NATIVE or not sys.platform.startswith("linux"),
    reason=f"{native.MODULE} is not built (make install builds it when cargo is installed), "
    "or its UDP path is not there (Linux only)",
)

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
ISO_UTC = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
PATHS = pytest.mark.parametrize("native_path", [True, False], ids=["native", "python"])

IOS = b"<189>Mar  1 00:00:01 rtr-a 12: Mar  1 00:00:01.123: %CRYPTO-4-RECVD_PKT_INV_SPI: decaps: rec'd IPSEC packet has invalid spi for destaddr=10.1.1.1, prot=50, spi=0x1(1), srcaddr=10.2.2.2"
ASA = b"<164>Mar 01 2024 00:00:02 fw-b : %ASA-4-402116: IPSEC: Received an ESP packet (SPI= 0x1, sequence number= 0x1) from 10.3.3.3 (user= 10.3.3.3) to 10.4.4.4."


def _module() -> native.NativeModule:
    mod = native.load("1")
    assert mod is not None
    return mod


def _archive_lines() -> list[bytes]:
    files = [
        *sorted((TESTS / "scenarios").glob("*/archive.log")),
        *sorted((TESTS / "data").rglob("*.log")),
        REPO / "streams" / "data" / "sample.log",
    ]
    lines = [raw for path in files for raw in path.read_bytes().splitlines()]
    lines += [line.encode() for line in generate(default_scenario(), lines=20_000, seed=5)]
    return lines


# --------------------------------------------------------------------------- device keys


def test_the_native_device_key_is_the_one_device_finder_gives_for_every_archive_line() -> None:
    keys = native.make_device_keys(_module())
    finder = DeviceFinder()
    lines = _archive_lines()
    decided = 0
    for raw in lines:
        value = raw.rstrip(b"\r\n\x00")  # as the receiver keeps a datagram
        if not value:
            continue
        key = keys.key(value)
        if key is None:
            continue  # Python's DeviceFinder decides: the same by construction
        decided += 1
        expected = finder.device_of(decode(value), "192.0.2.9").encode()
        assert (key or b"192.0.2.9") == expected, raw
    assert len(lines) > 23_000
    assert decided > 0.95 * len(lines)  # the fast path is the common path


def test_lines_the_native_key_cannot_read_are_left_to_python() -> None:
    keys = native.make_device_keys(_module())
    assert keys.key(b"<13>no tag in this line at all") is None  # the full parser decides
    assert keys.key("<189>Mar  1 00:00:01 rtr-ü 1: %SYS-5-CONFIG_I: x".encode()) is None
    assert keys.key(b"<189>Mar  1 00:00:01 rtr-a 1: %SYS-5-X: one\n two") is None
    assert keys.key(IOS) == b"rtr-a"
    no_device = b"<189>12: Mar  1 00:00:01: %SYS-5-CONFIG_I: Configured from console by vty0"
    assert keys.key(no_device) == b""  # the source address is the key
    assert DeviceFinder().device_of(no_device.decode(), "192.0.2.9") == "192.0.2.9"


# --------------------------------------------------------------------------- Kafka batches


def test_keys_go_to_the_partition_aiokafka_gives_them() -> None:
    mod = _module()
    rng = random.Random(3)
    part = DefaultPartitioner()
    keys = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40))) for _ in range(3000)]
    for key in keys:
        assert mod.kafka_murmur2(key) == murmur2(key)
    headers = (("received_at", b"2024-03-01T00:00:00.000Z"), ("source", b"10.0.0.1:514"))
    records = [Record(k, b"v%d" % i, headers) for i, k in enumerate(keys)]
    for partitions in ([0], [0, 1, 2, 3], [0, 1, 2, 3, 4, 5, 6]):
        groups = mod.group_by_partition(records, partitions)
        assert sorted(r for _, rs in groups for r in rs) == sorted(records)
        for p, rs in groups:
            assert all(part(r.key, partitions, partitions) == p for r in rs)
            assert rs == [r for r in records if r in rs]  # order kept


@pytest.mark.parametrize("compression", [0, 3], ids=["plain", "lz4"])
def test_a_native_batch_reads_back_as_the_records_with_the_producer_state(compression: int) -> None:
    rng = random.Random(compression)
    headers = (("received_at", b"2024-03-01T00:00:00.000Z"), ("source", b"10.0.0.1:514"))
    records = [
        Record(
            b"dev-%d" % (i % 9),
            bytes(rng.randrange(256) for _ in range(rng.randrange(300))),
            headers,
        )
        for i in range(6000)
    ]
    batch = _module().RecordBatch(
        records, max_bytes=MAX_BATCH_BYTES, timestamp_ms=1_709_251_200_123, compression=compression
    )
    n = batch.record_count()
    # As many as aiokafka's builder takes into one batch of that size.
    builder = BatchBuilder(MAX_BATCH_BYTES, compression)
    taken = 0
    for r in records:
        if (
            builder.append(timestamp=None, key=r.key, value=r.value, headers=list(r.headers))
            is None
        ):
            break
        taken += 1
    assert n == taken < len(records)
    batch._set_producer_state(77, 3, 1000)
    data = batch._build()
    assert batch._build() is data  # a retry sends the same bytes
    read = DefaultRecordBatch(bytes(data))
    assert read.validate_crc()
    assert (read.producer_id, read.producer_epoch, read.base_sequence) == (77, 3, 1000)
    assert read.compression_type == compression
    back = list(read)
    assert [(x.key, x.value, tuple(x.headers)) for x in back] == [tuple(r) for r in records[:n]]
    assert {x.timestamp for x in back} == {1_709_251_200_123}


# --------------------------------------------------------------------------- the receiver


def test_received_at_is_the_iso_utc_text_of_the_millisecond(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    maker = RecordMaker()
    rng = random.Random(1)
    for ms in [0, 999, 1000, 1_709_251_199_999, *(rng.randrange(2**42) for _ in range(2000))]:
        monkeypatch.setattr(time, "time", lambda ms=ms: ms / 1000 + 0.0004)
        assert maker.received_at() == iso_utc(ms / 1000).encode()


def _burst() -> list[bytes]:
    rng = random.Random(11)
    synth = [line.encode() for line in generate(default_scenario(), lines=2000, seed=9)][:400]
    junk = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(40)]
    return [
        IOS,
        ASA + b"\r\n\x00",
        b"%SYS-5-CONFIG_I: Configured from console by vty0",  # no device: the source
        b"<189>12: Mar  1 00:00:01: %SYS-5-CONFIG_I: by vty0",  # the same, read natively
        b"<191>: core-rtr-03: Mar  5 2024 19:30:00.384 UTC: ISAKMP-ERROR: (0):no tag",
        b"<189>Mar  1 00:00:09 rtr-z 1: %SYS-5-X: \xff\xfe\xc3\x28 invalid utf-8",
        "<189>Mar  1 00:00:09 rtr-ü 1: %SYS-5-X: non-ASCII".encode(),
        b"<189>Mar  1 00:00:09 rtr-z 1: %SYS-5-X: " + b"o" * 5000,  # oversize: cut
        b"<189>Mar  1 00:00:09 rtr-z 1: %SYS-5-X: two\n  lines",
        b"",
        b"\n",
        b"\r\n\x00",
        *junk,
        *synth,
    ]


def _send_from(sock: socket.socket, port: int, lines: list[bytes]) -> None:
    for i, line in enumerate(lines, 1):
        sock.sendto(line, ("127.0.0.1", port))
        if i % 100 == 0:
            time.sleep(0.002)


async def _publish_burst(
    bootstrap: str, topic: str, spool: Path, sock: socket.socket, native_path: bool
) -> dict[str, Any]:
    cfg = config(bootstrap, topic, spool, tcp=None, max_message_bytes=1024, native=native_path)
    lines = _burst()
    async with running(cfg) as rx:
        assert rx.udp_address
        assert (rx._native_udp is not None) is native_path
        await asyncio.to_thread(_send_from, sock, rx.udp_address[1], lines)
        m = rx.metrics
        await wait_for(lambda: m.received["udp"] + m.dropped["empty"] == len(lines), what="all")
        await wait_for(lambda: m.published == m.received["udp"], what="published")
        counts = (m.received["udp"], m.dropped["empty"], m.dropped["truncated"])
    msgs = await read_topic(bootstrap, topic)
    return {"counts": counts, "msgs": msgs}


@pytest.mark.kafka
def test_every_datagram_of_a_mixed_burst_lands_in_kafka_the_same_on_both_paths(
    kafka_bootstrap: str, kafka_names: KafkaNames, tmp_path: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))  # one source address for both runs
        runs = {
            path: asyncio.run(
                _publish_burst(
                    kafka_bootstrap,
                    kafka_names.another_topic(name),
                    tmp_path / f"spool-{name}",
                    sock,
                    path,
                )
            )
            for path, name in ((True, "native"), (False, "python"))
        }
        source = f"127.0.0.1:{sock.getsockname()[1]}"
    lines = _burst()
    kept = [line.rstrip(b"\r\n\x00") for line in lines]
    empty = sum(1 for v in kept if not v)
    truncated = sum(1 for v in kept if len(v) > 1024)
    assert empty == 3 and truncated == 1
    assert runs[True]["counts"] == runs[False]["counts"] == (len(lines) - empty, empty, truncated)
    views = {}
    for path, run in runs.items():
        for m in run["msgs"]:
            assert ISO_UTC.match(m.headers["received_at"]), m.headers
            assert m.headers["source"] == source.encode()
            assert list(m.headers) == ["received_at", "source"]
        # per partition, in arrival order
        views[path] = sorted((m.partition, m.offset, m.key, m.value) for m in run["msgs"])
        assert len(views[path]) == len(lines) - empty
    assert [v[2:] for v in views[True]] == [v[2:] for v in views[False]]
    assert [v[0] for v in views[True]] == [v[0] for v in views[False]]


async def _counters(tmp_path: Path, native_path: bool) -> None:
    cfg = config(
        dead_bootstrap(), "unused", tmp_path / "spool", tcp=None, native=native_path,
        allow=parse_networks(["10.0.0.0/8"]),
    )  # fmt: skip
    async with running(cfg) as rx:
        assert rx.udp_address
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(7):
                s.sendto(IOS, rx.udp_address)
        await wait_for(lambda: rx.metrics.dropped["not_allowed"] == 7, what="not_allowed")
        assert sum(rx.metrics.received.values()) == 0
    cfg = config(
        dead_bootstrap(), "unused", tmp_path / "spool2", tcp=None, native=native_path,
        rate_limit=20.0,
    )  # fmt: skip
    async with running(cfg) as rx:
        assert rx.udp_address
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(100):
                s.sendto(ASA, rx.udp_address)
        m = rx.metrics
        await wait_for(lambda: m.received["udp"] + m.dropped["rate_limited"] == 100)
        assert 20 <= m.received["udp"] <= 25
        assert rx.metrics_address is not None
        samples = parse_metrics(await scrape(*rx.metrics_address))
        assert (
            samples['tunnelwatch_dropped_total{reason="rate_limited"}'] == 100 - (m.received["udp"])
        )
        assert "tunnelwatch_udp_buffered" in samples


@PATHS
def test_the_allow_list_and_the_rate_limit_count_and_drop_on_both_paths(
    tmp_path: Path, native_path: bool
) -> None:
    asyncio.run(_counters(tmp_path, native_path))


async def _startup_line(tmp_path: Path, native_path: bool) -> None:
    cfg = config(dead_bootstrap(), "unused", tmp_path / "spool", tcp=None, native=native_path)
    async with running(cfg):
        pass


@PATHS
def test_the_startup_log_line_says_which_udp_path_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, native_path: bool
) -> None:
    with caplog.at_level(logging.INFO, logger="streams.shell.receiver.server"):
        asyncio.run(_startup_line(tmp_path, native_path))
    lines = [r.getMessage() for r in caplog.records if " path (" in r.getMessage()]
    assert len(lines) == 1
    assert ("native path (" in lines[0]) is native_path
    assert ("Python path (" in lines[0]) is not native_path


async def _shutdown(tmp_path: Path) -> int:
    cfg = config(dead_bootstrap(), "unused", tmp_path / "spool", tcp=None, native=True)
    rx_ = None
    async with running(cfg) as rx:
        rx_ = rx
        assert rx.udp_address
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(3000):
                s.sendto(
                    b"<189>Mar  1 00:00:01 dev-1 %d: %%SYS-5-CONFIG_I: %d" % (i, i), rx.udp_address
                )
        # closed at once: what is still in the socket or the reader's buffer goes on
    assert rx_ is not None
    return rx_.metrics.received["udp"]


def test_datagrams_still_in_the_socket_at_shutdown_are_spooled_not_lost(tmp_path: Path) -> None:
    received = asyncio.run(_shutdown(tmp_path))
    assert received == 3000
    with Spool(tmp_path / "spool", max_bytes=1 << 30) as sp:
        assert sp.unread == 3000


def test_a_congested_queue_calls_back_when_a_chunk_makes_room(tmp_path: Path) -> None:
    async def scenario() -> None:
        from streams.shell.receiver.kafka import KafkaOut
        from streams.shell.receiver.metrics import Metrics

        cfg = PipelineConfig(queue_max_records=100, chunk_records=50)
        with Spool(tmp_path / "spool", max_bytes=1 << 20) as spool:
            pipe = Pipeline(KafkaOut(dead_bootstrap(), "t"), spool, Metrics(), cfg)
            pipe.kafka_ok = True
            headers = (("received_at", b"x"), ("source", b"y"))
            records = [Record(b"k", b"v%d" % i, headers) for i in range(80)]
            pipe.put_many(records, sum(r.size for r in records))
            assert pipe.congested()
            called: list[bool] = []
            pipe.when_room(lambda: called.append(True))
            pipe.inflight.clear()
            chunk = pipe._next_chunk()
            assert chunk is not None and len(chunk.records) == 50
            assert called == [True]
            assert not pipe.congested()
            pipe.kafka_ok = False  # Kafka away: never congested, spool mode takes over
            pipe.put_many(records, sum(r.size for r in records))
            assert not pipe.congested()

    asyncio.run(scenario())
