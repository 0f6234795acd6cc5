"""The worker's one module of faust internals (streams/shell/worker/faust_fixes.py).

Every test drives real faust objects: a real (never started) faust app, its real
consumer with faust's own offset bookkeeping, faust's own messages and flow events. Only
the two calls that would go to a broker (``seek``, ``highwater``) are recorded on the
consumer instead. The end-to-end proofs run the worker against the real broker
(tests/test_worker.py, tests/test_worker_poison.py).
"""

from __future__ import annotations

import asyncio
import re
import tomllib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP
from faust_support import RAW, faust_app, message

from streams.shell.worker import faust_fixes

REPO = Path(__file__).resolve().parents[1]


def _run(scenario: Callable[[Any], Awaitable[Any]], *acking: str) -> Any:
    async def go() -> Any:
        faust_fixes.apply()
        async with faust_app(*acking) as app:
            return await scenario(app)

    return asyncio.run(go())


def _record_broker_calls(consumer: Any) -> tuple[list[tuple[TP, int]], dict[TP, int]]:
    """The seeks the consumer is asked for, and the end offsets it answers."""
    seeks: list[tuple[TP, int]] = []
    ends: dict[TP, int] = {}

    async def seek(tp: TP, offset: int) -> None:
        seeks.append((tp, offset))

    consumer.seek = seek
    consumer.highwater = ends.get
    return seeks, ends


# --------------------------------------------------------------------------- versions


def test_the_installed_faust_and_mode_are_the_supported_versions() -> None:
    faust_fixes.check_versions()  # raises otherwise


def test_another_faust_version_is_refused_with_the_supported_versions_named() -> None:
    with pytest.raises(faust_fixes.UnsupportedFaust) as err:
        faust_fixes.check_versions({"faust-streaming": "0.16.0", "mode-streaming": "0.7.1"})
    text = str(err.value)
    assert "faust-streaming==0.15.3" in text and "mode-streaming==0.7.1" in text
    assert "found faust-streaming 0.16.0" in text
    with pytest.raises(faust_fixes.UnsupportedFaust, match="mode-streaming not installed"):
        faust_fixes.check_versions({"faust-streaming": "0.15.3", "mode-streaming": None})


def test_pyproject_pins_exactly_the_versions_the_guard_supports() -> None:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "dependencies"
    ]
    pins = {}
    for dep in deps:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9.]+)", dep)
        if m:
            pins[m.group(1)] = m.group(2)
    assert {n: pins.get(n) for n in faust_fixes.SUPPORTED} == faust_fixes.SUPPORTED


# --------------------------------------------------------------------------- offsets


def test_repeated_acks_no_longer_stop_the_commit_after_two_offsets() -> None:
    async def scenario(app: Any) -> tuple[int | None, int | None, list[int]]:
        consumer = app.consumer
        consumer._committed_offset[RAW] = 911
        # faust's own bookkeeping after a restart that recovered a table: every offset
        # acked twice (the second ack of a message object faust saw as new).
        for offset in (911, 912, 912, 913, 913, 914, 914, 915):
            consumer._acked[RAW].append(offset)
            consumer._acked_index[RAW].add(offset)
        unpatched = Consumer._new_offset.__wrapped__  # type: ignore[attr-defined]
        saved = list(consumer._acked[RAW])
        faust_alone = unpatched(consumer, RAW)
        consumer._acked[RAW][:] = saved
        return faust_alone, consumer._new_offset(RAW), list(consumer._acked[RAW])

    faust_alone, fixed, left = _run(scenario)
    assert faust_alone == 913  # the run 911, 912 ends at the repeated 912
    assert fixed == 916
    assert left == []


