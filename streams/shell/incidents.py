"""Reading ``vpn.incidents``: every record is a full incident state, keyed by incident_id.

:func:`snapshot` reads the topic from the beginning up to the end offsets of the moment
and keeps the latest record per incident_id; :func:`follow` yields records as they come.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import orjson

from streams.errors import BrokerUnavailable
from streams.shell.topics import partition_counts

_POLL_MS = 500


def decode(value: bytes | None) -> dict[str, Any] | None:
    """One incident record, or None (with a note on stderr) when it is not one."""
    if value is None:
        return None
    try:
        rec = orjson.loads(value)
    except orjson.JSONDecodeError:
        print("tunnelwatch: skipping a record that is not JSON", file=sys.stderr)
        return None
    if not isinstance(rec, dict) or "incident_id" not in rec:
        print("tunnelwatch: skipping a record that is not an incident", file=sys.stderr)
        return None
    return rec


async def _consumer(bootstrap: str, topic: str) -> tuple[Any, list[Any]]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    counts = await partition_counts(bootstrap, [topic])
    tps = [TopicPartition(topic, p) for p in range(counts.get(topic, 0))]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    try:
        await consumer.start()
    except Exception as exc:
        await consumer.stop()
        raise BrokerUnavailable(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    if tps:
        consumer.assign(tps)
    return consumer, tps


async def snapshot(bootstrap: str, topic: str) -> dict[str, dict[str, Any]]:
    """Latest record per incident_id of everything the topic holds now."""
    latest: dict[str, dict[str, Any]] = {}
    consumer, tps = await _consumer(bootstrap, topic)
    try:
        if not tps:
            return latest
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while True:
            behind = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
            if not behind:
                break
            batches = await consumer.getmany(*tps, timeout_ms=_POLL_MS)
            for messages in batches.values():
                for m in messages:
                    rec = decode(m.value)
                    if rec is not None:
                        latest[rec["incident_id"]] = rec
        return latest
    finally:
        await consumer.stop()


async def follow(
    bootstrap: str, topic: str, *, from_beginning: bool
) -> AsyncIterator[dict[str, Any]]:
    """Every record from the beginning (or from now on), forever."""
    consumer, tps = await _consumer(bootstrap, topic)
    try:
        while not tps:  # the topic does not exist yet: wait for it
            await consumer.stop()
            await asyncio.sleep(1.0)
            consumer, tps = await _consumer(bootstrap, topic)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        while True:
            batches = await consumer.getmany(*tps, timeout_ms=_POLL_MS)
            for messages in batches.values():
                for m in messages:
                    rec = decode(m.value)
                    if rec is not None:
                        yield rec
    finally:
        await consumer.stop()


def ordered(records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The order ``analyze`` prints in."""
    return sorted(records.values(), key=lambda r: (r["first_seen"], r["device"], r["cause"]))
