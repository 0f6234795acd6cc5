"""The event record: one parsed syslog message.

Pure data. ``ts`` is event time as POSIX seconds (UTC); ``timestamp`` renders it
as ISO 8601 for the published record (``schemas/event.schema.json``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

EVENT_SCHEMA_VERSION = 1


@functools.lru_cache(maxsize=4096)
def iso_utc(ts: float) -> str:
    """Render POSIX seconds as ISO 8601 UTC with millisecond precision (cached: a
    stream's events share their seconds)."""
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@dataclass(slots=True)
class Event:
    """A syslog message after header and catalog parsing."""

    device: str | None
    ts: float
    raw: str
    message: str
    clock_synced: bool = True
    time_source: str = "device"  # device | relay | inferred
    facility: str | None = None
    severity: int | None = None
    mnemonic: str | None = None
    kind: str | None = None
    family: str | None = None
    entry: str | None = None  # catalog entry id
    peer: str | None = None
    local: str | None = None
    spi: str | None = None
    sequence: str | None = None
    conn_id: str | None = None
    host: str | None = None  # RFC 3164 HOSTNAME / relay host
    origin: str | None = None  # logging origin-id / ASA device-id
    counter: int | None = None
    tz: str | None = None
    tz_known: bool = True
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def timestamp(self) -> str:
        return iso_utc(self.ts)

    def to_record(self) -> dict[str, Any]:
        """The published JSON record (see ``schemas/event.schema.json``)."""
        return {
            "schema": EVENT_SCHEMA_VERSION,
            "device": self.device,
            "timestamp": self.timestamp,
            "ts": self.ts,
            "clock_synced": self.clock_synced,
            "time_source": self.time_source,
            "facility": self.facility,
            "severity": self.severity,
            "mnemonic": self.mnemonic,
            "kind": self.kind,
            "family": self.family,
            "entry": self.entry,
            "message": self.message,
            "peer": self.peer,
            "local": self.local,
            "spi": self.spi,
            "sequence": self.sequence,
            "conn_id": self.conn_id,
            "host": self.host,
            "origin": self.origin,
            "counter": self.counter,
            "tz": self.tz,
            "tz_known": self.tz_known,
            "fields": self.fields,
            "raw": self.raw,
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Event:
        return cls(
            device=rec.get("device"),
            ts=float(rec["ts"]),
            raw=rec.get("raw", ""),
            message=rec.get("message", ""),
            clock_synced=bool(rec.get("clock_synced", True)),
            time_source=rec.get("time_source", "device"),
            facility=rec.get("facility"),
            severity=rec.get("severity"),
            mnemonic=rec.get("mnemonic"),
            kind=rec.get("kind"),
            family=rec.get("family"),
            entry=rec.get("entry"),
            peer=rec.get("peer"),
            local=rec.get("local"),
            spi=rec.get("spi"),
            sequence=rec.get("sequence"),
            conn_id=rec.get("conn_id"),
            host=rec.get("host"),
            origin=rec.get("origin"),
            counter=rec.get("counter"),
            tz=rec.get("tz"),
            tz_known=bool(rec.get("tz_known", True)),
            fields=dict(rec.get("fields") or {}),
        )


@dataclass(slots=True, frozen=True)
class Unparsed:
    """A record that is not syslog we can read; kept whole for the dead-letter."""

    raw: str
    reason: str
