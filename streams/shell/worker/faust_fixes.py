"""Runtime fixes for faust-streaming defects that break the worker's guarantees, and
every other access the worker makes to faust's or mode's private names.

This is the ONE module that reaches into faust-streaming and mode-streaming: their
private names change between releases without notice, so both are pinned exactly in
``pyproject.toml`` (:data:`SUPPORTED`), and :func:`check_versions` refuses to start the
worker with any other version, naming the supported ones. Everything else (``app.py``,
``inbox.py``) goes through faust's public API or the functions here
(:func:`event_context`, :func:`aiokafka_producer`, :func:`drain_messages`,
:func:`stop_within`). The tests of this module drive real faust objects.

Applied once, before the app starts (:func:`apply`). Each fix names the symptom it
removes and is covered by a test against the real broker.

Duplicate acks stall offset commits
    faust keeps, per partition, the list of acked offsets and commits the first run of
    consecutive offsets in it (``Consumer._new_offset``). After a restart that recovers
    a table, the same offset can be acked twice (measured here: every offset of the
    partitions that had a committed offset, ``acked = [911, 912, 912, 913, 913, …]``).
    A repeated offset ends the "consecutive" run, so each commit moved the group by one
    or two offsets: the records were processed, but the group never caught up, and a
    later restart would replay nearly everything. The fix removes repeated offsets
    before faust looks for the run.

A hole at the head of the acked offsets stalls commits for good
    After two rebalances in a row (a worker restarted while the group still counted its
    killed predecessor: one rebalance when it joins, one when the dead member's session
    expires), records fetched before the second assignment can be delivered after it.
    They move faust's read position past the committed offset, so the records between
    the two are never delivered again in this generation: their acks are missing, faust
    never commits past the hole (faust-streaming #318 / robinhood/faust #681, open), and
    the group's lag never drains. :func:`heal_holes` finds such a hole when it has
    outlived a whole check interval with nothing in flight below it, and seeks the
    partition back to its committed offset: the records are delivered again, the acks
    fill the hole, commits resume. Re-delivery is harmless here: device states skip
    events at or before their stored offset, and incident records are idempotent.
    When the records given up were the partition's last ones, no later ack reveals the
    hole: :func:`find_stalls` finds a read position at or past the committed offset
    with none of the records since then waiting, in flight or acked, and the healer
    seeks back the same way.

Four tasks per record in the consumer's delivery loop (speed)
    For every record, faust's consumer races "hand the record to the streams" against
    "flow suspended by a rebalance" with ``Service.wait_first``, which wraps both, plus
    the service's stopped and crashed events, in tasks and ``asyncio.wait``s on them. A
    no-op faust agent topped out at 9.9k records/s here. Handing a record over almost
    never blocks (it is a put into a queue with room), so the consumer's ``wait_first``
    first runs the hand-over inline: when it completes without blocking, and nothing was
    suspended, stopped or crashed, that is the race's only possible outcome, returned
    as such. When it blocks, the started hand-over continues as a task and is raced
    exactly as faust does.

Per-record sensor bookkeeping (speed)
    faust's default ``Monitor`` counts, times and string-keys every record four times
    (message in, stream event in and out, message out) for a web page this worker does
    not serve. :class:`QuietMonitor` keeps everything else (lag, commits, tables) and
    skips those four: a no-op faust agent went from 15.4k to 17.3k records/s here.

The whole per-record stream, for the parse agent (speed)
    Even so, a no-op faust agent costs 58 µs a record here, of the 89 µs the worker
    spent at 10k msg/s, and the workers fell behind. The consumer's delivery loop is
    replaced by :func:`drain_messages` when the app has an
    inbox (``app.tunnelwatch_inbox``): records of the inbox's topics go to it as one
    list per partition and fetch, the others take faust's path. The inbox module's
    docstring says how offsets, rebalances and back-pressure keep faust's guarantees.

Fetches that wait 1.5 s for idle partitions (latency)
    faust builds its aiokafka consumer with ``fetch_max_wait_ms=1500``. aiokafka keeps
    one fetch in flight per broker, and leaves out of it the partitions whose fetched
    records were not taken yet. When the busy partitions were left out, the broker held
    the fetch of the idle ones (reroute, assignor) for up to 1.5 s, and the busy
    partitions waited behind it. On a 10k msg/s run the worker fell into that rhythm
    in half the runs: fetches of 3,000 records a partition every second, and detection
    p99 about 2 s instead of 0.1 s. The consumer is built with the app's
    ``tunnelwatch_fetch_max_wait_ms`` instead, when it has one.

A table write per record and per device (speed, with many devices)
    A faust table sends each write to its changelog as it is made. The worker's states
    change with every record, and a fleet of 100k devices each speaking now and then
    made one state write per record. The app stores its states itself: the store, and
    the changelog as whole batches, once per device per commit, from a hook the
    consumer awaits before it commits offsets (``app.tunnelwatch_before_commit``,
    installed on ``Consumer._commit_offsets``): offsets are never committed past a
    record whose state is not in the changelog, which at-least-once needs (the same
    writes the Kafka Streams record cache makes per commit interval).

A commit a second, whatever it costs (speed, with many devices)
    With 100k devices under load, nearly every record changes another device between
    two commits a second apart. The app may put a periodic commit off
    (``app.tunnelwatch_put_off_commit()``, asked by ``Consumer._commit_tps`` before
    faust takes the acked offsets out of its lists: asked after, those offsets would
    leave a hole at the head of the list and no commit would go through again). A
    stopping consumer's last commit is never put off.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import types
import weakref
from collections.abc import Generator, Iterator, Mapping
from importlib import metadata
from typing import Any

from streams.errors import ConfigError

#: The exact versions whose private names this module was written and tested against
#: (pinned to the same in pyproject.toml).
SUPPORTED = {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1"}


class UnsupportedFaust(ConfigError):
    """The installed faust-streaming or mode-streaming is not the supported version."""


def check_versions(installed: Mapping[str, str | None] | None = None) -> None:
    """Raise :class:`UnsupportedFaust` unless the installed faust-streaming and
    mode-streaming are exactly :data:`SUPPORTED` (``installed``: the versions to check,
    default those of this environment; None for a package that is missing)."""
    if installed is None:
        found: dict[str, str | None] = {}
        for name in SUPPORTED:
            try:
                found[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                found[name] = None
        installed = found
    wrong = {n: installed.get(n) for n, v in SUPPORTED.items() if installed.get(n) != v}
    if wrong:
        have = ", ".join(f"{n} {v or 'not installed'}" for n, v in sorted(wrong.items()))
        want = ", ".join(f"{n}=={v}" for n, v in sorted(SUPPORTED.items()))
        raise UnsupportedFaust(
            f"the worker supports exactly {want} (it patches their internals); found "
            f"{have}. Install the pinned versions: pip install -e . (or make install)"
        )


@contextlib.contextmanager
def event_context(event: Any) -> Iterator[None]:
    """Make ``event`` faust's current event for the block: a table write files itself
    under the current event's partition (its changelog partition, and a RocksDB
    store's)."""
    from faust.streams import _current_event

    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def aiokafka_producer(app: Any) -> Any:
    """The started aiokafka producer under faust's producer (``app.producer``): batches
    sent on it are covered by faust's flush before each offset commit."""
    return app.producer._ensure_producer()