def test_a_hole_at_the_head_of_the_acks_is_found_only_when_nothing_below_is_in_flight() -> None:
    async def scenario(app: Any) -> None:
        consumer = app.consumer
        consumer._committed_offset[RAW] = 1225
        for offset in (1286, 1287, 1288):
            consumer.ack(message(offset))
        assert faust_fixes.find_holes(consumer, {"raw"}) == {RAW: (1225, 1286)}
        assert faust_fixes.find_holes(consumer, {"other"}) == {}
        pending = message(1240)
        consumer.track_message(pending)
        assert faust_fixes.find_holes(consumer, {"raw"}) == {}  # still being processed
        consumer.ack(pending)  # done: the hole now ends below it
        assert faust_fixes.find_holes(consumer, {"raw"}) == {RAW: (1225, 1240)}
        consumer._acked[RAW] = [1225, 1226]
        assert faust_fixes.find_holes(consumer, {"raw"}) == {}

    _run(scenario, "raw")


def test_the_healer_seeks_back_to_the_committed_offset_when_a_hole_outlives_one_check() -> None:
    async def scenario(app: Any) -> None:
        consumer = app.consumer
        seeks, _ = _record_broker_calls(consumer)
        consumer._committed_offset[RAW] = 1225
        for offset in (1286, 1287):
            consumer.ack(message(offset))
        said: list[str] = []
        healer = faust_fixes.HoleHealer({"raw"}, said.append)
        await healer.check(consumer)
        assert seeks == []  # a fresh hole may be a batch still being acked
        await healer.check(consumer)
        assert seeks == [(RAW, 1225)]
        assert "1225..1285" in said[0]
        # a hole that moved (commits progressed) starts over
        consumer._committed_offset[RAW] = 1300
        consumer._acked[RAW] = [1310]
        await healer.check(consumer)
        assert seeks == [(RAW, 1225)]

    _run(scenario, "raw")


def test_records_read_and_given_up_with_nothing_acked_after_them_are_a_stall() -> None:
    async def scenario(app: Any) -> None:
        consumer = app.consumer
        _record_broker_calls(consumer)
        consumer._committed_offset[RAW] = 500
        consumer._read_offset[RAW] = 640  # read up to 640, none of 500..640 acked
        assert faust_fixes.find_stalls(consumer, {"raw"}) == {RAW: (500, 640)}
        assert faust_fixes.find_stalls(consumer, {"other"}) == {}
        # waiting in the inbox
        assert faust_fixes.find_stalls(consumer, {"raw"}, frozenset({RAW})) == {}
        pending = message(520)
        consumer.track_message(pending)
        assert faust_fixes.find_stalls(consumer, {"raw"}) == {}  # being processed
        consumer.ack(pending)
        assert faust_fixes.find_stalls(consumer, {"raw"}) == {}  # acked, about to be committed
        consumer._acked[RAW] = []
        consumer._read_offset[RAW] = 499  # everything read was committed: caught up
        assert faust_fixes.find_stalls(consumer, {"raw"}) == {}

    _run(scenario, "raw")


def test_a_read_position_at_the_committed_offset_is_a_stall_only_with_records_to_read() -> None:
    async def scenario(app: Any) -> None:
        consumer = app.consumer
        _, ends = _record_broker_calls(consumer)
        consumer._committed_offset[RAW] = 500
        consumer._read_offset[RAW] = 500  # what faust sets after a seek, or one record given up
        ends[RAW] = 500
        assert faust_fixes.find_stalls(consumer, {"raw"}) == {}  # idle partition
        ends[RAW] = 501
        assert faust_fixes.find_stalls(consumer, {"raw"}) == {RAW: (500, 500)}

    _run(scenario, "raw")


def test_the_healer_seeks_a_stalled_partition_back_when_it_has_not_moved_for_one_check() -> None:
    async def scenario(app: Any) -> None:
        consumer = app.consumer
        seeks, _ = _record_broker_calls(consumer)
        consumer._committed_offset[RAW] = 500
        consumer._read_offset[RAW] = 640
        said: list[str] = []
        healer = faust_fixes.HoleHealer({"raw"}, said.append)
        await healer.check(consumer)
        assert seeks == []
        await healer.check(consumer)
        assert seeks == [(RAW, 500)]
        assert "500..640" in said[0]
        consumer._read_offset[RAW] = 700  # it moved: starts over
        await healer.check(consumer)
        assert seeks == [(RAW, 500)]

    _run(scenario, "raw")


