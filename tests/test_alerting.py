"""The notifier's pure decisions: durations, replay age, routing, payloads, signatures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from notify_support import incident

from streams.core.alerting import (
    alertmanager_alert,
    backoff_delay,
    is_replay,
    matches,
    pagerduty_event,
    parse_duration,
    signature,
    verify,
)

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def test_durations_read_units_and_refuse_nonsense() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("15m") == 900
    assert parse_duration("1h") == 3600
    assert parse_duration("400d") == 400 * 86400
    assert parse_duration("2w") == 14 * 86400
    assert parse_duration("250ms") == 0.25
    assert parse_duration(30) == 30
    for bad in ("", "1y", "-5s", "soon", True, -1):
        with pytest.raises(ValueError):
            parse_duration(bad)  # type: ignore[arg-type]


def test_an_incident_more_than_max_age_behind_the_fleet_is_a_replay() -> None:
    rec = incident(1, NOW - timedelta(hours=2))
    assert is_replay(rec, NOW, 3600)
    assert not is_replay(rec, NOW, 3 * 3600)
    assert not is_replay(rec, NOW, None)
    assert not is_replay(incident(2, NOW - timedelta(minutes=59)), NOW, 3600)
    assert not is_replay(rec, None, 3600)  # nothing seen yet


def test_matchers_take_globs_per_field_and_all_fields_must_match() -> None:
    rec = incident(7, NOW, cause="peer_unreachable", device="edge-paris-1")
    assert matches(rec, {})
    assert matches(rec, {"device": ("edge-*",), "cause": ("psk_mismatch", "peer_unreachable")})
    assert not matches(rec, {"device": ("edge-*",), "cause": ("psk_mismatch",)})
    assert not matches(rec, {"device": ("core-*",)})
    rec["peer"] = None
    assert matches(rec, {"peer": ("-",)})


def test_the_alertmanager_alert_carries_the_labels_annotations_and_board_link() -> None:
    rec = incident(3, NOW, device="edge-003")
    alert = alertmanager_alert(rec, {"runbook_url": "https://wiki/vpn/{cause}"}, "http://b:1/")
    assert alert["labels"] == {
        "alertname": "psk_mismatch",
        "severity": "major",
        "device": "edge-003",
        "peer": rec["peer"],
        "cause": "psk_mismatch",
        "incident_id": rec["incident_id"],
    }
    ann = alert["annotations"]
    assert set(ann) == {"summary", "description", "evidence", "actions", "confidence",
                        "runbook_url"}  # fmt: skip
    assert ann["runbook_url"] == "https://wiki/vpn/psk_mismatch"
    assert ann["evidence"] == rec["evidence"][0]
    assert ann["actions"].splitlines() == rec["recommended_actions"]
    assert ann["confidence"] == "0.90"
    assert ann["summary"].startswith("edge-003: ")
    assert alert["startsAt"] == rec["first_seen"]
    assert alert["generatorURL"] == f"http://b:1/incident/{rec['incident_id']}"
    assert "endsAt" not in alert  # open: kept alive by re-posting
    resolved = alertmanager_alert(incident(3, NOW, status="resolved"), {}, "http://b:1")
    assert resolved["endsAt"] == NOW.isoformat()


def test_pagerduty_events_trigger_then_resolve_under_the_incident_id() -> None:
    rec = incident(4, NOW)
    trigger = pagerduty_event(rec, "KEY", {}, "http://b")
    assert trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == rec["incident_id"]
    assert trigger["routing_key"] == "KEY"
    assert trigger["payload"]["severity"] == "error"  # major
    assert trigger["payload"]["source"] == rec["device"]
    assert trigger["payload"]["custom_details"]["evidence"] == rec["evidence"]
    resolve = pagerduty_event(incident(4, NOW, status="resolved"), "KEY", {}, "http://b")
    assert resolve == {"routing_key": "KEY", "event_action": "resolve",
                       "dedup_key": rec["incident_id"]}  # fmt: skip


def test_the_signature_is_an_hmac_sha256_of_the_body_that_a_receiver_can_verify() -> None:
    sig = signature(b"s3cret", b'{"a":1}')
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert verify(b"s3cret", b'{"a":1}', sig)
    assert not verify(b"s3cret", b'{"a":2}', sig)
    assert not verify(b"other", b'{"a":1}', sig)


def test_backoff_doubles_up_to_its_cap_with_jitter_in_the_upper_half() -> None:
    assert backoff_delay(0, 0.5, 30, 0.0) == 0.25
    assert backoff_delay(0, 0.5, 30, 0.999) == pytest.approx(0.5, abs=0.001)
    assert backoff_delay(3, 0.5, 30, 0.0) == 2.0  # 4 s step, lower half bound
    assert backoff_delay(50, 0.5, 30, 0.0) == 15.0
    assert backoff_delay(50, 0.5, 30, 0.999) <= 30.0
