"""The notifier: a consumer group of its own on vpn.incidents, sending to the sinks.

At start it reads the whole topic once, without a group, to learn the fleet's newest
event time (the newest ``last_seen``) and the state of every incident already handled
(the records before the group's committed offsets): open incidents that were sent go
back into the set of alerts re-posted to Alertmanager. Then it consumes from the
committed offsets:

- every record is decided on its own: older than ``max_age`` behind the fleet's newest
  event time (a replay) → recorded, not sent, and said once per incident; else routed to
  the sinks whose matchers take it. An incident once sent is always sent again (its
  updates and its resolve), however old.
- a record goes to each of its sinks until the sink accepts (retries with backoff and
  jitter, see :func:`~streams.shell.notify.sinks.deliver`); only then is its offset
  committed. A notifier stopped or crashed while a sink is down sends the same records
  again when it comes back: at least once, and each delivery carries the same dedup key
  for the same state (Alertmanager's labels, PagerDuty's ``dedup_key``, the webhook's
  ``X-Tunnelwatch-Delivery``).
- open alerts are posted again every ``repost_interval`` so that Alertmanager's resolve
  timeout never ends one; a resolved incident is posted with ``endsAt`` and forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import orjson

from streams.core.alerting import event_time, is_replay, matches
from streams.core.operator import OperatorState, suppressed_by
from streams.errors import BrokerUnavailable
from streams.shell.notify.config import NotifyConfig
from streams.shell.notify.sinks import AlertmanagerSink, DeliveryError, Sink, deliver, make_sink
from streams.shell.topics import OPERATOR_TOPIC, TopicSpec, ensure_topics, partition_counts

log = logging.getLogger(__name__)

DEFAULT_GROUP = "tunnelwatch-notify"
_POLL_MS = 500
_MAX_RECORDS = 200
#: A sink may be down for long: the group must not drop a member that is retrying.
_MAX_POLL_INTERVAL_MS = 7 * 24 * 3600 * 1000
_REPOST_CHUNK = 500


def _stderr(text: str) -> None:
    print(f"tunnelwatch notify: {text}", file=sys.stderr, flush=True)


@dataclass
class NotifyStats:
    """Counters of one notifier, rendered as Prometheus text by the metrics server."""

    records: int = 0
    bad_records: int = 0
    sent: Counter[str] = field(default_factory=Counter)
    not_sent: Counter[str] = field(default_factory=Counter)  # replay, unrouted
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)  # (sink, reason)
    retries: Counter[str] = field(default_factory=Counter)
    reposts: Counter[str] = field(default_factory=Counter)
    committed: int = 0
    # incident_id -> (cause, severity) of every incident whose latest state is not resolved
    open_incidents: dict[str, tuple[str, str]] = field(default_factory=dict)
    fleet_newest: datetime | None = None


class Notifier:
    """Reads ``topic`` in consumer group ``group_id`` and sends to ``config``'s sinks."""

    def __init__(
        self,
        config: NotifyConfig,
        bootstrap: str,
        topic: str,
        group_id: str = DEFAULT_GROUP,
        *,
        max_age: float | None,
        operator_topic: str | None = OPERATOR_TOPIC,
        say: Callable[[str], None] = _stderr,
    ) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self.topic = topic
        self.group_id = group_id
        self.max_age = max_age
        self.operator_topic = operator_topic
        self.ops = OperatorState()
        self.say = say
        self.stats = NotifyStats()
        self.sinks: dict[str, Sink] = {}
        # Alerts re-posted while open, per Alertmanager sink: incident_id -> record.
        self.open_alerts: dict[str, dict[str, dict[str, Any]]] = {}
        self.sent_ids: set[str] = set()
        self.replay_ids: set[str] = set()
        self.suppressed_said: set[tuple[str, str]] = set()
        self.ready = asyncio.Event()
        self._consumer: Any = None

    # -- decisions -------------------------------------------------------------------

    def _observe(self, rec: Mapping[str, Any]) -> None:
        ts = event_time(rec)
        if self.stats.fleet_newest is None or ts > self.stats.fleet_newest:
            self.stats.fleet_newest = ts
        iid = str(rec["incident_id"])
        if rec.get("status") == "resolved":
            self.stats.open_incidents.pop(iid, None)
        else:
            self.stats.open_incidents[iid] = (str(rec["cause"]), str(rec["severity"]))

    def targets(self, rec: Mapping[str, Any]) -> list[str]:
        """The sinks a record goes to (route order, each once)."""
        out: list[str] = []
        for route in self.config.routes:
            if matches(rec, route.match):
                out.extend(s for s in route.sinks if s not in out)
        return out

    def _is_replay(self, rec: Mapping[str, Any]) -> bool:
        if str(rec["incident_id"]) in self.sent_ids:
            return False  # its updates and its resolve follow what was sent
        return is_replay(rec, self.stats.fleet_newest, self.max_age)

    def _remember(self, sink: Sink, rec: dict[str, Any]) -> None:
        if not isinstance(sink, AlertmanagerSink):
            return
        alerts = self.open_alerts.setdefault(sink.name, {})
        if rec.get("status") == "resolved":
            alerts.pop(str(rec["incident_id"]), None)
        else:
            alerts[str(rec["incident_id"])] = rec

    # -- start: learn the topic ------------------------------------------------------

    async def _committed(self) -> dict[tuple[str, int], int]:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            # A broker just started may not have its group coordinator yet.
            for attempt in range(60):
                try:
                    offsets = await admin.list_consumer_group_offsets(self.group_id)
                    break
                except Exception as exc:
                    if not getattr(exc, "retriable", False) or attempt == 59:
                        raise
                    await asyncio.sleep(0.5)
        finally:
            await admin.close()
        return {(tp.topic, tp.partition): int(m.offset) for tp, m in offsets.items()}

    async def _learn(self) -> None:
        """Read the topic to its end: the fleet's newest time, and what was handled."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        counts = await partition_counts(self.bootstrap, [self.topic])
        tps = [TopicPartition(self.topic, p) for p in range(counts.get(self.topic, 0))]
        if not tps:
            return
        committed = await self._committed()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        handled: dict[str, dict[str, Any]] = {}
        try:
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            while True:
                behind = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
                if not behind:
                    break
                batches = await consumer.getmany(*behind, timeout_ms=_POLL_MS)
                for tp, messages in batches.items():
                    done = committed.get((tp.topic, tp.partition), 0)
                    for m in messages:
                        if m.offset >= ends[tp]:
                            continue
                        rec = _decode(m.value)
                        if rec is None:
                            continue
                        with contextlib.suppress(ValueError, KeyError):
                            event_time(rec)
                            if m.offset < done:
                                self._observe(rec)
                                handled[str(rec["incident_id"])] = rec
                            else:
                                ts = event_time(rec)
                                newest = self.stats.fleet_newest
                                if newest is None or ts > newest:
                                    self.stats.fleet_newest = ts
        finally:
            await consumer.stop()
        for iid, rec in handled.items():
            if rec.get("status") == "resolved" or self._is_replay(rec):
                continue
            self.sent_ids.add(iid)
            for name in self.targets(rec):
                self._remember(self.sinks[name], rec)
        reposted = sum(len(a) for a in self.open_alerts.values())
        newest_text = self.stats.fleet_newest.isoformat() if self.stats.fleet_newest else "-"
        self.say(
            f"{self.topic}: fleet's newest event time {newest_text}; {len(handled)} incidents "
            f"already handled by group {self.group_id}, {reposted} open alerts to keep posting"
        )

    # -- operator state (silences, maintenance windows) -----------------------------

    async def _follow_operator(self, synced: asyncio.Event, stop: asyncio.Event) -> None:
        """Read the operator topic to its end (then ``synced``), and keep following it."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        assert self.operator_topic is not None
        await ensure_topics(
            self.bootstrap, [TopicSpec(self.operator_topic, 1, {"cleanup.policy": "compact"})]
        )
        counts = await partition_counts(self.bootstrap, [self.operator_topic])
        tps = [TopicPartition(self.operator_topic, p) for p in range(counts[self.operator_topic])]
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            while not stop.is_set():
                batches = await consumer.getmany(*tps, timeout_ms=_POLL_MS)
                for messages in batches.values():
                    for m in messages:
                        value = _decode(m.value) if m.value is not None else None
                        if m.key is None or (m.value is not None and value is None):
                            continue
                        self.ops.apply(m.key.decode("utf-8", "replace"), value)
                if not synced.is_set():
                    positions = [await consumer.position(tp) for tp in tps]
                    if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                        synced.set()
        finally:
            await consumer.stop()

    # -- the loop --------------------------------------------------------------------

    async def handle(self, rec: dict[str, Any], stop: asyncio.Event) -> bool:
        """Send one record to its sinks; False when stopped before every sink accepted."""
        self._observe(rec)
        iid = str(rec["incident_id"])
        if self._is_replay(rec):
            self.stats.not_sent["replay"] += 1
            if iid not in self.replay_ids:
                self.replay_ids.add(iid)
                assert self.stats.fleet_newest is not None
                self.say(
                    f"not sent (replay: last_seen {rec['last_seen']} is more than "
                    f"{self.max_age:.0f}s behind the fleet's newest "
                    f"{self.stats.fleet_newest.isoformat()}): {iid} {rec['device']} "
                    f"{rec['cause']} {rec['status']}"
                )
            return True
        why = suppressed_by(rec, self.ops)
        if why is not None and not (rec.get("status") == "resolved" and iid in self.sent_ids):
            self.stats.not_sent["suppressed"] += 1
            if (iid, why) not in self.suppressed_said:
                self.suppressed_said.add((iid, why))
                self.say(f"not sent (suppressed by {why}): {iid} {rec['device']} {rec['cause']}")
            return True
        targets = self.targets(rec)
        if not targets:
            self.stats.not_sent["unrouted"] += 1
            return True
        self.sent_ids.add(iid)
        for name in targets:
            sink = self.sinks[name]

            def on_retry(exc: DeliveryError, delay: float, sink: Sink = sink) -> None:
                self.stats.retries[sink.name] += 1
                self.stats.failures[(sink.name, "retried")] += 1
                self.say(f"{sink.name}: {exc}; retrying {iid} in {delay:.1f}s")

            task = asyncio.ensure_future(deliver(sink, rec, on_retry=on_retry))
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if task not in done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return False
            error = task.result()
            if error is not None:
                self.stats.failures[(sink.name, "rejected")] += 1
                self.say(f"{sink.name}: gave up on {iid} ({rec['status']}): {error}")
                continue
            self.stats.sent[sink.name] += 1
            self._remember(sink, rec)
        return True

    async def _repost_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.repost_interval)
            if stop.is_set():
                return
            await self.repost()

    async def repost(self) -> None:
        """Post every open alert again (one request per chunk); failures wait for the next
        round."""
        for name, alerts in list(self.open_alerts.items()):  # handle() may add a sink
            sink = self.sinks[name]
            assert isinstance(sink, AlertmanagerSink)
            records = list(alerts.values())
            for i in range(0, len(records), _REPOST_CHUNK):
                chunk = [sink.alert(r) for r in records[i : i + _REPOST_CHUNK]]
                try:
                    await sink.post_alerts(chunk)
                    self.stats.reposts[name] += len(chunk)
                except DeliveryError as exc:
                    self.stats.failures[(name, "repost")] += 1
                    self.say(f"{name}: re-posting {len(chunk)} open alerts failed: {exc}")
                    break

    async def lag(self) -> int:
        """Records of the topic this member has not committed yet (its assignment)."""
        consumer = self._consumer
        if consumer is None:
            return -1
        total = 0
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            committed = await consumer.committed(tp)
            if high is not None:
                total += max(int(high) - int(committed or 0), 0)
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set."""
        from aiokafka import AIOKafkaConsumer
        from aiokafka.errors import CommitFailedError, KafkaError

        async with aiohttp.ClientSession() as session:
            self.sinks = {s.name: make_sink(s, self.config, session) for s in self.config.sinks}
            synced = asyncio.Event()
            follower: asyncio.Future[None] | None = None
            if self.operator_topic is None:
                synced.set()
            else:
                follower = asyncio.ensure_future(self._follow_operator(synced, stop))
                waiter = asyncio.ensure_future(synced.wait())
                await asyncio.wait({follower, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if follower.done():
                    exc = follower.exception()
                    if exc is not None:
                        raise BrokerUnavailable(f"cannot read {self.operator_topic}: {exc}")
                    return  # stopped before it started
            try:
                await self._learn()
            except Exception as exc:
                raise BrokerUnavailable(f"cannot read {self.topic}: {exc}") from exc
            consumer = AIOKafkaConsumer(
                self.topic,
                bootstrap_servers=self.bootstrap,
                group_id=self.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_interval_ms=_MAX_POLL_INTERVAL_MS,
            )
            try:
                await consumer.start()
            except Exception as exc:
                await consumer.stop()
                raise BrokerUnavailable(f"cannot reach Kafka at {self.bootstrap}: {exc}") from exc
            self._consumer = consumer
            reposter = asyncio.ensure_future(self._repost_loop(stop))
            self.ready.set()
            started = time.monotonic()
            self.say(
                f"reading {self.topic} as group {self.group_id}; sinks: "
                + ", ".join(f"{s.name} ({s.type} {s.url})" for s in self.config.sinks)
                + f"; max-age {'none' if self.max_age is None else f'{self.max_age:.0f}s'}"
            )
            try:
                while not stop.is_set():
                    batches = await consumer.getmany(timeout_ms=_POLL_MS, max_records=_MAX_RECORDS)
                    for tp, messages in batches.items():
                        last = None
                        for m in messages:
                            self.stats.records += 1
                            rec = _decode(m.value)
                            if rec is None or not _valid(rec):
                                self.stats.bad_records += 1
                                self.say(
                                    f"skipping {tp.topic}:{tp.partition}@{m.offset}: "
                                    "not an incident record"
                                )
                                last = m.offset
                                continue
                            if not await self.handle(rec, stop):
                                break
                            last = m.offset
                        if last is not None:
                            try:
                                await consumer.commit({tp: last + 1})
                                self.stats.committed += 1
                            except (CommitFailedError, KafkaError) as exc:
                                # A rebalance took the partition: its next owner sends
                                # these records again (at least once).
                                self.say(f"commit of {tp.topic}:{tp.partition} failed: {exc}")
                        if stop.is_set():
                            break
            finally:
                reposter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reposter
                if follower is not None:
                    follower.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await follower
                self._consumer = None
                await consumer.stop()
                elapsed = time.monotonic() - started
                self.say(
                    f"stopped after {elapsed:.0f}s: records={self.stats.records} "
                    f"sent={sum(self.stats.sent.values())} "
                    f"replay_not_sent={self.stats.not_sent['replay']} "
                    f"bad={self.stats.bad_records}"
                )


def _decode(value: bytes | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        rec = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) else None


_REQUIRED = ("incident_id", "device", "cause", "severity", "status", "first_seen", "last_seen")


def _valid(rec: Mapping[str, Any]) -> bool:
    if not all(isinstance(rec.get(k), str) for k in _REQUIRED):
        return False
    try:
        event_time(rec)
    except ValueError:
        return False
    return True