# --------------------------------------------------------------------------- hand-over


def test_a_hand_over_that_does_not_block_returns_without_any_task() -> None:
    async def scenario(app: Any) -> tuple[Any, int]:
        consumer = app.consumer
        before = len(asyncio.all_tasks())

        async def hand_over() -> str:
            return "put"

        result = await consumer.wait_first(hand_over(), consumer.suspend_flow.wait())
        return result, len(asyncio.all_tasks()) - before

    result, extra_tasks = _run(scenario)
    assert result.results == ["put"]
    assert not result.stopped
    assert extra_tasks == 0


def test_a_hand_over_that_blocks_is_still_abandoned_when_the_flow_is_suspended() -> None:
    async def scenario(app: Any) -> tuple[Any, list[str]]:
        consumer = app.consumer
        steps: list[str] = []
        never = asyncio.get_running_loop().create_future()

        async def hand_over() -> str:
            steps.append("started")
            await never  # a full queue: blocks
            steps.append("finished")
            return "put"

        async def rebalance() -> None:
            await asyncio.sleep(0.01)
            consumer.suspend_flow.set()

        task = asyncio.get_running_loop().create_task(rebalance())
        result = await consumer.wait_first(hand_over(), consumer.suspend_flow.wait())
        await task
        return result, steps

    result, steps = _run(scenario)
    assert steps == ["started"]  # started inline, then raced and abandoned
    assert len(result.done) == 1 and result.results == [True]  # the suspension won


def test_a_hand_over_that_blocks_then_completes_gives_its_result() -> None:
    async def scenario(app: Any) -> Any:
        consumer = app.consumer
        gate = asyncio.Event()

        async def hand_over() -> str:
            await gate.wait()
            await asyncio.sleep(0)
            return "put"

        asyncio.get_running_loop().call_later(0.01, gate.set)
        return await consumer.wait_first(hand_over(), consumer.suspend_flow.wait())

    assert "put" in _run(scenario).results


# --------------------------------------------------------------------------- the rest


def test_the_worker_consumer_waits_for_idle_partitions_only_as_long_as_the_app_says() -> None:
    async def scenario(app: Any) -> tuple[int, int]:
        thread = app.consumer._thread
        default = thread._create_worker_consumer(app.transport)
        app.tunnelwatch_fetch_max_wait_ms = 50
        short = thread._create_worker_consumer(app.transport)
        for built in (default, short):
            await built.stop()
        return default._fetch_max_wait_ms, short._fetch_max_wait_ms

    assert _run(scenario) == (1500, 50)  # faust's own 1.5 s unless the app asks


def test_a_table_write_in_an_event_context_sees_that_event() -> None:
    from faust.streams import current_event

    class Event:  # the worker's Source: any object holding the record
        def __init__(self, msg: Any) -> None:
            self.message = msg

    async def scenario(app: Any) -> tuple[Any, Any, Any]:
        event = Event(message(7))
        before = current_event()
        with faust_fixes.event_context(event):
            inside = current_event()
        return before, inside, current_event()

    before, inside, after = _run(scenario)
    assert before is None and after is None
    assert inside.message.offset == 7


def test_a_stop_request_arms_a_deadline_once_and_still_runs_faust_s_own_stop() -> None:
    import faust

    async def scenario(app: Any) -> tuple[list[Any], Any]:
        worker = faust.Worker(app, quiet=True, redirect_stdouts=False, loglevel="error")
        asked: list[Any] = []
        worker._schedule_shutdown = asked.append  # faust's own stop, recorded
        faust_fixes.stop_within(worker, 3600.0, print)
        worker._schedule_shutdown("SIGTERM")
        first = worker._tunnelwatch_deadline
        worker._schedule_shutdown("SIGTERM")
        assert worker._tunnelwatch_deadline is first  # one deadline, not one per signal
        first.cancel()
        return asked, first

    asked, timer = _run(scenario)
    assert asked == ["SIGTERM", "SIGTERM"]
    assert timer.interval == 3600.0 and timer.daemon


