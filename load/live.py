"""``tunnelwatch load run``: drive a running stack with a scenario and measure it.

One run:

1. *Plan*: the scenario is generated with its start shifted to the run's start time
   (never before the end of an earlier run against the same stack, so no device's clock
   goes back: the worker counts events more than 120 s behind a device's newest as late)
   and its span compressed into the run: ``rate × duration`` lines, sent in order.
2. *Send*: the lines are sharded by device over one or more sender processes (one
   device's lines stay in order on one sender), each paced by a token bucket at its share
   of the rate. Every sender notes the wall time it sent the first line of each fault.
3. *Measure*, while sending and until the pipeline has drained: ``syslog.raw`` end
   offsets before and after (loss), the worker group's lag every second, and every new
   record on ``vpn.incidents`` with the wall time it was first seen.
4. *Score*: each ground-truth fault is matched to the incidents of its device (name or
   management IP), cause and peer (when the fault's lines show one); detection latency is
   first incident seen − first fault line sent. Incidents matching no fault lower the
   precision; incidents where a decoy was put are counted as decoy hits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import multiprocessing as mp
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from load import cpu
from load.scenario import Scenario, default_scenario, load_scenario
from load.synth import TruthDecoy, TruthFault, generate
from streams.errors import ConfigError
from streams.shell import broker, stack
from streams.shell.topics import (
    DEFAULT_APP_ID,
    INCIDENTS_TOPIC,
    RAW_TOPIC,
    end_offsets,
    group_lag,
)

#: Messages per second one sender process is trusted with before another one is added.
PER_SENDER_RATE = 40_000
#: Default sweep bound on the workers' lag, in seconds of offered traffic.
DEFAULT_MAX_LAG_S = 5.0
#: Lines per token-bucket take (and per progress update) in a sender.
_BATCH = 64


def resolve_scenario(spec: str) -> Scenario:
    """``default`` (the bundled scenario) or the path of a scenario YAML file."""
    if spec == "default":
        return default_scenario()
    return load_scenario(spec)


# --------------------------------------------------------------------------- pacing


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; ``take`` says how long to wait."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.clock = clock
        self.tokens = 0.0
        self.stamp = clock()

    def take(self, n: float) -> float:
        """Take ``n`` tokens (going into debt); seconds to sleep before using them."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


# --------------------------------------------------------------------------- plan


@dataclass(slots=True)
class Plan:
    """The lines of one run, sharded by device, with the ground truth."""

    scenario: str
    seed: int
    start_ms: int
    end_ms: int
    lines: int
    shards: list[list[str]]
    marks: list[dict[int, str]]  # per shard: index in shard → fault id (its first line)
    truth: list[TruthFault]
    decoys: list[TruthDecoy]
    stamped: list[str] = field(default_factory=list)  # see stamped_for_live


def senders_for(rate: float) -> int:
    return max(1, math.ceil(rate / PER_SENDER_RATE))


def stamped_for_live(scenario: Scenario) -> tuple[Scenario, list[str]]:
    """The scenario with a stamp on every line, and the devices that needed one.

    A live run compresses the scenario's span (a day) into seconds. A line with no stamp
    at all (an ASA with ``no logging timestamp`` sending straight to the receiver) takes
    the time it was received, which that compression cannot scale: the device's re-keys
    of a whole day would arrive within seconds (flapping, to the engine) and its faults
    would merge across the steps of a sweep. Such devices send ``logging timestamp``
    stamps in live runs; the worker's handling of stamp-less lines is proven apart
    (tests/test_worker.py).
    """
    devices = []
    changed: list[str] = []
    for dev in scenario.devices:
        st = dev.style
        if dev.kind == "asa" and st.timestamp == "none" and st.framing in ("wire", "bare"):
            dev = dataclasses.replace(dev, style=dataclasses.replace(st, timestamp="legacy_year"))
            changed.append(dev.name)
        devices.append(dev)
    return dataclasses.replace(scenario, devices=tuple(devices)), changed