_applied = False
#: Repeated acked offsets removed since the process started (for the stats line).
duplicate_acks = 0


def _dedupe_acks(new_offset: Any) -> Any:
    def _new_offset(self: Any, tp: Any) -> Any:
        global duplicate_acks
        acked = self._acked[tp]
        if acked:
            unique = sorted(set(acked))
            if len(unique) != len(acked):
                duplicate_acks += len(acked) - len(unique)
                acked[:] = unique
        return new_offset(self, tp)

    _new_offset.__wrapped__ = new_offset  # type: ignore[attr-defined]
    return _new_offset


def find_holes(consumer: Any, topics: set[str]) -> dict[Any, tuple[int, int]]:
    """Partitions of ``topics`` whose acked offsets start above the committed offset
    while no record below that start is still being processed: tp → (committed, first
    acked)."""
    holes: dict[Any, tuple[int, int]] = {}
    for tp, acked in list(consumer._acked.items()):
        if tp.topic not in topics or not acked:
            continue
        committed = consumer._committed_offset.get(tp)
        if committed is None:
            continue
        first = min(acked)
        if first <= committed:
            continue
        in_flight = any(
            m.tp == tp and m.offset < first and not m.acked
            for m in list(consumer._unacked_messages)
        )
        if not in_flight:
            holes[tp] = (committed, first)
    return holes