def test_the_worker_refuses_to_start_with_another_faust_and_says_which_it_supports(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from importlib import metadata

    from streams.cli.main import main

    real = metadata.version
    monkeypatch.setattr(
        faust_fixes.metadata,
        "version",
        lambda name: "0.16.1" if name == "faust-streaming" else real(name),
    )
    # Refused before any broker is contacted (nothing listens on port 9).
    assert main(["worker", "--bootstrap", "127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "supports exactly faust-streaming==0.15.3, mode-streaming==0.7.1" in err
    assert "found faust-streaming 0.16.1" in err


def _commits(steps: Sequence[str], put_off: Sequence[bool] = ()) -> list[str]:
    """faust's real consumer with the app's hooks: each step acks the next offsets (three,
    then one each) and commits ("commit"), or commits as a stopping consumer does
    ("final"). Before a periodic commit the app answers whether to put it off (the
    answers of ``put_off`` in turn, then no); before committing, it stores its states (a
    hook that waits). What happened, in order."""

    async def scenario(app: Any) -> list[str]:
        consumer = app.consumer
        order: list[str] = []
        answers = list(put_off)

        def put_off_commit() -> bool:
            answer = answers.pop(0) if answers else False
            order.append(f"put off: {answer}")
            return answer

        async def store() -> None:
            await asyncio.sleep(0)  # a hook that waits (a delivery) still comes first
            order.append("states stored")

        async def commit(offsets: Any) -> bool:
            order.append(f"committed {dict(offsets)}")
            return True

        app.tunnelwatch_before_commit = store
        app.tunnelwatch_put_off_commit = put_off_commit
        consumer._commit = commit
        consumer.assignment = lambda: {RAW}
        offsets = iter(range(100))
        for i, step in enumerate(steps):
            for _ in range(3 if i == 0 else 1):
                m = message(next(offsets))
                consumer.track_message(m)
                consumer.ack(m)
            if step == "final":
                await consumer.commit_and_end_transactions()
            else:
                order.append(f"did commit: {await consumer.commit()}")
        return order

    return _run(scenario, RAW.topic)


def test_the_app_stores_its_states_before_the_consumer_commits_and_never_after() -> None:
    # The worker stores device states lazily (once per device per commit): faust's real
    # consumer must await the app's hook before it commits offsets, each time.
    assert _commits(["commit", "commit"]) == [
        "put off: False",
        "states stored",
        f"committed {{{RAW!r}: 3}}",
        "did commit: True",
        "put off: False",
        "states stored",
        f"committed {{{RAW!r}: 4}}",
        "did commit: True",
    ]
    assert hasattr(Consumer._commit_offsets, "__wrapped__")
    assert hasattr(Consumer._commit_tps, "__wrapped__")


def test_a_commit_the_app_puts_off_is_covered_by_the_next_and_a_stops_commit_is_final() -> None:
    # The app may put a periodic commit off (a large fleet under load): faust's real
    # consumer then commits nothing, and the next commit covers those offsets too (faust
    # must not have taken them out of its acked lists). The commit of a stopping consumer
    # (faust ends its transactions) is never put off.
    first = ["put off: False", "states stored", f"committed {{{RAW!r}: 3}}", "did commit: True"]
    waited = ["put off: True", "did commit: False"]
    assert _commits(["commit", "commit", "commit", "final"], put_off=[False, True, True]) == [
        *first,
        *waited,
        *waited,
        "states stored",
        f"committed {{{RAW!r}: 6}}",
    ]
    # And after a put-off, the next periodic commit that goes on covers everything.
    assert _commits(["commit", "commit", "commit"], put_off=[False, True, False]) == [
        *first,
        *waited,
        "put off: False",
        "states stored",
        f"committed {{{RAW!r}: 5}}",
        "did commit: True",
    ]