def make_plan(scenario: Scenario, *, lines: int, seed: int, start_ms: int, senders: int) -> Plan:
    """Generate ``lines`` lines starting at ``start_ms`` and shard them by device (every
    line stamped: see :func:`stamped_for_live`)."""
    start = datetime.fromtimestamp(start_ms / 1000, UTC)
    scenario, stamped = stamped_for_live(scenario)
    shifted = dataclasses.replace(scenario, start=start)
    synth = generate(shifted, lines=lines, seed=seed)
    shards: list[list[str]] = [[] for _ in range(senders)]
    marks: list[dict[int, str]] = [{} for _ in range(senders)]
    which: dict[str, int] = {}
    seen: set[str] = set()
    end_ms = start_ms
    for rec in synth.records():
        s = which.get(rec.device)
        if s is None:
            s = which[rec.device] = zlib.crc32(rec.device.encode()) % senders
        if rec.origin == "fault" and rec.ref is not None and rec.ref not in seen:
            seen.add(rec.ref)
            marks[s][len(shards[s])] = rec.ref
        shards[s].append(rec.line)
        end_ms = max(end_ms, rec.time_ms)
    return Plan(
        scenario.name,
        seed,
        start_ms,
        end_ms,
        lines,
        shards,
        marks,
        list(synth.ground_truth),
        list(synth.decoys),
        stamped,
    )


# --------------------------------------------------------------------------- senders


def _sender(
    target: str,
    topic: str,
    lines: list[str],
    marks: dict[int, str],
    rate: float,
    start_at: float,
    counter: Any,
    out: Any,
) -> None:
    """One sender process: waits for ``start_at`` (wall clock), then paces ``lines``."""
    from streams.shell.replay.sinks import open_sink

    sink = open_sink(target, topic, "127.0.0.1:0")
    sent_at: dict[str, float] = {}
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    bucket = TokenBucket(rate, burst=max(rate / 100, _BATCH))
    cpu_before = cpu.cpu_seconds(os.getpid())
    first = time.time()
    n = len(lines)
    i = 0
    try:
        while i < n:
            j = min(i + _BATCH, n)
            wait = bucket.take(j - i)
            if wait > 0:
                sink.flush()
                time.sleep(wait)
            for k in range(i, j):
                sink.send(lines[k])
                if k in marks:
                    sent_at[marks[k]] = time.time()
            i = j
            with counter.get_lock():
                counter.value = i
        sink.flush()
    finally:
        sink.close()
    cpu_after = cpu.cpu_seconds(os.getpid())
    spent = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    out.put({"sent": n, "first": first, "last": time.time(), "marks": sent_at, "cpu_s": spent})


# --------------------------------------------------------------------------- measuring


@dataclass(slots=True)
class Seen:
    """Incidents that appeared on ``vpn.incidents`` during a run."""

    first_seen_at: dict[str, float] = field(default_factory=dict)
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)


async def _watch_incidents(
    bootstrap: str, start: dict[tuple[str, int], int], seen: Seen, stop: asyncio.Event
) -> None:
    import orjson
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for (t, p) in start]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start[(tp.topic, tp.partition)])
        while not stop.is_set():
            batches = await consumer.getmany(*tps, timeout_ms=200)
            now = time.time()
            for messages in batches.values():
                for m in messages:
                    try:
                        rec = orjson.loads(m.value)
                    except orjson.JSONDecodeError:
                        continue
                    if not isinstance(rec, dict) or "incident_id" not in rec:
                        continue
                    iid = rec["incident_id"]
                    seen.first_seen_at.setdefault(iid, now)
                    seen.latest[iid] = rec
    finally:
        await consumer.stop()


def _delta(after: dict[tuple[str, int], int], before: dict[tuple[str, int], int]) -> int:
    return sum(end - before.get(tp, 0) for tp, end in after.items())


@dataclass(slots=True)
class RunOptions:
    target: str
    rate: float
    duration: float
    bootstrap: str
    seed: int = 0
    group: str = DEFAULT_APP_ID
    senders: int | None = None
    drain_timeout: float = 60.0
    settle: float = 3.0
    raw_topic: str = RAW_TOPIC
    #: The sweep's lag bound: a rate is sustainable only if the worker group never fell
    #: more than this many seconds of traffic behind (lag <= bound × offered rate).
    max_lag_s: float = DEFAULT_MAX_LAG_S
    #: The state dir of the stack under test (``tunnelwatch up --state-dir``): the CPU
    #: time of its processes is measured when it runs here and serves ``bootstrap``.
    state_dir: Path | None = None


