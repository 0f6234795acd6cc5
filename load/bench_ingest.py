"""``make bench-ingest``: the highest UDP rate published to Kafka with zero loss.

Run as ``python -m load.bench_ingest [--rates 20000,50000,...] [--seconds 5] [--skip-rsyslog]
[--python-path]`` (``--python-path``: the receiver on its Python UDP path,
``TUNNELWATCH_NATIVE=0``, for comparison; the summary says which path ran).

For each rate, in turn for ``tunnelwatch receive`` and for rsyslog (``imudp`` →
``omkafka``):

1. the receiver under test is started on 127.0.0.1 with a fresh topic;
2. a sender in a separate process (``python -m load.bench_ingest send``) sends synthetic
   Cisco syslog lines (``load.synth``) to it over UDP for ``--seconds``, paced by a token
   bucket, to 127.0.0.1 only;
3. the topic's records are counted by offsets (end minus beginning of every partition)
   until they reach the number sent or stop growing, and the Udp ``RcvbufErrors`` of
   /proc/net/snmp are compared with their value before the step.

A rate is *zero-loss* when records == sent and RcvbufErrors did not grow. Rates go up until
the first one that loses (``--keep-going`` tries them all). Both sides use the same
dedicated Kafka broker (``.state/bench-ingest-kafka``, ports 29392/29393), started and
stopped by the bench. rsyslog is installed with ``load/install-rsyslog.sh`` when missing;
if that is impossible its half is skipped with a message.

Everything runs on this machine: sender, receiver and the broker share its cores, so the
numbers are those of this box, not of a receiver alone.

``python -m load.bench_ingest latency [--rate 10000] [--seconds 30] [--faults 20]`` (``make
bench-latency``) measures detection latency instead: the whole stack (``tunnelwatch up``:
broker, worker, receiver) in ``.state/bench-latency`` (``--state``) on ports 29492/29493
(``--kafka-port``) and a free UDP port, background traffic at ``--rate`` over UDP, and
``--faults`` devices that each send three engine errors (a ``crypto_engine_fault``
threshold) spread over the run. Per fault: wall time from sending the third line to the
first record of its incident on ``vpn.incidents`` (consumed with a receipt time stamp). It
prints p50/p95/p99, the worker's events/s (its 10 s stats lines) and the CPU time of each
component (the sender, the receiver, Kafka, each worker: µs per message and % of a core
over the run, :mod:`load.cpu`), and writes ``bench-out/bench-latency.json``. The stack's
metrics port (127.0.0.1:9514, ``--metrics``) must be free.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from load import cpu
from load.scenario import default_scenario
from load.synth import generate
from streams.shell import broker
from streams.shell.receiver.metrics import parse_metrics, read_udp_snmp, scrape

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
INSTALL_RSYSLOG = HERE / "install-rsyslog.sh"
DATA_DIR = REPO / ".state" / "bench-ingest-kafka"
KAFKA_PORT, KAFKA_CONTROLLER_PORT = 29392, 29393
DEFAULT_RATES = (20_000, 30_000, 40_000, 50_000, 75_000, 100_000, 150_000, 200_000)
SETTLE_S = 60.0  # longest wait for the topic to reach the number sent
STALL_S = 8.0  # ... or for it to stop growing
HOST = "127.0.0.1"


# --------------------------------------------------------------------------- sender


def _lines(count: int = 20_000) -> list[bytes]:
    synth = generate(default_scenario(), lines=count, seed=11)
    return [line.encode("utf-8") for line in synth]


def send(port: int, rate: float, seconds: float) -> dict[str, float]:
    """Send for ``seconds`` at ``rate`` msg/s (token bucket, bursts of at most 2 ms)."""
    lines = _lines()
    n_lines = len(lines)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    sendto = sock.sendto
    addr = (HOST, port)
    burst = max(1, int(rate * 0.002))
    sent = 0
    errors = 0
    cpu_before = cpu.cpu_seconds(os.getpid()) or 0.0
    start = time.perf_counter()
    end = start + seconds
    i = 0
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        allowed = int((now - start) * rate) - sent
        if allowed <= 0:
            time.sleep(min(0.0005, end - now))
            continue
        for _ in range(min(allowed, burst)):
            try:
                sendto(lines[i], addr)
            except OSError:
                errors += 1
                continue
            i = i + 1 if i + 1 < n_lines else 0
            sent += 1
    elapsed = time.perf_counter() - start
    sock.close()
    cpu_s = (cpu.cpu_seconds(os.getpid()) or 0.0) - cpu_before
    return {
        "sent": sent,
        "seconds": elapsed,
        "rate": sent / elapsed,
        "send_errors": errors,
        "cpu_s": cpu_s,
    }


def _run_sender(port: int, rate: float, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "load.bench_ingest", "send", "--port", str(port),
         "--rate", str(rate), "--seconds", str(seconds)],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------- Kafka side


def _bootstrap() -> str:
    return f"{HOST}:{KAFKA_PORT}"


async def _count(topic: str) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=_bootstrap(), enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic)
        if not parts:
            return 0
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        return int(sum(ends[tp] - begins[tp] for tp in tps))
    finally:
        await consumer.stop()


def _settle(topic: str, target: int) -> int:
    """Records in ``topic`` once it reaches ``target`` or stops growing."""
    deadline = time.monotonic() + SETTLE_S
    last, last_change = -1, time.monotonic()
    while True:
        count = asyncio.run(_count(topic))
        now = time.monotonic()
        if count >= target or now > deadline:
            return count
        if count != last:
            last, last_change = count, now
        elif now - last_change > STALL_S:
            return count
        time.sleep(0.5)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s: a receiver flushes to Kafka on SIGTERM."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _cpu_seconds(pid: int) -> float:
    return cpu.cpu_seconds(pid) or 0.0


# --------------------------------------------------------------------------- receivers


class Tunnelwatch:
    name = "tunnelwatch"

    def __init__(self, workdir: Path, native: str | None = None) -> None:
        self.workdir = workdir
        self.native = native  # TUNNELWATCH_NATIVE for the receiver (None: as inherited)
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.log: Path = workdir / "tunnelwatch.log"

    @property
    def path(self) -> str:
        """Which UDP path the receiver said it runs (its startup log line)."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "unknown"
        for line in reversed(text.splitlines()):
            if ": native path (" in line:
                return "native"
            if ": Python path (" in line:
                return "python"
        return "unknown"

    @contextlib.contextmanager
    def running(self, port: int, topic: str) -> Iterator[None]:
        self.metrics_port = _free_port()
        spool = self.workdir / f"spool-{topic}"
        log_fh = self.log.open("ab")
        env = dict(os.environ)
        if self.native is not None:
            env["TUNNELWATCH_NATIVE"] = self.native
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli.main", "receive", "--udp", f"{HOST}:{port}",
             "--bootstrap", _bootstrap(), "--topic", topic, "--spool-dir", str(spool),
             "--metrics", f"{HOST}:{self.metrics_port}"],
            cwd=REPO, stdout=log_fh, stderr=log_fh, env=env,
        )  # fmt: skip
        try:
            self._wait_ready()
            yield
        finally:
            _terminate(self.proc)
            log_fh.close()
            shutil.rmtree(spool, ignore_errors=True)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                text = asyncio.run(scrape(HOST, self.metrics_port, timeout=1.0))
                if parse_metrics(text).get("tunnelwatch_kafka_up") == 1:
                    return
            except OSError:
                pass
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tunnelwatch receive did not come up; see {self.log}")
            time.sleep(0.2)

    def stats(self) -> dict[str, float]:
        try:
            return parse_metrics(asyncio.run(scrape(HOST, self.metrics_port)))
        except OSError:
            return {}

    def spooled(self) -> int:
        """Records the receiver wrote to its spool (Kafka did not keep up)."""
        return int(self.stats().get("tunnelwatch_spooled_total", 0))

    def why_spooled(self) -> str:
        """The reason of the last ``spooling to ...`` line of the receiver's log."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        reasons = [line.split(": ", 3)[-1] for line in text.splitlines() if "spooling to" in line]
        return reasons[-1] if reasons else ""

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0


_RSYSLOG_CONF = """\
global(workDirectory="{workdir}" maxMessageSize="64k")
module(load="imudp" threads="1")
module(load="omkafka")
input(type="imudp" address="{host}" port="{port}" rcvbufSize="32m" ruleset="kafka")
template(name="raw" type="string" string="%rawmsg%")
ruleset(name="kafka" queue.type="LinkedList" queue.size="500000" queue.dequeueBatchSize="4096") {{
  action(type="omkafka" topic="{topic}" broker=["{bootstrap}"] template="raw"
         partitions.auto="on"
         confParam=["compression.codec=lz4", "linger.ms=5", "batch.num.messages=10000",
                    "queue.buffering.max.messages=1000000", "acks=all"])
}}
"""


def _rsyslogd() -> str | None:
    return shutil.which("rsyslogd") or next(
        (p for p in ("/usr/sbin/rsyslogd", "/sbin/rsyslogd") if Path(p).exists()), None
    )


class Rsyslog:
    name = "rsyslog"

    def __init__(self, workdir: Path, binary: str) -> None:
        self.workdir = workdir / "rsyslog"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.binary = binary
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.workdir / "rsyslogd.log"

    @contextlib.contextmanager
    def running(self, port: int, topic: str) -> Iterator[None]:
        conf = self.workdir / "rsyslog.conf"
        pidfile = self.workdir / "rsyslogd.pid"
        conf.write_text(
            _RSYSLOG_CONF.format(
                workdir=self.workdir, host=HOST, port=port, topic=topic, bootstrap=_bootstrap()
            ),
            encoding="utf-8",
        )
        log_fh = self.log.open("ab")
        self.proc = subprocess.Popen(
            [self.binary, "-n", "-f", str(conf), "-i", str(pidfile)],
            stdout=log_fh, stderr=log_fh,
        )  # fmt: skip
        try:
            self._wait_ready(port, topic)
            yield
        finally:
            _terminate(self.proc)
            log_fh.close()

    def _wait_ready(self, port: int, topic: str) -> None:
        """rsyslogd is ready when a probe datagram shows up in the topic."""
        deadline = time.monotonic() + 30
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"rsyslogd exited ({self.proc.returncode}); see {self.log}")
                s.sendto(b"<14>bench-ingest readiness probe", (HOST, port))
                time.sleep(0.5)
                if asyncio.run(_count(topic)) > 0 or time.monotonic() > deadline:
                    return

    def stats(self) -> dict[str, float]:
        return {}

    def spooled(self) -> int:
        return 0

    def why_spooled(self) -> str:
        return ""

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0


# --------------------------------------------------------------------------- steps


@dataclass
class Step:
    receiver: str
    target_rate: int
    sent: int
    achieved_rate: float
    records: int
    rcvbuf_errors: int
    cpu_us_per_msg: float
    zero_loss: bool
    spooled: int = 0  # tunnelwatch: records that went through its disk spool


def _step(rx: Tunnelwatch | Rsyslog, rate: int, seconds: float) -> Step:
    port = _free_port()
    topic = f"bench-ingest-{rx.name}-{rate}-{uuid.uuid4().hex[:8]}"
    with rx.running(port, topic):
        baseline = asyncio.run(_count(topic))  # rsyslog's readiness probes
        errors_before = read_udp_snmp().get("RcvbufErrors", 0)
        cpu_before = _cpu_seconds(rx.pid)
        result = _run_sender(port, rate, seconds)
        sent = int(result["sent"])
        records = _settle(topic, baseline + sent) - baseline
        cpu = _cpu_seconds(rx.pid) - cpu_before
        errors = read_udp_snmp().get("RcvbufErrors", 0) - errors_before
        spooled = rx.spooled()
    step = Step(
        receiver=rx.name,
        target_rate=rate,
        sent=sent,
        achieved_rate=round(result["rate"]),
        records=records,
        rcvbuf_errors=errors,
        cpu_us_per_msg=round(cpu / sent * 1e6, 2) if sent else 0.0,
        zero_loss=records == sent and errors == 0,
        spooled=spooled,
    )
    print(
        f"  {rx.name:<12} {rate:>8,}/s  sent {sent:>9,} at {step.achieved_rate:>8,}/s  "
        f"records {records:>9,}  RcvbufErrors +{errors:<7} cpu {step.cpu_us_per_msg:>6} µs/msg  "
        f"{'zero loss' if step.zero_loss else 'LOSS'}"
        + (f" (spooled {spooled:,}: {rx.why_spooled()})" if spooled else ""),
        flush=True,
    )
    return step


def _ladder(
    rx: Tunnelwatch | Rsyslog, rates: Sequence[int], seconds: float, keep_going: bool
) -> tuple[int, list[Step]]:
    best = 0
    steps: list[Step] = []
    for rate in rates:
        step = _step(rx, rate, seconds)
        steps.append(step)
        # A sender that could not reach the rate did not test it.
        if step.zero_loss and step.achieved_rate >= 0.95 * rate:
            best = rate
        elif not keep_going:
            break
    return best, steps


def _dicts(steps: list[Step]) -> list[dict[str, Any]]:
    return [asdict(s) for s in steps]


def _ensure_rsyslog() -> str | None:
    binary = _rsyslogd()
    proc = subprocess.run(["bash", str(INSTALL_RSYSLOG)], capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        print(
            "bench-ingest: rsyslog with omkafka (Debian rsyslog + rsyslog-kafka) is not "
            f"installable here, skipping the rsyslog half:\n{proc.stderr.strip()}",
            flush=True,
        )
        return None
    return binary or _rsyslogd()


# --------------------------------------------------------------------------- latency

LATENCY_STATE = REPO / ".state" / "bench-latency"
LATENCY_KAFKA_PORT = 29492  # its controller: 29493
#: Three engine errors within 10 minutes open a ``crypto_engine_fault`` incident.
FAULT_LINE = (
    "<185>{stamp} {device}: {seq}: {stamp}: %MOTCR-1-PKTENGRET_ERROR: MOTCR PktEng Return "
    "Value = 0x20000,  PktEngReturn_MACMiscompare"
)
FAULT_THRESHOLD = 3


def _stamp(t: float) -> str:
    return time.strftime("%b %e %H:%M:%S", time.gmtime(t))


def _percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


async def _latency_run(
    bootstrap: str, port: int, rate: float, seconds: float, faults: int, drain: float
) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer

    from streams.shell.topics import INCIDENTS_TOPIC, RAW_TOPIC, end_offsets

    tag = uuid.uuid4().hex[:6]
    devices = [f"lat-{tag}-{i:02d}" for i in range(faults)]
    completed: dict[str, float] = {}  # device -> wall time the threshold-th line was sent
    seen: dict[str, float] = {}  # device -> wall time its first incident record arrived

    consumer = AIOKafkaConsumer(
        INCIDENTS_TOPIC, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False, group_id=None,
    )  # fmt: skip
    await consumer.start()

    async def consume() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.time()
            for records in batch.values():
                for rec in records:
                    try:
                        device = json.loads(rec.value or b"{}").get("device")
                    except ValueError:
                        continue
                    if device in completed and device not in seen:
                        seen[device] = now

    async def inject() -> None:
        # The faults spread over the run, from 10 % to 90 % of it; 0.2 s between the lines
        # of one fault, stamped with the wall clock (UTC) as a device would.
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i, device in enumerate(devices):
            at = t0 + seconds * (0.1 + 0.8 * i / max(faults - 1, 1))
            await asyncio.sleep(max(0.0, at - loop.time()))
            for seq in range(1, FAULT_THRESHOLD + 1):
                now = time.time()
                line = FAULT_LINE.format(stamp=_stamp(now), device=device, seq=seq)
                sock.sendto(line.encode(), (HOST, port))
                if seq == FAULT_THRESHOLD:
                    completed[device] = now
                else:
                    await asyncio.sleep(0.2)
        sock.close()

    raw_before = sum((await end_offsets(bootstrap, [RAW_TOPIC])).values())
    consumer_task = asyncio.create_task(consume())
    sender = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "load.bench_ingest", "send", "--port", str(port),
        "--rate", str(rate), "--seconds", str(seconds),
        cwd=REPO, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    sender_pid = sender.pid
    await inject()
    out, _ = await sender.communicate()
    sent: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    send_end = time.time()
    deadline = time.monotonic() + drain
    while len(seen) < faults and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    drained_at = time.time()
    raw_after = sum((await end_offsets(bootstrap, [RAW_TOPIC])).values())
    consumer_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await consumer_task
    await consumer.stop()
    lat = [seen[d] - completed[d] for d in devices if d in seen]
    return {
        "rate": rate,
        "seconds": seconds,
        "sent": sent,
        "raw_records": raw_after - raw_before,
        "faults": faults,
        "detected": len(lat),
        "latencies_s": lat,
        "p50_s": _percentile(lat, 50) if lat else None,
        "p95_s": _percentile(lat, 95) if lat else None,
        "p99_s": _percentile(lat, 99) if lat else None,
        "max_s": max(lat) if lat else None,
        "all_detected_after_send_end_s": drained_at - send_end if len(lat) == faults else None,
        "sender_pid": sender_pid,
    }


def _worker_rates(log: Path) -> list[float]:
    rates: list[float] = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if "tunnelwatch worker:" in line and " rate=" in line:
            with contextlib.suppress(ValueError):
                rates.append(float(line.rsplit(" rate=", 1)[1].split()[0].replace(",", "")))
    return rates


def latency(
    rate: float,
    seconds: float,
    faults: int,
    drain: float,
    out: Path,
    workers: int = 1,
    *,
    state: Path = LATENCY_STATE,
    kafka_port: int = LATENCY_KAFKA_PORT,
    metrics: str | None = None,
) -> int:
    """``make bench-latency``: detection latency of the whole stack under background load
    (Kafka on ``kafka_port`` and ``kafka_port + 1``, the receiver's metrics on ``metrics``,
    default the stack's)."""
    from streams.shell import stack

    metrics = metrics or stack.DEFAULT_METRICS
    metrics_host, _, metrics_port = metrics.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        if s.connect_ex((metrics_host, int(metrics_port))) == 0:
            print(f"bench-latency: {metrics} is taken (a stack is up?): "
                  "`tunnelwatch down` first", file=sys.stderr)  # fmt: skip
            return 2
    state = state.resolve()
    shutil.rmtree(state, ignore_errors=True)
    port = _free_port()
    listen = f"{HOST}:{port}"
    print(f"bench-latency: stack in {state} (Kafka :{kafka_port}, UDP {listen})")
    try:
        if not stack.up(
            state, port=kafka_port, controller_port=kafka_port + 1, listen=listen,
            metrics=metrics, workers=workers, say=lambda m: print(f"  {m}", flush=True),
        ):  # fmt: skip
            return 1
        bootstrap = f"{HOST}:{kafka_port}"
        paths = stack.StackPaths(state)
        # Where the two cores go: CPU time of each part over the run.
        pids = stack.component_pids(paths)
        cpu0 = cpu.sample(pids)
        t0 = time.monotonic()
        print(f"bench-latency: {rate:,.0f} msg/s over UDP for {seconds:.0f} s, {faults} faults, "
              f"{workers} worker(s)")  # fmt: skip
        result = asyncio.run(_latency_run(bootstrap, port, rate, seconds, faults, drain))
        result["workers"] = workers
        result["cpu"] = cpu.usage(
            cpu0,
            cpu.sample(pids),
            int(result["sent"]["sent"]) + faults * FAULT_THRESHOLD,
            extra={"sender": result["sent"].get("cpu_s")},
            pids={"sender": result.pop("sender_pid"), **pids},
        )
        result["cpu_s"] = {c["component"]: c["cpu_s"] for c in result["cpu"]["components"]}
        result["worker_cpu_s"] = sum(
            v or 0.0 for k, v in result["cpu_s"].items() if k.startswith("worker")
        )
        result["wall_s"] = time.monotonic() - t0
        per_worker = [_worker_rates(paths.log(part)) for part in paths.workers()]
        # the workers' summed events/s, per 10 s stats line
        rates = [sum(r) for r in zip(*per_worker, strict=False)]
        result["worker_rates"] = rates
    finally:
        stack.down(state, say=lambda m: print(f"  {m}", flush=True))
    sent = result["sent"]
    print(f"sent {sent['sent']:,} lines at {sent['rate']:,.0f} msg/s; "
          f"{result['raw_records']:,} on syslog.raw")  # fmt: skip
    if rates:
        print(f"worker: {max(rates):,.0f} events/s at best, "
              f"{sum(rates) / len(rates):,.0f} on average (10 s stats lines)")  # fmt: skip
    print_cpu(result["cpu"], rate)
    print(f"faults detected {result['detected']}/{faults}")
    if result["p50_s"] is not None:
        print(f"detection latency p50 {result['p50_s']:.2f} s  p95 {result['p95_s']:.2f} s  "
              f"p99 {result['p99_s']:.2f} s  max {result['max_s']:.2f} s")  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"details: {out}")
    return 0 if result["detected"] == faults else 1


