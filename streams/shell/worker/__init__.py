"""``tunnelwatch worker``: the streaming worker on Kafka (faust-streaming).

- ``config.py``: :class:`WorkerConfig`;
- ``stages.py``: the parse and correlate stages without faust (tested on their own);
- ``app.py``: :class:`~streams.shell.worker.app.WorkerApp`, the faust app and its named
  parts (agents ``parse`` and ``correlate``, the state table, timers, state stores);
- ``run.py``: topic creation and the faust worker's main loop;
- ``inbox.py``, ``outbox.py``: whole fetches in, whole batches out (refused records go
  aside as dead letters);
- ``faust_fixes.py``: the ONE module that touches faust's and mode's private names (with
  the version guard: both are pinned exactly).

Importing this package does not import faust: ``run.run_worker`` does.
"""

from streams.shell.worker.config import WorkerConfig

__all__ = ["WorkerConfig"]