def find_stalls(
    consumer: Any, topics: set[str], waiting: frozenset[Any] = frozenset()
) -> dict[Any, tuple[int, int]]:
    """Partitions of ``topics`` read up to or past their committed offset whose records
    since that offset are nowhere: none waiting (``waiting``: the partitions with
    records in the inbox), none in flight, none acked. They were given up at a
    rebalance after the read position had moved past them, and nothing later will be
    acked to reveal the hole: tp → (committed, read)."""
    stalls: dict[Any, tuple[int, int]] = {}
    for tp, read in list(consumer._read_offset.items()):
        if tp.topic not in topics or read is None or tp in waiting:
            continue
        committed = consumer._committed_offset.get(tp)
        if committed is None or read < committed:
            continue
        if read == committed:
            # Either the record at the committed offset was read and given up, or
            # nothing was read since a seek (faust sets the read position to the
            # committed offset): a stall only if there is something to read.
            try:
                end = consumer.highwater(tp)
            except Exception:  # revoked meanwhile
                continue
            if end is None or end <= committed:
                continue
        if any(o >= committed for o in consumer._acked.get(tp) or ()):
            continue
        if any(m.tp == tp and not m.acked for m in list(consumer._unacked_messages)):
            continue
        stalls[tp] = (committed, read)
    return stalls


def records_behind(consumer: Any, topics: set[str]) -> int | None:
    """Records of ``topics`` on the assigned partitions that the consumer has not read
    yet, by the end offsets of its last fetches (None: not known yet)."""
    behind = 0
    for tp in list(consumer.assignment()):
        if tp.topic not in topics:
            continue
        try:
            end = consumer.highwater(tp)
        except Exception:  # revoked meanwhile
            continue
        read = consumer._read_offset.get(tp)
        if end is None:
            return None
        if read is None:
            if end > 0:
                return None
            continue
        behind += max(0, end - 1 - read)
    return behind


class HoleHealer:
    """Seeks a partition back to its committed offset when :func:`find_holes` or
    :func:`find_stalls` reports the same hole twice in a row (see the module
    docstring)."""

    def __init__(self, topics: set[str], say: Any) -> None:
        self.topics = topics
        self.say = say
        self.previous: dict[Any, tuple[int, int]] = {}
        self.previous_stalls: dict[Any, tuple[int, int]] = {}
        self.seeks = 0

    async def check(self, consumer: Any, waiting: frozenset[Any] = frozenset()) -> None:
        holes = find_holes(consumer, self.topics)
        stalls = find_stalls(consumer, self.topics, waiting)
        for tp, (committed, first) in holes.items():
            if self.previous.get(tp) == (committed, first):
                why = "never acknowledged after a rebalance"
                await self._seek_back(consumer, tp, committed, first - 1, why)
        for tp, (committed, read) in stalls.items():
            if tp not in holes and self.previous_stalls.get(tp) == (committed, read):
                why = "read but never acknowledged (given up at a rebalance)"
                await self._seek_back(consumer, tp, committed, read, why)
        self.previous, self.previous_stalls = holes, stalls

    async def _seek_back(self, consumer: Any, tp: Any, committed: int, last: int, why: str) -> None:
        self.say(
            f"{tp.topic}:{tp.partition}: offsets {committed}..{last} were {why}; "
            f"reading them again from {committed}"
        )
        await consumer.seek(tp, committed)
        self.seeks += 1


@types.coroutine
def _go_on(coro: Any, pending: Any) -> Generator[Any, Any, Any]:
    """Continue a coroutine that was stepped by hand until its first suspension.

    ``pending`` is what it yielded (the future it waits for): handed to the task that
    runs this generator, which resumes it, and so on until the coroutine returns.
    """
    while True:
        try:
            sent = yield pending
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # cancellation and errors go into the coroutine
            try:
                pending = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                pending = coro.send(sent)
            except StopIteration as stop:
                return stop.value


async def _rest(coro: Any, pending: Any) -> Any:
    return await _go_on(coro, pending)


