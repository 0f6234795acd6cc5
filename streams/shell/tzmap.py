"""Reading ``--tz-map FILE``: device name, IP or CIDR → IANA zone, as CSV or YAML.

The shapes a NOC's inventory exports: CSV with a header naming the columns (``device``,
``name``, ``host``, ``ip``, ``address``, ``cidr``, ``prefix`` for the device; ``zone``,
``time_zone``, ``timezone``, ``tz`` for the zone, as NetBox's ``time_zone``), or without a
header (device, zone); YAML as a mapping ``{device: zone}`` or a list of such rows.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import yaml

from streams.core.zones import TzMap, ZoneError
from streams.errors import ConfigError

DEVICE_COLUMNS = ("device", "name", "host", "hostname", "ip", "address", "cidr", "prefix")
ZONE_COLUMNS = ("zone", "time_zone", "timezone", "tz")


def load_tz_map(path: str | Path) -> TzMap:
    """The zone map in ``path``; :class:`ConfigError` with the file and the row when bad."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--tz-map {path}: {exc.strerror or exc}") from exc
    try:
        rows = _yaml_rows(text) if str(path).endswith((".yaml", ".yml")) else _csv_rows(text)
        return TzMap.from_rows(rows)
    except (ZoneError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"--tz-map {path}: {' '.join(str(exc).split())}") from exc


def _pick(row: dict[str, Any], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = row.get(name)
        if value is not None and str(value).strip():
            return str(value)
    return None


def _csv_rows(text: str) -> list[tuple[str, str]]:
    table = [r for r in csv.reader(io.StringIO(text)) if r and not r[0].startswith("#")]
    if not table:
        return []
    head = [c.strip().lower() for c in table[0]]
    dev = next((head.index(c) for c in DEVICE_COLUMNS if c in head), None)
    zone = next((head.index(c) for c in ZONE_COLUMNS if c in head), None)
    if dev is not None and zone is not None:
        body = table[1:]
    else:
        dev, zone, body = 0, 1, table
    out: list[tuple[str, str]] = []
    for i, r in enumerate(body, 1):
        if len(r) <= max(dev, zone):
            raise ValueError(f"row {i}: expected a device and a zone, got {r!r}")
        out.append((r[dev], r[zone]))
    return out


def _yaml_rows(text: str) -> list[tuple[str, str]]:
    data = yaml.safe_load(text)
    if data is None:
        return []
    if isinstance(data, dict):
        return [(str(k), str(v)) for k, v in data.items()]
    if not isinstance(data, list):
        raise ValueError("expected a mapping {device: zone} or a list of rows")
    out: list[tuple[str, str]] = []
    for i, row in enumerate(data, 1):
        if not isinstance(row, dict):
            raise ValueError(f"row {i}: expected a mapping, got {row!r}")
        dev = _pick(row, DEVICE_COLUMNS)
        zone = _pick(row, ZONE_COLUMNS)
        if dev is None or zone is None:
            raise ValueError(f"row {i}: needs a device (name, ip or cidr) and a zone")
        out.append((dev, zone))
    return out
