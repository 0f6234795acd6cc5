"""Joining both ends of a tunnel from incident records alone (as a consumer of the topic)."""

from __future__ import annotations

from typing import Any

from streams.core.engine import DeviceState, step
from streams.core.event import Event
from streams.core.kb import default_kb
from streams.core.stories import join_stories

KB = default_kb()
T0 = 1_709_546_400.0


def _ev(device: str, t: float, kind: str, peer: str, local: str | None = None) -> Event:
    return Event(device=device, ts=T0 + t, raw=f"{device} {kind}", message="", kind=kind,
                 peer=peer, local=local)  # fmt: skip


def _records() -> list[dict[str, Any]]:
    a, b = DeviceState("rtr-a"), DeviceState("asa-b")
    latest: dict[str, dict[str, Any]] = {}
    for i in range(4):
        for st, ev in (
            (a, _ev("rtr-a", i * 15, "IKE_SANITY_FAILED", "192.0.2.2", local="198.51.100.1")),
            (b, _ev("asa-b", i * 15 + 1, "IKE_MAIN_MODE_FAILED", "198.51.100.1",
                    local="192.0.2.2")),
        ):  # fmt: skip
            for rec in step(st, ev, KB)[1]:
                latest[rec["incident_id"]] = rec
    return list(latest.values())


def test_records_carry_the_addresses_their_device_learned_from_its_messages() -> None:
    recs = _records()
    assert {r["device"]: r["device_addresses"] for r in recs} == {
        "rtr-a": ["198.51.100.1"],
        "asa-b": ["192.0.2.2"],
    }


def test_a_consumer_joins_both_ends_of_a_tunnel_from_the_records_alone() -> None:
    recs = join_stories(_records())
    by_device = {r["device"]: r for r in recs}
    a, b = by_device["rtr-a"], by_device["asa-b"]
    assert a["related"] == [b["incident_id"]]
    assert b["related"] == [a["incident_id"]]
    assert "both views describe one fault" in a["summary"]