def _eager_wait_first(wait_first: Any, results: Any) -> Any:
    async def eager(self: Any, *coros: Any, timeout: Any = None) -> Any:
        if (
            len(coros) != 2
            or timeout is not None
            or not all(asyncio.iscoroutine(c) for c in coros)
            or self.suspend_flow.is_set()
            or self._stopped.is_set()
            or self._crashed.is_set()
        ):
            return await wait_first(self, *coros, timeout=timeout)
        first, other = coros
        try:
            pending = first.send(None)
        except StopIteration as stop:
            other.close()
            return results([first], [stop.value], False)
        except BaseException:
            other.close()
            raise
        return await wait_first(self, _rest(first, pending), other, timeout=timeout)

    eager.__wrapped__ = wait_first  # type: ignore[attr-defined]
    return eager


def quiet_monitor() -> type:
    """The :class:`faust.sensors.monitor.Monitor` subclass described in the module
    docstring (built on demand: importing faust is the worker's business only)."""
    from faust.sensors.monitor import Monitor

    class QuietMonitor(Monitor):
        def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
            return None

        def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
            return None

        def on_stream_event_out(
            self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
        ) -> None:
            return None

        def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
            return None

    return QuietMonitor


async def drain_messages(consumer: Any, fetcher: Any, inbox: Any) -> None:
    """faust's ``Consumer._drain_messages`` with the inbox's topics delivered as lists.

    Same loop as faust's (fetch, skip records already read, report gaps, stop the
    fetch at a rebalance, seek back when the flow is stopped), by partition instead of
    faust's round-robin over records.
    """
    from faust.transport.consumer import CONSUMER_FETCHING

    callback = consumer.callback
    consumer_should_stop = consumer._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    read_offsets = consumer._read_offset
    set_flag = consumer.diag.set_flag
    unset_flag = consumer.diag.unset_flag
    commit_every = consumer._commit_every
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    to_message = consumer._to_message
    app = consumer.app
    mine = inbox.topics
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            records, active = await consumer._wait_next_records(1.0)
            await consumer.sleep(0)
            if records is None or consumer.should_stop:
                unset_flag(CONSUMER_FETCHING)
                continue
            if not consumer.flow_active:
                # As faust's getmany: records fetched while the flow stopped are
                # dropped, and the positions go back to the committed offsets.
                try:
                    await consumer.perform_seek()
                except Exception as exc:
                    consumer.log.warning(f"exception performing seek when flow not active {exc}")
                unset_flag(CONSUMER_FETCHING)
                continue
            generation = app.consumer_generation_id
            for tp, recs in records.items():
                if not consumer.flow_active or app.consumer_generation_id != generation:
                    break
                if (
                    active is not None
                    and tp not in active
                    and tp not in consumer._buffered_partitions
                ):
                    continue
                app.monitor.track_tp_end_offset(tp, consumer.highwater(tp))
                batch = tp.topic in mine
                messages: list[Any] = []
                r_offset = read_offsets[tp]
                for record in recs:
                    offset = record.offset
                    if r_offset is not None and offset < r_offset:
                        continue  # read before (faust drops these too)
                    gap = offset - (r_offset or 0)
                    if gap > 1 and r_offset and acks_enabled_for(tp.topic):
                        await consumer._add_gap(tp, r_offset + 1, offset)
                    r_offset = offset
                    if batch:
                        messages.append(to_message(tp, record))
                        continue
                    if commit_every is not None and consumer._n_acked >= commit_every:
                        consumer._n_acked = 0
                        await consumer.commit()
                    await consumer.wait_first(
                        callback(to_message(tp, record)), consumer.suspend_flow.wait()
                    )
                    read_offsets[tp] = offset
                if messages:
                    before = read_offsets[tp]
                    if not await inbox.put(messages, consumer):
                        break
                    if read_offsets[tp] == before:
                        read_offsets[tp] = messages[-1].offset
                    # else a seek moved the read position while the list waited: the
                    # seek's position stands (the list's records come again: harmless).
            unset_flag(CONSUMER_FETCHING)
    except consumer.consumer_stopped_errors:
        if consumer.transport.app.should_stop:
            consumer.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if consumer.transport.app.should_stop:
            consumer.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        consumer.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)


def _inbox_drain(drain: Any) -> Any:
    async def _drain_messages(self: Any, fetcher: Any) -> None:
        inbox = getattr(self.app, "tunnelwatch_inbox", None)
        if inbox is None:
            return await drain(self, fetcher)  # type: ignore[no-any-return]
        await drain_messages(self, fetcher, inbox)

    _drain_messages.__wrapped__ = drain  # type: ignore[attr-defined]
    return _drain_messages


