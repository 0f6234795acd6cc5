"""Real faust objects for the tests of the worker's faust module and inbox.

:func:`faust_app` builds a real :class:`faust.App` (never started: no broker is needed)
whose real consumer, flow control, conductor and messages the tests drive. It must run
inside an event loop (faust binds its services to the running loop).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import faust
from faust.types import TP, Message

RAW = TP("raw", 0)


@contextlib.asynccontextmanager
async def faust_app(*acking_topics: str) -> AsyncIterator[Any]:
    """A real faust app with its real consumer; records of ``acking_topics`` are acked
    as an agent's would be (faust's conductor indexes them as it does at start)."""
    app = faust.App(
        f"tw-test-{uuid.uuid4().hex[:8]}",
        broker="kafka://127.0.0.1:9",  # never connected
        autodiscover=False,
        web_enabled=False,
    )
    consumer = app.consumer
    for name in acking_topics:
        app.topics.add(app.topic(name))
    await app.topics._update_indices()
    try:
        yield app
    finally:
        # The consumer thread made its own event loop when it was built: close it.
        consumer._thread.thread_loop.close()


def message(offset: int, tp: TP = RAW, generation: int = 1) -> Any:
    """A real faust consumer record."""
    return Message(
        tp.topic,
        tp.partition,
        offset,
        0.0,
        0,
        {},
        b"key",
        b"value",
        None,
        generation_id=generation,
    )


__all__ = ["RAW", "faust_app", "message"]
