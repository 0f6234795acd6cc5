"""Whole fetches of ``syslog.raw`` handed to the parse agent, past faust's per-record stream.

faust delivers every record through its conductor and a stream: the consumer loop races
the hand-over against a rebalance, the conductor decodes a faust ``Event`` and puts it
in the agent's queue, and the stream takes it out, sets its context and acknowledges
it. On a 2-core machine a no-op faust agent tops out at about 17k records/s (58 µs a
record, of the 89 µs the worker spent), and at 10k msg/s the workers fell behind the
receiver.

The parse agent needs none of it: it reads raw bytes and works in batches. So the
consumer's delivery loop (:func:`streams.shell.worker.faust_fixes.drain_messages`,
installed by :func:`streams.shell.worker.faust_fixes.apply`: that module holds every
access to faust's private names) hands each partition's part of a fetch to the app's
:class:`Inbox` as one list, and the agent takes lists out of it. The inbox itself uses
faust's public API only. Every
other topic (the reroute topic, whatever a test subscribes) keeps faust's path.

What faust's path guaranteed, and how the inbox keeps it:

- **Offsets.** A list's records are *tracked* (faust's set of records in flight, which
  a rebalance waits for) when the agent takes them, as a stream tracks an event when it
  takes it, and *acknowledged* with ``Consumer.ack`` once their outputs are in Kafka.
  faust's commit timer commits the acked offsets as for any stream.
- **Rebalances.** Lists taken while faust's flow control is suspended (a rebalance is
  under way), or fetched in an older consumer generation, are dropped, and the inbox
  is cleared when partitions are revoked: the records were never tracked, and the new
  assignment reads them again from the committed offsets. The inbox is *not* one of
  the queues flow control manages: faust clears those whenever it resumes the flow,
  which a recovery does after seeking to the committed offsets and again when it
  completes, and a fetch cleared then was not read again (a partition without a
  committed offset is not sought back at all).
- **Back-pressure.** The delivery loop waits while the app's flow control is suspended
  (faust's conductor does the same), and while the inbox holds ``max_records`` or more;
  it gives up the list if a rebalance stops the flow meanwhile.
- **Read positions and gaps.** The loop moves faust's read offset and reports offset
  gaps exactly as faust's does, record by record.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable
from typing import Any

#: Seconds between two looks at the flow while the delivery loop waits for room.
ROOM_POLL = 0.1


class Inbox:
    """Lists of consumer messages of ``topics``, waiting for the agent.

    ``app``: the faust app (for its consumer generation and flow control);
    ``max_records``: how many records may wait before the delivery loop waits.
    """

    def __init__(self, app: Any, topics: Iterable[str], max_records: int) -> None:
        self.app = app
        self.topics = frozenset(topics)
        self.max_records = max_records
        self._lists: deque[list[Any]] = deque()
        self._count = 0
        self._filled = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.dropped = 0  # records given up (rebalance): they are read again

    def __len__(self) -> int:
        return self._count

    def waiting(self) -> frozenset[Any]:
        """The partitions with records waiting here."""
        return frozenset(batch[0].tp for batch in self._lists if batch)

    def clear(self) -> None:
        """Forget the waiting lists (when partitions are revoked)."""
        self.dropped += self._count
        self._lists.clear()
        self._count = 0
        self._room.set()

    async def put(self, messages: list[Any], consumer: Any) -> bool:
        """Queue one partition's list (of one consumer generation); False when the flow
        stopped or the generation changed before there was room (the list is given up:
        its records were not tracked, and are read again)."""
        # As faust's conductor does before it hands a record to a stream: wait while
        # the app's flow control is suspended (at start, and during a rebalance); a
        # list taken then would be dropped with no seek to read it again.
        await self.app.flow_control.acquire()
        while self._count >= self.max_records:
            if not consumer.flow_active:
                return False
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), ROOM_POLL)
        if not consumer.flow_active or messages[0].generation_id != self.app.consumer_generation_id:
            # Stopped, or a whole rebalance went by while waiting: the seek that ended it
            # set the read position, which this list must not move.
            return False
        self._lists.append(messages)
        self._count += len(messages)
        self._filled.set()
        return True

    async def take(self, max_records: int, linger: float = 0.0) -> list[Any]:
        """The waiting records, oldest first, up to about ``max_records`` (whole lists, so
        one list may go beyond it); waits for one, then up to ``linger`` seconds for
        ``max_records``. Tracked as in flight when returned."""
        app = self.app
        while True:
            while not self._lists:
                self._filled.clear()
                await self._filled.wait()
            if linger > 0 and self._count < max_records:
                # A few milliseconds buy fewer, larger produce requests (the broker
                # shares the two cores with the workers).
                deadline = asyncio.get_running_loop().time() + linger
                while self._count < max_records:
                    left = deadline - asyncio.get_running_loop().time()
                    if left <= 0:
                        break
                    self._filled.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._filled.wait(), left)
            out: list[Any] = []
            while self._lists and len(out) < max_records:
                out.extend(self._lists.popleft())
            self._count -= len(out)
            if self._count < self.max_records:
                self._room.set()
            generation = app.consumer_generation_id
            if not app.flow_control.is_active():
                self.dropped += len(out)
                continue
            fresh = [m for m in out if m.generation_id == generation]
            self.dropped += len(out) - len(fresh)
            if not fresh:
                continue
            track = app.consumer.track_message
            for message in fresh:
                message.tracked = True
                track(message)
            return fresh

    def ack(self, messages: Iterable[Any]) -> None:
        """Mark records done: faust commits up to the last consecutive acked offset."""
        ack = self.app.consumer.ack
        for message in messages:
            ack(message)


__all__ = ["Inbox"]
