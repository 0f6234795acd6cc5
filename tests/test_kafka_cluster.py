"""A local 3-broker KRaft cluster (``tunnelwatch kafka start --brokers 3``) and the proof
that the stack loses nothing when one broker is killed with SIGKILL mid-stream."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaError
from kafka_support import KAFKA_BOOTSTRAP_ENV, PORT_OFFSET, unique_topic

from streams.cli.main import main
from streams.shell import broker
from streams.shell import incidents as incident_reader
from streams.shell.topics import (
    TopicNames,
    TopicSpec,
    end_offsets,
    ensure_topics,
    replicated_topics,
    replication_factors,
    reroute_topic,
    wait_quiet,
)

REPO = Path(__file__).resolve().parents[1]
CLUSTER_DIR = REPO / ".state" / "test-kafka-cluster"
# Three nodes on 39092/39093, 39094/39095, 39096/39097 (shifted like the test broker).
CLUSTER_PORT = 39092 + PORT_OFFSET
CLUSTER_CONTROLLER_PORT = 39093 + PORT_OFFSET
YEAR = 2024
# ASA lines without any time stamp take their receive time on a stream (README): left out.
STAMPLESS = re.compile(r"^<\d+>[\d.]+ %ASA-")
REPLAY_SECONDS = 12.0

# --------------------------------------------------------------------------- no Kafka


def test_cluster_nodes_listen_two_ports_apart_and_every_node_is_a_voter() -> None:
    spec = broker.ClusterSpec(brokers=3, port=9092, controller_port=9093, cluster_id="x")
    assert [spec.ports(i) for i in spec.node_ids] == [(9092, 9093), (9094, 9095), (9096, 9097)]
    assert spec.voters == "1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097"
    assert spec.bootstrap == "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"
    assert (spec.replication, spec.min_isr) == (3, 2)
    # Larger clusters keep three replicas; two brokers get two, and one in sync.
    assert (
        broker.ClusterSpec(5, 1, 2, "x").replication,
        broker.ClusterSpec(5, 1, 2, "x").min_isr,
    ) == (3, 2)
    assert (
        broker.ClusterSpec(2, 1, 2, "x").replication,
        broker.ClusterSpec(2, 1, 2, "x").min_isr,
    ) == (2, 1)


def test_a_cluster_nodes_properties_name_every_voter_and_its_replication(tmp_path: Path) -> None:
    spec = broker.ClusterSpec(brokers=3, port=9092, controller_port=9093, cluster_id="x")
    paths = broker._paths(tmp_path)
    broker._write_properties(
        paths, *spec.ports(2), node_id=2, voters=spec.voters, replication=3, min_isr=2
    )
    props = dict(
        line.split("=", 1)
        for line in paths.properties.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == spec.voters
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9094,CONTROLLER://127.0.0.1:9095"
    assert props["default.replication.factor"] == "3"
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["min.insync.replicas"] == "2"
    assert props["transaction.state.log.min.isr"] == "2"


def test_a_single_brokers_properties_stay_as_they_were(tmp_path: Path) -> None:
    paths = broker._paths(tmp_path)
    broker._write_properties(paths, 9092, 9093)
    text = paths.properties.read_text()
    assert "controller.quorum.voters=1@127.0.0.1:9093\n" in text
    assert "default.replication.factor=1\n" in text
    assert "min.insync.replicas=1\n" in text


def test_start_refuses_a_cluster_of_another_size_in_the_same_data_dir(tmp_path: Path) -> None:
    (tmp_path / broker.CLUSTER_FILE).write_text(
        json.dumps({"brokers": 3, "port": 1, "controller_port": 2, "cluster_id": "x"})
    )
    with pytest.raises(broker.BrokerSetupError, match="holds a cluster of 3 brokers"):
        broker.start_cluster(tmp_path, brokers=5, port=1, controller_port=2)


def test_status_and_stop_of_a_cluster_that_does_not_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / broker.CLUSTER_FILE).write_text(
        json.dumps({"brokers": 3, "port": 1092, "controller_port": 1093, "cluster_id": "x"})
    )
    assert main(["kafka", "status", "--data-dir", str(tmp_path)]) == 3
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("127.0.0.1:1092,127.0.0.1:1094,127.0.0.1:1096 not running")
    assert out[1:] == [f"  node {i} 127.0.0.1:{1090 + 2 * i} not running" for i in (1, 2, 3)]
    assert main(["kafka", "stop", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "not running"
    # A single-broker start there is refused: the folder holds a cluster.
    assert main(["kafka", "start", "--data-dir", str(tmp_path)]) == 1
    assert "holds a cluster" in capsys.readouterr().err


# --------------------------------------------------------------------------- Kafka


@pytest.fixture(scope="module")
def cluster() -> Iterator[broker.ClusterInfo]:
    """A fresh 3-broker cluster on the test ports, stopped (and removed) at the end."""
    if os.environ.get(KAFKA_BOOTSTRAP_ENV):
        pytest.skip("KAFKA_BOOTSTRAP points at an external broker: this test kills its own")
    if broker.is_cluster(CLUSTER_DIR):
        broker.stop_cluster(CLUSTER_DIR)
    shutil.rmtree(CLUSTER_DIR, ignore_errors=True)
    info = broker.start_cluster(CLUSTER_DIR, 3, CLUSTER_PORT, CLUSTER_CONTROLLER_PORT)
    try:
        yield info
    finally:
        broker.stop_cluster(CLUSTER_DIR)
        shutil.rmtree(CLUSTER_DIR, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _archive(tmp_path: Path) -> tuple[Path, list[str]]:
    """A day of synthetic fleet traffic (every line names its device); its records."""
    from load.scenario import default_scenario
    from load.synth import write_archive

    synth = tmp_path / "synth.log"
    write_archive(default_scenario(), synth, lines=20_000, seed=3)
    lines = synth.read_text(encoding="utf-8").splitlines()
    kept = [x for x in lines if not STAMPLESS.match(x)]
    archive = tmp_path / "fleet.log"
    archive.write_text("".join(x + "\n" for x in kept), encoding="utf-8")
    return archive, kept


def _event_span_s(archive: Path) -> float:
    from streams.core.framing import iter_records
    from streams.core.parse import Parser

    parser = Parser(year=YEAR)
    stamps = []
    with archive.open(encoding="utf-8") as fh:
        for record in iter_records(fh):
            ts = getattr(parser.parse(record), "ts", None)
            if ts is not None:
                stamps.append(ts)
    return max(stamps) - min(stamps)


class Procs:
    """Subprocesses of the test, killed at the end whatever happens."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "streams.cli.main", *argv]
        with self.log(name).open("ab") as log:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> Path:
        return self.tmp / f"{name}.log"

    def tail(self, name: str) -> str:
        return self.log(name).read_text(encoding="utf-8", errors="replace")[-3000:]

    def alive(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            pytest.fail(f"{name} exited ({proc.returncode}):\n{self.tail(name)}")

    def stop(self, name: str, sig: int = signal.SIGTERM) -> int:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=10)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    yield p
    for proc in p.procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _until(cond: Any, timeout: float, what: str, procs: Procs, watch: tuple[str, ...]) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        for name in watch:
            procs.alive(name)
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n}:\n{procs.tail(n)}" for n in watch)
            pytest.fail(f"timed out after {timeout} s waiting for {what}\n{logs}")
        time.sleep(0.2)


