"""Real parts for the notifier's tests: Debian's Prometheus Alertmanager on a free
127.0.0.1 port with its own data directory, a local HTTP server receiving webhooks, the
notifier in a thread of its own, and incident records.

Alertmanager is installed by ``load/install-alertmanager.sh`` when it is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from streams.shell.notify.config import NotifyConfig
from streams.shell.notify.run import Notifier

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alertmanager_binary() -> str | None:
    """Debian's Alertmanager, installed by the project's script when missing."""
    found = shutil.which("prometheus-alertmanager")
    if found:
        return found
    script = REPO / "load" / "install-alertmanager.sh"
    subprocess.run(["bash", str(script)], capture_output=True, timeout=900, check=False)
    return shutil.which("prometheus-alertmanager")


def wait_for(check: Callable[[], bool], timeout: float, what: str, poll: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_json(url: str, body: Any | None = None, timeout: float = 5.0) -> Any:
    data = None if body is None else json.dumps(body).encode("utf-8")
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


class Alertmanager:
    """One Alertmanager process: clustering off, listening on 127.0.0.1 only."""

    def __init__(self, binary: str, workdir: Path, webhook_url: str) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.data = workdir / "data"
        self.config = workdir / "alertmanager.yml"
        self.log = workdir / "alertmanager.log"
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            "route:\n"
            "  receiver: hook\n"
            "  group_by: [alertname]\n"
            "  group_wait: 1s\n"
            "  group_interval: 1s\n"
            "  repeat_interval: 1h\n"
            "receivers:\n"
            "  - name: hook\n"
            "    webhook_configs:\n"
            f"      - url: {webhook_url}\n"
            "        send_resolved: true\n"
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config}",
                    f"--storage.path={self.data}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--cluster.listen-address=",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self.ready, 30, f"Alertmanager on {self.url} ({self.log})")

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"Alertmanager exited: {self.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> None:
        """SIGKILL: what it held in memory (its alerts) is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def alerts(self) -> list[dict[str, Any]]:
        """Its alerts (active, silenced and inhibited), from the API v2."""
        result = http_json(f"{self.url}/api/v2/alerts")
        assert isinstance(result, list)
        return result

    def alert_ids(self) -> set[str]:
        try:
            return {a["labels"]["incident_id"] for a in self.alerts()}
        except (urllib.error.URLError, OSError):
            return set()

    def silence(self, matchers: dict[str, str], minutes: float, now: datetime) -> str:
        body = {
            "matchers": [
                {"name": k, "value": v, "isRegex": False, "isEqual": True}
                for k, v in matchers.items()
            ],
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(minutes=minutes)).isoformat(),
            "createdBy": "tunnelwatch-tests",
            "comment": "test silence",
        }
        return str(http_json(f"{self.url}/api/v2/silences", body)["silenceID"])


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    path: str = "/hook"

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HookServer:
    """A local HTTP server in a thread, keeping every POST it gets. ``fail_next`` answers
    that many requests with ``fail_status`` first."""

    received: list[Received] = field(default_factory=list)
    fail_next: int = 0
    fail_status: int = 503
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return web.Response(status=self.fail_status, text="not now")
            self.received.append(Received(body, dict(request.headers), request.path))
        return web.Response(text="ok")

    def start(self) -> HookServer:
        started = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            application = web.Application()
            application.router.add_post("/{path:.*}", self._handle)
            self._runner = web.AppRunner(application, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = int(self._runner.addresses[0][1])
            started.set()
            while self._runner is not None:
                await asyncio.sleep(0.1)

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        self._thread.start()
        assert started.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            runner = self._runner
            asyncio.run_coroutine_threadsafe(runner.cleanup(), self._loop).result(10)
            self._runner = None
        if self._thread is not None:
            self._thread.join(10)

    def bodies(self, path: str | None = None) -> list[Any]:
        with self._lock:
            return [r.json() for r in self.received if path is None or r.path == path]

    def alertmanager_alerts(self) -> list[dict[str, Any]]:
        """Every alert of every Alertmanager notification received."""
        return [a for body in self.bodies() for a in body.get("alerts", [])]


class NotifierThread:
    """The notifier on an event loop of its own, stopped like SIGTERM stops it."""

    def __init__(
        self,
        config: NotifyConfig,
        bootstrap: str,
        topic: str,
        group: str,
        max_age: float | None,
        operator_topic: str | None = None,
    ) -> None:
        self.lines: list[str] = []
        self.notifier = Notifier(
            config,
            bootstrap,
            topic,
            group,
            max_age=max_age,
            # The test's own operator topic, unless told which.
            operator_topic=operator_topic or f"{topic}-operator",
            say=self.lines.append,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> NotifierThread:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                await self.notifier.run(self._stop)
            except BaseException as exc:
                self.error = exc
                raise

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        self._thread.start()
        wait_for(lambda: self.notifier.ready.is_set() or self.error is not None, 60, "notifier")
        assert self.error is None, self.error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)
            assert not self._thread.is_alive(), "the notifier did not stop"


TEMPLATE: dict[str, Any] = {
    "schema": 2,
    "confidence": 0.9,
    "severity": "major",
    "kinds": ["ike_mm_failed"],
    "rule": "test",
    "title": "Pre-shared key mismatch",
    "summary": "IKE main mode fails: the pre-shared keys differ",
    "recommended_actions": ["show crypto isakmp sa", "crypto isakmp key <key> address <peer>"],
    "evidence": ["%CRYPTO-4-IKMP_BAD_MESSAGE: IKE message from 192.0.2.7 failed its sanity check"],
    "related": [],
    "device_addresses": [],
}


def incident(
    n: int,
    last_seen: datetime,
    *,
    cause: str = "psk_mismatch",
    device: str | None = None,
    status: str = "open",
    tag: str = "",
) -> dict[str, Any]:
    """Incident number ``n`` (a stable id from ``n`` and ``tag``) at ``last_seen``."""
    iid = hashlib.sha256(f"{tag}-{n}".encode()).hexdigest()[:16]
    rec = dict(TEMPLATE)
    rec.update(
        incident_id=iid,
        device=device or f"edge-{n:03d}",
        peer=f"192.0.2.{n % 250 + 1}",
        cause=cause,
        status=status,
        first_seen=(last_seen - timedelta(minutes=2)).isoformat(),
        last_seen=last_seen.isoformat(),
        resolved_at=last_seen.isoformat() if status == "resolved" else None,
        resolution="tunnel up" if status == "resolved" else None,
        count=3 + n,
        kind_counts={"ike_mm_failed": 3 + n},
    )
    return rec


async def aproduce(bootstrap: str, topic: str, records: Iterable[dict[str, Any] | bytes]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for rec in records:
            if isinstance(rec, bytes):
                await producer.send_and_wait(topic, value=rec, key=b"junk")
            else:
                key = str(rec["incident_id"]).encode()
                await producer.send_and_wait(topic, value=json.dumps(rec).encode(), key=key)
    finally:
        await producer.stop()


def produce(bootstrap: str, topic: str, records: Iterable[dict[str, Any] | bytes]) -> None:
    asyncio.run(aproduce(bootstrap, topic, list(records)))


def committed_lag(bootstrap: str, group: str) -> int:
    from streams.shell.topics import group_lag

    return int(asyncio.run(group_lag(bootstrap, group)))
