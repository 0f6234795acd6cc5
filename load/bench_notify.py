"""``make bench-notify``: how fast the notifier drains a backlog of incidents.

Starts a private Kafka (free 127.0.0.1 ports, data in ``.state/bench-notify``), Debian's
Alertmanager (installed by ``load/install-alertmanager.sh`` when missing; free port, its
webhook receiver a local server here) and a local webhook receiver, writes N distinct open
incidents to a topic, and times the notifier from start to the last commit, once with the
Alertmanager sink and once with a signed webhook sink. Prints records/s; asserts nothing.
Everything binds 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import socket
import subprocess
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from streams.shell import broker
from streams.shell.notify.config import parse_config
from streams.shell.notify.run import Notifier
from streams.shell.topics import TopicSpec, ensure_topics, group_lag

STATE = broker.REPO_ROOT / ".state" / "bench-notify"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _incidents(n: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        seen = now - timedelta(seconds=n - i)
        out.append({
            "schema": 2, "incident_id": hashlib.sha256(b"%d" % i).hexdigest()[:16],
            "device": f"edge-{i % 500:03d}", "peer": f"192.0.2.{i % 250 + 1}",
            "cause": ("psk_mismatch", "peer_unreachable", "crypto_acl_mismatch")[i % 3],
            "title": "bench", "confidence": 0.8, "severity": "major", "status": "open",
            "first_seen": (seen - timedelta(minutes=1)).isoformat(), "last_seen": seen.isoformat(),
            "resolved_at": None, "resolution": None, "count": 3, "kinds": ["x"],
            "summary": "bench incident", "recommended_actions": ["show crypto isakmp sa"],
            "evidence": ["%CRYPTO-4-IKMP_BAD_MESSAGE: IKE message from 192.0.2.1 failed"],
        })  # fmt: skip
    return out


async def _produce(bootstrap: str, topic: str, records: list[dict[str, Any]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, orjson.dumps(r), key=r["incident_id"].encode())
            for r in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _receiver(counter: list[int]) -> tuple[web.AppRunner, int]:
    async def hook(request: web.Request) -> web.Response:
        await request.read()
        counter[0] += 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{path:.*}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, int(runner.addresses[0][1])


async def _time_notifier(
    bootstrap: str, topic: str, sinks: dict[str, Any], n: int
) -> tuple[float, float]:
    """(seconds from start to the last commit, seconds from the first send to the last)."""
    cfg = parse_config({"sinks": sinks, "repost_interval": "1h"})
    group = f"bench-{topic}-{next(iter(sinks))}"
    notifier = Notifier(cfg, bootstrap, topic, group, max_age=None,
                        operator_topic=f"{topic}-operator", say=lambda _: None)  # fmt: skip
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.ensure_future(notifier.run(stop))
    first = None
    while (sent := sum(notifier.stats.sent.values())) < n:
        if task.done():
            task.result()
        if first is None and sent:
            first = time.perf_counter()
        await asyncio.sleep(0.01)
    last = time.perf_counter()
    while await group_lag(bootstrap, group) != 0:
        await asyncio.sleep(0.2)
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    return elapsed, last - (first or started)


def _alertmanager(workdir: Path, hook_url: str) -> tuple[subprocess.Popen[bytes], str] | None:
    binary = shutil.which("prometheus-alertmanager")
    if binary is None:
        script = Path(__file__).with_name("install-alertmanager.sh")
        subprocess.run(["bash", str(script)], check=False)
        binary = shutil.which("prometheus-alertmanager")
    if binary is None:
        print("bench-notify: prometheus-alertmanager is not installed; skipping that sink")
        return None
    port = _free_port()
    config = workdir / "alertmanager.yml"
    config.write_text(
        "route: {receiver: hook, group_by: [alertname], group_wait: 1s, group_interval: 1s}\n"
        f"receivers: [{{name: hook, webhook_configs: [{{url: '{hook_url}'}}]}}]\n"
    )
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.path={workdir / 'am-data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
         "--log.level=error"],
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("bench-notify: Alertmanager did not start")


async def _bench(n: int, bootstrap: str) -> None:
    topic = f"bench-notify-{int(time.time())}"
    await ensure_topics(bootstrap, [TopicSpec(topic, 4)])
    await _produce(bootstrap, topic, _incidents(n))
    counter = [0]
    runner, port = await _receiver(counter)
    am = None
    try:
        hook = f"http://127.0.0.1:{port}/hook"
        total, sending = await _time_notifier(
            bootstrap, topic, {"hook": {"type": "webhook", "url": hook, "secret": "k"}}, n
        )
        print(f"webhook sink (signed, one POST per incident): {n} incidents sent at "
              f"{n / sending:,.0f} incidents/s; {total:.2f} s from start (group join, reading "
              "the topic) to the last commit")  # fmt: skip
        am = await asyncio.to_thread(_alertmanager, STATE, f"http://127.0.0.1:{port}/am")
        if am is not None:
            total, sending = await _time_notifier(
                bootstrap, topic, {"am": {"type": "alertmanager", "url": am[1]}}, n
            )
            print(f"Alertmanager sink (POST /api/v2/alerts, one per incident): {n} incidents "
                  f"sent at {n / sending:,.0f} incidents/s; {total:.2f} s from start to the "
                  "last commit")  # fmt: skip
    finally:
        if am is not None:
            am[0].terminate()
            am[0].wait(10)
        await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--incidents", type=int, default=2000)
    args = parser.parse_args()
    shutil.rmtree(STATE, ignore_errors=True)
    STATE.mkdir(parents=True)
    port, controller = _free_port(), _free_port()
    info = broker.start(STATE / "kafka", port, controller)
    try:
        asyncio.run(_bench(args.incidents, info.bootstrap))
    finally:
        broker.stop(STATE / "kafka")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
