"""When each record of an archive is due, relative to the start of a replay.

Pure: event times in, offsets out. A record is due ``(t - t0) / speed`` seconds after the
start, where ``t0`` is the first event time and ``t`` the latest event time seen so far
(a line stamped earlier than one before it goes at once: replay keeps the archive's order
and never goes back in time). Records without an event time go with the one before.
``speed`` None means as fast as possible: everything is due at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def schedule(
    items: Iterable[tuple[T, float | None]], speed: float | None
) -> Iterator[tuple[T, float]]:
    """``(item, event time or None)`` in archive order → ``(item, due offset in seconds)``."""
    if speed is not None and speed <= 0:
        raise ValueError("speed must be positive")
    first: float | None = None
    latest: float | None = None
    for item, ts in items:
        if speed is None:
            yield item, 0.0
            continue
        if ts is not None:
            if first is None:
                first = latest = ts
            elif latest is None or ts > latest:
                latest = ts
        due = 0.0 if first is None or latest is None else (latest - first) / speed
        yield item, due


class Pacer:
    """Sleeps until an offset from its start is reached (clock and sleep are injectable)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.clock = clock
        self.sleep = sleep
        self.start = clock()

    def ahead(self, due: float) -> float:
        """Seconds until ``due`` (≤ 0 when it has passed)."""
        return due - (self.clock() - self.start)

    def wait(self, due: float) -> None:
        delay = self.ahead(due)
        if delay > 0:
            self.sleep(delay)
