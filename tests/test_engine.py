"""Unit tests of the pure correlation engine with hand-built events.

Times are seconds after ``T0``; the shipped knowledge base gives the windows, thresholds,
confidences, quiet period (1800 s) and lateness (120 s) asserted here.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.core.engine import (
    MAX_CONN_IDS,
    MAX_RECENT,
    Correlator,
    DeviceState,
    advance,
    incident_id,
    step,
)
from streams.core.event import Event, iso_utc
from streams.core.framing import iter_records
from streams.core.kb import default_kb
from streams.core.parse import Parser

KB = default_kb()
T0 = 1_709_546_400.0  # 2024-03-04T10:00:00Z
DEV = "rtr-1"
A, B, C = "203.0.113.10", "198.51.100.77", "192.0.2.44"

Rec = dict[str, Any]


def ev(
    t: float,
    kind: str | None,
    peer: str | None = None,
    *,
    conn_id: str | None = None,
    device: str = DEV,
    synced: bool = True,
) -> Event:
    return Event(
        device=device,
        ts=T0 + t,
        raw=f"{device} {kind} {peer} conn={conn_id} t={t}",
        message="",
        clock_synced=synced,
        kind=kind,
        peer=peer,
        conn_id=conn_id,
    )


def feed(
    events: Iterable[Event], state: DeviceState | None = None
) -> tuple[DeviceState, list[Rec]]:
    st = state if state is not None else DeviceState(DEV)
    out: list[Rec] = []
    for e in events:
        st, recs = step(st, e, KB)
        out.extend(recs)
    return st, out


def hmac(times: Iterable[float], peer: str | None = A) -> list[Event]:
    return [ev(t, "HMAC_VERIFY_FAILED", peer) for t in times]


def causes(records: Iterable[Rec]) -> set[tuple[str | None, str]]:
    return {(r["peer"], r["cause"]) for r in records}


# -- thresholds and episodes ------------------------------------------------------------------


def test_a_threshold_rule_opens_exactly_at_its_threshold_and_not_before() -> None:
    st, out = feed(hmac([0, 30, 60, 90]))  # IOS rate limit: one MAC_ERR per 30 s
    assert out == []
    assert st.incidents == {}
    st, out = feed(hmac([120]), st)
    (rec,) = out
    assert (rec["status"], rec["count"], rec["cause"], rec["rule"]) == (
        "open",
        5,
        "crypto_engine_fault",
        "hmac-recurring",
    )
    assert rec["first_seen"] == iso_utc(T0)
    assert rec["last_seen"] == iso_utc(T0 + 120)


def test_events_further_apart_than_the_window_never_reach_the_threshold() -> None:
    _, out = feed(hmac([0, 150, 300, 450, 601, 900]))
    assert out == []


def test_one_incident_per_device_peer_and_cause_however_many_events() -> None:
    # 41 minutes of ASA 402120 at its rate limit (one per 5 s), never quiet.
    _, out = feed(hmac([5.0 * i for i in range(500)]))
    assert len({r["incident_id"] for r in out}) == 1
    assert len(out) <= 20, "updates are throttled: no alert storm"
    assert out[-1]["count"] >= 256
    assert [r["status"] for r in out[:2]] == ["open", "updated"]


def test_incident_ids_are_deterministic_across_runs_and_new_for_a_later_episode() -> None:
    # Three IKE attempts a minute apart (lines of one attempt would count once).
    events = hmac([0, 30, 60, 90, 120, 150]) + [
        ev(200 + 60 * i, "IKE_SANITY_FAILED", B) for i in range(3)
    ]
    _, first = feed(events)
    _, second = feed(events)
    assert first == second
    rec = first[0]
    assert rec["incident_id"] == incident_id(DEV, A, "crypto_engine_fault", T0)

    st, _ = feed(events)
    st, resolved = advance(st, T0 + 150 + 1800, KB)
    assert {r["status"] for r in resolved} == {"resolved"}
    _, later = feed(hmac([4000 + 30 * i for i in range(5)]), st)
    assert [(r["cause"], r["status"]) for r in later] == [
        ("psk_mismatch", "resolved"),  # quiet since 320: resolved as the clock moves on
        ("crypto_engine_fault", "open"),
    ]
    new = later[1]
    assert new["incident_id"] != rec["incident_id"]
    assert new["incident_id"] == incident_id(DEV, A, "crypto_engine_fault", T0 + 4000)


def test_an_incident_resolves_after_the_quiet_period_when_advanced() -> None:
    st, _ = feed(hmac([0, 30, 60, 90, 120]))
    st, out = advance(st, T0 + 120 + 1799, KB)
    assert out == []
    st, out = advance(st, T0 + 120 + 1800, KB)
    (rec,) = out
    assert rec["status"] == "resolved"
    assert rec["resolution"] == "quiet period elapsed"
    assert rec["resolved_at"] == iso_utc(T0 + 120 + 1800)
    assert st.incidents == {}


def test_the_device_clock_moving_past_the_quiet_period_resolves_without_advance() -> None:
    st, _ = feed(hmac([0, 30, 60, 90, 120]))
    st, out = feed([ev(120 + 1800 + 120, None)], st)  # any later line of the device
    assert [r["status"] for r in out] == ["resolved"]
    assert st.incidents == {}
    _, out = feed(hmac([2100 + 30 * i for i in range(4)]), st)
    assert out == [], "a new episode needs the threshold again"


def test_a_resolve_on_kind_resolves_the_incident_at_once() -> None:
    st, out = feed([ev(t, "IKE_SANITY_FAILED", A) for t in (0, 10, 20)])
    assert causes(out) == {(A, "psk_mismatch")}
    st, out = feed([ev(30, "PHASE1_COMPLETED", B)], st)
    assert out == [], "another peer's tunnel coming up resolves nothing"
    st, out = feed([ev(40, "PHASE1_COMPLETED", A)], st)
    (rec,) = out
    assert rec["status"] == "resolved"
    assert rec["resolution"] == "PHASE1_COMPLETED seen: the tunnel came up"
    assert rec["resolved_at"] == iso_utc(T0 + 40)
    assert st.incidents == {}


# -- event time -------------------------------------------------------------------------------


def test_an_event_older_than_the_lateness_is_counted_as_late_and_ignored() -> None:
    st, out = feed(hmac([1000, 1000, 1000, 1000]))
    st, out = feed(hmac([1000 - 121]), st)
    assert out == []
    assert st.late == 1
    st, out = feed(hmac([1000 - 120]), st)  # exactly at the lateness: still in time
    assert st.late == 1
    (rec,) = out
    assert rec["count"] == 5
    assert rec["first_seen"] == iso_utc(T0 + 880)


def test_out_of_order_events_within_the_lateness_still_count() -> None:
    st, out = feed(hmac([100, 40, 70, 10, 90]))
    (rec,) = out
    assert rec["count"] == 5
    assert rec["first_seen"] == iso_utc(T0 + 10)
    assert rec["last_seen"] == iso_utc(T0 + 100)
    assert st.late == 0


def test_an_absence_fires_only_when_the_watermark_passes_its_window() -> None:
    st, out = feed([ev(0, "PEER_LOST", A)])
    assert out == []
    st, out = advance(st, T0 + 599, KB)
    assert out == []
    st, out = advance(st, T0 + 600, KB)
    (rec,) = out
    assert (rec["peer"], rec["cause"], rec["rule"]) == (
        A,
        "peer_unreachable",
        "peer-lost-no-recovery",
    )
    assert rec["first_seen"] == iso_utc(T0)


def test_an_absence_fires_when_the_device_clock_passes_its_window_less_the_lateness() -> None:
    st, _ = feed([ev(0, "PEER_LOST", A)])
    st, out = feed([ev(600 + 119, None)], st)
    assert out == []
    st, out = feed([ev(600 + 120, None)], st)
    assert causes(out) == {(A, "peer_unreachable")}


def test_an_absence_does_not_fire_when_the_expected_kind_arrives_in_time() -> None:
    st, _ = feed([ev(0, "PEER_LOST", A), ev(95, "PHASE1_COMPLETED", A)])
    st, out = advance(st, T0 + 10_000, KB)
    assert out == []
    assert st.pending == {}


def test_a_sequence_rule_needs_first_then_in_order_within_its_window() -> None:
    _, wrong_order = feed([ev(0, "QM_FSM_ERROR", A), ev(10, "NO_CRYPTO_MAP_MATCH", A)])
    assert wrong_order == []
    _, too_late = feed([ev(0, "NO_CRYPTO_MAP_MATCH", A), ev(121, "QM_FSM_ERROR", A)])
    assert too_late == []
    _, other_peer = feed([ev(0, "NO_CRYPTO_MAP_MATCH", A), ev(10, "QM_FSM_ERROR", B)])
    assert other_peer == []
    _, out = feed([ev(0, "NO_CRYPTO_MAP_MATCH", A), ev(0.1, "QM_FSM_ERROR", A)])
    (rec,) = out
    assert (rec["peer"], rec["cause"], rec["rule"]) == (
        A,
        "crypto_acl_mismatch",
        "qm-fsm-proxy-sequence",
    )
    assert rec["confidence"] == pytest.approx(0.9)
    # Both lines are one refused attempt (same peer, 0.1 s apart): one count, two kinds.
    assert rec["count"] == 1
    assert rec["kind_counts"] == {"NO_CRYPTO_MAP_MATCH": 1, "QM_FSM_ERROR": 1}


# -- confidence, notes and suppression --------------------------------------------------------


def test_hmac_failures_on_a_single_peer_keep_the_path_corruption_note() -> None:
    _, out = feed(hmac([0, 30, 60, 90, 120]))
    (rec,) = out
    assert rec["confidence"] == pytest.approx(0.55)
    assert "corruption on the path is as likely" in rec["summary"]


def test_hmac_failures_on_two_peers_raise_confidence_to_a_local_fault() -> None:
    events = [ev(30 * i, "HMAC_VERIFY_FAILED", (A, B)[i % 2]) for i in range(10)]
    _, out = feed(events)
    opened = [r for r in out if r["status"] == "open"]
    assert causes(opened) == {(A, "crypto_engine_fault"), (B, "crypto_engine_fault")}
    for rec in opened:
        assert rec["confidence"] >= 0.85
        assert "HMAC failures on 2 peers" in rec["summary"]
        assert "corruption on the path is as likely" not in rec["summary"]


def test_crypto_engine_errors_with_hmac_failures_raise_confidence_to_0_9() -> None:
    events = [ev(30 * i, "HMAC_VERIFY_FAILED", (A, B)[i % 2]) for i in range(10)]
    events += [ev(100 + i, "ENGINE_MAC_MISCOMPARE") for i in range(3)]
    events.sort(key=lambda e: e.ts)
    _, out = feed(events)
    final = {(r["peer"], r["cause"]): r for r in out}
    assert set(final) == {
        (A, "crypto_engine_fault"),
        (B, "crypto_engine_fault"),
        (None, "crypto_engine_fault"),
    }
    for rec in final.values():
        assert rec["confidence"] == pytest.approx(0.9), rec["summary"]


def test_unless_suppresses_transform_set_mismatch_when_a_proxy_id_kind_was_seen() -> None:
    proposals = [ev(10 + 30 * i, "SA_PROPOSALS_UNACCEPTABLE", A) for i in range(4)]
    _, out = feed([ev(0, "PROXY_ID_REJECTED", A), *proposals])
    assert "transform_set_mismatch" not in {r["cause"] for r in out}
    _, out = feed(proposals)
    assert causes(out) == {(A, "transform_set_mismatch")}
    _, out = feed([ev(0, "PROXY_ID_REJECTED", B), *proposals])
    assert causes(out) == {(A, "transform_set_mismatch")}, "unless is per peer"


def test_a_connection_id_learned_from_a_mac_error_names_the_peer_of_later_replay_errors() -> None:
    events = [ev(0, "HMAC_VERIFY_FAILED", A, conn_id="2989")]
    events += [ev(60 + 60 * i, "REPLAY_CHECK_FAILED", conn_id="2989") for i in range(5)]
    events += [ev(61 + 60 * i, "REPLAY_CHECK_FAILED", conn_id="17") for i in range(5)]
    events.sort(key=lambda e: e.ts)
    _, out = feed(events)
    assert causes(out) == {(A, "qos_reordering"), (None, "qos_reordering")}


# -- state, clocks, memory --------------------------------------------------------------------


def _mixed_events() -> list[Event]:
    rng = random.Random(7)
    events: list[Event] = []
    for i in range(40):
        events.append(ev(30 * i, "HMAC_VERIFY_FAILED", (A, B)[i % 2], conn_id=("1", "3")[i % 2]))
        events.append(ev(30 * i + 7, "REPLAY_CHECK_FAILED", conn_id="1"))
        events.append(ev(30 * i + 9, None))
    events += [ev(100 + i, "ENGINE_MAC_MISCOMPARE") for i in range(3)]
    events += [ev(200 + 10 * i, "IKE_SANITY_FAILED", C) for i in range(4)]
    events += [ev(260, "PHASE1_COMPLETED", C), ev(300, "PEER_LOST", "192.0.2.99")]
    events += [ev(400, "NO_CRYPTO_MAP_MATCH", C), ev(401, "QM_FSM_ERROR", C)]
    events += [ev(1300 + 60 * i, "INVALID_SPI", "203.0.113.99") for i in range(6)]
    events += [ev(5000, None)]
    events.sort(key=lambda e: e.ts)
    # a little disorder within the lateness
    for _ in range(20):
        i = rng.randrange(len(events) - 1)
        if events[i + 1].ts - events[i].ts < 60:
            events[i], events[i + 1] = events[i + 1], events[i]
    return events


def _run(events: list[Event], split_at: int | None) -> tuple[list[Rec], dict[str, Any]]:
    st = DeviceState(DEV)
    out: list[Rec] = []
    for i, e in enumerate(events):
        if i == split_at:
            st = DeviceState.from_dict(orjson.loads(orjson.dumps(st.to_dict())))
        st, recs = step(st, e, KB)
        out.extend(recs)
        if i % 25 == 24:
            st, recs = advance(st, st.max_ts - KB.lateness, KB)
            out.extend(recs)
    st, recs = advance(st, st.max_ts + 10_000, KB)
    out.extend(recs)
    return out, st.to_dict()


def test_device_state_round_trips_through_orjson_mid_stream_and_continues_identically() -> None:
    events = _mixed_events()
    expected_records, expected_state = _run(events, None)
    assert {r["cause"] for r in expected_records} >= {
        "crypto_engine_fault",
        "qos_reordering",
        "psk_mismatch",
        "peer_unreachable",
        "crypto_acl_mismatch",
        "sa_out_of_sync",
    }
    for split_at in (0, 1, 57, len(events) // 2, len(events) - 1):
        records, state = _run(events, split_at)
        assert records == expected_records, f"split at {split_at}"
        assert state == expected_state


def test_an_empty_device_state_round_trips_through_orjson() -> None:
    st = DeviceState("asa-1")
    back = DeviceState.from_dict(orjson.loads(orjson.dumps(st.to_dict())))
    assert back == st
    assert back.max_ts == float("-inf")


def test_a_device_with_a_wrong_clock_keeps_its_incident_while_it_logs_its_evidence() -> None:
    corr = Correlator(KB)
    skew = -86_400.0  # clock a day behind
    for t in (0, 30, 60, 90, 120):
        corr.feed(ev(t + skew, "HMAC_VERIFY_FAILED", A, device="rtr-skewed"))
        corr.feed(ev(t, "HMAC_VERIFY_FAILED", B, device="rtr-ok"))
    # The fleet moves on by an hour; the skewed device keeps logging its evidence every
    # 20 s of its own clock, the other falls silent.
    resolved: set[str] = set()
    for t in range(140, 3600, 20):
        corr.feed(ev(t + skew, "HMAC_VERIFY_FAILED", A, device="rtr-skewed"))
        corr.feed(ev(t, None, device="fw-clock"))
        corr.feed(ev(t, None, device="fw-clock2"))
        resolved |= {r["device"] for r in corr.tick() if r["status"] == "resolved"}
    assert resolved == {"rtr-ok"}
    assert list(corr.states["rtr-skewed"].incidents)


def test_most_of_the_fleet_moving_on_together_resolves_the_silent_devices() -> None:
    corr = Correlator(KB)
    skew = -86_400.0
    clocks = {"fw-clock": 7200.0, "fw-clock2": 0.0, "fw-clock3": -600.0}  # their offsets
    for t in (0, 30, 60, 90, 120):
        corr.feed(ev(t + skew, "HMAC_VERIFY_FAILED", A, device="rtr-skewed"))
        corr.feed(ev(t, "HMAC_VERIFY_FAILED", B, device="rtr-ok"))
        for d, off in clocks.items():
            corr.feed(ev(t + off, None, device=d))
    # One device alone 48 minutes further may be its own clock: nothing resolves.
    for t in range(3010, 3310, 10):
        corr.feed(ev(t + 7200, None, device="fw-clock"))
    assert not [r for r in corr.tick() if r["status"] == "resolved"]
    # Most of the fleet agrees: the archive had a gap, and both silent devices'
    # incidents resolve, each read in its own time.
    for t in range(3010, 3310, 10):
        for d, off in clocks.items():
            corr.feed(ev(t + off, None, device=d))
    resolved = {r["device"] for r in corr.tick() if r["status"] == "resolved"}
    assert resolved == {"rtr-ok", "rtr-skewed"}


def test_state_stays_small_over_100k_events_of_one_device() -> None:
    rng = random.Random(1)
    st = DeviceState(DEV)
    sizes: list[tuple[int, int, int, int]] = []
    n = 100_000
    for i in range(n):
        t = i * 1.0  # 100k seconds: almost 28 hours
        r = rng.random()
        if r < 0.3:
            e = ev(t, "HMAC_VERIFY_FAILED", f"203.0.113.{i % 50}", conn_id=str(i % 9000))
        elif r < 0.5:
            e = ev(t, "REPLAY_CHECK_FAILED", conn_id=str(rng.randrange(20_000)))
        elif r < 0.6:  # Internet scanners: a new source address each time
            e = ev(t, "INVALID_SPI", f"10.{rng.randrange(256)}.{rng.randrange(256)}.1")
        elif r < 0.65:
            e = ev(t, "PEER_LOST", f"198.51.100.{rng.randrange(250)}")
        elif r < 0.7:
            e = ev(t, "NO_CRYPTO_MAP_MATCH", f"192.0.2.{rng.randrange(250)}")
        else:
            e = ev(t, None)
        st, _ = step(st, e, KB)
        if i % 1000 == 999:  # as a driver does (analyze ticks, the stream worker punctuates)
            st, _ = advance(st, st.max_ts - KB.lateness, KB)
        if i in (n // 2, n - 1):
            sizes.append(
                (
                    len(st.windows),
                    sum(len(v) for v in st.recent.values()),
                    len(st.pending),
                    len(st.incidents),
                )
            )
    # ~120 windows, ~450 remembered kinds, ~40 pending; incidents: one per active (peer,
    # cause), and the 250 lost peers stay open until they come back (or a day passes)
    windows, recent, pending, incidents = sizes[-1]
    assert windows < 500
    assert recent <= MAX_RECENT * len(KB.watched)
    assert all(len(v) <= MAX_RECENT for v in st.recent.values())
    assert pending < 200
    assert incidents < 600
    assert len(st.conn_peers) <= MAX_CONN_IDS
    assert all(len(w) <= 10_000 for w in st.windows.values())
    half, full = sizes
    assert full[0] <= 2 * half[0] + 50 and full[2] <= 2 * half[2] + 50, "no growth with time"


def test_an_outage_stays_open_through_the_quiet_period_until_the_tunnel_comes_back() -> None:
    st = DeviceState(DEV)
    peer = "198.51.100.9"
    st, _ = step(st, ev(0.0, "PEER_LOST", peer), KB)
    st, opened = advance(st, T0 + 700.0, KB)
    assert [r["cause"] for r in opened] == ["peer_unreachable"]
    st, later = advance(st, T0 + 700.0 + 2 * KB.quiet_period, KB)
    assert later == []  # quiet, but still down: not resolved
    st, recs = step(st, ev(3 * 3600.0, "PHASE1_COMPLETED", peer), KB)
    assert [(r["cause"], r["status"]) for r in recs] == [("peer_unreachable", "resolved")]


def test_one_clock_running_ahead_does_not_resolve_the_other_devices_incidents() -> None:
    corr = Correlator(KB)
    for t in (0, 30, 60, 90, 120):
        corr.feed(ev(t, "HMAC_VERIFY_FAILED", A, device="rtr-1"))
        corr.feed(ev(t, None, device="rtr-2"))
        corr.feed(ev(t + 3000, None, device="rtr-ahead"))  # 50 min ahead
    assert not [r for r in corr.tick() if r["status"] == "resolved"]
    assert list(corr.states["rtr-1"].incidents)


def test_a_silent_device_with_a_skewed_clock_resolves_when_the_fleet_moves_on() -> None:
    corr = Correlator(KB)
    skew = -86_400.0
    corr.feed(ev(0, None, device="fw-a"))
    corr.feed(ev(0, None, device="fw-b"))
    corr.tick()  # the fleet clock is known from here on
    for t in (0, 30, 60, 90, 120):
        corr.feed(ev(t + skew, "HMAC_VERIFY_FAILED", A, device="rtr-skewed"))
    assert corr.skews()["rtr-skewed"] < -80_000
    # The others keep logging for 50 minutes: the silent device's incident resolves.
    for t in range(150, 3000, 30):
        for d in ("fw-a", "fw-b"):
            corr.feed(ev(t, None, device=d))
    resolved = {r["device"] for r in corr.tick() if r["status"] == "resolved"}
    assert resolved == {"rtr-skewed"}


def test_correlator_clock_of_a_kindless_event_does_what_feed_does() -> None:
    # The native analyze path gives the engine (device, ts, time_source) rows for the lines
    # outside the catalog; Correlator.clock/clocks must do exactly what feed() does.
    archives = sorted((Path(__file__).parent / "scenarios").glob("*/archive.log"))
    for path in archives:
        parser = Parser(year=2024)
        with path.open(encoding="utf-8", errors="replace") as f:
            events = [e for e in map(parser.parse, iter_records(f)) if isinstance(e, Event)]
        by_feed, by_clock, by_rows = Correlator(KB), Correlator(KB), Correlator(KB)
        out_feed: list[Rec] = []
        out_clock: list[Rec] = []
        out_rows: list[Rec] = []
        for i, ev in enumerate(events, 1):
            out_feed.extend(by_feed.feed(ev))
            if ev.kind is None:
                out_clock.extend(by_clock.clock(ev.device, ev.ts, ev.time_source))
                row = (ev.device, ev.ts, ev.time_source, ev.clock_synced, ev.tz_known)
                out_rows.extend(by_rows.clocks([row]))
            else:
                out_clock.extend(by_clock.feed(ev))
                out_rows.extend(by_rows.feed(ev))
            if i % 7 == 0:
                for c, out in ((by_feed, out_feed), (by_clock, out_clock), (by_rows, out_rows)):
                    out.extend(c.tick())
        for c, out in ((by_feed, out_feed), (by_clock, out_clock), (by_rows, out_rows)):
            out.extend(c.finish())
        assert out_clock == out_feed, path.parent.name
        assert out_rows == out_feed, path.parent.name
        for c in (by_clock, by_rows):
            assert {d: s.to_dict() for d, s in c.states.items()} == {
                d: s.to_dict() for d, s in by_feed.states.items()
            }
            assert c.skews() == by_feed.skews()