def print_cpu(usage: dict[str, Any], rate: float) -> None:
    """The CPU table of a latency run (as ``tunnelwatch load run`` prints it)."""
    from rich.console import Console

    from load.report import cpu_table

    console = Console(width=160) if not sys.stdout.isatty() else Console()
    shown = cpu_table(
        {"offered_rate": rate, "cpu": usage},
        caption="the whole run: sender start → every fault seen; sender: its CPU while "
        "sending; others: the rest of the machine",
    )
    if shown is not None:
        console.print(shown)
    console.print(cpu.verdict(usage), highlight=False, markup=False)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m load.bench_ingest", description=__doc__)
    sub = ap.add_subparsers(dest="cmd")
    snd = sub.add_parser("send", help="(internal) the paced UDP sender")
    snd.add_argument("--port", type=int, required=True)
    snd.add_argument("--rate", type=float, required=True)
    snd.add_argument("--seconds", type=float, required=True)
    lat = sub.add_parser("latency", help="detection latency of the whole stack under load")
    lat.add_argument("--rate", type=float, default=10_000)
    lat.add_argument("--seconds", type=float, default=30.0)
    lat.add_argument("--faults", type=int, default=20)
    lat.add_argument("--drain", type=float, default=300.0, help="longest wait after sending")
    lat.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    lat.add_argument("--out", type=Path, default=REPO / "bench-out" / "bench-latency.json")
    lat.add_argument("--state", type=Path, default=LATENCY_STATE, help="the stack's state dir")
    lat.add_argument(
        "--kafka-port", type=int, default=LATENCY_KAFKA_PORT, help="Kafka (controller: +1)"
    )
    lat.add_argument("--metrics", help="the receiver's metrics HOST:PORT (default: the stack's)")
    ap.add_argument("--rates", default=",".join(str(r) for r in DEFAULT_RATES))
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--skip-rsyslog", action="store_true")
    ap.add_argument(
        "--python-path",
        action="store_true",
        help="run the receiver on its Python UDP path (TUNNELWATCH_NATIVE=0)",
    )
    ap.add_argument("--keep-going", action="store_true", help="try every rate even after a loss")
    ap.add_argument("--out", type=Path, default=REPO / "bench-out" / "bench-ingest.json")
    args = ap.parse_args(argv)
    if args.cmd == "send":
        print(json.dumps(send(args.port, args.rate, args.seconds)))
        return 0
    if args.cmd == "latency":
        return latency(
            args.rate, args.seconds, args.faults, args.drain, args.out, args.workers,
            state=args.state, kafka_port=args.kafka_port, metrics=args.metrics,
        )  # fmt: skip

    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    rsyslogd = None if args.skip_rsyslog else _ensure_rsyslog()
    print(f"bench-ingest: starting Kafka at {_bootstrap()} ({DATA_DIR})", flush=True)
    broker.start(DATA_DIR, KAFKA_PORT, KAFKA_CONTROLLER_PORT)
    results: dict[str, Any] = {"rates": rates, "seconds": args.seconds, "cpus": os.cpu_count()}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
            work = Path(tmp)
            tw = Tunnelwatch(work, "0" if args.python_path else None)
            print("bench-ingest: tunnelwatch receive (batched lz4, idempotent acks=all)")
            best_tw, steps = _ladder(tw, rates, args.seconds, args.keep_going)
            tw_path = tw.path
            print(f"  (UDP path: {tw_path})")
            results["tunnelwatch"] = {
                "zero_loss_rate": best_tw,
                "path": tw_path,
                "steps": [asdict(s) for s in steps],
            }
            best_rs: int | None = None
            if rsyslogd is not None:
                print(f"bench-ingest: rsyslog ({rsyslogd}: imudp → omkafka, lz4, acks=all)")
                best_rs, steps = _ladder(
                    Rsyslog(work, rsyslogd), rates, args.seconds, args.keep_going
                )
                results["rsyslog"] = {
                    "zero_loss_rate": best_rs,
                    "steps": [asdict(s) for s in steps],
                }
    finally:
        broker.stop(DATA_DIR)
        shutil.rmtree(DATA_DIR, ignore_errors=True)
    print()
    print(f"tunnelwatch receive: highest zero-loss rate {best_tw:,} msg/s ({tw_path} path)")
    if best_rs is None:
        why = "--skip-rsyslog" if args.skip_rsyslog else "not installable"
        print(f"rsyslog:             skipped ({why})")
    else:
        print(f"rsyslog imudp→omkafka: highest zero-loss rate {best_rs:,} msg/s")
        ratio = best_tw / best_rs if best_rs else float("inf")
        results["ratio_tunnelwatch_to_rsyslog"] = ratio
        print(f"ratio tunnelwatch / rsyslog: {ratio:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"details: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
