"""Settings of one worker process (``tunnelwatch worker``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from streams.shell.broker import REPO_ROOT
from streams.shell.topics import (
    DEFAULT_APP_ID,
    DEFAULT_BOOTSTRAP,
    DEFAULT_PARTITIONS,
    TopicNames,
)

DEFAULT_DATA_DIR = REPO_ROOT / ".state" / "worker"
STORES = {"memory": "memory://", "rocksdb": "rocksdb://"}
#: What the worker publishes on ``syslog.events``: ``engine``, the events whose kind a
#: rule of the knowledge base reads (what can change a diagnosis: every VPN message the
#: engine correlates), or ``all``, every parsed record (each one then parsed in Python:
#: slower). See ``docs/`` and the README's worker section.
EVENT_POLICIES = ("engine", "all")


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    bootstrap: str = DEFAULT_BOOTSTRAP
    partitions: int = DEFAULT_PARTITIONS
    data_dir: Path = DEFAULT_DATA_DIR
    app_id: str = DEFAULT_APP_ID
    topics: TopicNames = field(default_factory=TopicNames)
    store: str = "memory"  # a key of STORES
    year: int | None = None  # year of year-less stamps (archive replays); else received_at
    device: str | None = None  # device of lines that name none (else the record's source)
    tz_map: str | None = None  # --tz-map FILE: zones of devices logging unlabelled local time
    ready_file: Path | None = None  # written once partitions are assigned and recovered
    tick_interval: float = 1.0  # seconds between two watermark ticks
    flush_idle: float = 2.0  # publish pending incident state after this long without events
    batch_max: int = 2000  # events per correlate batch
    batch_within: float = 0.2  # seconds to wait for a batch to fill (reroute topic)
    batch_linger: float = 0.02  # seconds a raw batch waits for more records once it has one
    fetch_max_wait: float = 0.05  # seconds the broker may hold a fetch for idle partitions
    commit_interval: float = 1.0  # seconds between offset commits
    # A periodic commit that would store more than one device state per `store_share`
    # records applied since the last store is put off (at most `commit_max_interval`
    # seconds from the last, never once the worker has read everything there is): with a
    # large fleet under load, each state then carries several records' changes. See
    # WorkerApp.store_states.
    store_share: float = 0.25
    store_floor: int = 2000  # a commit storing this many states or fewer is never put off
    commit_max_interval: float = 10.0
    stats_interval: float = 10.0  # seconds between two throughput log lines (0: never)
    loglevel: str = "warning"
    events: str = "engine"  # one of EVENT_POLICIES
    stop_grace: float = 8.0  # seconds a stop may take before the process exits at once
    # On the native batch path, the devices that only ever moved their clock are kept in
    # the native fleet core (as analyze keeps them), not as Python objects: False keeps
    # every device a Python Slot (the reference, for comparisons).
    fleet_core: bool = True

    @property
    def store_url(self) -> str:
        return STORES[self.store]
