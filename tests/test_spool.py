"""The receiver's on-disk spool (write-ahead log), without Kafka."""

from __future__ import annotations

import errno
import json
import os
import stat
import struct
import time
import zlib
from pathlib import Path

import pytest

from streams.errors import ConfigError
from streams.shell.receiver import spool as spool_mod
from streams.shell.receiver.record import Record
from streams.shell.receiver.spool import HEADER_BYTES, Spool, encode_payload, encode_record


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
        spool.flush()
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
    with Spool(tmp_path, max_bytes=one * 10 + 4 * HEADER_BYTES, segment_bytes=one * 3) as spool:
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
        assert spool.torn_tails == 1
        assert spool.skipped_bytes == len(encode_record(_rec(10))) - 5
        assert seg.stat().st_size == len(data)
        spool.append(_rec(11))
        assert _drain(spool) == [*(_rec(i) for i in range(10)), _rec(11)]
    (kept,) = (tmp_path / "quarantine").iterdir()
    assert kept.read_bytes() == encode_record(_rec(10))[:-5]


def test_a_corrupt_record_is_skipped_and_quarantined_and_the_rest_of_its_segment_is_read(
    tmp_path: Path,
) -> None:
    one = len(encode_record(_rec(0)))
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=one * 4 + HEADER_BYTES) as spool:
        for i in range(12):
            spool.append(_rec(i))
    first = sorted(tmp_path.glob("*.seg"))[0]
    data = bytearray(first.read_bytes())
    bad = HEADER_BYTES + one * 2
    data[bad + 20] ^= 0xFF  # flip a byte inside the third record's payload
    first.write_bytes(bytes(data))
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=one * 4 + HEADER_BYTES) as spool:
        got = _drain(spool)
        assert got == [_rec(i) for i in range(12) if i != 2]
        assert (spool.quarantined, spool.skipped_bytes, spool.torn_tails) == (1, one, 0)
    (kept,) = (tmp_path / "quarantine").iterdir()
    assert kept.read_bytes() == bytes(data[bad : bad + one])


def test_four_bytes_overwritten_a_megabyte_into_a_segment_lose_only_the_records_they_hit(
    tmp_path: Path,
) -> None:
    # Issue 13, item 5: this used to truncate the segment there (5,272 of 20,000 left).
    n = 20_000
    with Spool(tmp_path, max_bytes=1 << 30) as spool:
        for i in range(n):
            spool.append(_rec(i, size=120))
    (seg,) = tmp_path.glob("*.seg")
    with seg.open("r+b") as fh:
        fh.seek(1 << 20)
        fh.write(b"\xde\xad\xbe\xef")
    size = seg.stat().st_size
    with Spool(tmp_path, max_bytes=1 << 30) as spool:
        assert seg.stat().st_size == size  # nothing truncated in place
        got = _drain(spool, batch=1000)
        assert spool.quarantined == 1
        assert 1 <= spool.skipped_bytes <= 2 * len(encode_record(_rec(0, size=120)))
    assert n - 2 <= len(got) < n
    assert got == sorted(got, key=lambda r: r.value)  # in order, no duplicate
    assert len({r.value for r in got}) == len(got)


def test_segments_of_the_first_format_are_migrated_and_read_after_their_cursor(
    tmp_path: Path,
) -> None:
    def v1(record: Record) -> bytes:
        payload = encode_payload(record)
        return struct.pack(">II", len(payload), zlib.crc32(payload)) + payload

    old = [v1(_rec(i)) for i in range(10)]
    (tmp_path / "00000000001000000000.seg").write_bytes(b"".join(old[:6]))
    (tmp_path / "00000000001000000001.seg").write_bytes(b"".join(old[6:]) + b"\x00\x01junk")
    (tmp_path / "cursor.json").write_text(json.dumps({"1000000000": len(old[0]) * 2}))
    with Spool(tmp_path, max_bytes=1 << 20) as spool:
        assert spool.unread == 8
        assert spool.quarantined == 1  # the junk after the last good record
        spool.append(_rec(10))
        assert _drain(spool) == [_rec(i) for i in range(2, 11)]


