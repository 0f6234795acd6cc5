"""What the notifier sends, decided without I/O: routing, replay age, payloads, signatures.

Every function here is pure (no clock, no network): the notifier in
``streams/shell/notify/`` feeds it incident records (``schemas/incident.schema.json``)
and the fleet's newest event time, and sends what comes out.

- :func:`parse_duration` reads ``90s``, ``15m``, ``1h``, ``400d``, ``2w`` (or seconds).
- :func:`is_replay` tells an incident older than ``max_age`` behind the fleet's newest
  event time (the newest ``last_seen`` seen on the topic): recorded, not sent.
- :func:`matches` routes a record to a sink by glob matchers on its fields.
- :func:`alertmanager_alert`, :func:`pagerduty_event`: the payloads.
- :func:`signature`: the HMAC-SHA256 of a webhook body.
- :func:`backoff_delay`: exponential backoff with jitter, the random draw given.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import string
from collections.abc import Mapping, Sequence
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

#: Fields of an incident a matcher may test and a template may use.
MATCH_FIELDS = ("cause", "device", "peer", "severity", "status", "incident_id")
TEMPLATE_FIELDS = (
    *MATCH_FIELDS,
    "title",
    "summary",
    "confidence",
    "count",
    "first_seen",
    "last_seen",
    "board_url",
)
DEFAULT_TEMPLATES: Mapping[str, str] = {
    "summary": "{device}: {summary}",
    "description": "{title} on {device} (peer {peer}), {count} evidence lines, "
    "confidence {confidence}",
    "runbook_url": "{board_url}/incident/{incident_id}#actions",
    "generator_url": "{board_url}/incident/{incident_id}",
}
#: PagerDuty Events API v2 severities for ours.
PAGERDUTY_SEVERITY: Mapping[str, str] = {
    "critical": "critical",
    "major": "error",
    "minor": "warning",
    "warning": "info",
}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str | float) -> float:
    """Seconds in ``text`` (``500ms``, ``90s``, ``15m``, ``1h``, ``400d``, ``2w``, ``30``).

    Raises ValueError for anything else, negative values included.
    """
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"negative duration: {text!r}")
        return float(text)
    m = _DURATION.match(str(text))
    if m is None:
        raise ValueError(f"not a duration (use e.g. 90s, 15m, 1h, 7d): {text!r}")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2) or "s"]


def event_time(rec: Mapping[str, Any]) -> datetime:
    """An incident's event time: its ``last_seen`` (timezone-aware)."""
    ts = datetime.fromisoformat(str(rec["last_seen"]))
    if ts.tzinfo is None:
        raise ValueError(f"last_seen without a time zone: {rec['last_seen']!r}")
    return ts


def is_replay(rec: Mapping[str, Any], fleet_newest: datetime | None, max_age: float | None) -> bool:
    """True when the record's event time is more than ``max_age`` seconds behind the
    fleet's newest event time (``None``: no limit)."""
    if max_age is None or fleet_newest is None:
        return False
    return (fleet_newest - event_time(rec)).total_seconds() > max_age


def matches(rec: Mapping[str, Any], match: Mapping[str, Sequence[str]]) -> bool:
    """True when, for every field of ``match``, one of its glob patterns matches the
    record's value (a missing peer is ``-``). An empty matcher matches everything."""
    for name, patterns in match.items():
        value = rec.get(name)
        text = "-" if value is None else str(value)
        if not any(fnmatchcase(text, p) for p in patterns):
            return False
    return True


def template_fields(template: str) -> list[str]:
    """The field names a ``str.format`` template uses (ValueError when malformed)."""
    names: list[str] = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None:
            names.append(name)
    return names


def _context(rec: Mapping[str, Any], board_url: str) -> dict[str, str]:
    ctx = {name: "-" if rec.get(name) is None else str(rec.get(name)) for name in TEMPLATE_FIELDS}
    ctx["title"] = str(rec.get("title") or rec.get("cause"))
    ctx["confidence"] = f"{float(rec.get('confidence', 0.0)):.2f}"
    ctx["board_url"] = board_url.rstrip("/")
    return ctx


