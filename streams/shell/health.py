"""Pipeline health of the worker, as Prometheus metrics computed from Kafka.

``tunnelwatch worker --metrics HOST:PORT`` serves these from a thread of its own (its own
event loop and Kafka clients), so the worker's processing code is untouched. Every scrape
reads the state of the worker's consumer group and of its topics (cached for a second):

===============================================  ==========================================
``tunnelwatch_worker_raw_records_total``         records on syslog.raw (end offsets)
``tunnelwatch_worker_records_total``             records of syslog.raw the group committed
                                                 (rate(): records/s processed)
``tunnelwatch_worker_lag``                       records of syslog.raw not committed yet
``tunnelwatch_worker_incident_updates_total``    records on vpn.incidents
``tunnelwatch_worker_open_incidents{cause,severity}``  incidents whose latest state is open
``tunnelwatch_worker_scrape_errors_total``       scrapes that could not reach Kafka
===============================================  ==========================================
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from typing import Any

import orjson
from aiohttp import web

from streams.shell.topics import partition_counts

P = "tunnelwatch_worker_"
_CACHE_S = 1.0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class WorkerHealth:
    """Reads the group's offsets and follows the incidents topic."""

    def __init__(self, bootstrap: str, group: str, raw_topic: str, incidents_topic: str) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.raw_topic = raw_topic
        self.incidents_topic = incidents_topic
        self.raw_total = 0
        self.committed = 0
        self.lag = -1
        self.updates = 0
        self.scrape_errors = 0
        self.open: dict[str, tuple[str, str]] = {}
        self._consumer: Any = None
        self._assigned: list[Any] = []
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def _offsets(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        counts = await partition_counts(self.bootstrap, [self.raw_topic, self.incidents_topic])
        raw = [TopicPartition(self.raw_topic, p) for p in range(counts.get(self.raw_topic, 0))]
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            committed = await admin.list_consumer_group_offsets(self.group)
        finally:
            await admin.close()
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False
            )
            await self._consumer.start()
        consumer = self._consumer
        ends = await consumer.end_offsets(raw) if raw else {}
        done = {tp: int(m.offset) for tp, m in committed.items() if tp.topic == self.raw_topic}
        self.raw_total = sum(int(v) for v in ends.values())
        self.committed = sum(max(done.get(tp, 0), 0) for tp in raw)
        self.lag = (
            sum(max(int(end) - max(done.get(tp, 0), 0), 0) for tp, end in ends.items())
            if done
            else -1
        )
        incidents = [
            TopicPartition(self.incidents_topic, p)
            for p in range(counts.get(self.incidents_topic, 0))
        ]
        if incidents and incidents != self._assigned:
            consumer.assign(incidents)
            await consumer.seek_to_beginning(*incidents)
            self._assigned = incidents
            self.open.clear()
            self.updates = 0
        if not self._assigned:
            return
        tail = await consumer.end_offsets(self._assigned)
        while True:
            behind = [tp for tp in self._assigned if await consumer.position(tp) < tail[tp]]
            if not behind:
                break
            batches = await consumer.getmany(*self._assigned, timeout_ms=200)
            for messages in batches.values():
                for m in messages:
                    self.updates += 1
                    with contextlib.suppress(orjson.JSONDecodeError, TypeError, KeyError):
                        rec = orjson.loads(m.value)
                        iid = str(rec["incident_id"])
                        if rec.get("status") == "resolved":
                            self.open.pop(iid, None)
                        else:
                            self.open[iid] = (str(rec["cause"]), str(rec["severity"]))

    async def refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._at < _CACHE_S:
                return
            try:
                await self._offsets()
            except Exception:
                self.scrape_errors += 1
            self._at = time.monotonic()

    def render(self) -> str:
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {P}{name} {help_}")
            lines.append(f"# TYPE {P}{name} {kind}")
            lines.extend(f"{P}{name}{labels} {value}" for labels, value in samples)

        metric("raw_records_total", "counter", "Records on the raw topic.", [("", self.raw_total)])
        metric("records_total", "counter", "Raw records the worker group committed.",
               [("", self.committed)])  # fmt: skip
        metric("lag", "gauge", "Raw records not committed yet (-1: nothing committed).",
               [("", self.lag)])  # fmt: skip
        metric("incident_updates_total", "counter", "Records on the incidents topic.",
               [("", self.updates)])  # fmt: skip
        metric(
            "open_incidents",
            "gauge",
            "Incidents whose latest state is open, by cause and severity.",
            [
                (f'{{cause="{_escape(c)}",severity="{_escape(s)}"}}', n)
                for (c, s), n in sorted(Counter(self.open.values()).items())
            ],
        )
        metric("scrape_errors_total", "counter", "Scrapes that could not reach Kafka.",
               [("", self.scrape_errors)])  # fmt: skip
        return "\n".join(lines) + "\n"

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


def app(health: WorkerHealth) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        await health.refresh()
        return web.Response(text=health.render(), content_type="text/plain", charset="utf-8")

    application = web.Application()
    application.router.add_get("/metrics", metrics)
    return application


class HealthServer:
    """``/metrics`` served from a daemon thread with its own event loop."""

    def __init__(self, health: WorkerHealth, host: str, port: int) -> None:
        self.health = health
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> HealthServer:
        """Returns once bound (raises OSError when the address is taken)."""
        bound = threading.Event()
        errors: list[BaseException] = []

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            runner = web.AppRunner(app(self.health), access_log=None)
            await runner.setup()
            try:
                await web.TCPSite(runner, self.host, self.port).start()
            except OSError as exc:
                errors.append(exc)
                bound.set()
                await runner.cleanup()
                return
            bound.set()
            try:
                await self._stop.wait()
            finally:
                await self.health.close()
                await runner.cleanup()

        self._thread = threading.Thread(
            target=asyncio.run, args=(main(),), daemon=True, name="metrics"
        )
        self._thread.start()
        bound.wait(30)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)


def serve_in_thread(health: WorkerHealth, host: str, port: int) -> HealthServer:
    """Serve ``/metrics`` until the process ends (or :meth:`HealthServer.stop`)."""
    return HealthServer(health, host, port).start()
