"""``make bench-worker``: how fast the workers drain ``syslog.raw``, per record CPU included.

Run as ``python -m load.bench_worker [--lines 400000] [--scenario default|asa-heavy|PATH]
[--workers 1,2] [--policies engine,all] [--fleet 1000,10000,100000] [--fleet-lines 500000]
[--fleet-rounds 2] [--no-soak]``.

1. A private Kafka broker (``.state/bench-worker``, ports 49392/49393) gets ``syslog.raw``
   prefilled with ``--lines`` records of a generated scenario, keyed by device and
   stamped with receive times as the receiver publishes them (one ``received_at`` per
   512 records), over 4 partitions.
2. For each policy (``--events engine``, the native batch path; ``--events all``, every
   record parsed in Python and published) and each worker count, a fresh consumer group
   (its own app id: it reads everything from the start) runs until it has committed
   every record. Measured from the workers' spawn to the last commit, less what a
   worker's start costs (measured once on an empty topic: the wall time until it could
   read, its CPU until then): records per second (wall), CPU seconds of each worker
   process (``/proc/<pid>/stat``) and µs of worker CPU per record; and the incidents it
   published.

3. By fleet size (``--fleet``): ``--fleet-lines`` records of one message (an ASA
   connection build, outside the catalog: clock rows) spread round-robin over 1k, 10k
   and 100k devices, drained by 1 worker once per round (``--fleet-rounds``, 2), the
   run of least CPU of each kept: records/s, µs of CPU per record, against the first
   size.
4. Soak (unless ``--no-soak``): 100k devices, then five HMAC failures each for 10k of
   them (10k open incidents): the worker's peak RSS (``VmHWM``) and its incidents.

The rate is a drain rate: an upper bound of what the workers sustain live, where the
receiver, the senders and Kafka share the same two cores (``make bench-load`` measures
that). Everything runs on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from load import cpu
from load.live import resolve_scenario
from load.synth import generate
from streams.core.parse import Parser
from streams.shell import broker
from streams.shell.topics import (
    HEADER_RECEIVED_AT,
    HEADER_SOURCE,
    TopicNames,
    end_offsets,
    ensure_topics,
    partition_of,
    stack_topics,
)

STATE = broker.REPO_ROOT / ".state" / "bench-worker"
PORT, CONTROLLER = 49392, 49393
PARTITIONS = 4
TICK = 1.0  # the worker's default tick interval (its ready file waits for its first tick)
RECEIVER_BATCH = 512


@dataclass
class Result:
    policy: str
    workers: int
    records: int
    seconds: float
    cpu: list[float]
    incidents: int
    peak_rss_mib: float = 0.0

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def us_per_record(self) -> float:
        return sum(self.cpu) / self.records * 1e6 if self.records else 0.0


def _stamp(t: float) -> str:
    tm = time.gmtime(int(t))
    return f"Mar {tm.tm_mday:02d} 2024 {tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"


START = 1_709_600_000.0
BUILT = (
    "%ASA-6-302013: Built inbound TCP connection {i} for outside:198.51.100.7/443 "
    "(198.51.100.7/443) to inside:10.0.0.9/51515 (10.0.0.9/51515)"
)


def fleet_lines(lines: int, devices: int) -> list[str]:
    """``lines`` lines of one message outside the catalog over ``devices`` devices,
    round-robin, 1 ms of event time apart (as ``make bench``'s fleet archives)."""
    return [
        f"<166>{_stamp(START + i / 1000)} fw-{i % devices} : {BUILT.format(i=i)}"
        for i in range(lines)
    ]


def soak_lines(devices: int, incidents: int) -> list[str]:
    """One line per device, then five HMAC failures within a minute for ``incidents`` of
    them (an incident each, open at the end)."""
    out = [f"<166>{_stamp(START + d / 100)} fw-{d} : {BUILT.format(i=d)}" for d in range(devices)]
    t0 = START + devices / 100 + 1
    for k in range(5):
        for d in range(incidents):
            peer = f"203.0.113.{d % 250 + 1}"
            out.append(
                f"<164>{_stamp(t0 + k * 10 + d / (incidents * 2))} fw-{d} : %ASA-4-402120: "
                f"IPSEC: Received an ESP packet (SPI= 0x1A2B3C4D, sequence number= 0x{k + 1:X}) "
                f"from {peer} (user= {peer}) to 192.0.2.1 that failed authentication."
            )
    return out


def _cpu_seconds(pid: int) -> float:
    return cpu.cpu_seconds(pid, children=False) or 0.0


def _records(scenario: str, lines: int) -> list[tuple[bytes, bytes, int]]:
    """(key, value, partition) of each line, keyed by its device as the receiver keys it."""
    parser = Parser(stream=True)
    out: list[tuple[bytes, bytes, int]] = []
    for line in generate(resolve_scenario(scenario), lines=lines, seed=1):
        device = getattr(parser.parse(line), "device", None) or "unknown"
        key = device.encode()
        out.append((key, line.encode(), partition_of(key, PARTITIONS)))
    return out


async def _fill(bootstrap: str, topic: str, records: list[tuple[bytes, bytes, int]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024, acks=1
    )
    await producer.start()
    try:
        futures = []
        for i in range(0, len(records), RECEIVER_BATCH):
            stamp = datetime.now(UTC).isoformat().encode()
            for key, value, part in records[i : i + RECEIVER_BATCH]:
                headers = [(HEADER_RECEIVED_AT, stamp), (HEADER_SOURCE, b"127.0.0.1:514")]
                futures.append(
                    await producer.send(topic, value, key=key, partition=part, headers=headers)
                )
            if len(futures) > 50_000:
                await asyncio.gather(*futures)
                futures = []
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _wait_committed(bootstrap: str, group: str, topic: str, total: int) -> None:
    """Until the group has committed ``total`` records of ``topic`` (one admin client)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        start = time.monotonic()
        while True:
            offsets = await admin.list_consumer_group_offsets(group)
            done = sum(max(m.offset, 0) for tp, m in offsets.items() if tp.topic == topic)
            if done >= total:
                return
            if time.monotonic() - start > 1800:
                raise SystemExit(f"{group} did not finish in 30 min ({done}/{total})")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


def _peak_rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _keyed(lines: Sequence[str]) -> list[tuple[bytes, bytes, int]]:
    """Records of lines whose device is the token before `` : `` (the fleet archives)."""
    out: list[tuple[bytes, bytes, int]] = []
    for line in lines:
        key = line.split(" : ", 1)[0].rsplit(" ", 1)[-1].encode()
        out.append((key, line.encode(), partition_of(key, PARTITIONS)))
    return out


def _fill_topic(bootstrap: str, records: list[tuple[bytes, bytes, int]]) -> TopicNames:
    names = TopicNames(raw=f"syslog.raw.bench-{uuid.uuid4().hex[:6]}")
    asyncio.run(ensure_topics(bootstrap, stack_topics(names, "x", PARTITIONS)[:1]))
    asyncio.run(_fill(bootstrap, names.raw, records))
    return names


@dataclass(frozen=True)
class Startup:
    """What a worker spends before it reads records: measured on an empty topic, to the
    moment it is ready (its first tick, one tick interval after it could start reading)."""

    wall: float
    cpu: float


def _spawn(
    bootstrap: str, names: TopicNames, policy: str, workers: int
) -> tuple[str, str, list[subprocess.Popen[bytes]], list[Path]]:
    app_id = f"bench-{policy}-{workers}-{uuid.uuid4().hex[:6]}"
    incidents = f"vpn.incidents.{app_id}"
    procs: list[subprocess.Popen[bytes]] = []
    ready: list[Path] = []
    logs = STATE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for i in range(workers):
        ready_file = STATE / f"{app_id}-{i}.ready"
        ready.append(ready_file)
        argv = [
            sys.executable, "-m", "streams.cli.main", "worker",
            "--bootstrap", bootstrap,
            "--partitions", str(PARTITIONS),
            "--app-id", app_id,
            "--raw-topic", names.raw,
            "--events-topic", f"syslog.events.{app_id}",
            "--deadletter-topic", f"syslog.deadletter.{app_id}",
            "--incidents-topic", incidents,
            "--data-dir", str(STATE / app_id / str(i)),
            "--ready-file", str(ready_file),
            "--events", policy,
        ]  # fmt: skip
        with (logs / f"{app_id}-{i}.log").open("wb") as log:
            procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
    return app_id, incidents, procs, ready


def _wait_ready(procs: list[subprocess.Popen[bytes]], ready: list[Path]) -> None:
    deadline = time.monotonic() + 120
    while not all(r.is_file() for r in ready):
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            raise SystemExit(f"a worker did not start: see {STATE / 'logs'}")
        time.sleep(0.02)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def _startup(bootstrap: str) -> Startup:
    """A worker's start on an empty topic: wall time to the moment it could read (its
    ready file, less the one tick interval it waits for its first tick) and CPU."""
    names = _fill_topic(bootstrap, [])
    t0 = time.monotonic()
    _, _, procs, ready = _spawn(bootstrap, names, "engine", 1)
    try:
        _wait_ready(procs, ready)
        return Startup(time.monotonic() - t0 - TICK, _cpu_seconds(procs[0].pid))
    finally:
        _stop(procs)


def _run(
    bootstrap: str, names: TopicNames, total: int, policy: str, workers: int, startup: Startup
) -> Result:
    """Workers started on a full topic, from spawn until all is committed, less what a
    start costs (``startup``): records/s and CPU of the work itself."""
    t0 = time.monotonic()
    app_id, incidents, procs, ready = _spawn(bootstrap, names, policy, workers)
    try:
        _wait_ready(procs, ready)
        asyncio.run(_wait_committed(bootstrap, app_id, names.raw, total))
        seconds = time.monotonic() - t0 - startup.wall
        cpu = [max(_cpu_seconds(p.pid) - startup.cpu, 0.0) for p in procs]
        rss = max(_peak_rss_mib(p.pid) for p in procs)
        ends = asyncio.run(end_offsets(bootstrap, [incidents]))
        return Result(policy, workers, total, seconds, cpu, sum(ends.values()), rss)
    finally:
        _stop(procs)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m load.bench_worker")
    ap.add_argument("--lines", type=int, default=400_000)
    ap.add_argument("--scenario", default="default")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--policies", default="engine,all")
    ap.add_argument("--fleet", default="1000,10000,100000", help="fleet sizes ('': skip)")
    ap.add_argument("--fleet-lines", type=int, default=500_000)
    ap.add_argument("--fleet-rounds", type=int, default=2, help="rounds of the fleet sizes")
    ap.add_argument("--no-soak", action="store_true")
    args = ap.parse_args(argv)
    shutil.rmtree(STATE, ignore_errors=True)
    STATE.mkdir(parents=True)
    data = STATE / "kafka"
    bootstrap = f"127.0.0.1:{PORT}"
    results: list[Result] = []
    try:
        broker.start(data, PORT, CONTROLLER)
        startup = _startup(bootstrap)
        print(
            f"a worker's start (empty topic): {startup.wall:.1f} s, {startup.cpu:.1f} CPU-s "
            "(left out of every run below)",
            flush=True,
        )
        policies = [p for p in args.policies.split(",") if p]
        if policies:
            t0 = time.monotonic()
            records = _records(args.scenario, args.lines)
            names = _fill_topic(bootstrap, records)
            print(
                f"syslog.raw: {len(records):,} records of scenario {args.scenario} "
                f"({PARTITIONS} partitions) written in {time.monotonic() - t0:.1f} s",
                flush=True,
            )
        for policy in policies:
            for workers in (int(w) for w in args.workers.split(",")):
                r = _run(bootstrap, names, len(records), policy, workers, startup)
                results.append(r)
                print(
                    f"--events {r.policy:<6} {r.workers} worker(s): {r.rate:>9,.0f} records/s "
                    f"(wall {r.seconds:.1f} s), worker CPU {r.us_per_record:6.1f} µs/record "
                    f"({' + '.join(f'{c:.1f}' for c in r.cpu)} s), "
                    f"{r.incidents} incident records",
                    flush=True,
                )
        sizes = [int(d) for d in args.fleet.split(",") if d]
        topics = {
            d: _fill_topic(bootstrap, _keyed(fleet_lines(args.fleet_lines, d))) for d in sizes
        }
        # Rounds: every size drained once per round, the least worker CPU of each kept
        # (this box's speed drifts by 20% and more within minutes: rounds spread the
        # drift over every size alike).
        best: dict[int, Result] = {}
        for round_ in range(max(args.fleet_rounds, 1) if sizes else 0):
            for devices in sizes:
                r = _run(bootstrap, topics[devices], args.fleet_lines, "engine", 1, startup)
                print(
                    f"  round {round_ + 1}: fleet {devices:,} devices: {r.rate:,.0f} records/s, "
                    f"{r.us_per_record:.1f} µs/record",
                    flush=True,
                )
                was = best.get(devices)
                if was is None or r.us_per_record < was.us_per_record:
                    best[devices] = r
        for devices in sizes:
            r, first = best[devices], best[sizes[0]]
            print(
                f"fleet {devices:>7,} devices: {r.rate:>9,.0f} records/s, worker CPU "
                f"{r.us_per_record:6.1f} µs/record, peak RSS {r.peak_rss_mib:,.0f} MiB, "
                f"{first.us_per_record / r.us_per_record:.0%} of the {sizes[0]:,}-device "
                f"rate per CPU-second ({r.rate / first.rate:.0%} in records/s)",
                flush=True,
            )
        if not args.no_soak:
            lines = soak_lines(100_000, 10_000)
            soak_names = _fill_topic(bootstrap, _keyed(lines))
            r = _run(bootstrap, soak_names, len(lines), "engine", 1, startup)
            print(
                f"soak: 100,000 devices, 10,000 open incidents: {len(lines):,} records in "
                f"{r.seconds:.1f} s, worker peak RSS {r.peak_rss_mib:,.0f} MiB, "
                f"{r.incidents:,} incident records",
                flush=True,
            )
    finally:
        broker.stop(data)
    by = {(r.policy, r.workers): r for r in results}
    for workers in sorted({r.workers for r in results}):
        fast, slow = by.get(("engine", workers)), by.get(("all", workers))
        if fast and slow and slow.rate:
            print(
                f"{workers} worker(s): the batch path drains {fast.rate / slow.rate:.1f}x as "
                f"fast as the Python path, at {fast.us_per_record / slow.us_per_record:.2f}x "
                "its CPU per record"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
