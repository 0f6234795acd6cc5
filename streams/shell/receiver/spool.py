"""The spool: an on-disk write-ahead log of records Kafka could not take yet.

Layout of the spool directory (0700 when the spool creates it, every file in it 0600)::

    00000000001000000000.seg   segment files, replayed in ascending name order
    00000000001000000001.seg
    cursor.json                {"<segment id>": <byte offset already published>, ...}
    quarantine/                bytes the reader could not read as records, one file per
                               damaged place: <segment id>-<offset>.bad
    .lock                      flock: one receiver per spool directory

A segment starts with the 8-byte file header ``TWSPOOL\\x02`` and then holds records::

    magic 0xC5 0x7E | u32 payload length | u32 CRC-32 of the payload
                    | u32 CRC-32 of the 10 bytes before | payload
    payload = u16 key length, key, u8 header count,
              (u8 name length, name, u16 value length, value) per header,
              value (the rest)

all integers big-endian. The header's own CRC lets a reader that lost its place (a damaged
record) find the next record: it looks for the magic, checks the header CRC, then the
payload CRC, and whatever lies in between goes to ``quarantine/`` (counted in
:attr:`Spool.skipped_bytes` and :attr:`Spool.quarantined`) instead of being thrown away
with the rest of the segment. Segments of the first format (no file header, records
``u32 length | u32 CRC | payload``) are migrated to this one when the spool is opened.

Writing: :meth:`Spool.append` only buffers (in memory); :meth:`Spool.flush` writes the
buffer to the active segment with plain ``os.write`` (the receiver calls it every 50 ms
and before reading back; :meth:`Spool.append` calls it once ``WRITE_BUFFER_BYTES`` wait),
and a record counts as spooled (``on_written``) only once all its bytes are in the file.
A write that fails (ENOSPC, EIO, ...) leaves no torn record behind (the segment is cut
back to the last whole record) and keeps the unwritten records in the buffer; the spool
then retries with a doubling backoff (0.05 s to 5 s) and logs one ERROR when such an
episode starts and one WARNING, with counts, when it ends (and a reminder a minute).
While writes fail the buffer may grow to ``buffer_max_bytes``; past that :meth:`append`
refuses records (the caller counts them, reason ``spool_error``).

fsync policy: :meth:`Spool.sync` (the receiver runs it every second, at every segment roll
and on close) fsyncs. So a crash of the receiver loses at most the buffer (50 ms of
spooled records, never more than ``WRITE_BUFFER_BYTES``), a crash of the machine at most
about one second. The cursor file is replaced atomically (write + rename) on every commit
but not fsynced: after a machine crash some already-published records can be published
again (at-least-once).

The held journal (:meth:`Spool.hold`): records that are still in the receiver's memory
while Kafka does not acknowledge them can be written to a segment of their own, before
every other segment, that the running receiver never reads; :meth:`Spool.release`
deletes it once they are acknowledged. After a kill, the next start finds it like any
segment and publishes it first (at-least-once: some of it may have been acknowledged).

Recovery: on open, a torn tail of a segment (what follows its last whole record, e.g. a
write cut short by a crash) is copied to ``quarantine/`` and cut off, counted in
:attr:`Spool.torn_tails`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import mmap
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from streams.errors import ConfigError
from streams.shell.receiver.record import Headers, Record

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".seg"
CURSOR_FILE = "cursor.json"
LOCK_FILE = ".lock"
QUARANTINE_DIR = "quarantine"
FIRST_SEGMENT_ID = 1_000_000_000  # room below for segments prepended at shutdown
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
DEFAULT_BUFFER_MAX_BYTES = 32 * 1024 * 1024
MAX_PAYLOAD = 16 * 1024 * 1024
FILE_MODE = 0o600
DIR_MODE = 0o700

SEGMENT_MAGIC = b"TWSPOOL\x02"
RECORD_MAGIC = b"\xc5\x7e"
_HEAD = struct.Struct(">2sIII")  # magic, payload length, payload CRC, header CRC
_HEAD_CRC_SPAN = 10  # the header CRC covers magic, length and payload CRC
_V1_HEAD = struct.Struct(">II")
_U16 = struct.Struct(">H")
WRITE_BUFFER_BYTES = 64 * 1024
_RETRY_FIRST = 0.05
_RETRY_MAX = 5.0
_REMIND_EVERY = 60.0

HEADER_BYTES = len(SEGMENT_MAGIC)
RECORD_OVERHEAD = _HEAD.size


def encode_payload(record: Record) -> bytes:
    key, value, headers = record
    parts = [_U16.pack(len(key)), key, bytes((len(headers),))]
    for name, hvalue in headers:
        raw = name.encode("utf-8")
        parts += [bytes((len(raw),)), raw, _U16.pack(len(hvalue)), hvalue]
    parts.append(value)
    return b"".join(parts)


def frame(payload: bytes) -> bytes:
    """A payload with its record header (magic, length, CRCs)."""
    head = RECORD_MAGIC + struct.pack(">II", len(payload), zlib.crc32(payload))
    return head + struct.pack(">I", zlib.crc32(head)) + payload


def encode_record(record: Record) -> bytes:
    """One framed record: header (magic, length, CRCs) and payload."""
    return frame(encode_payload(record))


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


def _record_at(buf: bytes | mmap.mmap, pos: int, end: int) -> tuple[Record, int] | None:
    """The record starting at ``pos`` and the offset after it, or None if there is none."""
    if pos + _HEAD.size > end:
        return None
    magic, length, crc, hcrc = _HEAD.unpack_from(buf, pos)
    if magic != RECORD_MAGIC or zlib.crc32(buf[pos : pos + _HEAD_CRC_SPAN]) != hcrc:
        return None
    stop = pos + _HEAD.size + length
    if length > MAX_PAYLOAD or stop > end:
        return None
    payload = buf[pos + _HEAD.size : stop]
    if zlib.crc32(payload) != crc:
        return None
    try:
        return decode_payload(payload), stop
    except ValueError:
        return None


def _resync(buf: bytes | mmap.mmap, pos: int, end: int) -> int:
    """The offset of the first valid record after ``pos`` (``end`` when there is none)."""
    while True:
        i = buf.find(RECORD_MAGIC, pos, end)
        if i < 0:
            return end
        if _record_at(buf, i, end) is not None:
            return i
        pos = i + 1


def scan(
    buf: bytes | mmap.mmap, start: int, end: int, limit: int | None = None
) -> Iterator[tuple[Record | None, int, int]]:
    """``(record, begin, end)`` for each record from ``start``, and ``(None, begin, end)``
    for each damaged stretch between them (at most ``limit`` records)."""
    pos = start
    count = 0
    while pos < end and (limit is None or count < limit):
        got = _record_at(buf, pos, end)
        if got is not None:
            record, stop = got
            count += 1
            yield record, pos, stop
            pos = stop
            continue
        stop = _resync(buf, pos + 1, end)
        yield None, pos, stop
        pos = stop


def _scan_v1(data: bytes) -> tuple[list[bytes], int]:
    """Payloads of a first-format segment and the offset after the last good one."""
    payloads: list[bytes] = []
    pos = 0
    while pos + _V1_HEAD.size <= len(data):
        length, crc = _V1_HEAD.unpack_from(data, pos)
        stop = pos + _V1_HEAD.size + length
        if length > MAX_PAYLOAD or stop > len(data):
            break
        payload = data[pos + _V1_HEAD.size : stop]
        if zlib.crc32(payload) != crc:
            break
        try:
            decode_payload(payload)
        except ValueError:
            break
        payloads.append(payload)
        pos = stop
    return payloads, pos


def _write_all(fd: int, data: bytes) -> tuple[int, OSError | None]:
    """Write ``data``; (bytes written, the error that stopped it or None)."""
    view = memoryview(data)
    done = 0
    try:
        while done < len(data):
            n = os.write(fd, view[done:])
            if n <= 0:
                return done, OSError(errno.EIO, "write returned 0")
            done += n
    except OSError as exc:
        return done, exc
    return done, None


def _create(path: Path) -> int:
    """A new file (0600) holding the segment header; its descriptor, for appending."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, FILE_MODE)
    done, err = _write_all(fd, SEGMENT_MAGIC)
    if err is not None or done != HEADER_BYTES:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise err or OSError(errno.EIO, "short write of the segment header")
    return fd


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


