"""The spool: an on-disk write-ahead log of records Kafka could not take yet.

Layout of the spool directory::

    00000000001000000000.seg   segment files, replayed in ascending name order
    00000000001000000001.seg
    cursor.json                {"<segment id>": <byte offset already published>, ...}
    .lock                      flock: one receiver per spool directory

A segment is a sequence of length-prefixed records::

    u32 payload length | u32 CRC-32 of the payload | payload
    payload = u16 key length, key, u8 header count,
              (u8 name length, name, u16 value length, value) per header,
              value (the rest)

all integers big-endian. A new segment is started when the active one reaches
``segment_bytes``. Segments are read in order; a segment is deleted once every record in it
has been published (:meth:`Spool.commit`), and the whole spool is reset when it is empty.

fsync policy: :meth:`Spool.append` writes into a user-space buffer; :meth:`Spool.flush`
hands it to the kernel (the receiver calls it every 50 ms and before reading back), and
:meth:`Spool.sync` also fsyncs (every second, at every segment roll and on close). So a
crash of the receiver loses at most 50 ms of spooled records, a crash of the machine at
most about one second. The cursor file is replaced atomically (write + rename) on every
commit but not fsynced: after a machine crash some already-published records can be
published again (at-least-once).

Recovery: on open, a torn or corrupt tail of the last segment (a short record, a bad CRC,
an absurd length) is truncated away and counted in :attr:`Spool.corrupt_records`. Corruption
in the middle of an older segment ends that segment when it is read (counted too): records
after it in the same segment are lost, later segments are still read.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from streams.errors import ConfigError
from streams.shell.receiver.record import Headers, Record

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".seg"
CURSOR_FILE = "cursor.json"
LOCK_FILE = ".lock"
FIRST_SEGMENT_ID = 1_000_000_000  # room below for segments prepended at shutdown
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
MAX_PAYLOAD = 16 * 1024 * 1024

_HEAD = struct.Struct(">II")
_U16 = struct.Struct(">H")
_WRITE_BUFFER = 256 * 1024


def encode_record(record: Record) -> bytes:
    """One framed record: header (length, CRC) and payload."""
    key, value, headers = record
    parts = [_U16.pack(len(key)), key, bytes((len(headers),))]
    for name, hvalue in headers:
        raw = name.encode("utf-8")
        parts += [bytes((len(raw),)), raw, _U16.pack(len(hvalue)), hvalue]
    parts.append(value)
    payload = b"".join(parts)
    return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def decode_payload(payload: bytes) -> Record:
    """The record in ``payload``; raises ValueError when it is malformed."""
    try:
        (klen,) = _U16.unpack_from(payload, 0)
        pos = 2
        key = payload[pos : pos + klen]
        pos += klen
        count = payload[pos]
        pos += 1
        headers: list[tuple[str, bytes]] = []
        for _ in range(count):
            nlen = payload[pos]
            pos += 1
            name = payload[pos : pos + nlen].decode("utf-8")
            pos += nlen
            (vlen,) = _U16.unpack_from(payload, pos)
            pos += 2
            headers.append((name, payload[pos : pos + vlen]))
            pos += vlen
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed spool record: {exc}") from exc
    if pos > len(payload):
        raise ValueError("malformed spool record: fields run past its end")
    hdrs: Headers = tuple(headers)
    return Record(key, payload[pos:], hdrs)


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A place in the spool: just after a record (segment id, byte offset)."""

    segment: int
    offset: int


@dataclass(slots=True)
class _Segment:
    id: int
    path: Path
    size: int


def _segment_name(seg_id: int) -> str:
    return f"{seg_id:020d}{SEGMENT_SUFFIX}"


