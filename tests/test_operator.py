"""Operator state: silences and maintenance windows in a site's time zone (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from notify_support import incident

from streams.core.operator import (
    OperatorError,
    OperatorState,
    check_maintenance,
    in_maintenance,
    silence_record,
    suppressed_by,
)

PARIS = "Europe/Paris"


def test_a_weekly_window_crossing_midnight_follows_the_site_zone_through_dst() -> None:
    window = check_maintenance(
        {"matchers": {"device": ["paris-*"]}, "zone": PARIS,
         "weekly": {"days": ["sat"], "start": "23:00", "end": "02:00"}}
    )  # fmt: skip
    # Saturday 2026-03-28 23:30 Paris is 22:30 UTC (CET, +1); Sunday 01:30 is 00:30 UTC.
    assert in_maintenance(window, datetime(2026, 3, 28, 22, 30, tzinfo=UTC))
    assert in_maintenance(window, datetime(2026, 3, 29, 0, 30, tzinfo=UTC))
    # Sunday 02:00 Paris: over (and the clocks jump to 03:00 that night).
    assert not in_maintenance(window, datetime(2026, 3, 29, 1, 0, tzinfo=UTC))
    # In summer (CEST, +2) the same local window is 21:00-00:00 UTC.
    assert in_maintenance(window, datetime(2026, 7, 4, 21, 30, tzinfo=UTC))
    assert not in_maintenance(window, datetime(2026, 7, 4, 20, 30, tzinfo=UTC))
    # Not on a Friday night.
    assert not in_maintenance(window, datetime(2026, 7, 3, 21, 30, tzinfo=UTC))


def test_a_one_off_window_is_read_in_its_zone() -> None:
    window = check_maintenance(
        {"matchers": {"cause": ["*"]}, "zone": "America/New_York",
         "start": "2026-12-20T22:00", "end": "2026-12-21T04:00"}
    )  # fmt: skip
    assert in_maintenance(window, datetime(2026, 12, 21, 3, 0, tzinfo=UTC))  # 22:00 EST
    assert not in_maintenance(window, datetime(2026, 12, 21, 2, 59, tzinfo=UTC))
    assert not in_maintenance(window, datetime(2026, 12, 21, 9, 0, tzinfo=UTC))  # 04:00 EST


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"matchers": {}, "zone": "UTC"}, "matchers"),
        ({"matchers": {"colour": ["x"]}, "zone": "UTC"}, "matchers.colour"),
        ({"matchers": {"device": ["a"]}, "zone": "Mars/Olympus"}, "zone"),
        ({"matchers": {"device": ["a"]}, "zone": "UTC", "start": "2026-01-02T00:00",
          "end": "2026-01-01T00:00"}, "end"),
        ({"matchers": {"device": ["a"]}, "weekly": {"days": ["caturday"], "start": "1:00",
          "end": "2:00"}}, "weekly.days"),
        ({"matchers": {"device": ["a"]}, "weekly": {"days": ["sun"], "start": "25:00",
          "end": "2:00"}}, "weekly.start"),
    ],
)  # fmt: skip
def test_bad_maintenance_windows_are_refused_naming_the_field(
    spec: dict[str, object], message: str
) -> None:
    with pytest.raises(OperatorError, match=message.replace(".", r"\.")):
        check_maintenance(spec)


def test_silences_and_windows_suppress_matching_incidents_at_their_event_time() -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    state = OperatorState()
    state.apply("silence:s1", silence_record("s1", {"device": ["asa-*"]}, 3600, now, "bob", ""))
    assert suppressed_by(incident(1, now + timedelta(minutes=5), device="asa-dc"), state) == (
        "silence s1"
    )
    assert suppressed_by(incident(1, now - timedelta(minutes=5), device="asa-dc"), state) is None
    assert suppressed_by(incident(1, now + timedelta(hours=2), device="asa-dc"), state) is None
    assert suppressed_by(incident(2, now, device="rtr-hq"), state) is None
    window = check_maintenance({"matchers": {"device": ["rtr-*"]}, "zone": "UTC",
                                "start": "2026-12-04T11:00", "end": "2026-12-04T13:00"})  # fmt: skip
    state.apply("maintenance:m1", {"type": "maintenance", "id": "m1", **window})
    assert suppressed_by(incident(2, now, device="rtr-hq"), state) == "maintenance m1"
    state.apply("maintenance:m1", None)  # a tombstone removes it
    state.apply("silence:s1", None)
    assert suppressed_by(incident(1, now + timedelta(minutes=5), device="asa-dc"), state) is None
    # Unknown keys and invalid records (the topic is writable by anyone) are counted, not
    # applied, so they can never break a later suppressed_by.
    assert not state.apply("nonsense", {"x": 1})
    assert not state.apply("maintenance:bad", {"matchers": {"device": ["x"]}, "zone": "Nowhere/X",
                                               "start": "2026-12-04T11:00", "end": "2026-12-04T13:00"})  # fmt: skip
    assert not state.apply("silence:bad", {"matchers": {"device": ["x"]}, "starts_at": "soon"})
    assert not state.apply("ack:x", {"note": "no user"})
    assert state.rejected == 4
    assert suppressed_by(incident(1, now, device="x"), state) is None
    assert (state.acks, state.silences, state.maintenances) == ({}, {}, {})
