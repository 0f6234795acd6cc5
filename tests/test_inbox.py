"""The parse agent's inbox (streams/shell/worker/inbox.py): whole fetches past faust's stream.

These drive the inbox against a real (never started) faust app: its own flow control,
consumer generation, consumer (track, ack, flow) and messages. The delivery loop itself
runs only against the real broker: every worker test (tests/test_worker.py) goes through
it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from faust_support import RAW, faust_app, message

from streams.shell.worker.inbox import Inbox


@contextlib.asynccontextmanager
async def _app() -> AsyncIterator[Any]:
    """A real faust app as the worker's is once started: flow running, generation 1."""
    async with faust_app("raw") as app:
        app.flow_control.resume()
        app.consumer_generation_id = 1
        yield app


def _msgs(*offsets: int, generation: int = 1) -> list[Any]:
    return [message(o, generation=generation) for o in offsets]


def _tracked(app: Any) -> list[int]:
    """Offsets of the records the consumer tracks as in flight."""
    return sorted(m.offset for m in app.consumer._unacked_messages)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_take_returns_the_waiting_lists_in_order_and_tracks_them() -> None:
    async def go() -> tuple[list[int], list[int], int]:
        async with _app() as app:
            inbox = Inbox(app, {"raw"}, max_records=100)
            assert await inbox.put(_msgs(1, 2), app.consumer)
            assert await inbox.put(_msgs(3), app.consumer)
            got = await inbox.take(10)
            return [m.offset for m in got], _tracked(app), len(inbox)

    offsets, tracked, left = _run(go())
    assert offsets == [1, 2, 3]
    assert tracked == [1, 2, 3]
    assert left == 0


def test_take_stops_at_max_records_on_a_whole_list() -> None:
    async def go() -> tuple[list[int], list[int]]:
        async with _app() as app:
            inbox = Inbox(app, {"raw"}, max_records=100)
            for part in ([1, 2], [3, 4], [5]):
                await inbox.put(_msgs(*part), app.consumer)
            first = await inbox.take(3)
            second = await inbox.take(3)
            return [m.offset for m in first], [m.offset for m in second]

    assert _run(go()) == ([1, 2, 3, 4], [5])


def test_take_waits_for_a_record_then_lingers_for_more() -> None:
    async def go() -> list[int]:
        async with _app() as app:
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
        async with _app() as app:
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
        async with _app() as app:
            inbox = Inbox(app, {"raw"}, max_records=100)
            await inbox.put(_msgs(1, 2, generation=1), app.consumer)
            app.consumer_generation_id = 2  # a rebalance in between
            await inbox.put(_msgs(7, generation=2), app.consumer)
            got = await inbox.take(1)
            return [m.offset for m in got], inbox.dropped, _tracked(app)

    offsets, dropped, tracked = _run(go())
    assert offsets == [7]
    assert dropped == 2
    assert tracked == [7]  # the stale records were never tracked: read again after the seek


def test_nothing_is_handed_out_while_flow_control_is_suspended() -> None:
    async def go() -> tuple[list[int], int]:
        async with _app() as app:
            inbox = Inbox(app, {"raw"}, max_records=100)
            await inbox.put(_msgs(1), app.consumer)
            app.flow_control.suspend()
            waiting = asyncio.create_task(inbox.take(10))
            await asyncio.sleep(0.02)
            assert not waiting.done()
            app.flow_control.resume()
            await inbox.put(_msgs(2), app.consumer)
            got = await asyncio.wait_for(waiting, 1.0)
            return [m.offset for m in got], inbox.dropped

    assert _run(go()) == ([2], 1)


def test_clear_forgets_the_waiting_records_and_makes_room() -> None:
    async def go() -> tuple[int, int, bool]:
        async with _app() as app:
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
        async with _app() as app:
            inbox = Inbox(app, {"raw"}, max_records=1)
            await inbox.put(_msgs(1), app.consumer)
            blocked = asyncio.create_task(inbox.put(_msgs(2), app.consumer))
            await asyncio.sleep(0.02)
            app.consumer.stop_flow()  # a rebalance began
            return await asyncio.wait_for(blocked, 2.0), len(inbox)

    assert _run(go()) == (False, 1)


def test_a_list_of_an_older_generation_is_refused_after_waiting_for_room() -> None:
    async def go() -> tuple[bool, list[int]]:
        async with _app() as app:
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
        async with _app() as app:
            app.flow_control.suspend()  # starting, or a rebalance under way
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
        async with _app() as app:
            app.consumer.stop_flow()
            inbox = Inbox(app, {"raw"}, max_records=10)
            return await inbox.put(_msgs(1), app.consumer), len(inbox)

    assert _run(go()) == (False, 0)


def test_ack_hands_every_record_to_the_consumer() -> None:
    async def go() -> tuple[list[int], list[bool], list[int]]:
        async with _app() as app:
            inbox = Inbox(app, {"raw"}, max_records=10)
            await inbox.put(_msgs(4, 5, 6), app.consumer)
            got = await inbox.take(10)
            tracked = _tracked(app)
            inbox.ack(got)
            return tracked, [m.acked for m in got], list(app.consumer._acked[RAW])

    tracked, acked, offsets = _run(go())
    assert tracked == [4, 5, 6]
    assert acked == [True, True, True]
    assert offsets == [4, 5, 6]  # faust's own record of acked offsets, which it commits
