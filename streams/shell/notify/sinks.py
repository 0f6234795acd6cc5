"""The notifier's sinks: Alertmanager API v2 and signed webhooks (record or PagerDuty).

A sink makes one attempt per :meth:`Sink.send` and raises :class:`DeliveryError` when the
other end did not accept; :func:`deliver` retries with exponential backoff and jitter
until it does (or until the sink's ``retry.attempts`` are spent, when they are limited).
A 4xx answer other than 408 and 429 means the sink will never take that payload: it is
not retried, and the caller counts it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp
import orjson

from streams.core.alerting import (
    alertmanager_alert,
    backoff_delay,
    pagerduty_event,
    signature,
)
from streams.shell.notify.config import SIGNATURE_HEADER, NotifyConfig, SinkConfig

log = logging.getLogger(__name__)

DELIVERY_HEADER = "X-Tunnelwatch-Delivery"
INCIDENT_HEADER = "X-Tunnelwatch-Incident"


class DeliveryError(Exception):
    """The sink did not accept; ``retriable`` tells whether trying again can help."""

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable


def delivery_key(rec: Mapping[str, Any]) -> str:
    """Same incident, same state, same key: what a receiver dedupes repeated deliveries by."""
    text = f"{rec['incident_id']}|{rec['status']}|{rec['count']}|{rec['last_seen']}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class Sink:
    """One configured destination."""

    def __init__(
        self, cfg: SinkConfig, config: NotifyConfig, session: aiohttp.ClientSession
    ) -> None:
        self.cfg = cfg
        self.config = config
        self.session = session

    @property
    def name(self) -> str:
        return self.cfg.name

    async def _post(self, url: str, body: bytes, headers: Mapping[str, str]) -> None:
        try:
            async with self.session.post(
                url,
                data=body,
                headers={"Content-Type": "application/json", **headers},
                timeout=aiohttp.ClientTimeout(total=self.cfg.timeout),
            ) as resp:
                if 200 <= resp.status < 300:
                    await resp.read()
                    return
                text = (await resp.text(errors="replace"))[:200]
                retriable = resp.status >= 500 or resp.status in (408, 429)
                raise DeliveryError(f"HTTP {resp.status}: {text.strip()}", retriable=retriable)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}", retriable=True) from exc

    async def send(self, rec: Mapping[str, Any]) -> None:
        raise NotImplementedError


class AlertmanagerSink(Sink):
    """``POST {url}/api/v2/alerts``; open alerts are posted again by :meth:`repost`."""

    def alert(self, rec: Mapping[str, Any]) -> dict[str, Any]:
        return alertmanager_alert(rec, self.config.templates, self.config.board_url)

    async def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        url = self.cfg.url.rstrip("/") + "/api/v2/alerts"
        await self._post(url, orjson.dumps(list(alerts)), {})

    async def send(self, rec: Mapping[str, Any]) -> None:
        await self.post_alerts([self.alert(rec)])


class WebhookSink(Sink):
    """The incident record (or a PagerDuty Events API v2 event) as JSON, signed with
    HMAC-SHA256 in ``X-Tunnelwatch-Signature`` when a secret is configured."""

    def body(self, rec: Mapping[str, Any]) -> bytes:
        if self.cfg.format == "pagerduty":
            assert self.cfg.routing_key is not None  # the config requires it
            event = pagerduty_event(
                rec, self.cfg.routing_key, self.config.templates, self.config.board_url
            )
            return orjson.dumps(event)
        return orjson.dumps(dict(rec))

    async def send(self, rec: Mapping[str, Any]) -> None:
        body = self.body(rec)
        headers = {DELIVERY_HEADER: delivery_key(rec), INCIDENT_HEADER: str(rec["incident_id"])}
        if self.cfg.secret is not None:
            headers[SIGNATURE_HEADER] = signature(self.cfg.secret, body)
        await self._post(self.cfg.url, body, headers)


def make_sink(cfg: SinkConfig, config: NotifyConfig, session: aiohttp.ClientSession) -> Sink:
    if cfg.type == "alertmanager":
        return AlertmanagerSink(cfg, config, session)
    return WebhookSink(cfg, config, session)


async def deliver(
    sink: Sink,
    rec: Mapping[str, Any],
    *,
    on_retry: Callable[[DeliveryError, float], None],
    draw: Callable[[], float] = random.random,
) -> DeliveryError | None:
    """Send until the sink accepts: None then, else the error that ended the attempts
    (not retriable, or ``retry.attempts`` spent). ``on_retry`` hears of every wait."""
    retry = sink.cfg.retry
    attempt = 0
    while True:
        try:
            await sink.send(rec)
            return None
        except DeliveryError as exc:
            if not exc.retriable or (retry.attempts and attempt + 1 >= retry.attempts):
                return exc
            delay = backoff_delay(attempt, retry.initial, retry.maximum, draw())
            on_retry(exc, delay)
            await asyncio.sleep(delay)
            attempt += 1