Progress = Callable[[str, int, int], None]  # phase, done, total

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def stack_pids(state_dir: Path | None, bootstrap: str) -> tuple[dict[str, int], str | None]:
    """The pids of the stack under ``state_dir`` (:func:`stack.component_pids`) when it
    runs on this machine and its broker serves ``bootstrap``; else no pids and why."""
    if state_dir is None:
        return {}, "not measured: no stack state dir given (a remote stack?)"
    paths = stack.StackPaths(Path(state_dir).resolve())
    pids = stack.component_pids(paths)
    if not pids:
        return {}, f"not measured: no running stack under {paths.state} (a remote stack?)"
    served = broker.configured_bootstrap(paths.kafka) if "kafka" in pids else None
    wanted = set()
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        if host in _LOOPBACK:
            wanted.add(port)
    if served is None or served.rpartition(":")[2] not in wanted:
        return {}, (
            f"not measured: the stack under {paths.state} (Kafka "
            f"{served or 'not running'}) is not the one at {bootstrap}"
        )
    return pids, None


def _score(
    plan: Plan, seen: Seen, marks: dict[str, float], wall: tuple[float, float] | None = None
) -> dict[str, Any]:
    """Match incidents to ground truth: recall, precision, decoy hits, latencies.

    Incidents of this run are those that began in the plan's event time, or, for
    devices whose lines carry no stamp at all (their event time is when the receiver
    got them), in ``wall``: the run's own wall-clock span. Updates of incidents of
    earlier runs are left out.
    """
    start = plan.start_ms / 1000
    incidents = {}
    for iid, rec in seen.latest.items():
        try:
            first = datetime.fromisoformat(str(rec["first_seen"])).timestamp()
        except (KeyError, ValueError):
            continue
        in_wall = wall is not None and wall[0] - 1 <= first <= wall[1] + 1
        if first >= start - 1 or in_wall:
            incidents[iid] = rec
    matched: set[str] = set()
    faults = []
    for t in plan.truth:
        cands = [
            iid
            for iid, rec in incidents.items()
            if rec.get("device") in (t.device, t.device_ip)
            and rec.get("cause") == t.cause
            # peer when both sides know it: lines without a peer (MOTCR) open their own
            and (t.peer is None or rec.get("peer") in (None, t.peer))
        ]
        matched.update(cands)
        sent = marks.get(t.id)
        latency = None
        if cands and sent is not None:
            latency = round(min(seen.first_seen_at[i] for i in cands) - sent, 3)
        faults.append(
            {
                "id": t.id,
                "cause": t.cause,
                "device": t.device,
                "peer": t.peer,
                "detected": bool(cands),
                "incidents": sorted(cands),
                "latency_s": latency,
            }
        )
    decoy_hits = []
    for d in plan.decoys:
        for iid, rec in incidents.items():
            if iid in matched or rec.get("device") not in (d.device, d.device_ip):
                continue
            if d.peer is None or rec.get("peer") in (None, d.peer):
                decoy_hits.append({"decoy": d.id, "incident_id": iid, "cause": rec.get("cause")})
    false_positives = sorted(set(incidents) - matched)
    detected = sum(1 for f in faults if f["detected"])
    return {
        "faults": faults,
        "recall": detected / len(faults) if faults else 1.0,
        "precision": len(matched) / len(incidents) if incidents else 1.0,
        "incidents": len(incidents),
        "false_positives": [
            {k: incidents[i].get(k) for k in ("incident_id", "device", "peer", "cause")}
            for i in false_positives
        ],
        "decoy_hits": decoy_hits,
    }


