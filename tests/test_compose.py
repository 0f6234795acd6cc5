"""docker-compose.yml and the Dockerfile, checked against the CLI (no Docker engine here).

Every container command must parse with ``tunnelwatch``'s own argument parser, the ports
it listens on must be the ones published, the topic names and the partition count must be
the project's (``streams.shell.topics``), and every service needs a healthcheck.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.cli.main import build_parser
from streams.shell import topics

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    svc = compose["services"]
    assert isinstance(svc, dict)
    return svc


def _args(service: dict[str, Any]) -> argparse.Namespace:
    command = service["command"]
    assert isinstance(command, list) and all(isinstance(c, str) for c in command), command
    return build_parser().parse_args(command)


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _published(service: dict[str, Any]) -> set[tuple[int, int, str]]:
    out = set()
    for entry in service.get("ports", []):
        m = re.fullmatch(r"(\d+):(\d+)(?:/(tcp|udp))?", str(entry))
        assert m, entry
        out.add((int(m.group(1)), int(m.group(2)), m.group(3) or "tcp"))
    return out


def test_the_stack_has_kafka_a_receiver_and_scalable_workers(services: dict[str, Any]) -> None:
    assert set(services) == {"kafka", "receiver", "worker"}
    assert services["kafka"]["image"] == "apache/kafka:3.9.0"
    for name in ("receiver", "worker"):
        assert services[name]["image"] == "tunnelwatch:latest"
        assert services[name]["build"] == "."
        assert services[name]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert "ports" not in services["worker"], "replicas cannot share published ports"


def test_every_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        check = svc.get("healthcheck")
        assert check and check["test"], name
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_kafka_runs_single_node_kraft_combined_mode(services: dict[str, Any]) -> None:
    env = {k: str(v) for k, v in services["kafka"]["environment"].items()}
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node}@kafka:9093"
    assert "CONTROLLER://:9093" in env["KAFKA_LISTENERS"]
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert "CONTROLLER" not in env["KAFKA_ADVERTISED_LISTENERS"]
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_DEFAULT_REPLICATION_FACTOR",
    ):
        assert env[key] == "1", key
    # Topics auto-created by a receiver that starts first get the project's count.
    assert int(env["KAFKA_NUM_PARTITIONS"]) == topics.DEFAULT_PARTITIONS
    mounts = [str(v).split(":", 1) for v in services["kafka"]["volumes"]]
    assert [env["KAFKA_LOG_DIRS"]] == [m[1] for m in mounts if m[0] == "kafka-data"]


def test_every_command_parses_with_the_cli(services: dict[str, Any]) -> None:
    receive = _args(services["receiver"])
    assert receive.command == "receive"
    worker = _args(services["worker"])
    assert worker.command == "worker"
    for args in (receive, worker):
        assert args.bootstrap == "kafka:9092"


def test_the_receiver_publishes_the_ports_it_listens_on(services: dict[str, Any]) -> None:
    svc = services["receiver"]
    args = _args(svc)
    published = _published(svc)
    assert (_port(args.udp), _port(args.udp), "udp") in published
    assert (_port(args.tcp), _port(args.tcp), "tcp") in published
    assert (_port(args.metrics), _port(args.metrics), "tcp") in published
    assert args.udp.startswith("0.0.0.0:") and args.tcp.startswith("0.0.0.0:")
    assert args.topic == topics.RAW_TOPIC
    assert str(_port(args.metrics)) in " ".join(svc["healthcheck"]["test"])
    spool_mounts = [str(v).split(":", 1)[1] for v in svc["volumes"]]
    assert args.spool_dir in {Path(m) for m in spool_mounts} | set(spool_mounts)


def test_the_worker_uses_the_project_topics_and_partitions(services: dict[str, Any]) -> None:
    svc = services["worker"]
    args = _args(svc)
    assert args.partitions == topics.DEFAULT_PARTITIONS
    assert args.app_id == topics.DEFAULT_APP_ID
    assert (args.raw_topic, args.events_topic, args.deadletter_topic, args.incidents_topic) == (
        topics.RAW_TOPIC,
        topics.EVENTS_TOPIC,
        topics.DEADLETTER_TOPIC,
        topics.INCIDENTS_TOPIC,
    )
    assert args.ready_file is not None
    assert str(args.ready_file) in svc["healthcheck"]["test"]


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = {
        str(v).split(":", 1)[0]
        for svc in services.values()
        for v in svc.get("volumes", [])
        if not str(v).startswith(("/", "."))
    }
    assert used and used <= declared


def test_the_dockerfile_builds_the_cli_image() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11", text, re.M)
    assert 'ENTRYPOINT ["tunnelwatch"]' in text
    for path in ("pyproject.toml", "README.md", "streams", "load"):
        assert re.search(rf"^COPY .*\b{re.escape(path)}\b", text, re.M), path
        assert (REPO / path).exists(), path
    exposed = set(re.findall(r"\b(\d+)/(tcp|udp)\b", text))
    assert {("5514", "udp"), ("5514", "tcp"), ("9514", "tcp")} <= exposed
    assert re.search(r"^USER \S+", text, re.M), "the image must not run as root"
    # The same pinned, hash-checked versions as make install and CI.
    assert re.search(r"^COPY .*\brequirements\.lock\b", text, re.M)
    assert "pip install --require-hashes -r requirements.lock" in text
    assert "pip install --no-deps" in text


def test_the_image_gets_the_native_extension_from_a_build_stage() -> None:
    # Without it a container worker runs the Python parse path (3x the CPU per record).
    text = DOCKERFILE.read_text(encoding="utf-8")
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert len(stages) == 2, "a build stage, then the image"
    build, image = stages
    name = re.match(r"python:3\.11\S* AS (\w+)", build)
    assert name, "the build stage is named"
    # The lock's maturin (hash-checked), then native/ as a wheel.
    assert "pip install --require-hashes -r requirements.lock" in build
    assert re.search(r"^COPY native \./native", build, re.M)
    assert re.search(r"pip wheel --no-deps --no-build-isolation --wheel-dir (\S+) \./native", build)
    assert (REPO / "native" / "Cargo.lock").exists() and (
        REPO / "native" / "pyproject.toml"
    ).exists()
    # The image installs that wheel and refuses to build if it does not import.
    assert re.search(rf"^COPY --from={name.group(1)} ", image, re.M)
    assert "pip install --no-deps /wheels/*.whl" in image
    assert 'python -c "import tunnelwatch_native"' in image
    assert "rustup" not in image and "cargo" not in image
    # The build context leaves out local builds: native/target alone is gigabytes.
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    assert {"native/target", ".venv", ".git"} <= set(ignored)
