"""``tunnelwatch worker``: the streaming worker on Kafka (faust-streaming).

- ``config.py``: :class:`WorkerConfig`;
- ``stages.py``: the parse and correlate stages without faust (tested on their own);
- ``app.py``: the faust app (agents ``parse`` and ``correlate``, the state table, timers);
- ``run.py``: topic creation and the faust worker's main loop.

Importing this package does not import faust: ``run.run_worker`` does.
"""

from streams.shell.worker.config import WorkerConfig

__all__ = ["WorkerConfig"]
