"""Pytest support for tests that need a real Kafka broker (``@pytest.mark.kafka``).

Fixtures:

``kafka_broker`` (session)
    The project's own broker (``streams.shell.broker``) started on 127.0.0.1:19092
    (controller 19093) with data in ``<repo>/.state/test-kafka``, stopped at session end.
    ``None`` when ``KAFKA_BOOTSTRAP`` points at an external broker instead.
``kafka_bootstrap`` (session)
    ``$KAFKA_BOOTSTRAP`` if set, else the bootstrap address of ``kafka_broker``.
``kafka_names`` (function)
    A :class:`KafkaNames` with a topic name and a consumer group id unique to the test.

:func:`broker_fixture` builds further session fixtures for other ports or data dirs, and
:func:`unique_topic` / :func:`unique_group` make collision-free names.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams.shell import broker

__all__ = [
    "KAFKA_BOOTSTRAP_ENV",
    "PORT_OFFSET",
    "TEST_CONTROLLER_PORT",
    "TEST_DATA_DIR",
    "TEST_PORT",
    "KafkaNames",
    "broker_fixture",
    "kafka_bootstrap",
    "kafka_broker",
    "kafka_names",
    "unique_group",
    "unique_topic",
]

KAFKA_BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP"
REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_DATA_DIR = REPO_ROOT / ".state" / "test-kafka"
# TW_TEST_PORT_OFFSET shifts every fixed test port, so that several checkouts of the
# project (git worktrees) can run their Kafka tests on one machine at the same time.
PORT_OFFSET = int(os.environ.get("TW_TEST_PORT_OFFSET", "0"))
TEST_PORT = 19092 + PORT_OFFSET
TEST_CONTROLLER_PORT = 19093 + PORT_OFFSET

_ILLEGAL = re.compile(r"[^A-Za-z0-9._-]+")


def _clean(prefix: str) -> str:
    """Keep only characters legal in topic names, bounded in length."""
    return _ILLEGAL.sub("-", prefix).strip("-.")[:100] or "tw"


def unique_topic(prefix: str = "tw-test") -> str:
    """A topic name no other test (or earlier run) uses: ``<prefix>-<12 hex digits>``."""
    return f"{_clean(prefix)}-{uuid.uuid4().hex[:12]}"


def unique_group(prefix: str = "tw-test") -> str:
    """A consumer group id no other test uses: ``<prefix>-group-<12 hex digits>``."""
    return f"{_clean(prefix)}-group-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True, slots=True)
class KafkaNames:
    """Names unique to one test."""

    topic: str
    group_id: str
    prefix: str

    def another_topic(self, suffix: str) -> str:
        """One more unique topic for tests needing several (input/output...)."""
        return unique_topic(f"{self.prefix}-{suffix}")


def broker_fixture(
    data_dir: Path = TEST_DATA_DIR,
    port: int = TEST_PORT,
    controller_port: int = TEST_CONTROLLER_PORT,
) -> Callable[[], Iterator[broker.BrokerInfo | None]]:
    """Build a session fixture yielding a running broker (or ``None`` under KAFKA_BOOTSTRAP).

    The broker is started with :func:`streams.shell.broker.start` (idempotent, waits for a
    produce/consume round trip) and stopped when the session ends, if this session started
    it (a broker that was already running, e.g. a developer's, is left alone).
    """

    @pytest.fixture(scope="session")
    def _fixture() -> Iterator[broker.BrokerInfo | None]:
        if os.environ.get(KAFKA_BOOTSTRAP_ENV):
            yield None
            return
        info = broker.start(data_dir, port, controller_port)
        try:
            yield info
        finally:
            if info.started:
                broker.stop(data_dir)

    return _fixture


kafka_broker = broker_fixture()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: broker.BrokerInfo | None) -> str:
    """``host:port`` of the broker the tests use."""
    external = os.environ.get(KAFKA_BOOTSTRAP_ENV)
    if external:
        return external
    assert kafka_broker is not None
    return kafka_broker.bootstrap


@pytest.fixture
def kafka_names(request: pytest.FixtureRequest) -> KafkaNames:
    """A topic and a group id unique to this test, prefixed with the test's name."""
    prefix = _clean(f"tw-{request.node.name.removeprefix('test_')}")[:60]
    return KafkaNames(topic=unique_topic(prefix), group_id=unique_group(prefix), prefix=prefix)
