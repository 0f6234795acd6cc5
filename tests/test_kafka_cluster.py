"""A local 3-broker KRaft cluster (``tunnelwatch kafka start --brokers 3``) and the proof
that the stack loses nothing when one broker is killed with SIGKILL mid-stream."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.cli.main import main
from streams.shell import broker

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