def test_spool_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    with Spool(directory, max_bytes=1 << 20, segment_bytes=200) as spool:
        for i in range(10):
            spool.append(_rec(i))
        got = spool.read(3)
        spool.commit(got[-1][1], 3)
        spool.hold([_rec(99)])
        files = [p for p in directory.rglob("*") if p.is_file()]
        assert {p.name for p in files} >= {".lock", "cursor.json"}
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_the_held_journal_is_not_read_while_running_but_comes_first_after_a_crash(
    tmp_path: Path,
) -> None:
    with Spool(tmp_path, max_bytes=1 << 20) as spool:
        for i in range(5, 10):
            spool.append(_rec(i))
        assert spool.hold([_rec(i) for i in range(5)])
        got = spool.read(100)
        assert [r for r, _ in got] == [_rec(i) for i in range(5, 10)]
        spool.rewind()
        # closed without release: a crash while Kafka was away
    with Spool(tmp_path, max_bytes=1 << 20) as spool:
        assert _drain(spool) == [_rec(i) for i in range(10)]
    with Spool(tmp_path, max_bytes=1 << 20) as spool:
        spool.append(_rec(1))
        assert spool.hold([_rec(0)])
        spool.release()
    with Spool(tmp_path, max_bytes=1 << 20) as spool:
        assert _drain(spool) == [_rec(1)]


class _DiskFull:
    """The spool's writer seam (``_write_all``) failing like a full disk: it writes part
    of what it is given, then ENOSPC, until ``space`` is set again."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, room: int) -> None:
        self.room = room
        self.full = True
        self.calls = 0
        real = spool_mod._write_all

        def write_all(fd: int, data: bytes) -> tuple[int, OSError | None]:
            self.calls += 1
            if not self.full:
                return real(fd, data)
            take = min(len(data), self.room)
            done, err = real(fd, data[:take])
            self.room -= done
            if err is None and done < len(data):
                err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return done, err

        monkeypatch.setattr(spool_mod, "_write_all", write_all)


def test_a_failed_write_is_not_counted_retried_with_backoff_and_heals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    one = len(encode_record(_rec(0)))
    disk = _DiskFull(monkeypatch, room=one * 5 + one // 2)  # the 6th record is cut short
    written: list[int] = []
    with Spool(tmp_path, max_bytes=1 << 20, buffer_max_bytes=one * 20) as spool:
        spool.on_written = written.append
        for i in range(10):
            assert spool.append(_rec(i))
        spool.flush()
        assert isinstance(spool.failing, OSError) and spool.failing.errno == errno.ENOSPC
        assert sum(written) == 5
        (seg,) = tmp_path.glob("*.seg")
        assert seg.stat().st_size == HEADER_BYTES + 5 * one  # the torn record was cut off
        assert spool.buffered == 5
        calls = disk.calls
        for _ in range(20):
            spool.flush()  # within the backoff: not even tried
        assert disk.calls == calls
        for i in range(10, 30):
            spool.append(_rec(i))
        assert spool.buffered == 20  # the buffer is full: the rest refused
        assert spool.refused == 5
        disk.full = False
        time.sleep(0.06)
        assert spool.flush() == 20
        assert spool.failing is None
        assert sum(written) == 25
        assert _drain(spool) == [_rec(i) for i in range(25)]
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1  # one per episode, not one per record
    assert "works again" in caplog.text and "20 records written late, 5 refused" in caplog.text


def test_with_the_disk_full_a_drained_spool_gives_its_buffer_back_and_frees_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = len(encode_record(_rec(0)))
    _DiskFull(monkeypatch, room=HEADER_BYTES + one * 3)
    with Spool(tmp_path, max_bytes=1 << 20) as spool:
        for i in range(8):
            spool.append(_rec(i))
        spool.flush()
        assert spool.failing is not None
        got = spool.read(100)
        assert [r for r, _ in got] == [_rec(i) for i in range(3)]
        spool.commit(got[-1][1], len(got))
        assert spool.drained and not spool.empty
        assert not list(tmp_path.glob("*.seg"))  # the disk is free again
        assert spool.take_buffered() == [_rec(i) for i in range(3, 8)]
        assert spool.empty and spool.failing is None


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
