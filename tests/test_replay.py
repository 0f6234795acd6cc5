"""``tunnelwatch replay``: archives sent over UDP, TCP or to Kafka, at a scaled pace."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from receiver_support import config, read_topic, running, wait_for

from streams.cli.main import main
from streams.core.framing import iter_records
from streams.shell.replay import Pacer, replay, schedule
from streams.shell.replay.sinks import TcpSink
from streams.shell.topics import HEADER_SOURCE, HEADER_YEAR

if TYPE_CHECKING:
    from kafka_support import KafkaNames

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "streams" / "data" / "sample.log"

# Three lines 10 s and then 20 s apart, one stamped earlier than the line before it,
# one continuation line (joined to its record by the framing) and one that is not syslog.
TINY = """\
Mar  1 00:00:00 rtr-a 1: %SYS-5-CONFIG_I: first
Mar  1 00:00:10 rtr-a 2: %SYS-5-CONFIG_I: second
    continued
Mar  1 00:00:05 rtr-b 3: %SYS-5-CONFIG_I: late, goes at once
not syslog at all
Mar  1 00:00:30 rtr-a 4: %SYS-5-CONFIG_I: last
"""


def _sample_records() -> list[str]:
    with SAMPLE.open(encoding="utf-8") as fh:
        return list(iter_records(fh))


class FakeClock:
    """A clock that only moves when slept on; records every sleep."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


class ListSink:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, str]] = []
        self.flushes = 0

    def send(self, record: str) -> None:
        self.sent.append((round(self.clock.now - 100.0, 6), record))

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("speed", "sleeps"), [(10.0, [1.0, 2.0]), (2.0, [5.0, 10.0])])
def test_replay_speed_scales_the_gaps_between_lines_and_keeps_their_order(
    tmp_path: Path, speed: float, sleeps: list[float]
) -> None:
    archive = tmp_path / "tiny.log"
    archive.write_text(TINY, encoding="utf-8")
    fake = FakeClock()
    sink = ListSink(fake)
    result = replay([str(archive)], sink, speed, year=2024, pacer=Pacer(fake.clock, fake.sleep))
    assert fake.sleeps == sleeps
    records = [r for _, r in sink.sent]
    assert records == list(iter_records(TINY.splitlines()))
    assert result.lines == 5
    offsets = [t for t, _ in sink.sent]
    gap1, gap2 = sleeps
    assert offsets == [0.0, gap1, gap1, gap1, gap1 + gap2]
    assert sink.flushes >= len(sleeps)  # buffered records go out before every pause


def test_at_max_speed_nothing_sleeps() -> None:
    items = [("a", 0.0), ("b", 50.0), ("c", None), ("d", 10.0)]
    assert list(schedule(items, None)) == [(x, 0.0) for x, _ in items]
    assert [d for _, d in schedule(items, 5.0)] == [0.0, 10.0, 10.0, 10.0]


def test_tcp_replay_frames_every_record_with_its_octet_count() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    received = bytearray()

    def accept() -> None:
        conn, _ = server.accept()
        with conn:
            while chunk := conn.recv(65536):
                received.extend(chunk)

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        sink = TcpSink("127.0.0.1", server.getsockname()[1])
        records = ["<13>one", "two\n  wrapped", "drei ✓"]
        for r in records:
            sink.send(r)
        sink.close()
        thread.join(10)
    finally:
        server.close()
    expected = b"".join(b"%d %s" % (len(r.encode()), r.encode()) for r in records)
    assert bytes(received) == expected


def test_replay_rejects_an_unknown_target_with_exit_code_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["replay", str(SAMPLE), "--to", "http://x:1", "--speed", "max"]) == 2
    assert "unknown scheme" in capsys.readouterr().err


async def _udp_replay_scenario(bootstrap: str, topic: str, spool: Path) -> str:
    records = _sample_records()
    async with running(config(bootstrap, topic, spool, tcp=None)) as rx:
        assert rx.udp_address
        target = f"udp://127.0.0.1:{rx.udp_address[1]}"
        rc = await asyncio.to_thread(
            main, ["replay", str(SAMPLE), "--to", target, "--speed", "max"]
        )
        assert rc == 0
        await wait_for(lambda: rx.metrics.published == len(records), what="all published")
    msgs = await read_topic(bootstrap, topic)
    assert sorted(m.value for m in msgs) == sorted(r.encode() for r in records)
    return target


@pytest.mark.kafka
def test_replay_at_max_speed_over_udp_delivers_every_line(
    kafka_bootstrap: str,
    kafka_names: KafkaNames,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = asyncio.run(_udp_replay_scenario(kafka_bootstrap, kafka_names.topic, tmp_path / "sp"))
    out = capsys.readouterr().out
    assert f"replayed {len(_sample_records())} lines to {target}" in out
    assert "lines/s" in out


@pytest.mark.kafka
def test_replay_at_max_speed_to_kafka_publishes_every_line_like_the_receiver(
    kafka_bootstrap: str, kafka_names: KafkaNames, tmp_path: Path
) -> None:
    records = _sample_records()
    rc = main(
        ["replay", str(SAMPLE), "--to", f"kafka://{kafka_bootstrap}", "--speed", "max",
         "--topic", kafka_names.topic, "--source", "192.0.2.1:514"]
    )  # fmt: skip
    assert rc == 0
    direct = asyncio.run(read_topic(kafka_bootstrap, kafka_names.topic))
    assert sorted(m.value for m in direct) == sorted(r.encode() for r in records)
    assert {m.headers[HEADER_SOURCE] for m in direct} == {b"192.0.2.1:514"}

    # The same lines through the receiver get the same keys and the same header names.
    other = kafka_names.another_topic("via-receiver")

    async def via_receiver() -> None:
        async with running(config(kafka_bootstrap, other, tmp_path / "sp", tcp=None)) as rx:
            assert rx.udp_address
            target = f"udp://127.0.0.1:{rx.udp_address[1]}"
            assert (
                await asyncio.to_thread(
                    main, ["replay", str(SAMPLE), "--to", target, "--speed", "max"]
                )
                == 0
            )
            await wait_for(lambda: rx.metrics.published == len(records))

    asyncio.run(via_receiver())
    received = asyncio.run(read_topic(kafka_bootstrap, other))

    def keys(msgs: list) -> dict[bytes, set[bytes | None]]:  # type: ignore[type-arg]
        out: dict[bytes, set[bytes | None]] = {}
        for m in msgs:
            out.setdefault(m.value, set()).add(m.key)
        return out

    direct_keys, received_keys = keys(direct), keys(received)
    for value, key_set in direct_keys.items():
        if key_set != {b"192.0.2.1"}:  # lines naming their device: the same key both ways
            assert received_keys[value] == key_set, value
    assert {tuple(sorted(m.headers)) for m in direct} == {
        tuple(sorted(m.headers)) for m in received
    }


@pytest.mark.kafka
def test_replay_year_reaches_kafka_as_a_record_header(
    kafka_bootstrap: str, kafka_names: KafkaNames
) -> None:
    rc = main(
        ["replay", str(SAMPLE), "--to", f"kafka://{kafka_bootstrap}", "--speed", "max",
         "--topic", kafka_names.topic, "--year", "2024"]
    )  # fmt: skip
    assert rc == 0
    msgs = asyncio.run(read_topic(kafka_bootstrap, kafka_names.topic))
    assert len(msgs) == len(_sample_records())
    assert {m.headers.get(HEADER_YEAR) for m in msgs} == {b"2024"}
