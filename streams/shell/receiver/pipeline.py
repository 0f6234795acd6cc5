"""From received records to Kafka: a bounded queue in memory, the spool on disk.

Where a record goes (:meth:`Pipeline.put`, called inline by the transports):

- to the memory queue while Kafka keeps up, the spool holds nothing and the queue has room;
- otherwise to the spool (spool mode). Spool mode starts when the queue is full, when
  Kafka is unreachable or a batch waits longer than ``slow_after`` seconds for its ack, or
  at start when the spool still holds records; on entering it (Kafka away) the queue is
  moved to the spool too, so that records wait on disk rather than in memory. It ends when
  every spooled record is published.

The publisher task takes *chunks* from the queue first (its records are always older than
the spool's) and from the spool when the queue is empty, keeps up to ``window`` chunks in
flight, and acknowledges them in order (committing spool positions). So records leave in
the order they arrived, per partition, across outages and restarts. A chunk leaves when
nothing is in flight and its first record has waited ``linger`` seconds, or when it is
full (``chunk_records``); while chunks are in flight, the next ack takes what arrived
meanwhile: batches grow with the load (each chunk costs the same, whatever its size).

Shutdown (:meth:`Pipeline.close`): the publisher gets ``timeout`` seconds to publish the
queue while Kafka is up; whatever is still in memory then (unacknowledged batches and the
queue) is *prepended* to the spool, before everything spooled earlier, and the next start
publishes it first.

Delivery: exactly once while the receiver runs (idempotent producer, see ``kafka.py``),
with two documented exceptions that give duplicates (at-least-once): a batch whose ack was
lost when the producer had to be replaced (fatal producer error) or when the receiver
stopped, and, after a machine crash, spool records published after the cursor was last
written to disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiokafka.errors import KafkaError

from streams.errors import BrokerUnavailable
from streams.shell.receiver.kafka import Chunk, KafkaOut
from streams.shell.receiver.metrics import Metrics
from streams.shell.receiver.record import Record
from streams.shell.receiver.spool import Spool, encode_record

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    queue_max_records: int = 200_000
    queue_max_bytes: int = 64 * 1024 * 1024
    # aiokafka has one produce request in flight per broker, with one batch (at most
    # MAX_BATCH_BYTES) per partition: a chunk fills a request, and the rate Kafka takes is
    # about a chunk per round trip.
    chunk_records: int = 20_000
    chunk_bytes: int = 4 * 1024 * 1024
    window: int = 4  # chunks in flight
    linger: float = 0.005  # seconds a first record may wait for company while none is in flight
    slow_after: float = 2.0  # seconds a batch may wait for its ack before spooling starts
    retry_backoff: float = 0.5  # seconds between reconnection attempts (doubling, max 5)
    flush_interval: float = 0.05  # spool: hand buffered records to the kernel
    fsync_interval: float = 1.0  # spool: fsync
    # Records in memory waiting this long for Kafka's ack get a copy in the spool's held
    # journal (then every flush_interval the newer ones), so a kill loses at most this.
    hold_after: float = 1.0


class LoudLog:
    """Log an ERROR the first time and then at most every ``every`` seconds, with a count."""

    def __init__(self, message: str, every: float = 10.0) -> None:
        self.message = message
        self.every = every
        self._last = -1e18
        self._since = 0

    def hit(self, n: int = 1) -> None:
        self._since += n
        now = time.monotonic()
        if now - self._last >= self.every:
            log.error("%s (%d since the last report)", self.message, self._since)
            self._last = now
            self._since = 0


class Pipeline:
    def __init__(
        self,
        out: KafkaOut,
        spool: Spool,
        metrics: Metrics,
        config: PipelineConfig | None = None,
    ) -> None:
        self.out = out
        self.spool = spool
        self.metrics = metrics
        self.config = config or PipelineConfig()
        self.queue: deque[Record] = deque()
        self.queue_bytes = 0
        self._queue_since = 0.0  # when the oldest queued record arrived (0: long ago)
        self._linger_left = 0.0  # set by _next_chunk: how long the queue may still wait
        self.inflight: deque[Chunk] = deque()
        self.kafka_ok = False
        self.spool_mode = not spool.empty
        self._stopping = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._busy_since: float | None = None
        self._room_waiters: list[Callable[[], None]] = []
        self._spool_full = LoudLog("spool full: dropping received messages (reason spool_full)")
        self._spool_error = LoudLog(
            "spool writes fail and its memory buffer is full: dropping received messages "
            "(reason spool_error)"
        )
        self._sync_error = LoudLog("spool fsync failed", 60.0)
        self._hold_tail: Record | None = None  # the newest record in the held journal
        self._hold_wait = 0.0  # after a failed journal write: the next try, and the backoff
        self._hold_backoff = 0.0
        spool.on_written = self._written
        metrics.spool = spool
        metrics.spool_bytes = lambda: self.spool.size_bytes
        metrics.queue_depth = self.depth
        metrics.kafka_up = lambda: self.kafka_ok

    # -- the hot path ------------------------------------------------------------------

    def put(self, record: Record) -> None:
        """Accept one record (never blocks, never raises)."""
        if not self.spool_mode:
            size = record.size
            cfg = self.config
            q = self.queue
            if len(q) < cfg.queue_max_records and self.queue_bytes + size <= cfg.queue_max_bytes:
                q.append(record)
                self.queue_bytes += size
                # Wake the publisher only when it has something worth doing: a first record
                # while nothing is in flight (it lingers), or a full chunk. Otherwise the
                # next ack wakes it and it takes all that arrived meanwhile.
                if len(q) == 1:
                    self._queue_since = time.monotonic()
                    if not self.inflight:
                        self._wake.set()
                elif len(q) >= cfg.chunk_records:
                    self._wake.set()
                return
            self._enter_spool_mode("the memory queue is full", move_queue=False)
        self._to_spool(record)

    def put_many(self, records: list[Record], size: int) -> None:
        """:meth:`put` of each record in turn (``size``: the sum of their ``size``), in one
        go when they all fit in the memory queue."""
        if not self.spool_mode:
            cfg = self.config
            q = self.queue
            was_empty = not q
            depth = len(q) + len(records)
            if depth <= cfg.queue_max_records and self.queue_bytes + size <= cfg.queue_max_bytes:
                q.extend(records)
                self.queue_bytes += size
                if was_empty and records:
                    self._queue_since = time.monotonic()
                    if not self.inflight:
                        self._wake.set()
                if depth >= cfg.chunk_records:
                    self._wake.set()
                return
        for record in records:
            self.put(record)

    def _to_spool(self, record: Record) -> None:
        try:
            ok = self.spool.append_encoded(encode_record(record))
        except (OSError, ValueError) as exc:  # ValueError: written after close
            log.error("spool write failed: %s", exc)
            ok = False
        if ok:
            if not self.inflight or self.spool.unread >= self.config.chunk_records:
                self._wake.set()
        elif self.spool.failing is not None:
            self.metrics.dropped["spool_error"] += 1
            self._spool_error.hit()
        else:
            self.metrics.dropped["spool_full"] += 1
            self._spool_full.hit()

    def _written(self, n: int) -> None:
        """The spool wrote ``n`` more records to disk."""
        self.metrics.spooled += n

    def depth(self) -> int:
        """Records held in memory: the queue, batches in flight, the spool's buffer."""
        return len(self.queue) + sum(len(c.records) for c in self.inflight) + self.spool.buffered

    def congested(self) -> bool:
        """The memory queue is three quarters full while Kafka keeps up (slower than the
        input, but acking): a transport that can hold its input a while (the native UDP
        reader thread) had better wait (:meth:`when_room`) than push the pipeline into
        spool mode, where every record costs a disk round trip."""
        cfg = self.config
        return (
            not self.spool_mode
            and self.kafka_ok
            and (
                len(self.queue) * 4 >= cfg.queue_max_records * 3
                or self.queue_bytes * 4 >= cfg.queue_max_bytes * 3
            )
        )

    def when_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, when the queue is no longer :meth:`congested` (or spool
        mode starts), or at the next spool tick at the latest (``flush_interval``)."""
        self._room_waiters.append(callback)

    def _room(self, *, tick: bool = False) -> None:
        if self._room_waiters and (tick or not self.congested()):
            waiters, self._room_waiters = self._room_waiters, []
            for callback in waiters:
                callback()

    def _enter_spool_mode(self, why: str, *, move_queue: bool) -> None:
        if not self.spool_mode:
            log.warning("spooling to %s: %s", self.spool.directory, why)
            self.spool_mode = True
        if move_queue and self.spool.empty and self.queue:
            # The spool is empty, so the queue (older) may go to its tail in order.
            tail = self._hold_tail
            if tail is not None and any(r is tail for r in self.queue):
                # The held journal's newest record goes to the spool: what stays in memory
                # (batches in flight, older) is all in the journal.
                mem = [c.records for c in self.inflight if c.origin == "memory" and c.records]
                self._hold_tail = mem[-1][-1] if mem else None
            while self.queue:
                self._to_spool(self.queue.popleft())
            self.queue_bytes = 0
        self._room()

    def _kafka_down(self, why: str) -> None:
        if self.kafka_ok:
            log.warning("Kafka at %s is not keeping up: %s", self.out.bootstrap, why)
        self.kafka_ok = False
        self._enter_spool_mode(why, move_queue=True)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tunnelwatch-publisher")
        self._ticker = asyncio.create_task(self._tick(), name="tunnelwatch-spool-ticker")

    async def close(self, timeout: float = 10.0) -> None:
        """Publish what is in memory (up to ``timeout`` s), spool the rest, stop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                log.warning("shutdown: Kafka did not take everything within %.0f s", timeout)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        # Let the producer deliver what it holds (briefly), then see what is left.
        await self.out.stop(timeout=2.0)
        self._reap()
        leftovers: list[Record] = []
        for chunk in self.inflight:
            if chunk.origin != "memory":
                continue  # still in the spool: not committed
            if not chunk.batches:
                leftovers += chunk.records
            for batch in chunk.batches:
                fut = batch.future
                if fut is None or not fut.done() or fut.cancelled() or fut.exception():
                    leftovers += batch.records
        leftovers += self.queue
        self.inflight.clear()
        self.queue.clear()
        self.queue_bytes = 0
        self.spool.rewind()
        kept = 0
        if leftovers:
            kept = self.spool.prepend(leftovers)
            self.metrics.spooled += kept
            log.warning("shutdown: %d records from memory written to the spool", kept)
        if kept == len(leftovers):
            self._release()
        elif self._hold_tail is not None:
            log.warning(
                "shutdown: %d records from memory could not be written to the spool; the held "
                "journal keeps what it had of them (the next start publishes it, some records "
                "perhaps twice)",
                len(leftovers) - kept,
            )
        else:
            why = "spool_error" if self.spool.prepend_error is not None else "spool_full"
            self.metrics.dropped[why] += len(leftovers) - kept
            log.error(
                "shutdown: %d records from memory lost (%s)",
                len(leftovers) - kept,
                self.spool.prepend_error or "spool full",
            )
        unwritten = self.spool.close()
        self.metrics.dropped["spool_error"] += unwritten

    # -- the publisher -----------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._publish()
                return
            except Exception:  # a bug must not stop publishing for good
                log.exception("publisher failed: replacing the producer and going on")
                self.metrics.publish_errors += 1
                self._kafka_down("publisher failure")
                await self.out.reset()
                for chunk in self.inflight:
                    self.out.forget_pending(chunk)
                await asyncio.sleep(self.config.retry_backoff)

    async def _publish(self) -> None:
        backoff = self.config.retry_backoff
        while True:
            if self._stopping and (not self.kafka_ok or (not self.inflight and not self.queue)):
                return
            if not self.out.started:
                if not await self._connect():
                    await self._pause(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = self.config.retry_backoff
            if not self.out.alive() or any(c.failed() for c in self.inflight):
                await self._replace_producer()
                continue
            self._reap()
            pending = next((c for c in self.inflight if c.unsent()), None)
            if pending is not None:
                if not await self._submit(pending):
                    await self._pause(backoff)
                continue
            if len(self.inflight) < self.config.window:
                chunk = self._next_chunk()
                if chunk is not None:
                    self.inflight.append(chunk)
                    await self._submit(chunk)
                    continue
                if self._linger_left > 0:
                    await self._pause(self._linger_left)
                    continue
            self._wake.clear()
            await self._wake.wait()

    async def _connect(self) -> bool:
        self._busy_since = time.monotonic()
        try:
            await self.out.start()
        except BrokerUnavailable as exc:
            self.metrics.publish_errors += 1
            self._kafka_down(f"cannot connect ({exc})")
            return False
        finally:
            self._busy_since = None
        log.info("connected to Kafka at %s, topic %s", self.out.bootstrap, self.out.topic)
        self.kafka_ok = True
        for chunk in self.inflight:
            self.out.forget_pending(chunk)
        return True

    async def _replace_producer(self) -> None:
        self.metrics.publish_errors += 1
        errors = [b.future.exception() for c in self.inflight for b in c.failed() if b.future]
        log.error(
            "the Kafka producer failed (%s): replacing it and sending unacknowledged batches "
            "again (duplicates possible)",
            errors[0] if errors else "sender task ended",
        )
        self._kafka_down("producer failure")
        await self.out.reset()
        for chunk in self.inflight:
            self.out.forget_pending(chunk)

    async def _submit(self, chunk: Chunk) -> bool:
        self._busy_since = time.monotonic()
        try:
            await self.out.submit(chunk)
        except (KafkaError, BrokerUnavailable) as exc:
            self.metrics.publish_errors += 1
            self._kafka_down(f"produce failed ({type(exc).__name__}: {exc})")
            return False
        finally:
            self._busy_since = None
        for batch in chunk.batches:
            if batch.future is not None:
                batch.future.add_done_callback(self._on_ack)
        return True

    def _on_ack(self, _fut: object) -> None:
        self._wake.set()

    def _reap(self) -> None:
        metrics = self.metrics
        while self.inflight and self.inflight[0].done() and not self.inflight[0].failed():
            chunk = self.inflight.popleft()
            n = len(chunk.records)
            metrics.published += n
            metrics.latency.observe(time.monotonic() - chunk.submitted_at, n)
            if chunk.origin == "spool":
                self.spool.commit(chunk.token, n)
            elif self._hold_tail is not None and any(r is self._hold_tail for r in chunk.records):
                self._release()  # everything in the held journal is published
            if not self.kafka_ok:
                log.info("Kafka at %s is back", self.out.bootstrap)
            self.kafka_ok = True
        if self.spool_mode and self.kafka_ok and self.spool.drained:
            # What the spool could not write yet (a full or failing disk) is the newest:
            # it goes on from memory.
            late = self.spool.take_buffered()
            if late:
                if not self.queue:
                    self._queue_since = time.monotonic()
                self.queue.extend(late)
                self.queue_bytes = sum(r.size for r in self.queue)
                self._wake.set()
            log.warning("spool drained: back to the memory queue")
            self.spool_mode = False

    def _next_chunk(self) -> Chunk | None:
        cfg = self.config
        self._linger_left = 0.0
        q = self.queue
        if q:
            if len(q) < cfg.chunk_records and not self._stopping:
                if self.inflight:
                    return None  # wait for an ack (or a full chunk): bigger batches under load
                left = self._queue_since + cfg.linger - time.monotonic()
                if left > 0:
                    self._linger_left = left
                    return None  # nothing in flight: wait a little for more records
            if len(q) <= cfg.chunk_records and self.queue_bytes <= cfg.chunk_bytes:
                # All of it (what the loop below would take, record by record).
                records = list(q)
                q.clear()
                self.queue_bytes = 0
                self._room()
                return Chunk(records, "memory")
            records = []
            size = 0
            popleft = q.popleft
            while q and len(records) < cfg.chunk_records and size < cfg.chunk_bytes:
                r = popleft()
                records.append(r)
                size += len(r[0]) + len(r[1]) + 64  # Record.size
            self.queue_bytes -= size
            self._queue_since = 0.0  # what is left waited already
            self._room()
            return Chunk(records, "memory")
        if self._stopping or (not self.kafka_ok and self.inflight):
            return None
        if self.inflight and self.spool.unread < cfg.chunk_records:
            return None  # as for the queue: the next ack comes first
        got = self.spool.read(cfg.chunk_records, cfg.chunk_bytes)
        if not got:
            return None
        return Chunk([r for r, _ in got], "spool", token=got[-1][1])

    # -- the held journal: what memory holds while Kafka does not ack -------------------

    def _memory(self) -> list[Sequence[Record]]:
        """Records held in memory (not in the spool), oldest first, in pieces."""
        pieces: list[Sequence[Record]] = [c.records for c in self.inflight if c.origin == "memory"]
        pieces.append(self.queue)
        return pieces

    def _stalled(self, now: float) -> bool:
        """Kafka has not acked the oldest record in memory for ``hold_after`` seconds."""
        if not self.kafka_ok and self.queue:
            return True
        for chunk in self.inflight:
            if chunk.origin == "memory":
                if not chunk.submitted_at:
                    return not self.kafka_ok
                return now - chunk.submitted_at > self.config.hold_after
        return False

    def _hold(self, now: float) -> None:
        """Copy the records in memory that have no copy yet to the spool's held journal,
        once Kafka has not acked for ``hold_after`` (then at every tick while it lasts);
        delete the journal when memory no longer holds any of them."""
        holding = self._hold_tail is not None
        if (not holding and not self._stalled(now)) or now < self._hold_wait:
            return
        pieces = self._memory()
        if not any(pieces):
            if holding:
                self._release()
            return
        new: list[Record] = []
        tail = self._hold_tail
        found = False
        for piece in reversed(pieces):
            for record in reversed(piece):
                if record is tail:
                    found = True
                    break
                new.append(record)
            if found:
                break
        if not new:
            return
        new.reverse()
        if self.spool.hold(new):
            self._hold_tail = new[-1]
            self.metrics.held += len(new)
            self._hold_backoff = 0.0
        else:  # no room or a write error: try again later, not at every tick
            self._hold_backoff = min(max(self._hold_backoff * 2, 0.25), 5.0)
            self._hold_wait = now + self._hold_backoff

    def _release(self) -> None:
        self._hold_tail = None
        if self.spool.holding:
            self.spool.release()

    async def _pause(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _tick(self) -> None:
        """Spool flush/fsync and the slow-Kafka watchdog."""
        cfg = self.config
        last_sync = time.monotonic()
        while True:
            await asyncio.sleep(cfg.flush_interval)
            now = time.monotonic()
            self._hold(now)
            try:
                if now - last_sync >= cfg.fsync_interval:
                    last_sync = now
                    for fd in self.spool.sync_handles():
                        try:
                            await asyncio.to_thread(os.fsync, fd)
                        finally:
                            os.close(fd)
                else:
                    self.spool.flush()  # the spool retries failed writes with a backoff
            except OSError as exc:
                self._sync_error.hit()
                log.debug("spool fsync failed: %s", exc)
            self._room(tick=True)
            stuck = self._busy_since
            if self.inflight and self.inflight[0].submitted_at:
                oldest = self.inflight[0].submitted_at
                stuck = oldest if stuck is None else min(stuck, oldest)
            if stuck is not None and now - stuck > cfg.slow_after:
                self._kafka_down(f"no ack for {now - stuck:.1f} s")
