"""The parse agent's inbox (streams/shell/worker/inbox.py): whole fetches past faust's stream.

These drive the inbox against a stand-in for the few attributes of the faust app it
reads (consumer generation, flow control, track and ack). The delivery loop itself runs
only against the real broker: every worker test (tests/test_worker.py) goes through it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from streams.shell.worker.inbox import Inbox


@dataclass(eq=False)
class _Msg:
    offset: int
    generation_id: int = 1
    tracked: bool = False


@dataclass
class _Flow:
    active: bool = True
    resumed: asyncio.Event | None = None

    def is_active(self) -> bool:
        return self.active

    async def acquire(self) -> None:
        while not self.active:
            if self.resumed is None:
                self.resumed = asyncio.Event()
            await self.resumed.wait()

    def resume(self) -> None:
        self.active = True
        if self.resumed is not None:
            self.resumed.set()


@dataclass
class _Consumer:
    flow_active: bool = True
    tracked: list[int] = field(default_factory=list)
    acked: list[int] = field(default_factory=list)

    def track_message(self, message: _Msg) -> None:
        self.tracked.append(message.offset)

    def ack(self, message: _Msg) -> bool:
        self.acked.append(message.offset)
        return True


@dataclass
class _App:
    consumer: _Consumer = field(default_factory=_Consumer)
    flow_control: _Flow = field(default_factory=_Flow)
    consumer_generation_id: int = 1


def _msgs(*offsets: int, generation: int = 1) -> list[Any]:
    return [_Msg(o, generation) for o in offsets]


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_take_returns_the_waiting_lists_in_order_and_tracks_them() -> None:
    async def go() -> tuple[list[int], list[int], int]:
        app = _App()
        inbox = Inbox(app, {"raw"}, max_records=100)
        assert await inbox.put(_msgs(1, 2), app.consumer)
        assert await inbox.put(_msgs(3), app.consumer)
        got = await inbox.take(10)
        return [m.offset for m in got], app.consumer.tracked, len(inbox)

    offsets, tracked, left = _run(go())
    assert offsets == [1, 2, 3]
    assert tracked == [1, 2, 3]
    assert left == 0


def test_take_stops_at_max_records_on_a_whole_list() -> None:
    async def go() -> tuple[list[int], list[int]]:
        app = _App()
        inbox = Inbox(app, {"raw"}, max_records=100)
        for part in ([1, 2], [3, 4], [5]):
            await inbox.put(_msgs(*part), app.consumer)
        first = await inbox.take(3)
        second = await inbox.take(3)
        return [m.offset for m in first], [m.offset for m in second]

    assert _run(go()) == ([1, 2, 3, 4], [5])


def test_take_waits_for_a_record_then_lingers_for_more() -> None:
    async def go() -> list[int]:
        app = _App()
        inbox = Inbox(app, {"raw"}, max_records=100)

        async def later() -> None:
            await asyncio.sleep(0.01)
            await inbox.put(_msgs(1), app.consumer)
            await asyncio.sleep(0.01)
            await inbox.put(_msgs(2), app.consumer)

        task = asyncio.create_task(later())
        got = await inbox.take(10, linger=0.5)  # returns once 10 or 0.5 s after the first
        await task
        return [m.offset for m in got]

    assert _run(go()) == [1, 2]


def test_take_returns_as_soon_as_max_records_are_there_even_when_lingering() -> None:
    async def go() -> tuple[list[int], float]:
        app = _App()
        inbox = Inbox(app, {"raw"}, max_records=100)
        await inbox.put(_msgs(1, 2, 3), app.consumer)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        got = await inbox.take(2, linger=5.0)
        return [m.offset for m in got], loop.time() - t0

    offsets, waited = _run(go())
    assert offsets == [1, 2, 3]
    assert waited < 1.0


def test_lists_of_an_older_consumer_generation_are_dropped_and_counted() -> None:
    async def go() -> tuple[list[int], int, list[int]]:
        app = _App()
        inbox = Inbox(app, {"raw"}, max_records=100)
        await inbox.put(_msgs(1, 2, generation=1), app.consumer)
        app.consumer_generation_id = 2  # a rebalance in between
        await inbox.put(_msgs(7, generation=2), app.consumer)
        got = await inbox.take(1)
        return [m.offset for m in got], inbox.dropped, app.consumer.tracked

    offsets, dropped, tracked = _run(go())
    assert offsets == [7]
    assert dropped == 2
    assert tracked == [7]  # the stale records were never tracked: read again after the seek


def test_nothing_is_handed_out_while_flow_control_is_suspended() -> None:
    async def go() -> tuple[list[int], int]:
        app = _App()
        inbox = Inbox(app, {"raw"}, max_records=100)
        await inbox.put(_msgs(1), app.consumer)
        app.flow_control.active = False
        waiting = asyncio.create_task(inbox.take(10))
        await asyncio.sleep(0.02)
        assert not waiting.done()
        app.flow_control.active = True
        await inbox.put(_msgs(2), app.consumer)
        got = await asyncio.wait_for(waiting, 1.0)
        return [m.offset for m in got], inbox.dropped

    assert _run(go()) == ([2], 1)


def test_clear_forgets_the_waiting_records_and_makes_room() -> None:
    async def go() -> tuple[int, int, bool]:
        app = _App()
        inbox = Inbox(app, {"raw"}, max_records=2)
        await inbox.put(_msgs(1, 2), app.consumer)
        blocked = asyncio.create_task(inbox.put(_msgs(3), app.consumer))
        await asyncio.sleep(0.02)
        assert not blocked.done()  # full: the delivery loop waits
        inbox.clear()
        ok = await asyncio.wait_for(blocked, 1.0)
        return len(inbox), inbox.dropped, ok

    assert _run(go()) == (1, 2, True)


def test_a_full_inbox_gives_the_list_up_when_the_flow_stops() -> None:
    async def go() -> tuple[bool, int]:
        app = _App()
        inbox = Inbox(app, {"raw"}, max_records=1)
        await inbox.put(_msgs(1), app.consumer)
        blocked = asyncio.create_task(inbox.put(_msgs(2), app.consumer))
        await asyncio.sleep(0.02)
        app.consumer.flow_active = False  # a rebalance began
        return await asyncio.wait_for(blocked, 2.0), len(inbox)

    assert _run(go()) == (False, 1)


def test_a_list_of_an_older_generation_is_refused_after_waiting_for_room() -> None:
    async def go() -> tuple[bool, list[int]]:
        app = _App()
        inbox = Inbox(app, {"raw"}, max_records=1)
        await inbox.put(_msgs(1), app.consumer)
        blocked = asyncio.create_task(inbox.put(_msgs(2, generation=1), app.consumer))
        await asyncio.sleep(0.02)
        app.consumer_generation_id = 2  # a whole rebalance went by meanwhile
        inbox.clear()
        return await asyncio.wait_for(blocked, 1.0), [len(inbox)]

    assert _run(go()) == (False, [0])


def test_a_list_waits_while_flow_control_is_suspended() -> None:
    async def go() -> tuple[bool, list[int]]:
        app = _App()
        app.flow_control.active = False  # starting, or a rebalance under way
        inbox = Inbox(app, {"raw"}, max_records=10)
        put = asyncio.create_task(inbox.put(_msgs(1, 2), app.consumer))
        await asyncio.sleep(0.02)
        assert not put.done()
        assert len(inbox) == 0
        app.flow_control.resume()
        ok = await asyncio.wait_for(put, 1.0)
        got = await inbox.take(10)
        return ok, [m.offset for m in got]

    assert _run(go()) == (True, [1, 2])


def test_put_refuses_a_list_while_the_flow_is_stopped() -> None:
    async def go() -> tuple[bool, int]:
        app = _App()
        app.consumer.flow_active = False
        inbox = Inbox(app, {"raw"}, max_records=10)
        return await inbox.put(_msgs(1), app.consumer), len(inbox)

    assert _run(go()) == (False, 0)


def test_ack_hands_every_record_to_the_consumer() -> None:
    app = _App()
    inbox = Inbox(app, {"raw"}, max_records=10)
    inbox.ack(_msgs(4, 5, 6))
    assert app.consumer.acked == [4, 5, 6]
