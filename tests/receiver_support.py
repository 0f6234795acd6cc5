"""Helpers for the receiver and replay tests: an in-process receiver, reading a topic back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.shell.receiver import Receiver, ReceiverConfig
from streams.shell.receiver.pipeline import PipelineConfig

LOCAL = ("127.0.0.1", 0)


def dead_bootstrap() -> str:
    """A bootstrap address where nothing listens (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(bootstrap: str, topic: str, spool_dir: Path, **kw: object) -> ReceiverConfig:
    """A receiver on ephemeral local ports, quick to notice a missing Kafka."""
    base: dict[str, object] = {
        "bootstrap": bootstrap,
        "topic": topic,
        "udp": LOCAL,
        "tcp": LOCAL,
        "spool_dir": spool_dir,
        "metrics": LOCAL,
        "request_timeout_ms": 5_000,
        "shutdown_timeout": 5.0,
        "pipeline": PipelineConfig(slow_after=1.0, retry_backoff=0.2),
    }
    base.update(kw)
    return ReceiverConfig(**base)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(cfg: ReceiverConfig) -> AsyncIterator[Receiver]:
    rx = Receiver(cfg)
    await rx.start()
    try:
        yield rx
    finally:
        await rx.close()


async def wait_for(cond: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or cond}")
        await asyncio.sleep(0.02)


def udp_send(port: int, lines: list[bytes], pause_every: int = 200) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i, line in enumerate(lines, 1):
            s.sendto(line, ("127.0.0.1", port))
            if i % pause_every == 0:
                time.sleep(0.002)


@dataclass(frozen=True, slots=True)
class Msg:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]


async def read_topic(bootstrap: str, topic: str, timeout: float = 20.0) -> list[Msg]:
    """Every record in ``topic`` (all partitions, from the start to the current end)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=10_000
    )
    await consumer.start()
    try:
        parts = await consumer._client._wait_on_metadata(topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Msg] = []
        deadline = time.monotonic() + timeout

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end in {timeout} s")
            batch = await consumer.getmany(timeout_ms=500)
            for tp, msgs in batch.items():
                for m in msgs:
                    out.append(Msg(tp.partition, m.offset, m.key, m.value, dict(m.headers)))
        return out
    finally:
        await consumer.stop()


async def record_count(bootstrap: str, topic: str) -> int:
    """Records in ``topic`` counted by offsets (end minus beginning, every partition)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = await consumer._client._wait_on_metadata(topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        return sum(ends[tp] - begins[tp] for tp in tps)
    finally:
        await consumer.stop()


@contextlib.contextmanager
def small_filesystem(path: Path, size_kib: int) -> Iterator[Path]:
    """A tmpfs of ``size_kib`` KiB mounted on ``path`` (a real ENOSPC when it is full), or
    a skip where mounting is not allowed (not root, no mount(8))."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


_SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*"'
    r'(,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*")*\})? (-?[0-9.]+(e[+-]?[0-9]+)?|[+-]Inf|NaN)$'
)


def check_prometheus_text(text: str) -> set[str]:
    """Raise AssertionError unless ``text`` is valid Prometheus text exposition (0.0.4):
    one HELP and TYPE per family before its samples, samples well formed. The families."""
    types: dict[str, str] = {}
    helps: set[str] = set()
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in helps, f"second HELP for {name}"
            helps.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in types, f"second TYPE for {name}"
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            types[name] = kind
        else:
            m = _SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name = m.group(1)
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            base = name if name in types else family
            assert base in types, f"sample before its TYPE: {line!r}"
    return set(types)
