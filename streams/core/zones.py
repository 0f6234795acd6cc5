"""Time zones of devices: ``--tz-map`` lookups and zone labels, through ``zoneinfo``.

Pure: a :class:`TzMap` is built from rows already read (the shell reads the file), and
answers which IANA zone a device logs in; :func:`local_offset_minutes` gives that zone's
UTC offset at a local wall-clock time, daylight saving time included. Zone *labels* that
the curated table of :mod:`streams.core.clock` does not know are looked up among the
abbreviations that the IANA database uses (``zoneinfo``), when they name one offset only.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ZoneError(ValueError):
    """A zone map row that cannot be used (the message says which and why)."""


@functools.lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; :class:`ZoneError` when the database has none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ZoneError(f"unknown IANA time zone {name!r}") from exc


@functools.lru_cache(maxsize=65536)
def local_offset_minutes(name: str, year: int, month: int, day: int, hour: int) -> int:
    """Minutes east of UTC of zone ``name`` at that local time (DST included; in the hour
    a clock is set back, the first of the two readings)."""
    local = datetime(year, month, day, hour, 30, tzinfo=zone(name))
    off = local.utcoffset() or timedelta(0)
    return int(off.total_seconds() // 60)


@dataclass(slots=True)
class TzMap:
    """Device name, address or network → IANA zone (NetBox's site ``time_zone``).

    An exact name or address wins over a network; among networks the longest prefix.
    """

    names: dict[str, str] = field(default_factory=dict)
    networks: list[tuple[Network, str]] = field(default_factory=list)

    @classmethod
    def from_rows(cls, rows: list[tuple[str, str]]) -> TzMap:
        """Build from ``(device|ip|cidr, zone)`` rows; :class:`ZoneError` names a bad row."""
        out = cls()
        for i, (key, zone_name) in enumerate(rows, 1):
            key, zone_name = key.strip(), zone_name.strip()
            if not key or not zone_name:
                raise ZoneError(f"row {i}: needs a device (name, IP or CIDR) and a zone")
            try:
                zone(zone_name)
            except ZoneError as exc:
                raise ZoneError(f"row {i} ({key}): {exc}") from None
            if "/" in key:
                try:
                    net = ipaddress.ip_network(key, strict=False)
                except ValueError as exc:
                    raise ZoneError(f"row {i}: {key!r} is not a network: {exc}") from None
                out.networks.append((net, zone_name))
            else:
                out.names[key.lower()] = zone_name
        out.networks.sort(key=lambda nz: nz[0].prefixlen, reverse=True)
        return out

    def __bool__(self) -> bool:
        return bool(self.names or self.networks)

    def zone_for(self, device: str | None) -> str | None:
        """The zone of ``device`` (a name or an address), None when the map has none."""
        if not device:
            return None
        hit = self.names.get(device.lower())
        if hit is not None or not self.networks:
            return hit
        try:
            addr = ipaddress.ip_address(device)
        except ValueError:
            return None
        for net, zone_name in self.networks:
            if addr.version == net.version and addr in net:
                return zone_name
        return None


@functools.cache
def _abbreviations() -> dict[str, int | None]:
    """Every abbreviation the IANA database uses in 2000-2030 → its offset in minutes
    (None when it stands for several offsets, like IST or CST)."""
    out: dict[str, int | None] = {}
    for name in available_timezones():
        try:
            z = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):  # pragma: no cover - broken tzdata
            continue
        for year in (2000, 2015, 2030):
            for month in (1, 7):
                dt = datetime(year, month, 15, 12, tzinfo=z)
                abbr = dt.tzname()
                off = dt.utcoffset()
                if not abbr or off is None or not abbr[0].isalpha():
                    continue  # "+03" style names are read as offsets already
                minutes = int(off.total_seconds() // 60)
                key = abbr.lower()
                if key in out and out[key] != minutes:
                    out[key] = None
                else:
                    out.setdefault(key, minutes)
    return out


def label_offset_minutes(label: str) -> int | None:
    """The offset of a zone label the IANA database uses for one offset only, else None."""
    return _abbreviations().get(label.lower())