def _scan(fh: BinaryIO, start: int, limit: int | None = None) -> Iterator[tuple[Record, int]]:
    """Records from ``start`` with the offset just after each; stops at the first bad one.

    The caller tells a clean end from a corrupt one by comparing the last offset with the
    file size.
    """
    fh.seek(start)
    offset = start
    count = 0
    while limit is None or count < limit:
        head = fh.read(_HEAD.size)
        if len(head) < _HEAD.size:
            return
        length, crc = _HEAD.unpack(head)
        if length > MAX_PAYLOAD:
            return
        payload = fh.read(length)
        if len(payload) < length or zlib.crc32(payload) != crc:
            return
        try:
            record = decode_payload(payload)
        except ValueError:
            return
        offset += _HEAD.size + length
        count += 1
        yield record, offset


class Spool:
    """The write-ahead log of one spool directory (not thread-safe; one process per dir).

    ``append`` adds at the tail, ``read`` hands out records in order from an in-memory read
    position, ``commit`` records that everything up to a position is published (and deletes
    finished segments), ``prepend`` puts records before everything else (used at shutdown
    for older records that were still in memory).
    """

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        if max_bytes <= 0:
            raise ConfigError("--spool-max-bytes must be positive")
        if segment_bytes <= 0:
            raise ConfigError("the spool segment size must be positive")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.corruptions = 0  # corrupt or torn places found (tail truncations, skips)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fh = (self.directory / LOCK_FILE).open("a")
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock_fh.close()
            raise ConfigError(f"spool {self.directory} is in use by another receiver") from exc
        self._segments: list[_Segment] = []
        self._bytes = 0
        self._cursor: dict[int, int] = {}
        self._writer: BinaryIO | None = None
        self._pending = 0  # bytes buffered in the writer, not yet flushed
        self._read_fh: BinaryIO | None = None
        self._read_seg: int | None = None
        self._read_pos: Position | None = None  # just after the last record handed out
        self._committed: Position | None = None
        self._unread = 0
        self._uncommitted = 0
        self._closed = False
        self._open()

    # -- state -------------------------------------------------------------------------

    @property
    def size_bytes(self) -> int:
        """Bytes on disk (segments, including published parts not yet deleted)."""
        return self._bytes

    @property
    def unread(self) -> int:
        """Records not handed out by :meth:`read` yet (counted since open)."""
        return self._unread

    @property
    def uncommitted(self) -> int:
        """Records handed out by :meth:`read` but not committed."""
        return self._uncommitted

    @property
    def empty(self) -> bool:
        """True when every record in the spool is published."""
        return self._unread == 0 and self._uncommitted == 0

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    # -- open / recovery ---------------------------------------------------------------

    def _open(self) -> None:
        for path in sorted(self.directory.glob(f"*{SEGMENT_SUFFIX}")):
            try:
                seg_id = int(path.name.removesuffix(SEGMENT_SUFFIX))
            except ValueError:
                continue
            self._segments.append(_Segment(seg_id, path, path.stat().st_size))
        self._bytes = sum(seg.size for seg in self._segments)
        self._cursor = self._load_cursor()
        if self._segments:
            self._recover_tail(self._segments[-1])
        # Count what is left to publish (one pass over the spool, at start only).
        for seg in list(self._segments):
            start = self._cursor.get(seg.id, 0)
            with seg.path.open("rb") as fh:
                self._unread += sum(1 for _ in _scan(fh, start))
            if start >= seg.size and seg is not self._segments[-1]:
                self._delete(seg)
        if not self._segments or self._unread == 0:
            self._reset()
        if self._unread:
            log.warning(
                "spool %s holds %d unpublished records (%d bytes): draining them first",
                self.directory,
                self._unread,
                self.size_bytes,
            )

    def _load_cursor(self) -> dict[int, int]:
        path = self.directory / CURSOR_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return {int(k): int(v) for k, v in raw.items()}
        except FileNotFoundError:
            return {}
        except (ValueError, AttributeError, TypeError):
            log.error("spool cursor %s is unreadable: replaying every segment from 0", path)
            return {}

    def _recover_tail(self, seg: _Segment) -> None:
        good = 0
        with seg.path.open("rb") as fh:
            for _, offset in _scan(fh, 0):
                good = offset
        if good < seg.size:
            lost = seg.size - good
            self.corruptions += 1
            log.error(
                "spool segment %s has a torn or corrupt tail: truncating %d bytes at offset %d",
                seg.path,
                lost,
                good,
            )
            with seg.path.open("r+b") as fh:
                fh.truncate(good)
                fh.flush()
                os.fsync(fh.fileno())
            self._bytes -= seg.size - good
            seg.size = good

    def _reset(self) -> None:
        """Delete every segment and start an empty spool."""
        self._close_reader()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for seg in self._segments:
            seg.path.unlink(missing_ok=True)
        self._segments = []
        self._bytes = 0
        self._cursor = {}
        (self.directory / CURSOR_FILE).unlink(missing_ok=True)
        self._read_pos = None
        self._committed = None
        self._unread = 0
        self._uncommitted = 0
        self._pending = 0

    # -- writing -----------------------------------------------------------------------

    def _active(self) -> _Segment:
        if not self._segments:
            seg_id = FIRST_SEGMENT_ID
            self._segments.append(_Segment(seg_id, self.directory / _segment_name(seg_id), 0))
        seg = self._segments[-1]
        if self._writer is None:
            self._writer = seg.path.open("ab", buffering=_WRITE_BUFFER)
        return seg

    def _roll(self) -> None:
        self.sync()
        assert self._writer is not None
        self._writer.close()
        self._writer = None
        seg_id = self._segments[-1].id + 1
        self._segments.append(_Segment(seg_id, self.directory / _segment_name(seg_id), 0))

    def room_for(self, size: int) -> bool:
        return self.size_bytes + size <= self.max_bytes

    def append(self, record: Record) -> bool:
        """Append one record; False (nothing written) when the spool is full."""
        return self.append_encoded(encode_record(record))

    def append_encoded(self, data: bytes) -> bool:
        if self._closed:
            raise ValueError("spool is closed")
        if not self.room_for(len(data)):
            return False
        seg = self._active()
        if seg.size > 0 and seg.size + len(data) > self.segment_bytes:
            self._roll()
            seg = self._active()
        assert self._writer is not None
        self._writer.write(data)
        seg.size += len(data)
        self._bytes += len(data)
        self._pending += len(data)
        self._unread += 1
        return True

    def flush(self) -> None:
        """Hand buffered records to the kernel (survives a crash of this process)."""
        if self._writer is not None and self._pending:
            self._writer.flush()
            self._pending = 0

    def sync(self) -> None:
        """Flush and fsync the active segment (survives a crash of the machine)."""
        if self._writer is not None:
            self._writer.flush()
            self._pending = 0
            os.fsync(self._writer.fileno())

    def sync_handle(self) -> int | None:
        """Flush and return a duplicate descriptor of the active segment, for an fsync in
        another thread (the caller closes it); None when nothing is being written."""
        if self._writer is None:
            return None
        self.flush()
        return os.dup(self._writer.fileno())

    def prepend(self, records: Iterable[Record]) -> int:
        """Put ``records`` before everything in the spool; return how many fit.

        Only valid when nothing is read and uncommitted (at shutdown, after the publisher
        stopped). Records that do not fit under ``max_bytes`` are not written.
        """
        if self._uncommitted:
            raise ValueError("prepend while records are handed out")
        encoded: list[bytes] = []
        total = 0
        for record in records:
            data = encode_record(record)
            if not self.room_for(total + len(data)):
                break
            encoded.append(data)
            total += len(data)
        if not encoded:
            return 0
        self.flush()
        self._close_reader()
        seg_id = self._segments[0].id - 1 if self._segments else FIRST_SEGMENT_ID - 1
        path = self.directory / _segment_name(seg_id)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(b"".join(encoded))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.rename(path)
        self._segments.insert(0, _Segment(seg_id, path, total))
        self._bytes += total
        self._unread += len(encoded)
        self._read_pos = None
        self._fsync_dir()
        return len(encoded)

    # -- reading -----------------------------------------------------------------------

    def _close_reader(self) -> None:
        if self._read_fh is not None:
            self._read_fh.close()
            self._read_fh = None
            self._read_seg = None

    def _start_position(self) -> Position | None:
        if self._read_pos is not None:
            if self._find(self._read_pos.segment) is not None:
                return self._read_pos
            for seg in self._segments:  # its segment was published and deleted
                if seg.id > self._read_pos.segment:
                    return Position(seg.id, self._cursor.get(seg.id, 0))
            return None
        if not self._segments:
            return None
        first = self._segments[0]
        return Position(first.id, self._cursor.get(first.id, 0))

    def read(self, max_records: int, max_bytes: int = 1 << 20) -> list[tuple[Record, Position]]:
        """Up to ``max_records`` records after the read position, each with its end position."""
        out: list[tuple[Record, Position]] = []
        pos = self._start_position()
        if self._unread == 0 or max_records <= 0 or pos is None:
            return out
        size = 0
        while True:
            seg = self._find(pos.segment)
            if seg is None:
                break
            last = seg is self._segments[-1]
            if last:
                self.flush()
            if self._read_seg != seg.id:
                self._close_reader()
                self._read_fh = seg.path.open("rb")
                self._read_seg = seg.id
            assert self._read_fh is not None
            end = pos.offset
            for record, end in _scan(self._read_fh, pos.offset, max_records - len(out)):
                out.append((record, Position(seg.id, end)))
                size += len(record.value)
                if size >= max_bytes:
                    break
            pos = Position(seg.id, end)
            if len(out) >= max_records or size >= max_bytes or last:
                break
            if end < seg.size:
                self.corruptions += 1
                log.error(
                    "spool segment %s is corrupt at offset %d: skipping its %d remaining bytes",
                    seg.path,
                    end,
                    seg.size - end,
                )
            nxt = self._next(seg)
            if nxt is None:
                break
            pos = Position(nxt.id, self._cursor.get(nxt.id, 0))
        self._read_pos = pos
        tail = self._segments[-1] if self._segments else None
        if tail is not None and pos.segment == tail.id and pos.offset >= tail.size:
            lost = self._unread - len(out)
            if lost > 0:  # everything is read: the rest was in corrupt parts
                log.error("spool %s: %d records were lost to corruption", self.directory, lost)
                self._unread = len(out)
        self._unread -= len(out)
        self._uncommitted += len(out)
        return out

    def rewind(self) -> None:
        """Forget what was read but not committed: the next read starts after the commit."""
        self._unread += self._uncommitted
        self._uncommitted = 0
        self._read_pos = self._committed
        self._close_reader()

    def _find(self, seg_id: int) -> _Segment | None:
        for seg in self._segments:
            if seg.id == seg_id:
                return seg
        return None

    def _next(self, seg: _Segment) -> _Segment | None:
        idx = self._segments.index(seg)
        return self._segments[idx + 1] if idx + 1 < len(self._segments) else None

    # -- committing --------------------------------------------------------------------

    def commit(self, pos: Position, count: int) -> None:
        """Everything up to ``pos`` (``count`` records since the last commit) is published."""
        self._uncommitted = max(0, self._uncommitted - count)
        self._committed = pos
        while self._segments and self._segments[0].id < pos.segment:
            self._delete(self._segments[0])
        if self.empty:
            self._reset()
            return
        # Entries of later segments stay: a segment prepended at shutdown comes before
        # a partly published one.
        self._cursor = {k: v for k, v in self._cursor.items() if k > pos.segment}
        self._cursor[pos.segment] = pos.offset
        seg = self._find(pos.segment)
        if seg is not None and seg is not self._segments[-1] and pos.offset >= seg.size:
            self._delete(seg)
        self._write_cursor()

    def _delete(self, seg: _Segment) -> None:
        if self._read_seg == seg.id:
            self._close_reader()
        seg.path.unlink(missing_ok=True)
        self._segments.remove(seg)
        self._bytes -= seg.size
        self._cursor.pop(seg.id, None)

    def _write_cursor(self) -> None:
        path = self.directory / CURSOR_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({str(k): v for k, v in self._cursor.items()}), "utf-8")
        tmp.replace(path)

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- closing -----------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self.sync()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._close_reader()
        if self._segments and self._cursor:
            self._write_cursor()
        fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
        self._lock_fh.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
