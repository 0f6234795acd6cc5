"""The receiver's on-disk spool (write-ahead log), without Kafka."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.errors import ConfigError
from streams.shell.receiver.record import Record
from streams.shell.receiver.spool import Spool, encode_record


def _rec(i: int, size: int = 20) -> Record:
    value = f"line {i:06d} ".encode().ljust(size, b"x")
    return Record(
        f"dev-{i % 3}".encode(),
        value,
        (("received_at", b"2024-01-01T00:00:00.000Z"), ("source", b"10.0.0.1:514")),
    )


def _drain(spool: Spool, batch: int = 7) -> list[Record]:
    out: list[Record] = []
    while True:
        got = spool.read(batch)
        if not got:
            return out
        out += [r for r, _ in got]
        spool.commit(got[-1][1], len(got))


def test_records_come_back_in_order_with_key_and_headers(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=500) as spool:
        for i in range(100):
            assert spool.append(_rec(i))
        assert spool.segment_count > 1
        assert _drain(spool) == [_rec(i) for i in range(100)]
        assert spool.empty
        assert spool.size_bytes == 0
    assert not list(tmp_path.glob("*.seg"))


def test_a_reopened_spool_resumes_after_the_last_commit(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=400) as spool:
        for i in range(50):
            spool.append(_rec(i))
        got = spool.read(20)
        spool.commit(got[-1][1], 20)
        spool.read(10)  # handed out but never committed: must come again
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=400) as spool:
        assert spool.unread == 30
        spool.append(_rec(50))
        assert _drain(spool) == [_rec(i) for i in range(20, 51)]


def test_a_full_spool_refuses_records_and_keeps_what_it_has(tmp_path: Path) -> None:
    one = len(encode_record(_rec(0)))
    with Spool(tmp_path, max_bytes=one * 10, segment_bytes=one * 3) as spool:
        accepted = [spool.append(_rec(i)) for i in range(15)]
        assert accepted == [True] * 10 + [False] * 5
        assert spool.size_bytes <= one * 10
        assert _drain(spool) == [_rec(i) for i in range(10)]


def test_a_torn_tail_is_truncated_and_the_records_before_it_survive(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20) as spool:
        for i in range(10):
            spool.append(_rec(i))
    seg = next(tmp_path.glob("*.seg"))
    data = seg.read_bytes()
    seg.write_bytes(data + encode_record(_rec(10))[:-5])  # a write cut short by a crash
    with Spool(tmp_path, max_bytes=1 << 20) as spool:
        assert spool.corruptions == 1
        assert seg.stat().st_size == len(data)
        spool.append(_rec(11))
        assert _drain(spool) == [*(_rec(i) for i in range(10)), _rec(11)]


def test_a_corrupt_record_in_an_old_segment_ends_that_segment_only(tmp_path: Path) -> None:
    one = len(encode_record(_rec(0)))
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=one * 4) as spool:
        for i in range(12):
            spool.append(_rec(i))
    first = sorted(tmp_path.glob("*.seg"))[0]
    data = bytearray(first.read_bytes())
    data[one * 2 + 12] ^= 0xFF  # flip a byte inside the third record's payload
    first.write_bytes(bytes(data))
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=one * 4) as spool:
        got = _drain(spool)
        assert got == [_rec(0), _rec(1), *(_rec(i) for i in range(4, 12))]
        assert spool.corruptions == 1


def test_prepended_records_come_before_a_partly_published_spool(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=300) as spool:
        for i in range(10, 20):
            spool.append(_rec(i))
        got = spool.read(3)
        spool.commit(got[-1][1], 3)
        spool.prepend([_rec(i) for i in range(5)])
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=300) as spool:
        assert _drain(spool, batch=4) == [
            *(_rec(i) for i in range(5)),
            *(_rec(i) for i in range(13, 20)),
        ]


def test_rewind_hands_out_uncommitted_records_again(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=200) as spool:
        for i in range(10):
            spool.append(_rec(i))
        got = spool.read(4)
        spool.commit(got[1][1], 2)
        spool.read(3)
        spool.rewind()
        assert _drain(spool) == [_rec(i) for i in range(2, 10)]


def test_two_receivers_cannot_share_a_spool_directory(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1000), pytest.raises(ConfigError):
        Spool(tmp_path, max_bytes=1000)
