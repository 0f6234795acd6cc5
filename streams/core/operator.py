"""Operator state: acknowledgements, silences and maintenance windows, and whether an
incident is suppressed. Pure: times come from the caller (an incident's event time).

The state is kept in a compacted Kafka topic (``vpn.operator``), one record per key:

==========================  ============================================================
``ack:<incident_id>``       ``{"type": "ack", "incident_id", "user", "note", "at"}``
``silence:<id>``            ``{"type": "silence", "id", "matchers", "starts_at", "ends_at",
                            "created_by", "comment"}``
``maintenance:<id>``        ``{"type": "maintenance", "id", "matchers", "zone", "start",
                            "end"}`` (local times of ``zone``, one window) or ``"weekly":
                            {"days": ["sat", ...], "start": "22:00", "end": "02:00"}``
==========================  ============================================================

A tombstone (no value) removes a key. Matchers are ``{field: [glob, ...]}`` over the
incident's ``cause``, ``device``, ``peer``, ``severity``, ``status``, ``incident_id``
(see :func:`streams.core.alerting.matches`). An incident is suppressed when its event
time (``last_seen``) falls in a silence or a maintenance window whose matchers take it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.core.alerting import MATCH_FIELDS, event_time, matches

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class OperatorError(ValueError):
    """An operator record (from the board's form or the topic) is invalid."""


@dataclass
class OperatorState:
    acks: dict[str, dict[str, Any]] = field(default_factory=dict)
    silences: dict[str, dict[str, Any]] = field(default_factory=dict)
    maintenances: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Records refused (unknown key, invalid silence or window): counted, never applied.
    rejected: int = 0

    def apply(self, key: str, value: Mapping[str, Any] | None) -> bool:
        """One record of the topic (``value`` None: a tombstone). Records that are not
        valid acks, silences or windows are counted in ``rejected`` and ignored."""
        kind, _, ident = key.partition(":")
        table = {"ack": self.acks, "silence": self.silences, "maintenance": self.maintenances}
        target = table.get(kind)
        if target is None or not ident:
            self.rejected += 1
            return False
        if value is None:
            target.pop(ident, None)
            return True
        try:
            if kind == "silence":
                check_matchers(value.get("matchers"))
                _aware(value["starts_at"], "starts_at")
                _aware(value["ends_at"], "ends_at")
            elif kind == "maintenance":
                check_maintenance(value)
            elif not isinstance(value.get("user"), str):
                raise OperatorError("ack: user missing")
        except (OperatorError, KeyError, TypeError, AttributeError):
            self.rejected += 1
            return False
        target[ident] = dict(value)
        return True


def _aware(text: Any, what: str) -> datetime:
    try:
        ts = datetime.fromisoformat(str(text))
    except ValueError as exc:
        raise OperatorError(f"{what}: not an ISO 8601 time: {text!r}") from exc
    if ts.tzinfo is None:
        raise OperatorError(f"{what}: needs a time zone offset: {text!r}")
    return ts


def check_matchers(matchers: Any) -> dict[str, list[str]]:
    if not isinstance(matchers, dict) or not matchers:
        raise OperatorError("matchers: at least one field: [glob, ...] is required")
    out: dict[str, list[str]] = {}
    for name, value in matchers.items():
        if name not in MATCH_FIELDS:
            raise OperatorError(
                f"matchers.{name}: unknown field (known: {', '.join(MATCH_FIELDS)})"
            )
        values = [value] if isinstance(value, str) else value
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, str) and v for v in values)
        ):
            raise OperatorError(f"matchers.{name}: a glob or a list of globs")
        out[str(name)] = [str(v) for v in values]
    return out


def zone(name: Any) -> ZoneInfo:
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise OperatorError(f"zone: not an IANA time zone: {name!r}") from exc


def _clock(text: Any, what: str) -> time:
    try:
        return time.fromisoformat(str(text))
    except ValueError as exc:
        raise OperatorError(f"{what}: not a time of day (HH:MM): {text!r}") from exc


