"""What the board and the notifier read: the latest incidents and the operator state.

:class:`Feed` reads ``vpn.incidents`` and ``vpn.operator`` from the beginning (no consumer
group: every board sees everything) and keeps the latest record of every incident, the
history of its evidence count, and the :class:`~streams.core.operator.OperatorState`.
Listeners hear of every change. :func:`publish_operator` writes one operator record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from streams.core.alerting import event_time
from streams.core.operator import OperatorState, suppressed_by
from streams.core.stories import join_stories
from streams.shell.topics import partition_counts

log = logging.getLogger(__name__)

_POLL_MS = 300
HISTORY_MAX = 200

Listener = Callable[[str, Any], None]


def _decode(value: bytes | None) -> Any:
    if value is None:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return ...  # not JSON: skipped by the caller


class Feed:
    """Follows the incidents and operator topics; ``ready`` once both were read to the
    end offsets of the moment it started."""

    def __init__(self, bootstrap: str, incidents_topic: str, operator_topic: str) -> None:
        self.bootstrap = bootstrap
        self.incidents_topic = incidents_topic
        self.operator_topic = operator_topic
        self.incidents: dict[str, dict[str, Any]] = {}
        self.history: dict[str, list[tuple[str, int, str]]] = {}
        self.ops = OperatorState()
        self.skipped = 0
        self.ready = asyncio.Event()
        self.listeners: list[Listener] = []

    # -- views -------------------------------------------------------------------------

    def state_of(self, rec: Mapping[str, Any]) -> tuple[str, str | None]:
        """(state shown, why suppressed): ``suppressed`` wins over the record's status."""
        try:
            why = suppressed_by(rec, self.ops)
        except (ValueError, KeyError):
            why = None
        return ("suppressed" if why else str(rec.get("status"))), why

    def view(self, rec: Mapping[str, Any]) -> dict[str, Any]:
        """What the list shows of an incident."""
        state, why = self.state_of(rec)
        ack = self.ops.acks.get(str(rec["incident_id"]))
        return {
            "incident_id": rec["incident_id"],
            "device": rec.get("device"),
            "peer": rec.get("peer"),
            "cause": rec.get("cause"),
            "title": rec.get("title") or rec.get("cause"),
            "severity": rec.get("severity"),
            "status": rec.get("status"),
            "state": state,
            "suppressed_by": why,
            "count": rec.get("count"),
            "confidence": rec.get("confidence"),
            "first_seen": rec.get("first_seen"),
            "last_seen": rec.get("last_seen"),
            "ack": {"user": ack.get("user"), "note": ack.get("note"), "at": ack.get("at")}
            if ack
            else None,
        }

    def views(self) -> list[dict[str, Any]]:
        return [self.view(r) for r in self.incidents.values()]

    def detail(self, iid: str) -> dict[str, Any] | None:
        """An incident with its related incidents (both ends of the tunnel) and history."""
        if iid not in self.incidents:
            return None
        records = [dict(r, related=list(r.get("related") or [])) for r in self.incidents.values()]
        join_stories(records)
        rec = next(r for r in records if r["incident_id"] == iid)
        related = [self.view(self.incidents[o]) for o in rec["related"] if o in self.incidents]
        return {
            "record": rec,
            "view": self.view(rec),
            "related": related,
            "history": list(self.history.get(iid, [])),
        }

    # -- reading -----------------------------------------------------------------------

    def _notify(self, kind: str, payload: Any) -> None:
        for listener in list(self.listeners):
            try:
                listener(kind, payload)
            except Exception:  # a listener's failure is its own
                log.exception("board listener failed")

    def apply_incident(self, value: Any) -> dict[str, Any] | None:
        if not isinstance(value, dict) or not isinstance(value.get("incident_id"), str):
            self.skipped += 1
            return None
        try:
            event_time(value)
        except (ValueError, KeyError):
            self.skipped += 1
            return None
        iid = value["incident_id"]
        self.incidents[iid] = value
        hist = self.history.setdefault(iid, [])
        point = (str(value["last_seen"]), int(value.get("count") or 0), str(value.get("status")))
        if not hist or hist[-1] != point:
            hist.append(point)
            del hist[:-HISTORY_MAX]
        return value

    def apply_operator(self, key: bytes | None, value: Any) -> bool:
        if key is None or value is ...:
            self.skipped += 1
            return False
        if value is not None and not isinstance(value, dict):
            self.skipped += 1
            return False
        return self.ops.apply(key.decode("utf-8", "replace"), value)

    async def run(self, stop: asyncio.Event) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        topics = [self.incidents_topic, self.operator_topic]
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        try:
            counts: dict[str, int] = {}
            while not stop.is_set():
                counts = await partition_counts(self.bootstrap, topics)
                if len(counts) == len(topics):
                    break
                self.ready.set()  # nothing to show yet; the topics come with the stack
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
            if stop.is_set():
                return
            tps = [TopicPartition(t, p) for t in topics for p in range(counts[t])]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            caught_up = False
            while not stop.is_set():
                batches = await consumer.getmany(*tps, timeout_ms=_POLL_MS)
                ops_changed = False
                for tp, messages in batches.items():
                    for m in messages:
                        value = _decode(m.value)
                        if tp.topic == self.operator_topic:
                            ops_changed |= self.apply_operator(m.key, value)
                        else:
                            rec = self.apply_incident(value)
                            if rec is not None and caught_up:
                                self._notify("incident", self.view(rec))
                if ops_changed and caught_up:
                    self._notify("snapshot", self.views())
                if not caught_up:
                    positions = [await consumer.position(tp) for tp in tps]
                    if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                        caught_up = True
                        self.ready.set()
                        self._notify("snapshot", self.views())
        finally:
            await consumer.stop()


async def publish_operator(
    producer: Any, topic: str, key: str, value: Mapping[str, Any] | None
) -> None:
    """One operator record (None: a tombstone), acknowledged by every replica."""
    data = None if value is None else orjson.dumps(dict(value))
    await producer.send_and_wait(topic, value=data, key=key.encode("utf-8"))
