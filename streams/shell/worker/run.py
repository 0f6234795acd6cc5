"""Start one worker process: create the topics, then run the faust worker until stopped."""

from __future__ import annotations

import gc

from streams.errors import BrokerError
from streams.shell.topics import changelog_topic, ensure_topics, run_sync, stack_topics
from streams.shell.worker.config import WorkerConfig

#: The worker's collector thresholds (see run_worker; analyze uses the same).
GC_THRESHOLD = (50_000, 1000, 1000)


def prepare_topics(cfg: WorkerConfig) -> tuple[int, int, int]:
    """Create the missing topics; return the partition count the worker must use, the
    raw topic's (parsing and correlating in one pass needs the two to be equal) and the
    incidents topic's (the worker sends to its partitions itself).

    ``syslog.events`` and the state changelog must agree (a device's state lives in the
    changelog partition of its events): an existing events topic decides, and an
    existing changelog with another count is an error.
    """
    names = cfg.topics
    counts: dict[str, int] = run_sync(
        ensure_topics(
            cfg.bootstrap,
            [s for s in stack_topics(names, cfg.app_id, cfg.partitions) if s.name == names.events],
        )
    )
    partitions = counts[names.events]
    counts = run_sync(ensure_topics(cfg.bootstrap, stack_topics(names, cfg.app_id, partitions)))
    changelog = changelog_topic(cfg.app_id)
    if counts[changelog] != partitions:
        raise BrokerError(
            f"topic {changelog} has {counts[changelog]} partitions but {names.events} has "
            f"{partitions}: they must agree (delete the changelog or use another --app-id)"
        )
    return partitions, counts[names.raw], counts[names.incidents]


def run_worker(cfg: WorkerConfig) -> int:
    """Run until SIGTERM/SIGINT; the exit code of the faust worker."""
    from streams.shell.worker.faust_fixes import check_versions

    check_versions()  # before anything else: a clear error, not a broken patch
    partitions, raw_partitions, incident_partitions = prepare_topics(cfg)
    # faust is imported here, not at module level: the CLI and the tests import this
    # package without paying for (or being warned by) faust.
    import asyncio

    import faust
    import uvloop

    from streams.shell.worker import faust_fixes
    from streams.shell.worker.app import build_app, say

    # faust's consumer, streams and timers are event-loop bound: uvloop cut the worker's
    # CPU per record (the receiver already runs on it).
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    app = build_app(cfg, partitions, raw_partitions, incident_partitions)
    # Every record makes a few short-lived objects (consumer records, clock rows, batch
    # tuples) while device states, faust's and aiokafka's objects live on: with CPython's
    # young-generation threshold of 700, the collector ran every few hundred records and
    # walked them again and again. What exists once the app is built is frozen (never
    # collected), and young collections wait for 50,000 allocations.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    say(
        f"starting: app {cfg.app_id}, broker {cfg.bootstrap}, {partitions} partitions, "
        f"{cfg.topics.raw} -> {cfg.topics.events} -> {cfg.topics.incidents}, store {cfg.store}"
    )
    worker = faust.Worker(
        app,
        loglevel=cfg.loglevel,
        quiet=True,
        redirect_stdouts=False,
        workdir=str(cfg.data_dir),
    )
    # SIGTERM stops the worker within seconds in every state (see faust_fixes).
    faust_fixes.stop_within(worker, cfg.stop_grace, say)
    try:
        worker.execute_from_commandline()  # returns only by raising SystemExit
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int | None) else 1