def _short_fetch_wait(create: Any) -> Any:
    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        wait_ms = getattr(self.app, "tunnelwatch_fetch_max_wait_ms", None)
        if wait_ms is not None:
            # Read by AIOKafkaConsumer.start() when it builds its Fetcher.
            consumer._fetch_max_wait_ms = int(wait_ms)
        return consumer

    _create_worker_consumer.__wrapped__ = create  # type: ignore[attr-defined]
    return _create_worker_consumer


def stop_within(worker: Any, grace: float, say: Any) -> None:
    """Bound the stop a signal starts to ``grace`` seconds.

    faust's stop waits for the producer to flush, and a publish being retried (broker
    away, a partition without enough replicas: faust's producer retries for 20 minutes)
    kept the worker from exiting on SIGTERM. Past ``grace`` the process exits at once:
    that is safe, as a kill -9 is (only acknowledged offsets are committed; the rest is
    read again at the next start).
    """
    schedule = worker._schedule_shutdown

    def _schedule_shutdown(sig: Any) -> None:
        if not getattr(worker, "_tunnelwatch_deadline", None):

            def exit_now() -> None:
                say(
                    f"stop did not finish in {grace:.0f} s (a publish is being retried?): "
                    "exiting now; records not yet committed are read again at the next start"
                )
                os._exit(0)

            timer = threading.Timer(grace, exit_now)
            timer.daemon = True
            timer.start()
            worker._tunnelwatch_deadline = timer
        schedule(sig)

    worker._schedule_shutdown = _schedule_shutdown


def _before_commit(commit_offsets: Any) -> Any:
    async def _commit_offsets(self: Any, offsets: Any, start_new_transaction: bool = True) -> Any:
        hook = getattr(self.app, "tunnelwatch_before_commit", None)
        if hook is not None:
            # The app stores what the offsets about to be committed cover (the worker's
            # device states) before they are: a commit never runs ahead of the state.
            await hook()
        return await commit_offsets(self, offsets, start_new_transaction=start_new_transaction)

    _commit_offsets.__wrapped__ = commit_offsets  # type: ignore[attr-defined]
    return _commit_offsets


def _put_off_commits(commit_tps: Any) -> Any:
    """``Consumer._commit_tps``, which the app may tell to commit nothing this time
    (``app.tunnelwatch_put_off_commit()`` true): decided before faust takes the acked
    offsets it is about to commit out of its lists (``_new_offset``), so that the next
    commit still covers them. The last commit of a stopping consumer (faust ends its
    transactions then) is never put off."""

    async def _commit_tps(self: Any, tps: Any, start_new_transaction: bool) -> bool:
        put_off = getattr(self.app, "tunnelwatch_put_off_commit", None)
        if put_off is not None and start_new_transaction and not self.should_stop and put_off():
            return False
        return bool(await commit_tps(self, tps, start_new_transaction=start_new_transaction))

    _commit_tps.__wrapped__ = commit_tps  # type: ignore[attr-defined]
    return _commit_tps


def apply() -> None:
    """Install the fixes (idempotent)."""
    global _applied
    if _applied:
        return
    check_versions()
    from faust.transport.consumer import Consumer
    from mode.services import Service, WaitResults

    Consumer._new_offset = _dedupe_acks(Consumer._new_offset)  # type: ignore[method-assign]
    Consumer._drain_messages = _inbox_drain(Consumer._drain_messages)  # type: ignore[method-assign]
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    AIOKafkaConsumerThread._create_worker_consumer = _short_fetch_wait(  # type: ignore[method-assign]
        AIOKafkaConsumerThread._create_worker_consumer
    )
    Consumer.wait_first = _eager_wait_first(Service.wait_first, WaitResults)  # type: ignore[method-assign]
    Consumer._commit_offsets = _before_commit(Consumer._commit_offsets)  # type: ignore[method-assign]
    Consumer._commit_tps = _put_off_commits(Consumer._commit_tps)  # type: ignore[method-assign]
    _applied = True


__all__ = [
    "SUPPORTED",
    "HoleHealer",
    "UnsupportedFaust",
    "aiokafka_producer",
    "apply",
    "check_versions",
    "drain_messages",
    "duplicate_acks",
    "event_context",
    "find_holes",
    "find_stalls",
    "quiet_monitor",
    "records_behind",
    "stop_within",
]