async def _run(plan: Plan, opts: RunOptions, progress: Progress | None) -> dict[str, Any]:
    raw_before = await end_offsets(opts.bootstrap, [opts.raw_topic])
    inc_before = await end_offsets(opts.bootstrap, [INCIDENTS_TOPIC])
    if not raw_before:
        raise ConfigError(f"topic {opts.raw_topic} not found at {opts.bootstrap}: is the stack up?")
    seen = Seen()
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_incidents(opts.bootstrap, inc_before, seen, stop))
    pids, cpu_note = stack_pids(opts.state_dir, opts.bootstrap)

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    total = sum(len(s) for s in plan.shards)
    counters = [ctx.Value("q", 0) for _ in plan.shards]
    start_at = time.time() + 1.5  # time for the senders to start up
    procs = []
    for shard, shard_marks, counter in zip(plan.shards, plan.marks, counters, strict=True):
        if not shard:
            continue
        rate = opts.rate * len(shard) / total
        args = (opts.target, opts.raw_topic, shard, shard_marks, rate, start_at, counter, out)
        proc = ctx.Process(target=_sender, args=args, daemon=True)
        proc.start()
        procs.append(proc)

    samples: list[dict[str, float | int | None]] = []
    results: list[dict[str, Any]] = []

    async def cpu_at_start() -> cpu.Sample:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        return cpu.sample(pids)

    # the stack's CPU time from the first line sent until the pipeline drained
    cpu_start = asyncio.create_task(cpu_at_start())
    cpu_end: cpu.Sample | None = None

    async def sample(phase: str) -> int | None:
        lag = await group_lag(opts.bootstrap, opts.group)
        sent = sum(int(c.value) for c in counters)
        samples.append(
            {"t": round(time.time() - start_at, 3), "sent": sent, "lag": lag if lag >= 0 else None}
        )
        if progress is not None:
            progress(phase, sent, total)
        return lag if lag >= 0 else None

    try:
        while len(results) < len(procs):
            tick = asyncio.create_task(asyncio.sleep(1.0))
            await sample("sending")
            while not out.empty():
                results.append(out.get())
            if len(results) < len(procs) and not any(p.is_alive() for p in procs):
                await asyncio.sleep(0.2)
                while not out.empty():
                    results.append(out.get())
                if len(results) < len(procs):
                    raise ConfigError("a sender process died; see its error above")
            await tick
        for proc in procs:
            proc.join(5)
        sent_total = sum(r["sent"] for r in results)
        first = min(r["first"] for r in results)
        last = max(r["last"] for r in results)
        marks: dict[str, float] = {}
        for r in results:
            marks.update(r["marks"])

        # drain: raw offsets stop growing, the group's lag reaches 0, incidents settle
        drain_start = time.time()
        drained_at: float | None = None
        last_raw = -1
        stable_since = time.time()
        n_inc = -1
        while time.time() - drain_start < opts.drain_timeout:
            tick = asyncio.create_task(asyncio.sleep(1.0))
            lag = await sample("draining")
            raw_now = _delta(await end_offsets(opts.bootstrap, [opts.raw_topic]), raw_before)
            if raw_now != last_raw or len(seen.latest) != n_inc:
                last_raw, n_inc, stable_since = raw_now, len(seen.latest), time.time()
            if lag == 0 and (raw_now >= sent_total or time.time() - stable_since >= 2):
                if drained_at is None:
                    drained_at = time.time()
                    cpu_end = cpu.sample(pids)
                if time.time() - stable_since >= opts.settle:
                    break
            else:
                drained_at = None
                cpu_end = None
            await tick
        raw_after = await end_offsets(opts.bootstrap, [opts.raw_topic])
        cpu_before = await cpu_start
        if cpu_end is None:
            cpu_end = cpu.sample(pids)
    finally:
        stop.set()
        cpu_start.cancel()
        await watcher
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5)

    received = _delta(raw_after, raw_before)
    elapsed = max(last - first, 1e-6)
    lags = [s["lag"] for s in samples if s["lag"] is not None]
    result: dict[str, Any] = {
        "scenario": plan.scenario,
        "seed": plan.seed,
        "target": opts.target,
        "senders": len(procs),
        "offered_rate": opts.rate,
        "duration_s": opts.duration,
        "event_time_start": datetime.fromtimestamp(plan.start_ms / 1000, UTC).isoformat(),
        "event_time_end": datetime.fromtimestamp(plan.end_ms / 1000, UTC).isoformat(),
        "stamped_devices": plan.stamped,
        "lines": total,
        "sent": sent_total,
        "send_seconds": round(elapsed, 3),
        "achieved_rate": round(sent_total / elapsed, 1),
        "received": received,
        "lost": max(sent_total - received, 0),
        "loss_ratio": max(sent_total - received, 0) / sent_total if sent_total else 0.0,
        "max_lag": max(lags) if lags else None,
        "max_lag_s": opts.max_lag_s,
        "drained": drained_at is not None,
        "drain_seconds": round(drained_at - last, 3) if drained_at is not None else None,
        "lag_samples": samples,
    }
    if cpu_note is None:
        sender_pids = [p.pid for p in procs if p.pid is not None]
        result["cpu"] = cpu_usage(results, sender_pids, pids, cpu_before, cpu_end)
    else:
        result["cpu"] = cpu.not_measured(cpu_note)
    result.update(_score(plan, seen, marks, (start_at, time.time())))
    lat = sorted(f["latency_s"] for f in result["faults"] if f["latency_s"] is not None)
    result["latency_p50_s"] = lat[len(lat) // 2] if lat else None
    result["latency_max_s"] = lat[-1] if lat else None
    return result


def cpu_usage(
    sender_results: list[dict[str, Any]],
    sender_pids: list[int],
    pids: dict[str, int],
    before: cpu.Sample,
    after: cpu.Sample,
) -> dict[str, Any]:
    """The run's CPU table: the senders (their own CPU while sending, summed) and every
    process of the stack between ``before`` and ``after``, per message sent."""
    spent = [r.get("cpu_s") for r in sender_results]
    senders = None if None in spent else sum(float(x) for x in spent if x is not None)
    return cpu.usage(
        before,
        after,
        sum(int(r["sent"]) for r in sender_results),
        extra={"senders": senders},
        pids={"senders": sender_pids, **pids},
    )


# --------------------------------------------------------------------------- event clock


def _clock_key(bootstrap: str) -> str:
    return bootstrap.replace(":", "_").replace("/", "_")


def next_start_ms(clock_file: Path | None, bootstrap: str) -> int:
    """Now, or later when an earlier run's event times reached further (rounded to 1 s)."""
    now = int(time.time()) * 1000
    if clock_file is None:
        return now
    try:
        data = json.loads(clock_file.read_text(encoding="utf-8"))
        after = int(data.get(_clock_key(bootstrap), 0))
    except (OSError, ValueError, AttributeError):
        after = 0
    return max(now, (after // 1000 + 1) * 1000)


def save_clock(clock_file: Path | None, bootstrap: str, end_ms: int) -> None:
    if clock_file is None:
        return
    data: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads(clock_file.read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            data = {str(k): int(v) for k, v in loaded.items()}
    data[_clock_key(bootstrap)] = end_ms + 60_000
    clock_file.parent.mkdir(parents=True, exist_ok=True)
    clock_file.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def run_once(
    scenario: Scenario,
    opts: RunOptions,
    *,
    clock_file: Path | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """One paced run against a running stack; the result as a JSON-ready mapping."""
    lines = int(opts.rate * opts.duration)
    senders = opts.senders or senders_for(opts.rate)
    if opts.target.startswith("kafka://"):
        senders = opts.senders or 1
    start_ms = next_start_ms(clock_file, opts.bootstrap)
    plan = make_plan(scenario, lines=lines, seed=opts.seed, start_ms=start_ms, senders=senders)
    save_clock(clock_file, opts.bootstrap, plan.end_ms)
    return asyncio.run(_run(plan, opts, progress))


def lag_within_bound(result: dict[str, Any]) -> bool:
    """The group never fell more than ``max_lag_s`` seconds of traffic behind."""
    bound = float(result.get("max_lag_s", DEFAULT_MAX_LAG_S)) * result["offered_rate"]
    return result["max_lag"] is None or result["max_lag"] <= bound


def sustainable(result: dict[str, Any]) -> bool:
    """No loss, the lag stayed within its bound and drained, and the sender kept
    (nearly) the offered rate."""
    return bool(
        result["lost"] == 0
        and result["drained"]
        and lag_within_bound(result)
        and result["achieved_rate"] >= 0.9 * result["offered_rate"]
    )


def sweep(
    scenario: Scenario,
    opts: RunOptions,
    *,
    factor: float = 1.5,
    max_steps: int = 10,
    clock_file: Path | None = None,
    progress: Progress | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Step the rate up by ``factor`` until a step is not sustainable."""
    steps: list[dict[str, Any]] = []
    best: float | None = None
    rate = opts.rate
    stopped_by = "max steps"
    for _ in range(max_steps):
        step_opts = dataclasses.replace(opts, rate=rate)
        result = run_once(scenario, step_opts, clock_file=clock_file, progress=progress)
        result["sustainable"] = sustainable(result)
        steps.append(result)
        if on_step is not None:
            on_step(result)
        if not result["sustainable"]:
            if result["lost"]:
                stopped_by = "loss"
            elif not result["drained"]:
                stopped_by = "lag did not drain"
            elif not lag_within_bound(result):
                stopped_by = f"lag above {result['max_lag_s']:g} s of traffic"
            else:
                stopped_by = "sender could not keep the rate"
            break
        best = rate
        rate = round(rate * factor)
    return {"sweep": True, "sustainable_rate": best, "stopped_by": stopped_by, "steps": steps}