class _Episode:
    """One ERROR when a kind of failure starts, a reminder a minute, a WARNING when it ends."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.since: float | None = None
        self.attempts = 0
        self._reminded = 0.0

    def fail(self, exc: OSError, detail: str) -> None:
        now = time.monotonic()
        self.attempts += 1
        if self.since is None:
            self.since = self._reminded = now
            log.error("%s failed (%s): %s", self.what, exc, detail)
        elif now - self._reminded >= _REMIND_EVERY:
            self._reminded = now
            log.error(
                "%s still failing after %.0f s (%d attempts; %s): %s",
                self.what, now - self.since, self.attempts, exc, detail,
            )  # fmt: skip

    def ok(self, detail: str) -> None:
        if self.since is not None:
            log.warning(
                "%s works again after %.1f s and %d failed attempts: %s",
                self.what, time.monotonic() - self.since, self.attempts, detail,
            )  # fmt: skip
            self.since = None
            self.attempts = 0


class Spool:
    """The write-ahead log of one spool directory (not thread-safe; one process per dir).

    ``append`` adds at the tail, ``read`` hands out records in order from an in-memory read
    position, ``commit`` records that everything up to a position is published (and deletes
    finished segments), ``prepend`` puts records before everything else (used at shutdown
    for older records that were still in memory), ``hold``/``release`` keep a crash journal
    of records held in memory.
    """

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        buffer_max_bytes: int = DEFAULT_BUFFER_MAX_BYTES,
    ) -> None:
        if max_bytes <= 0:
            raise ConfigError("--spool-max-bytes must be positive")
        if segment_bytes <= 0:
            raise ConfigError("the spool segment size must be positive")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.buffer_max_bytes = buffer_max_bytes
        # Counters (the receiver's /metrics shows them).
        self.torn_tails = 0  # segments whose tail was cut off on open
        self.skipped_bytes = 0  # bytes not readable as records (torn tails included)
        self.quarantined = 0  # damaged stretches copied to quarantine/
        self.write_errors = 0  # failed write attempts (each retried)
        self.refused = 0  # appends refused because writes fail and the buffer is full
        self.lost = 0  # records counted on disk that could not be read back
        #: Called with the number of records that reached the file (counted as spooled).
        self.on_written: Callable[[int], None] | None = None
        self.failing: OSError | None = None  # the last write error, while writes fail
        self.prepend_error: OSError | None = None  # why the last prepend wrote nothing
        self._write_episode = _Episode(f"spool write to {self.directory}")
        self._cursor_episode = _Episode(f"spool cursor update in {self.directory}")
        self._hold_episode = _Episode(f"held journal write in {self.directory}")
        self._retry_at = 0.0
        self._retry_wait = _RETRY_FIRST
        self._episode_written = 0
        self._episode_refused = 0
        # A directory it creates is 0700; one given to it keeps its mode (its files are
        # 0600 all the same).
        self.directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        lock_fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(lock_fd)
            raise ConfigError(f"spool {self.directory} is in use by another receiver") from exc
        self._lock_fd = lock_fd
        self._segments: list[_Segment] = []
        self._bytes = 0
        self._cursor: dict[int, int] = {}
        self._fd: int | None = None  # the active (last) segment, open for appending
        self._new_segment = False  # the next write starts a new segment
        self._buf: list[bytes] = []  # encoded records not written yet
        self._buf_bytes = 0
        self._held: _Segment | None = None
        self._held_fd: int | None = None
        self._read_pos: Position | None = None  # just after the last record handed out
        self._committed: Position | None = None
        self._quarantine_seen: set[tuple[int, int]] = set()
        self._unread = 0  # records on disk not handed out
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
        """Records not handed out by :meth:`read` yet (buffered ones included)."""
        return self._unread + len(self._buf)

    @property
    def buffered(self) -> int:
        """Records appended but not written to a segment yet (in memory)."""
        return len(self._buf)

    @property
    def uncommitted(self) -> int:
        """Records handed out by :meth:`read` but not committed."""
        return self._uncommitted

    @property
    def drained(self) -> bool:
        """True when every record on disk is published (the buffer may hold some)."""
        return self._unread == 0 and self._uncommitted == 0

    @property
    def empty(self) -> bool:
        """True when every record in the spool is published."""
        return self.drained and not self._buf

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def corruptions(self) -> int:
        """Damaged places met (torn tails and quarantined stretches)."""
        return self.torn_tails + self.quarantined

    # -- open / recovery ---------------------------------------------------------------

    def _open(self) -> None:
        for path in sorted(self.directory.glob(f"*{SEGMENT_SUFFIX}")):
            try:
                seg_id = int(path.name.removesuffix(SEGMENT_SUFFIX))
            except ValueError:
                continue
            self._segments.append(_Segment(seg_id, path, path.stat().st_size))
        self._cursor = self._load_cursor()
        for seg in self._segments:
            self._migrate(seg)
        self._bytes = sum(seg.size for seg in self._segments)
        # Count what is left to publish and cut torn tails (one pass, at start only).
        for seg in list(self._segments):
            start = self._start_of(seg)
            count, tail = self._count(seg, start)
            self._unread += count
            if tail is not None:
                self._cut_tail(seg, tail)
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

    def _start_of(self, seg: _Segment) -> int:
        return min(max(self._cursor.get(seg.id, 0), HEADER_BYTES), max(seg.size, HEADER_BYTES))

    def _count(self, seg: _Segment, start: int) -> tuple[int, int | None]:
        """Records in ``seg`` after ``start``, and where its torn tail starts (if it has)."""
        count = 0
        tail: int | None = None
        with self._map(seg, seg.size) as mm:
            if mm is None:
                return 0, None
            for record, begin, stop in scan(mm, start, seg.size):
                if record is None:
                    if stop >= seg.size:
                        tail = begin
                else:
                    count += 1
        return count, tail

    def _cut_tail(self, seg: _Segment, at: int) -> None:
        lost = seg.size - at
        with self._map(seg, seg.size) as mm:
            if mm is not None:
                self._quarantine(seg, mm, at, seg.size, counted=False)
        self.torn_tails += 1
        self.skipped_bytes += lost
        log.error(
            "spool segment %s has a torn tail: %d bytes at offset %d moved to %s",
            seg.path, lost, at, self.directory / QUARANTINE_DIR,
        )  # fmt: skip
        with open(seg.path, "r+b") as fh:
            fh.truncate(at)
            fh.flush()
            os.fsync(fh.fileno())
        self._bytes -= lost
        seg.size = at

    def _migrate(self, seg: _Segment) -> None:
        """Rewrite a first-format segment (no file header) in the current format."""
        with open(seg.path, "rb") as fh:
            if fh.read(HEADER_BYTES) == SEGMENT_MAGIC:
                return
        data = seg.path.read_bytes()
        if SEGMENT_MAGIC.startswith(data):  # a header cut short: an empty segment
            payloads: list[bytes] = []
            good = len(data)
        else:
            payloads, good = _scan_v1(data)
        # Records before the cursor were published: the old offsets mean nothing now.
        done = self._cursor.pop(seg.id, 0)
        keep = []
        pos = 0
        for payload in payloads:
            pos += _V1_HEAD.size + len(payload)
            if pos > done:
                keep.append(payload)
        if good < len(data):
            self._write_quarantine(seg.id, good, data[good:])
            self.quarantined += 1
            self.skipped_bytes += len(data) - good
            log.error(
                "spool segment %s (first format) is damaged at offset %d: %d bytes moved to %s",
                seg.path, good, len(data) - good, self.directory / QUARANTINE_DIR,
            )  # fmt: skip
        body = SEGMENT_MAGIC + b"".join(frame(p) for p in keep)
        tmp = seg.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            _, err = _write_all(fd, body)
            if err is not None:
                raise err
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(seg.path)
        seg.size = len(body)
        log.warning(
            "spool segment %s migrated to the current format (%d records)", seg.path, len(keep)
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

    def _reset(self) -> None:
        """Delete every segment (the held journal excepted) and start an empty spool; the
        buffer is kept."""
        self._close_writer()
        for seg in self._segments:
            seg.path.unlink(missing_ok=True)
        self._segments = []
        self._bytes = self._held.size if self._held is not None else 0
        self._cursor = {}
        (self.directory / CURSOR_FILE).unlink(missing_ok=True)
        self._read_pos = None
        self._committed = None
        self._unread = 0
        self._uncommitted = 0
        self._new_segment = False

    # -- quarantine --------------------------------------------------------------------

    def _quarantine(
        self, seg: _Segment, buf: bytes | mmap.mmap, begin: int, end: int, *, counted: bool
    ) -> None:
        if (seg.id, begin) in self._quarantine_seen:
            return
        self._quarantine_seen.add((seg.id, begin))
        self._write_quarantine(seg.id, begin, bytes(buf[begin:end]))
        if counted:
            self.quarantined += 1
            self.skipped_bytes += end - begin
            log.error(
                "spool segment %s is damaged at offset %d: %d bytes skipped, kept in %s",
                seg.path, begin, end - begin, self.directory / QUARANTINE_DIR,
            )  # fmt: skip

    def _write_quarantine(self, seg_id: int, offset: int, data: bytes) -> None:
        qdir = self.directory / QUARANTINE_DIR
        try:
            qdir.mkdir(mode=DIR_MODE, exist_ok=True)
            path = qdir / f"{seg_id:020d}-{offset:012d}.bad"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("could not keep %d damaged spool bytes in %s: %s", len(data), qdir, exc)

    # -- writing -----------------------------------------------------------------------

    def room_for(self, size: int) -> bool:
        return self._bytes + self._buf_bytes + size <= self.max_bytes

    def append(self, record: Record) -> bool:
        """Append one record; False (nothing kept) when the spool is full or writes fail
        and the buffer is full (:attr:`failing` tells which)."""
        return self.append_encoded(encode_record(record))

    def append_encoded(self, data: bytes) -> bool:
        if self._closed:
            raise ValueError("spool is closed")
        if not self.room_for(len(data)):
            return False
        if self.failing is not None and self._buf_bytes + len(data) > self.buffer_max_bytes:
            self.refused += 1
            self._episode_refused += 1
            return False
        self._buf.append(data)
        self._buf_bytes += len(data)
        if self._buf_bytes >= WRITE_BUFFER_BYTES and self.failing is None:
            self.flush()
        return True

    def flush(self, *, force: bool = False) -> int:
        """Write the buffer to the segments; how many records were written.

        Never raises: a failed write keeps the records buffered and sets :attr:`failing`;
        while it is set, writes are tried again only after a backoff (or with ``force``).
        """
        if not self._buf or self._closed:
            return 0
        if self.failing is not None and not force and time.monotonic() < self._retry_at:
            return 0
        if self.failing is None:
            self._episode_written = 0
            self._episode_refused = 0
        written = 0
        try:
            written = self._write_buffer()
        except OSError as exc:
            self.write_errors += 1
            first = self.failing is None
            self.failing = exc
            if first:
                self._retry_wait = _RETRY_FIRST
                self._episode_written = 0  # written before the failure: not late
            else:
                self._retry_wait = min(self._retry_wait * 2, _RETRY_MAX)
            self._retry_at = time.monotonic() + self._retry_wait
            self._write_episode.fail(
                exc,
                f"{len(self._buf)} records ({self._buf_bytes} bytes) kept in memory, up to "
                f"{self.buffer_max_bytes} bytes; retrying in {self._retry_wait:.2f} s",
            )
        else:
            if self.failing is not None:
                self.failing = None
                self._write_episode.ok(
                    f"{self._episode_written} records written late, "
                    f"{self._episode_refused} refused (dropped, reason spool_error)"
                )
        return written

    def _write_buffer(self) -> int:
        written = 0
        try:
            while self._buf:
                seg = self._active()
                assert self._fd is not None
                room = self.segment_bytes - seg.size
                take = 0
                size = 0
                for data in self._buf:
                    if size + len(data) > room and (take or seg.size > HEADER_BYTES):
                        break
                    take += 1
                    size += len(data)
                if take == 0:
                    self._roll()
                    continue
                blob = b"".join(self._buf[:take])
                done, err = _write_all(self._fd, blob)
                whole = 0
                good = 0
                for data in self._buf[:take]:
                    if good + len(data) > done:
                        break
                    good += len(data)
                    whole += 1
                if done > good:
                    self._cut_back(seg, good)
                seg.size += good
                self._bytes += good
                del self._buf[:whole]
                self._buf_bytes -= good
                self._unread += whole
                written += whole
                if err is not None:
                    raise err
        finally:
            self._episode_written += written
            if written and self.on_written is not None:
                self.on_written(written)
        return written

    def _cut_back(self, seg: _Segment, good: int) -> None:
        """A write stopped inside a record: cut the segment back to its last whole record
        (or, if even that fails, start a new segment: the reader skips the stray bytes)."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, seg.size + good)
        except OSError:
            stray = os.fstat(self._fd).st_size - (seg.size + good)
            seg.size += stray
            self._bytes += stray
            self._roll()

    def _active(self) -> _Segment:
        if self._fd is None:
            if self._segments and not self._new_segment:
                seg = self._segments[-1]
                self._fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND)
            else:
                if self._segments:
                    seg_id = self._segments[-1].id + 1
                else:  # after the held journal, if there is one
                    seg_id = max(FIRST_SEGMENT_ID, self._held.id + 1 if self._held else 0)
                path = self.directory / _segment_name(seg_id)
                self._fd = _create(path)
                self._segments.append(_Segment(seg_id, path, HEADER_BYTES))
                self._bytes += HEADER_BYTES
                self._new_segment = False
                if len(self._segments) == 1:
                    self._fsync_dir()
        return self._segments[-1]

    def _roll(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
        self._close_writer()
        self._new_segment = True

    def _close_writer(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def sync(self) -> None:
        """Flush and fsync the active segment (survives a crash of the machine)."""
        self.flush(force=True)
        for fd in (self._fd, self._held_fd):
            if fd is not None:
                os.fsync(fd)

    def sync_handles(self) -> list[int]:
        """Flush and return duplicate descriptors of the files being written, for an fsync
        in another thread (the caller closes them)."""
        self.flush()
        return [os.dup(fd) for fd in (self._fd, self._held_fd) if fd is not None]

    def _lowest_id(self) -> int:
        ids = [seg.id for seg in self._segments]
        if self._held is not None:
            ids.append(self._held.id)
        return min(ids, default=FIRST_SEGMENT_ID)

    def _write_segment(self, seg_id: int, body: bytes) -> Path:
        """A whole new segment, fsynced, under its final name."""
        path = self.directory / _segment_name(seg_id)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            _, err = _write_all(fd, SEGMENT_MAGIC + body)
            if err is None:
                os.fsync(fd)
        finally:
            os.close(fd)
        if err is not None:
            tmp.unlink(missing_ok=True)
            raise err
        tmp.rename(path)
        self._fsync_dir()
        return path

    def prepend(self, records: Iterable[Record]) -> int:
        """Put ``records`` before everything in the spool; return how many it took.

        Only valid when nothing is read and uncommitted (at shutdown, after the publisher
        stopped). Records that do not fit under ``max_bytes`` are not written; nothing is
        when the write fails (0).
        """
        if self._uncommitted:
            raise ValueError("prepend while records are handed out")
        encoded: list[bytes] = []
        total = 0
        for record in records:
            data = encode_record(record)
            if not self.room_for(total + len(data) + HEADER_BYTES):
                break
            encoded.append(data)
            total += len(data)
        if not encoded:
            return 0
        self.flush(force=True)
        seg_id = self._lowest_id() - 1
        try:
            path = self._write_segment(seg_id, b"".join(encoded))
        except OSError as exc:
            log.error("spool %s: could not write %d records: %s", self.directory, len(encoded), exc)
            self.prepend_error = exc
            return 0
        self._segments.insert(0, _Segment(seg_id, path, total + HEADER_BYTES))
        self._bytes += total + HEADER_BYTES
        self._unread += len(encoded)
        self._read_pos = None
        return len(encoded)

    # -- the held journal --------------------------------------------------------------

    @property
    def holding(self) -> bool:
        return self._held is not None

    @property
    def held_path(self) -> Path | None:
        """The held journal's segment file, while there is one."""
        return self._held.path if self._held is not None else None

    def hold(self, records: Sequence[Record]) -> bool:
        """Append ``records`` to the held journal (a segment before all others that this
        process never reads; see the module documentation). False when they could not be
        written (no room, or a write error)."""
        if not records:
            return True
        body = b"".join(encode_record(r) for r in records)
        if not self.room_for(len(body) + HEADER_BYTES):
            self._hold_episode.fail(
                OSError(errno.ENOSPC, "the spool is at its size limit"),
                f"{len(records)} records held in memory have no copy",
            )
            return False
        try:
            if self._held is None or self._held_fd is None:
                seg_id = self._lowest_id() - 1
                path = self.directory / _segment_name(seg_id)
                self._held_fd = _create(path)
                self._held = _Segment(seg_id, path, HEADER_BYTES)
                self._bytes += HEADER_BYTES
                self._fsync_dir()
            done, err = _write_all(self._held_fd, body)
            if err is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._held_fd, self._held.size)
                    done = 0
                self._held.size += done
                self._bytes += done
                if self._held.size <= HEADER_BYTES:
                    self.release()  # nothing in it: no journal
                raise err
            self._held.size += len(body)
            self._bytes += len(body)
        except OSError as exc:
            self.write_errors += 1
            self._hold_episode.fail(exc, f"{len(records)} records held in memory have no copy")
            return False
        self._hold_episode.ok("records held in memory have a copy again")
        return True

    def release(self) -> None:
        """Delete the held journal (its records were published)."""
        if self._held_fd is not None:
            os.close(self._held_fd)
            self._held_fd = None
        if self._held is not None:
            self._held.path.unlink(missing_ok=True)
            self._bytes -= self._held.size
            self._held = None

    # -- reading -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _map(self, seg: _Segment, end: int) -> Iterator[mmap.mmap | None]:
        if end <= 0:
            yield None
            return
        with open(seg.path, "rb") as fh, mmap.mmap(fh.fileno(), end, access=mmap.ACCESS_READ) as mm:
            yield mm

    def _start_position(self) -> Position | None:
        if self._read_pos is not None:
            if self._find(self._read_pos.segment) is not None:
                return self._read_pos
            for seg in self._segments:  # its segment was published and deleted
                if seg.id > self._read_pos.segment:
                    return Position(seg.id, self._start_of(seg))
            return None
        if not self._segments:
            return None
        first = self._segments[0]
        return Position(first.id, self._start_of(first))

    def read(self, max_records: int, max_bytes: int = 1 << 20) -> list[tuple[Record, Position]]:
        """Up to ``max_records`` records after the read position, each with its end position.

        Damaged stretches met on the way are skipped and copied to ``quarantine/``.
        """
        out: list[tuple[Record, Position]] = []
        self.flush()
        pos = self._start_position()
        if self._unread == 0 or max_records <= 0 or pos is None:
            return out
        size = 0
        while True:
            seg = self._find(pos.segment)
            if seg is None:
                break
            offset = max(pos.offset, HEADER_BYTES)
            full = False
            if offset < seg.size:
                with self._map(seg, seg.size) as mm:
                    assert mm is not None
                    for record, begin, stop in scan(mm, offset, seg.size):
                        if record is None:
                            self._quarantine(seg, mm, begin, stop, counted=True)
                        else:
                            out.append((record, Position(seg.id, stop)))
                            size += len(record.value)
                        offset = stop
                        if len(out) >= max_records or size >= max_bytes:
                            full = True
                            break
            pos = Position(seg.id, offset)
            if full:
                break
            nxt = self._next(seg)
            if nxt is None:
                break
            pos = Position(nxt.id, self._start_of(nxt))
        self._read_pos = pos
        tail = self._segments[-1] if self._segments else None
        if tail is not None and pos.segment == tail.id and pos.offset >= tail.size:
            lost = self._unread - len(out)
            if lost > 0:  # everything is read: the rest was in damaged parts
                log.error("spool %s: %d records were lost to damage", self.directory, lost)
                self.lost += lost
                self._unread = len(out)
        self._unread -= len(out)
        self._uncommitted += len(out)
        return out

    def take_buffered(self) -> list[Record]:
        """The buffered records (not written yet), taken out of the spool. Only when
        :attr:`drained`: they are then the oldest records the spool has."""
        if not self.drained:
            raise ValueError("take_buffered while records on disk wait")
        records = [decode_payload(data[_HEAD.size :]) for data in self._buf]
        self._buf.clear()
        self._buf_bytes = 0
        if self.failing is not None:
            self.failing = None
            self._write_episode.ok(
                f"{self._episode_written} records written late, {len(records)} handed to Kafka "
                f"from memory, {self._episode_refused} refused (dropped, reason spool_error)"
            )
        return records

    def rewind(self) -> None:
        """Forget what was read but not committed: the next read starts after the commit."""
        self._unread += self._uncommitted
        self._uncommitted = 0
        self._read_pos = self._committed

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
        if self.drained:
            self._reset()  # frees the disk; buffered records start a new segment
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
        if seg is self._segments[-1]:
            self._close_writer()
        seg.path.unlink(missing_ok=True)
        self._segments.remove(seg)
        self._bytes -= seg.size
        self._cursor.pop(seg.id, None)

    def _write_cursor(self) -> None:
        path = self.directory / CURSOR_FILE
        tmp = path.with_suffix(".tmp")
        body = json.dumps({str(k): v for k, v in self._cursor.items()}).encode("utf-8")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            try:
                _, err = _write_all(fd, body)
            finally:
                os.close(fd)
            if err is not None:
                raise err
            tmp.replace(path)
        except OSError as exc:
            # The cursor stays right in memory; on disk it lags (duplicates after a crash).
            self._cursor_episode.fail(exc, "a restart would publish some records again")
        else:
            self._cursor_episode.ok("cursor saved")

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            with contextlib.suppress(OSError):
                os.fsync(fd)
        finally:
            os.close(fd)

    # -- closing -----------------------------------------------------------------------

    def close(self) -> int:
        """Write what is buffered, fsync, release the directory; how many buffered records
        could not be written (lost, and logged)."""
        if self._closed:
            return 0
        with contextlib.suppress(OSError):
            self.sync()
        unwritten = len(self._buf)
        if unwritten:
            log.error(
                "spool %s: %d records could not be written before closing (%s): lost",
                self.directory,
                unwritten,
                self.failing,
            )
        self._buf.clear()
        self._buf_bytes = 0
        self._closed = True
        self._close_writer()
        if self._held_fd is not None:
            os.close(self._held_fd)
            self._held_fd = None
        if self._segments and self._cursor:
            self._write_cursor()
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)
        return unwritten

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