def render(template: str, rec: Mapping[str, Any], board_url: str) -> str:
    """``template`` filled with the record's fields (validated beforehand by the config)."""
    return template.format_map(_context(rec, board_url))


def alertmanager_alert(
    rec: Mapping[str, Any], templates: Mapping[str, str], board_url: str
) -> dict[str, Any]:
    """One alert of Alertmanager's API v2 (``POST /api/v2/alerts``) for an incident.

    ``endsAt`` is set only when the incident is resolved (its ``resolved_at``, else its
    ``last_seen``): an open one is re-posted by the notifier, so that Alertmanager's
    resolve timeout never ends it.
    """
    t = {**DEFAULT_TEMPLATES, **templates}
    labels = {
        "alertname": str(rec["cause"]),
        "severity": str(rec["severity"]),
        "device": str(rec["device"]),
        "peer": str(rec.get("peer") or "-"),
        "cause": str(rec["cause"]),
        "incident_id": str(rec["incident_id"]),
    }
    annotations = {
        "summary": render(t["summary"], rec, board_url),
        "description": render(t["description"], rec, board_url),
        "evidence": "\n".join(str(e) for e in rec.get("evidence", [])),
        "actions": "\n".join(str(a) for a in rec.get("recommended_actions", [])),
        "confidence": f"{float(rec.get('confidence', 0.0)):.2f}",
        "runbook_url": render(t["runbook_url"], rec, board_url),
    }
    alert: dict[str, Any] = {
        "labels": labels,
        "annotations": annotations,
        "startsAt": str(rec["first_seen"]),
        "generatorURL": render(t["generator_url"], rec, board_url),
    }
    if rec.get("status") == "resolved":
        alert["endsAt"] = str(rec.get("resolved_at") or rec["last_seen"])
    return alert


def pagerduty_event(
    rec: Mapping[str, Any], routing_key: str, templates: Mapping[str, str], board_url: str
) -> dict[str, Any]:
    """A PagerDuty Events API v2 event: ``trigger`` while open, ``resolve`` once resolved,
    deduplicated by the incident id."""
    t = {**DEFAULT_TEMPLATES, **templates}
    iid = str(rec["incident_id"])
    if rec.get("status") == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": iid}
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": iid,
        "payload": {
            "summary": render(t["summary"], rec, board_url)[:1024],
            "source": str(rec["device"]),
            "severity": PAGERDUTY_SEVERITY.get(str(rec["severity"]), "error"),
            "timestamp": str(rec["last_seen"]),
            "component": str(rec.get("peer") or "-"),
            "class": str(rec["cause"]),
            "custom_details": {
                "confidence": rec.get("confidence"),
                "count": rec.get("count"),
                "evidence": list(rec.get("evidence", [])),
                "actions": list(rec.get("recommended_actions", [])),
                "first_seen": rec.get("first_seen"),
            },
        },
        "links": [{"href": render(t["generator_url"], rec, board_url), "text": "tunnelwatch"}],
    }


def signature(secret: bytes, body: bytes) -> str:
    """The webhook signature header's value: ``sha256=<hex HMAC-SHA256 of the body>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str) -> bool:
    """True when ``header`` is the signature of ``body`` (constant-time comparison)."""
    return hmac.compare_digest(signature(secret, body), header)


def backoff_delay(attempt: int, initial: float, maximum: float, draw: float) -> float:
    """The wait before retry ``attempt`` (0 for the first retry): ``initial * 2**attempt``
    capped at ``maximum``, of which the second half is jittered by the uniform ``draw`` in
    [0, 1) (never less than half the step, so a down sink is not hammered)."""
    ceiling = min(maximum, initial * (2.0 ** min(attempt, 60)))
    return ceiling / 2.0 + max(0.0, min(draw, 1.0)) * ceiling / 2.0