def check_maintenance(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A maintenance record's fields, checked (raises :class:`OperatorError`)."""
    out: dict[str, Any] = {"matchers": check_matchers(spec.get("matchers"))}
    tz = zone(spec.get("zone", "UTC"))
    out["zone"] = str(tz.key)
    weekly = spec.get("weekly")
    if weekly is not None:
        if not isinstance(weekly, dict):
            raise OperatorError("weekly: {days, start, end}")
        days = weekly.get("days")
        if isinstance(days, str):
            days = [d.strip() for d in days.split(",") if d.strip()]
        if not isinstance(days, list) or not days or any(d not in DAYS for d in days):
            raise OperatorError(f"weekly.days: a list of {', '.join(DAYS)}")
        start = _clock(weekly.get("start"), "weekly.start")
        end = _clock(weekly.get("end"), "weekly.end")
        if start == end:
            raise OperatorError("weekly: start and end are the same time")
        out["weekly"] = {"days": days, "start": start.isoformat("minutes"),
                         "end": end.isoformat("minutes")}  # fmt: skip
        return out
    try:
        start_local = datetime.fromisoformat(str(spec.get("start")))
        end_local = datetime.fromisoformat(str(spec.get("end")))
    except ValueError as exc:
        raise OperatorError("start/end: local date and time (YYYY-MM-DDTHH:MM) or weekly") from exc
    start_local, end_local = start_local.replace(tzinfo=None), end_local.replace(tzinfo=None)
    if end_local <= start_local:
        raise OperatorError("end: must be after start")
    out["start"] = start_local.isoformat(timespec="minutes")
    out["end"] = end_local.isoformat(timespec="minutes")
    return out


def in_maintenance(window: Mapping[str, Any], at: datetime) -> bool:
    """True when ``at`` (aware) falls in the window, read in the window's zone."""
    tz = zone(window.get("zone", "UTC"))
    local = at.astimezone(tz)
    weekly = window.get("weekly")
    if weekly is None:
        start = datetime.fromisoformat(str(window["start"])).replace(tzinfo=tz)
        end = datetime.fromisoformat(str(window["end"])).replace(tzinfo=tz)
        return start <= local < end
    start_t, end_t = time.fromisoformat(weekly["start"]), time.fromisoformat(weekly["end"])
    days = set(weekly["days"])
    # A window crossing midnight started on the day before.
    for day in (local.date(), local.date() - timedelta(days=1)):
        if DAYS[day.weekday()] not in days:
            continue
        start = _local(day, start_t, tz)
        end_day = day if end_t > start_t else day + timedelta(days=1)
        end = _local(end_day, end_t, tz)
        if start <= local < end:
            return True
    return False


def _local(day: date, clock: time, tz: ZoneInfo) -> datetime:
    # Wall-clock time in the zone (fold=0 for an hour that occurs twice).
    return datetime.combine(day, clock, tzinfo=tz)


def in_silence(silence: Mapping[str, Any], at: datetime) -> bool:
    return _aware(silence["starts_at"], "starts_at") <= at < _aware(silence["ends_at"], "ends_at")


def suppressed_by(rec: Mapping[str, Any], state: OperatorState) -> str | None:
    """``silence <id>`` or ``maintenance <id>`` when the incident is suppressed, else None."""
    at = event_time(rec)
    for ident, silence in state.silences.items():
        if matches(rec, silence.get("matchers", {})) and in_silence(silence, at):
            return f"silence {ident}"
    for ident, window in state.maintenances.items():
        if matches(rec, window.get("matchers", {})) and in_maintenance(window, at):
            return f"maintenance {ident}"
    return None


def silence_record(
    ident: str,
    matchers: Any,
    duration_s: float,
    now: datetime,
    created_by: str,
    comment: str,
) -> dict[str, Any]:
    """A new silence from ``now`` for ``duration_s`` seconds (``now`` given by the shell)."""
    if duration_s <= 0:
        raise OperatorError("duration: must be more than 0")
    start = now.astimezone(UTC)
    return {
        "type": "silence",
        "id": ident,
        "matchers": check_matchers(matchers),
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(seconds=duration_s)).isoformat(),
        "created_by": created_by,
        "comment": comment,
    }
