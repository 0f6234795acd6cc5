"""The notifier's Prometheus metrics (text format 0.0.4), served at ``/metrics``.

=======================================================  =======================================
``tunnelwatch_notify_records_total``                     incident records read
``tunnelwatch_notify_bad_records_total``                 records that are not incidents (skipped)
``tunnelwatch_notify_sent_total{sink}``                  deliveries a sink accepted
``tunnelwatch_notify_not_sent_total{reason}``            ``replay`` (older than max-age),
                                                         ``suppressed`` (silence, maintenance),
                                                         ``unrouted`` (no route matched)
``tunnelwatch_notify_failures_total{sink,reason}``       ``retried`` (failed attempt, retried),
                                                         ``rejected`` (given up), ``repost``
``tunnelwatch_notify_retries_total{sink}``               retries
``tunnelwatch_notify_reposts_total{sink}``               open alerts posted again
``tunnelwatch_notify_open_incidents{cause,severity}``    incidents whose latest state is open
``tunnelwatch_notify_open_alerts{sink}``                 alerts kept alive by re-posting
``tunnelwatch_notify_lag``                               records not committed yet (-1: unknown)
``tunnelwatch_notify_fleet_newest_seconds``              the fleet's newest event time (epoch)
=======================================================  =======================================
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import web

from streams.shell.notify.run import Notifier

P = "tunnelwatch_notify_"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(notifier: Notifier, lag: int) -> str:
    s = notifier.stats
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {P}{name} {help_}")
        lines.append(f"# TYPE {P}{name} {kind}")
        for labels, value in samples:
            lines.append(f"{P}{name}{labels} {value}")

    sinks = [c.name for c in notifier.config.sinks]

    def per_sink(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(f'{{sink="{_escape(n)}"}}', counter[n]) for n in sinks]

    metric("records_total", "counter", "Incident records read.", [("", s.records)])
    metric("bad_records_total", "counter", "Records that are not incidents.", [("", s.bad_records)])
    metric("sent_total", "counter", "Deliveries accepted, by sink.", per_sink(s.sent))
    metric(
        "not_sent_total",
        "counter",
        "Records not sent: replay (older than max-age), suppressed (silence or maintenance "
        "window) or unrouted.",
        [(f'{{reason="{r}"}}', s.not_sent[r]) for r in ("replay", "suppressed", "unrouted")],
    )
    metric(
        "failures_total",
        "counter",
        "Failed deliveries, by sink and reason (retried, rejected, repost).",
        [
            (f'{{sink="{_escape(n)}",reason="{r}"}}', s.failures[(n, r)])
            for n in sinks
            for r in ("retried", "rejected", "repost")
        ],
    )
    metric("retries_total", "counter", "Retries, by sink.", per_sink(s.retries))
    metric("reposts_total", "counter", "Open alerts posted again, by sink.", per_sink(s.reposts))
    by_kind = Counter(s.open_incidents.values())
    metric(
        "open_incidents",
        "gauge",
        "Incidents whose latest state is open, by cause and severity.",
        [
            (f'{{cause="{_escape(c)}",severity="{_escape(v)}"}}', n)
            for (c, v), n in sorted(by_kind.items())
        ],
    )
    metric(
        "open_alerts",
        "gauge",
        "Alerts kept alive by re-posting, by sink.",
        [
            (f'{{sink="{_escape(n)}"}}', len(notifier.open_alerts.get(n, {})))
            for n in sinks
            if n in notifier.open_alerts or notifier.config.sink(n).type == "alertmanager"
        ],
    )
    metric("lag", "gauge", "Records not committed yet (-1: not known yet).", [("", lag)])
    newest = s.fleet_newest.timestamp() if s.fleet_newest is not None else 0.0
    metric(
        "fleet_newest_seconds",
        "gauge",
        "The fleet's newest event time (Unix seconds).",
        [("", newest)],
    )
    return "\n".join(lines) + "\n"


def app(notifier: Notifier, lag: Callable[[], Awaitable[int]] | None = None) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        value = await (lag or notifier.lag)()
        return web.Response(
            text=render(notifier, value), content_type="text/plain", charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )  # fmt: skip

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n" if notifier.ready.is_set() else "starting\n")

    application = web.Application()
    application.router.add_get("/metrics", metrics)
    application.router.add_get("/healthz", healthz)
    return application


async def serve(notifier: Notifier, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start the metrics server; returns its runner and the bound port."""
    runner = web.AppRunner(app(notifier), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    for address in runner.addresses:
        bound = int(address[1])
    return runner, bound
