"""The worker's fixes of faust-streaming's offset bookkeeping (streams/shell/worker/faust_fixes.py).

These drive faust's own ``Consumer._new_offset`` and our hole finder on the consumer's
real bookkeeping structures; the end-to-end proof is the worker crash test against the
real broker (tests/test_worker.py).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from streams.shell.worker import faust_fixes


@dataclass(eq=False)
class _Msg:
    tp: TP
    offset: int
    acked: bool = False


@dataclass
class _Books:
    """The attributes of a faust Consumer that the offset bookkeeping reads."""

    _acked: dict[TP, list[int]] = field(default_factory=lambda: defaultdict(list))
    _acked_index: dict[TP, set[int]] = field(default_factory=lambda: defaultdict(set))
    _committed_offset: dict[TP, int | None] = field(default_factory=lambda: defaultdict(None))
    _gap: dict[TP, Any] = field(default_factory=lambda: defaultdict(IntervalTree))
    _unacked_messages: set[_Msg] = field(default_factory=set)
    _read_offset: dict[TP, int | None] = field(default_factory=dict)
    seeks: list[tuple[TP, int]] = field(default_factory=list)

    ends: dict[TP, int] = field(default_factory=dict)

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))

    def highwater(self, tp: TP) -> int | None:
        return self.ends.get(tp)


RAW = TP("raw", 0)


def _new_offset(books: _Books, tp: TP) -> int | None:
    faust_fixes.apply()
    return Consumer._new_offset(books, tp)  # type: ignore[arg-type]


def test_repeated_acks_no_longer_stop_the_commit_after_two_offsets() -> None:
    books = _Books()
    books._committed_offset[RAW] = 911
    books._acked[RAW] = [911, 912, 912, 913, 913, 914, 914, 915]
    books._acked_index[RAW] = {911, 912, 913, 914, 915}
    faust_fixes.apply()
    # faust alone would commit 913 (the run 911, 912 ends at the repeated 912)
    assert (
        Consumer._new_offset.__wrapped__(  # type: ignore[attr-defined]
            _copy(books), RAW
        )
        == 913
    )
    assert _new_offset(books, RAW) == 916
    assert books._acked[RAW] == []


def _copy(books: _Books) -> _Books:
    c = _Books()
    c._acked[RAW] = list(books._acked[RAW])
    c._acked_index[RAW] = set(books._acked_index[RAW])
    c._committed_offset[RAW] = books._committed_offset[RAW]
    return c


def test_a_hole_at_the_head_of_the_acks_is_found_only_when_nothing_below_is_in_flight() -> None:
    books = _Books()
    books._committed_offset[RAW] = 1225
    books._acked[RAW] = [1286, 1287, 1288]
    assert faust_fixes.find_holes(books, {"raw"}) == {RAW: (1225, 1286)}
    assert faust_fixes.find_holes(books, {"other"}) == {}
    pending = _Msg(RAW, 1240)
    books._unacked_messages.add(pending)
    assert faust_fixes.find_holes(books, {"raw"}) == {}  # still being processed
    pending.acked = True
    assert faust_fixes.find_holes(books, {"raw"}) == {RAW: (1225, 1286)}
    books._acked[RAW] = [1225, 1226]
    assert faust_fixes.find_holes(books, {"raw"}) == {}


def test_the_healer_seeks_back_to_the_committed_offset_when_a_hole_outlives_one_check() -> None:
    books = _Books()
    books._committed_offset[RAW] = 1225
    books._acked[RAW] = [1286, 1287]
    said: list[str] = []
    healer = faust_fixes.HoleHealer({"raw"}, said.append)
    asyncio.run(healer.check(books))
    assert books.seeks == []  # a fresh hole may be a batch still being acked
    asyncio.run(healer.check(books))
    assert books.seeks == [(RAW, 1225)]
    assert "1225..1285" in said[0]
    # a hole that moved (commits progressed) starts over
    books._committed_offset[RAW] = 1300
    books._acked[RAW] = [1310]
    asyncio.run(healer.check(books))
    assert books.seeks == [(RAW, 1225)]


def test_records_read_and_given_up_with_nothing_acked_after_them_are_a_stall() -> None:
    books = _Books()
    books._committed_offset[RAW] = 500
    books._read_offset[RAW] = 640  # read up to 640, none of 500..640 acked
    assert faust_fixes.find_stalls(books, {"raw"}) == {RAW: (500, 640)}
    assert faust_fixes.find_stalls(books, {"other"}) == {}
    assert faust_fixes.find_stalls(books, {"raw"}, frozenset({RAW})) == {}  # waiting in the inbox
    pending = _Msg(RAW, 520)
    books._unacked_messages.add(pending)
    assert faust_fixes.find_stalls(books, {"raw"}) == {}  # being processed
    pending.acked = True
    books._acked[RAW] = [500, 501]
    assert faust_fixes.find_stalls(books, {"raw"}) == {}  # acked, about to be committed
    books._acked[RAW] = []
    books._read_offset[RAW] = 499  # everything read was committed: caught up
    assert faust_fixes.find_stalls(books, {"raw"}) == {}


def test_a_read_position_at_the_committed_offset_is_a_stall_only_with_records_to_read() -> None:
    books = _Books()
    books._committed_offset[RAW] = 500
    books._read_offset[RAW] = 500  # what faust sets after a seek, or one record given up
    books.ends[RAW] = 500
    assert faust_fixes.find_stalls(books, {"raw"}) == {}  # idle partition
    books.ends[RAW] = 501
    assert faust_fixes.find_stalls(books, {"raw"}) == {RAW: (500, 500)}


def test_the_healer_seeks_a_stalled_partition_back_when_it_has_not_moved_for_one_check() -> None:
    books = _Books()
    books._committed_offset[RAW] = 500
    books._read_offset[RAW] = 640
    said: list[str] = []
    healer = faust_fixes.HoleHealer({"raw"}, said.append)
    asyncio.run(healer.check(books))
    assert books.seeks == []
    asyncio.run(healer.check(books))
    assert books.seeks == [(RAW, 500)]
    assert "500..640" in said[0]
    books._read_offset[RAW] = 700  # it moved: starts over
    asyncio.run(healer.check(books))
    assert books.seeks == [(RAW, 500)]


class _FlowService:
    """The attributes of a faust Consumer that its ``wait_first`` reads."""

    def __init__(self) -> None:
        self.suspend_flow = asyncio.Event()
        self._stopped = asyncio.Event()
        self._crashed = asyncio.Event()
        self.loop = asyncio.get_running_loop()


def test_a_hand_over_that_does_not_block_returns_without_any_task() -> None:
    from faust.transport.consumer import Consumer

    faust_fixes.apply()

    async def scenario() -> tuple[Any, int]:
        svc = _FlowService()
        before = len(asyncio.all_tasks())

        async def hand_over() -> str:
            return "put"

        result = await Consumer.wait_first(svc, hand_over(), svc.suspend_flow.wait())  # type: ignore[arg-type]
        return result, len(asyncio.all_tasks()) - before

    result, extra_tasks = asyncio.run(scenario())
    assert result.results == ["put"]
    assert not result.stopped
    assert extra_tasks == 0


def test_a_hand_over_that_blocks_is_still_abandoned_when_the_flow_is_suspended() -> None:
    from faust.transport.consumer import Consumer

    faust_fixes.apply()

    async def scenario() -> tuple[Any, list[str]]:
        svc = _FlowService()
        steps: list[str] = []
        never = asyncio.get_running_loop().create_future()

        async def hand_over() -> str:
            steps.append("started")
            await never  # a full queue: blocks
            steps.append("finished")
            return "put"

        async def rebalance() -> None:
            await asyncio.sleep(0.01)
            svc.suspend_flow.set()

        asyncio.get_running_loop().create_task(rebalance())
        result = await Consumer.wait_first(svc, hand_over(), svc.suspend_flow.wait())  # type: ignore[arg-type]
        return result, steps

    result, steps = asyncio.run(scenario())
    assert steps == ["started"]  # started inline, then raced and abandoned
    assert len(result.done) == 1 and result.results == [True]  # the suspension won


def test_a_hand_over_that_blocks_then_completes_gives_its_result() -> None:
    from faust.transport.consumer import Consumer

    faust_fixes.apply()

    async def scenario() -> Any:
        svc = _FlowService()
        gate = asyncio.Event()

        async def hand_over() -> str:
            await gate.wait()
            await asyncio.sleep(0)
            return "put"

        asyncio.get_running_loop().call_later(0.01, gate.set)
        return await Consumer.wait_first(svc, hand_over(), svc.suspend_flow.wait())  # type: ignore[arg-type]

    result = asyncio.run(scenario())
    assert "put" in result.results


class _Built:
    _fetch_max_wait_ms = 1500  # what faust passes to AIOKafkaConsumer


def test_the_worker_consumer_waits_for_idle_partitions_only_as_long_as_the_app_says() -> None:
    from types import SimpleNamespace

    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    faust_fixes.apply()
    create = AIOKafkaConsumerThread._create_worker_consumer
    assert hasattr(create, "__wrapped__")  # installed by apply()
    made = faust_fixes._short_fetch_wait(lambda self, transport: _Built())
    asked = SimpleNamespace(app=SimpleNamespace(tunnelwatch_fetch_max_wait_ms=50))
    assert made(asked, None)._fetch_max_wait_ms == 50
    # An app that does not ask keeps faust's own 1.5 s.
    assert made(SimpleNamespace(app=SimpleNamespace()), None)._fetch_max_wait_ms == 1500