async def _raw_values(bootstrap: str, topic: str) -> list[bytes]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    ends = await end_offsets(bootstrap, [topic])
    tps = [TopicPartition(t, p) for (t, p) in ends]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    out: list[bytes] = []
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while any([await consumer.position(tp) < ends[(tp.topic, tp.partition)] for tp in tps]):
            for messages in (await consumer.getmany(*tps, timeout_ms=500)).values():
                out.extend(m.value for m in messages)
    finally:
        await consumer.stop()
    return out


async def _leaders(bootstrap: str, topic: str) -> Counter[int]:
    """How many partitions of ``topic`` each broker leads."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (entry,) = await admin.describe_topics([topic])
        return Counter(int(p["leader"]) for p in entry["partitions"])
    finally:
        await admin.close()


def _analyze(archive: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    rc = main(["analyze", "--format", "jsonl", "--year", str(YEAR), str(archive)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return {r["incident_id"]: r for r in map(json.loads, out.splitlines())}


@pytest.mark.kafka
def test_start_again_finds_the_cluster_running_and_status_says_every_node_is_ready(
    cluster: broker.ClusterInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--data-dir", str(cluster.data_dir), "--brokers", "3"]
    ports = ["--port", str(CLUSTER_PORT), "--controller-port", str(CLUSTER_CONTROLLER_PORT)]
    assert main(["kafka", "start", *argv, *ports]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{cluster.bootstrap} ready (already running, 3 brokers")
    assert "replication factor 3, min.insync.replicas 2" in out

    assert main(["kafka", "status", *argv]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{cluster.bootstrap} ready (3 of 3 brokers")
    for node_id, line in zip((1, 2, 3), lines[1:], strict=True):
        port = cluster.spec.ports(node_id)[0]
        pid = cluster.pids[node_id]
        assert line == f"  node {node_id} 127.0.0.1:{port} ready (pid {pid})"


@pytest.mark.kafka
def test_the_cluster_holds_the_stack_topics_with_three_replicas(
    cluster: broker.ClusterInfo,
) -> None:
    stack = [s.name for s in replicated_topics(TopicNames(), "tunnelwatch")]
    assert asyncio.run(replication_factors(cluster.bootstrap, stack)) == dict.fromkeys(stack, 3)


@pytest.mark.kafka
def test_kafka_topics_creates_another_apps_topics_on_the_cluster_and_keeps_existing_ones(
    cluster: broker.ClusterInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    app = unique_topic("tw-cluster-app")
    argv = ["kafka", "topics", "--bootstrap", cluster.bootstrap, "--app-id", app]
    assert main([*argv, "--partitions", "2"]) == 0
    first = capsys.readouterr().out.splitlines()
    assert f"{app}-__assignor-__leader partitions 1 replicas 3" in first
    assert f"{app}-device_state-changelog partitions 2 replicas 3" in first
    assert f"{app}-reroute partitions 2 replicas 3" in first
    # Asked again with other settings, the existing topics stay as they are.
    assert main([*argv, "--partitions", "4"]) == 0
    out = capsys.readouterr()
    assert f"{app}-reroute partitions 2 replicas 3" in out.out.splitlines()
    assert "warning" not in out.err


@pytest.mark.kafka
def test_kafka_topics_warns_about_an_existing_topic_with_fewer_replicas(
    cluster: broker.ClusterInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    app = unique_topic("tw-cluster-app")
    single = TopicSpec(reroute_topic(app), 4)
    asyncio.run(ensure_topics(cluster.bootstrap, [single], replication_factor=1))
    assert main(["kafka", "topics", "--bootstrap", cluster.bootstrap, "--app-id", app]) == 0
    out = capsys.readouterr()
    assert f"{app}-reroute partitions 4 replicas 1" in out.out.splitlines()
    assert out.err.strip() == (
        f"warning: {app}-reroute existed with fewer than 3 replicas (left as they are)"
    )


@pytest.mark.kafka
@pytest.mark.slow
def test_a_broker_killed_mid_replay_loses_no_record_and_changes_no_incident(
    cluster: broker.ClusterInfo,
    tmp_path: Path,
    procs: Procs,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Receiver and worker on the 3-broker cluster (replication 3, min.insync.replicas 2);
    an archive replayed over TCP; one broker killed with SIGKILL when part of it is on
    syslog.raw. Every line is on syslog.raw exactly once, and the incidents are the ones
    ``analyze`` finds in the archive."""
    bootstrap = cluster.bootstrap
    archive, lines = _archive(tmp_path)
    prefix = "tw-cluster-kill"
    names = TopicNames(
        raw=unique_topic(f"{prefix}-raw"),
        events=unique_topic(f"{prefix}-events"),
        deadletter=unique_topic(f"{prefix}-dl"),
        incidents=unique_topic(f"{prefix}-incidents"),
    )
    app_id = unique_topic(f"{prefix}-app")
    specs = replicated_topics(names, app_id, min_insync_replicas=2)
    asyncio.run(ensure_topics(bootstrap, specs, replication_factor=3))
    # (A broker's metadata may lag the create by a moment.)
    want = {s.name: 3 for s in specs}
    deadline = time.monotonic() + 30
    while (replicas := asyncio.run(replication_factors(bootstrap, list(want)))) != want:
        assert time.monotonic() < deadline, replicas
        time.sleep(0.5)

    ready = tmp_path / "worker.ready"
    procs.start(
        "worker", "worker", "--bootstrap", bootstrap, "--app-id", app_id,
        "--raw-topic", names.raw, "--events-topic", names.events,
        "--deadletter-topic", names.deadletter, "--incidents-topic", names.incidents,
        "--data-dir", str(tmp_path / "worker-data"), "--ready-file", str(ready),
        "--year", str(YEAR), "--tick", "0.5", "--flush-idle", "1.0",
    )  # fmt: skip
    listen = f"127.0.0.1:{_free_port()}"
    metrics = f"127.0.0.1:{_free_port()}"
    procs.start(
        "receiver", "receive", "--udp", listen, "--tcp", listen, "--bootstrap", bootstrap,
        "--topic", names.raw, "--spool-dir", str(tmp_path / "spool"), "--metrics", metrics,
    )  # fmt: skip

    def tcp_open() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", int(listen.rsplit(":", 1)[1])), 0.5):
                return True
        except OSError:
            return False

    _until(tcp_open, 60, "the receiver's TCP port", procs, ("receiver",))
    _until(ready.is_file, 90, "the worker's partitions", procs, ("worker",))

    # About REPLAY_SECONDS of replay: the archive's day of event time, compressed.
    speed = max(_event_span_s(archive) / REPLAY_SECONDS, 1.0)
    replay = procs.start(
        "replay", "replay", str(archive), "--to", f"tcp://{listen}", "--speed", f"{speed:.0f}",
        "--year", str(YEAR),
    )  # fmt: skip

    def raw_count() -> int:
        # -1 while the test's client still asks the dead broker (until the cluster has
        # fenced it); the receiver and the worker cope with that on their own.
        try:
            return sum(asyncio.run(end_offsets(bootstrap, [names.raw])).values())
        except KafkaError:
            return -1

    # Kill the broker that leads most syslog.raw partitions once a quarter is there.
    _until(
        lambda: raw_count() >= len(lines) // 4,
        60,
        "a quarter of the replay",
        procs,
        ("receiver", "worker"),
    )
    victim = asyncio.run(_leaders(bootstrap, names.raw)).most_common(1)[0][0]
    pid = broker.node_pid(cluster.data_dir, victim)
    assert pid is not None
    assert raw_count() < len(lines), "the replay ended before the broker could be killed"
    os.kill(pid, signal.SIGKILL)
    # From now on the test's own clients know only the survivors.
    bootstrap = ",".join(f"127.0.0.1:{cluster.spec.ports(i)[0]}" for i in (1, 2, 3) if i != victim)

    assert replay.wait(timeout=120) == 0, procs.tail("replay")
    # Nothing lost: every line reaches syslog.raw once the receiver has published its
    # spool (if it needed one while the partitions moved to the survivors).
    _until(
        lambda: raw_count() >= len(lines),
        90,
        "every line on syslog.raw",
        procs,
        ("receiver", "worker"),
    )
    assert procs.stop("receiver") == 0, procs.tail("receiver")
    values = asyncio.run(_raw_values(bootstrap, names.raw))
    assert Counter(v.decode() for v in values) == Counter(lines)

    quiet = asyncio.run(wait_quiet(bootstrap, names.incidents, 3.0, group_id=app_id, timeout=120))
    assert quiet, f"the worker did not finish:\n{procs.tail('worker')}"
    procs.alive("worker")
    streamed = asyncio.run(incident_reader.snapshot(bootstrap, names.incidents))
    analyzed = _analyze(archive, capsys)
    assert len(analyzed) >= 10

    def keys(recs: dict[str, Any]) -> set[tuple[str, str, str | None, str]]:
        return {(r["incident_id"], r["device"], r["peer"], r["cause"]) for r in recs.values()}

    assert keys(streamed) == keys(analyzed)
    for iid, a in analyzed.items():
        w = streamed[iid]
        # Joining both ends of a tunnel is a whole-archive step of analyze (related, and
        # a sentence of the summary); the worker publishes each device's own view.
        assert a["summary"].startswith(w["summary"]), iid
        strip = {"related", "summary"}
        assert {k: v for k, v in w.items() if k not in strip} == {
            k: v for k, v in a.items() if k not in strip
        }, iid
    # The partitions it led moved to the survivors, and it stayed dead all along: the
    # cluster served with two of three.
    assert victim not in asyncio.run(_leaders(bootstrap, names.raw))
    status = broker.cluster_status(cluster.data_dir)
    assert status is not None and status.state is broker.BrokerState.DEGRADED
    assert [n.node_id for n in status.nodes if n.pid is None] == [victim]
