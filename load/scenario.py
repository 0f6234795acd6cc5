"""Scenarios for the synthetic Cisco syslog generator: fleets, header styles, faults, decoys.

A scenario is plain data, normally read from YAML (``load/scenarios/default.yaml``).
:func:`parse_scenario` turns the decoded mapping into frozen dataclasses and rejects
anything it does not know with :class:`streams.errors.ConfigError`, so a typo in a
scenario fails loudly instead of silently generating something else.

Schema in brief (all keys except ``fleets`` are optional)::

    name: default
    start: "2024-03-05T00:00:00Z"   # ISO 8601 with an offset; converted to UTC
    duration: 24h                   # span of the archive; 90s, 15m, 1h30m or seconds
    lines: 200000                   # default line count when the caller passes none
    background:
      ios_mix: {sec_ipaccesslogp: 80, lineproto_updown: 6, ...}   # relative weights
      asa_mix: {asa_302013: 25, asa_302014: 25, ...}
    rekey:                          # healthy ASA re-keys (602303/602304, 713119/713120)
      phase2_lifetime: 8h
      phase1_lifetime: 24h
    fleets:
      - kind: ios                   # ios | asa
        count: 20
        hostname: "br-rtr-{n:02d}"  # n counts from 1
        mgmt_net: 10.10.0.0/24      # device n gets host n of each network
        outside_net: 198.51.100.0/24
        outside_if: GigabitEthernet0/0
        peer_net: 203.0.113.0/25    # device n gets peers_per_device consecutive hosts
        peers_per_device: 2
        weight: 1.0                 # share of the background traffic, per device
        styles: [{framing: rsyslog, origin_id: hostname, clock: unsynced}, ...]  # cycled
    faults:
      - {cause: crypto_engine_fault, device: br-rtr-03, peer: 0, at: 1h, duration: 15m,
         variant: mac_err, options: {motcr: true}}
    decoys:
      - {kind: isolated_hmac, device: br-rtr-05, peer: 1, at: 3h30m}

``peer`` is an index into the device's peers or an IPv4 address. See :class:`Style`
for the header-style keys and ``SUPPORTED`` for the variants and options of each cause.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Final

import yaml

from streams.core.kb import CAUSES as KB_CAUSES
from streams.errors import ConfigError

#: The closed vocabulary of fault causes: the knowledge base's.
CAUSES: Final[tuple[str, ...]] = KB_CAUSES

#: Options every fault accepts: ``interval`` is the typical gap between repeated lines
#: (never shorter than the message's rate limit).
COMMON_OPTIONS: Final[frozenset[str]] = frozenset({"interval"})

#: cause -> device kind -> variant -> extra options. The first variant is the default.
#: A cause missing for a kind cannot be generated on that kind of device.
#: ``hardware_unsupported`` has no confirmed message text: its only variant,
#: ``inferred_7600_text``, sends the catalog's inferred debug text and says so.
SUPPORTED: Final[Mapping[str, Mapping[str, Mapping[str, frozenset[str]]]]] = {
    "crypto_engine_fault": {
        "ios": {"mac_err": frozenset({"motcr", "legacy_format"})},
        "asa": {"402120": frozenset()},
    },
    "qos_reordering": {
        "ios": {"pkt_replay": frozenset(), "c1700_em": frozenset()},
        "asa": {"402119": frozenset()},
    },
    "fragmentation_mtu": {
        "ios": {"hw_vpn": frozenset({"status"})},
        "asa": {"402118": frozenset({"pmtu"})},
    },
    "psk_mismatch": {"ios": {"ikmp_bad_message": frozenset()}},
    "ike_policy_mismatch": {
        "ios": {"main_mode": frozenset()},
        "asa": {"713257": frozenset()},
    },
    "transform_set_mismatch": {
        "ios": {"quick_mode": frozenset()},
        "asa": {"proposals": frozenset({"asa_id", "qm_fsm"})},
    },
    "crypto_acl_mismatch": {"asa": {"qm_fsm": frozenset(), "402116": frozenset()}},
    "peer_address_mismatch": {"ios": {"no_psk": frozenset({"no_cert_line"})}},
    "local_address_misconfig": {"ios": {"validate_proposal": frozenset({"address"})}},
    "sa_out_of_sync": {
        "ios": {"inv_spi": frozenset()},
        "asa": {"402114": frozenset()},
    },
    "peer_unreachable": {"asa": {"dpd": frozenset()}},
    "tunnel_flapping": {"asa": {"sa_cycle": frozenset()}},
    "split_tunnel_misconfig": {"asa": {"713140": frozenset({"group"})}},
    "hardware_unsupported": {"ios": {"inferred_7600_text": frozenset()}},
}

#: Decoys: lines that look alarming but must raise no incident.
DECOY_KINDS: Final[frozenset[str]] = frozenset(
    {"isolated_hmac", "rekey_inv_spi", "lone_ikmp_no_sa", "healthy_rekey"}
)

IOS_MIX_KINDS: Final[frozenset[str]] = frozenset(
    {
        "sec_ipaccesslogp",
        "lineproto_updown",
        "link_updown",
        "sys_config_i",
        "sec_login_success",
    }
)
ASA_MIX_KINDS: Final[frozenset[str]] = frozenset(
    {"asa_302013", "asa_302014", "asa_302015", "asa_302016", "asa_106023", "asa_113019_ra"}
)
DEFAULT_IOS_MIX: Final[Mapping[str, float]] = {
    "sec_ipaccesslogp": 80.0,
    "lineproto_updown": 5.0,
    "link_updown": 3.0,
    "sys_config_i": 6.0,
    "sec_login_success": 6.0,
}
DEFAULT_ASA_MIX: Final[Mapping[str, float]] = {
    "asa_302013": 24.0,
    "asa_302014": 24.0,
    "asa_302015": 20.0,
    "asa_302016": 20.0,
    "asa_106023": 11.0,
    "asa_113019_ra": 0.2,
}

FRAMINGS: Final[frozenset[str]] = frozenset({"rsyslog", "relay_ip", "wire", "bare"})
CLOCK_FLAGS: Final[Mapping[str, str]] = {"none": "", "unsynced": "*", "lost_sync": "."}
ASA_TIMESTAMPS: Final[frozenset[str]] = frozenset({"none", "legacy", "legacy_year", "rfc5424"})

_COMMON_STYLE_KEYS: Final[frozenset[str]] = frozenset({"framing", "utc_offset", "clock_offset"})
_IOS_STYLE_KEYS: Final[frozenset[str]] = _COMMON_STYLE_KEYS | {
    "message_counter",
    "origin_id",
    "sequence_numbers",
    "clock",
    "msec",
    "year",
    "timezone",
    "tz_glued",
    "tag_space",
}
_ASA_STYLE_KEYS: Final[frozenset[str]] = _COMMON_STYLE_KEYS | {"timestamp", "device_id"}

_DURATION_RE: Final = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")
_OFFSET_RE: Final = re.compile(r"^([+-])(\d{2}):(\d{2})$")


@dataclass(frozen=True, slots=True)
class Style:
    """How one device writes its header, and how the archive frames its lines.

    ``framing``: ``rsyslog`` (``Mmm dd hh:mm:ss HOSTNAME <device message>``, rsyslog's
    default file format), ``relay_ip`` (same with the device's management IP as host,
    like a relay archive), ``wire`` (``<PRI><device message>`` as sent on UDP 514) or
    ``bare`` (the device message alone, PRI stripped). ``wire`` and ``bare`` need an
    origin-id (IOS) or device-id (ASA) so that the device can be told from the line.

    IOS keys: ``message_counter`` (``1234: ``), ``origin_id`` (``hostname``/``ip``/none),
    ``sequence_numbers`` (``000123: ``), ``clock`` (``none``/``unsynced`` ``*``/
    ``lost_sync`` ``.``), ``msec``, ``year``, ``timezone`` (free label such as ``KST``),
    ``tz_glued`` (``11:39:59KST:``), ``tag_space`` (false gives ``KST:%TAG``).
    ASA keys: ``timestamp`` (``none``/``legacy``/``legacy_year``/``rfc5424``),
    ``device_id`` (``hostname``/``ip``/none).
    Both: ``utc_offset`` (``+09:00``: the device shows local time) and ``clock_offset``
    (seconds the device clock is off, e.g. an unsynced ``*`` clock).
    """

    framing: str = "rsyslog"
    message_counter: bool = True
    origin_id: str | None = None
    sequence_numbers: bool = False
    clock: str = ""
    msec: bool = True
    year: bool = False
    timezone: str | None = None
    tz_glued: bool = False
    tag_space: bool = True
    timestamp: str = "legacy_year"
    device_id: str | None = "hostname"
    utc_offset_min: int = 0
    clock_offset_ms: int = 0


@dataclass(frozen=True, slots=True)
class Device:
    """One IOS router or ASA firewall."""

    name: str
    kind: str
    mgmt_ip: str
    outside_ip: str
    outside_if: str
    peers: tuple[str, ...]
    weight: float
    style: Style


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One injected fault: a cause on a device (and usually one of its peers)."""

    id: str
    cause: str
    device: str
    peer: str | None
    at_s: float
    duration_s: float
    variant: str
    options: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DecoySpec:
    """Lines that look like trouble but must raise no incident."""

    id: str
    kind: str
    device: str
    peer: str | None
    at_s: float
    options: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Scenario:
    """A whole scenario, validated."""

    name: str
    start: datetime
    duration_s: float
    lines: int
    devices: tuple[Device, ...]
    faults: tuple[FaultSpec, ...]
    decoys: tuple[DecoySpec, ...]
    ios_mix: tuple[tuple[str, float], ...]
    asa_mix: tuple[tuple[str, float], ...]
    phase2_lifetime_s: float
    phase1_lifetime_s: float

    def device(self, name: str) -> Device:
        """The device called ``name``."""
        for dev in self.devices:
            if dev.name == name:
                return dev
        raise KeyError(name)


# ---------------------------------------------------------------------------
# value helpers


def parse_duration(value: object, what: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``1h30m`` or ``1.5``; rejects anything else."""
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected a duration, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigError(f"{what}: negative duration {value!r}")
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value.strip())
        if m and any(m.groups()):
            h, mi, s = m.groups()
            return int(h or 0) * 3600.0 + int(mi or 0) * 60.0 + float(s or 0)
    raise ConfigError(f"{what}: expected a duration like 90s, 15m or 1h30m, got {value!r}")


def _mapping(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{what}: expected a mapping with string keys")
    return value


def _check_keys(data: Mapping[str, object], allowed: frozenset[str], what: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{what}: unknown key(s) {', '.join(unknown)}")


def _str(data: Mapping[str, object], key: str, what: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what}: {key} must be a non-empty string")
    return value


def _opt_str(data: Mapping[str, object], key: str, what: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what}: {key} must be a non-empty string or null")
    return value


def _bool(data: Mapping[str, object], key: str, what: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{what}: {key} must be true or false")
    return value


def _int(data: Mapping[str, object], key: str, what: str, default: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{what}: {key} must be a non-negative integer")
    return value


def _number(data: Mapping[str, object], key: str, what: str, default: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what}: {key} must be a number")
    return float(value)


def _network(value: object, what: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(str(value), strict=True)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from exc


def _host(net: ipaddress.IPv4Network, index: int, what: str) -> str:
    if index < 1 or index >= net.num_addresses - 1:
        raise ConfigError(f"{what}: network {net} has no host number {index}")
    return str(net.network_address + index)


def _utc_offset(value: object, what: str) -> int:
    if value is None:
        return 0
    m = _OFFSET_RE.match(str(value))
    if not m:
        raise ConfigError(f"{what}: utc_offset must look like +09:00, got {value!r}")
    sign, hh, mm = m.groups()
    minutes = int(hh) * 60 + int(mm)
    return -minutes if sign == "-" else minutes


# ---------------------------------------------------------------------------
# sections


def _parse_style(data: Mapping[str, object], kind: str, what: str) -> Style:
    _check_keys(data, _IOS_STYLE_KEYS if kind == "ios" else _ASA_STYLE_KEYS, what)
    framing = _str(data, "framing", what, "rsyslog")
    if framing not in FRAMINGS:
        raise ConfigError(f"{what}: framing must be one of {sorted(FRAMINGS)}")
    utc_offset_min = _utc_offset(data.get("utc_offset"), what)
    clock_offset_ms = round(_number(data, "clock_offset", what, 0.0) * 1000)
    if kind == "ios":
        origin_id = _opt_str(data, "origin_id", what)
        if origin_id not in (None, "hostname", "ip"):
            raise ConfigError(f"{what}: origin_id must be hostname, ip or null")
        clock = _str(data, "clock", what, "none")
        if clock not in CLOCK_FLAGS:
            raise ConfigError(f"{what}: clock must be one of {sorted(CLOCK_FLAGS)}")
        if framing in ("wire", "bare") and origin_id is None:
            raise ConfigError(f"{what}: framing {framing} needs an origin_id")
        timezone = _opt_str(data, "timezone", what)
        if timezone is not None and not re.fullmatch(r"[A-Za-z][\w+:-]*", timezone):
            raise ConfigError(f"{what}: timezone label {timezone!r} is not a plain word")
        return Style(
            framing=framing,
            message_counter=_bool(data, "message_counter", what, True),
            origin_id=origin_id,
            sequence_numbers=_bool(data, "sequence_numbers", what, False),
            clock=CLOCK_FLAGS[clock],
            msec=_bool(data, "msec", what, True),
            year=_bool(data, "year", what, False),
            timezone=timezone,
            tz_glued=_bool(data, "tz_glued", what, False),
            tag_space=_bool(data, "tag_space", what, True),
            utc_offset_min=utc_offset_min,
            clock_offset_ms=clock_offset_ms,
        )
    timestamp = _str(data, "timestamp", what, "legacy_year")
    if timestamp not in ASA_TIMESTAMPS:
        raise ConfigError(f"{what}: timestamp must be one of {sorted(ASA_TIMESTAMPS)}")
    device_id = _opt_str(data, "device_id", what) if "device_id" in data else "hostname"
    if device_id not in (None, "hostname", "ip"):
        raise ConfigError(f"{what}: device_id must be hostname, ip or null")
    if framing in ("wire", "bare") and device_id is None:
        raise ConfigError(f"{what}: framing {framing} needs a device_id")
    return Style(
        framing=framing,
        timestamp=timestamp,
        device_id=device_id,
        utc_offset_min=utc_offset_min,
        clock_offset_ms=clock_offset_ms,
    )


_FLEET_KEYS: Final = frozenset(
    {
        "kind",
        "count",
        "hostname",
        "mgmt_net",
        "outside_net",
        "outside_if",
        "peer_net",
        "peers_per_device",
        "weight",
        "styles",
        "name",
    }
)


def _parse_fleet(data: Mapping[str, object], what: str) -> list[Device]:
    _check_keys(data, _FLEET_KEYS, what)
    kind = _str(data, "kind", what)
    if kind not in ("ios", "asa"):
        raise ConfigError(f"{what}: kind must be ios or asa")
    count = _int(data, "count", what, 1)
    pattern = _str(data, "hostname", what)
    mgmt = _network(data.get("mgmt_net"), f"{what}.mgmt_net")
    outside = _network(data.get("outside_net"), f"{what}.outside_net")
    peer_net = _network(data.get("peer_net"), f"{what}.peer_net")
    per_device = _int(data, "peers_per_device", what, 1)
    if per_device < 1:
        raise ConfigError(f"{what}: peers_per_device must be at least 1")
    weight = _number(data, "weight", what, 1.0)
    if weight <= 0:
        raise ConfigError(f"{what}: weight must be positive")
    outside_if = _str(data, "outside_if", what, "GigabitEthernet0/0")
    raw_styles = data.get("styles", [{}])
    if not isinstance(raw_styles, list) or not raw_styles:
        raise ConfigError(f"{what}: styles must be a non-empty list")
    styles = [
        _parse_style(_mapping(s, f"{what}.styles[{i}]"), kind, f"{what}.styles[{i}]")
        for i, s in enumerate(raw_styles)
    ]
    devices = []
    for n in range(1, count + 1):
        try:
            name = pattern.format(n=n)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"{what}: bad hostname pattern {pattern!r}") from exc
        peers = tuple(
            _host(peer_net, (n - 1) * per_device + k + 1, f"{what}.peer_net")
            for k in range(per_device)
        )
        devices.append(
            Device(
                name=name,
                kind=kind,
                mgmt_ip=_host(mgmt, n, f"{what}.mgmt_net"),
                outside_ip=_host(outside, n, f"{what}.outside_net"),
                outside_if=outside_if,
                peers=peers,
                weight=weight,
                style=styles[(n - 1) % len(styles)],
            )
        )
    return devices


def _resolve_peer(value: object, dev: Device, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < len(dev.peers):
            raise ConfigError(f"{what}: {dev.name} has no peer number {value}")
        return dev.peers[value]
    if isinstance(value, str):
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError as exc:
            raise ConfigError(f"{what}: peer {value!r} is not an IPv4 address") from exc
    raise ConfigError(f"{what}: peer must be an index into the device's peers or an IP")


_FAULT_KEYS: Final = frozenset(
    {"id", "cause", "device", "peer", "at", "duration", "variant", "options"}
)
_DECOY_KEYS: Final = frozenset({"id", "kind", "device", "peer", "at", "options"})


def _parse_fault(
    data: Mapping[str, object], devices: Mapping[str, Device], span_s: float, index: int
) -> FaultSpec:
    what = f"faults[{index}]"
    _check_keys(data, _FAULT_KEYS, what)
    cause = _str(data, "cause", what)
    if cause not in CAUSES:
        raise ConfigError(f"{what}: unknown cause {cause!r}; known: {', '.join(CAUSES)}")
    dev_name = _str(data, "device", what)
    if dev_name not in devices:
        raise ConfigError(f"{what}: unknown device {dev_name!r}")
    dev = devices[dev_name]
    by_kind = SUPPORTED.get(cause, {})
    if dev.kind not in by_kind:
        kinds = ", ".join(sorted(by_kind)) or "no device kind (no confirmed message text)"
        raise ConfigError(f"{what}: {cause} can only be generated on {kinds}")
    variants = by_kind[dev.kind]
    variant = str(data.get("variant", next(iter(variants))))
    if variant not in variants:
        raise ConfigError(f"{what}: {cause} on {dev.kind} has variants {sorted(variants)}")
    options = _mapping(data.get("options", {}), f"{what}.options")
    _check_keys(options, COMMON_OPTIONS | variants[variant], f"{what}.options")
    if "interval" in options:
        parse_duration(options["interval"], f"{what}.options.interval")
    at_s = parse_duration(data.get("at"), f"{what}.at")
    duration_s = parse_duration(data.get("duration", "10m"), f"{what}.duration")
    if duration_s <= 0:
        raise ConfigError(f"{what}: duration must be positive")
    if at_s + duration_s > span_s - 120:
        raise ConfigError(f"{what}: the fault must end at least 2 minutes before the archive")
    return FaultSpec(
        id=str(data.get("id", f"F{index + 1:02d}")),
        cause=cause,
        device=dev_name,
        peer=_resolve_peer(data.get("peer", 0), dev, what),
        at_s=at_s,
        duration_s=duration_s,
        variant=variant,
        options=dict(options),
    )


def _parse_decoy(
    data: Mapping[str, object], devices: Mapping[str, Device], span_s: float, index: int
) -> DecoySpec:
    what = f"decoys[{index}]"
    _check_keys(data, _DECOY_KEYS, what)
    kind = _str(data, "kind", what)
    if kind not in DECOY_KINDS:
        raise ConfigError(f"{what}: unknown decoy kind {kind!r}; known: {sorted(DECOY_KINDS)}")
    dev_name = _str(data, "device", what)
    if dev_name not in devices:
        raise ConfigError(f"{what}: unknown device {dev_name!r}")
    dev = devices[dev_name]
    if kind == "healthy_rekey" and dev.kind != "asa":
        raise ConfigError(f"{what}: IOS logs nothing on a healthy re-key; use an ASA")
    options = _mapping(data.get("options", {}), f"{what}.options")
    _check_keys(options, frozenset({"lines"}), f"{what}.options")
    at_s = parse_duration(data.get("at"), f"{what}.at")
    if at_s > span_s - 180:
        raise ConfigError(f"{what}: a decoy must start at least 3 minutes before the end")
    return DecoySpec(
        id=str(data.get("id", f"D{index + 1:02d}")),
        kind=kind,
        device=dev_name,
        peer=_resolve_peer(data.get("peer", 0), dev, what),
        at_s=at_s,
        options=dict(options),
    )


def _parse_mix(
    value: object, allowed: frozenset[str], default: Mapping[str, float], what: str
) -> tuple[tuple[str, float], ...]:
    mix = default if value is None else _mapping(value, what)
    _check_keys(mix, allowed, what)
    out = []
    for key in sorted(mix):
        weight = mix[key]
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise ConfigError(f"{what}: weight of {key} must be a non-negative number")
        if weight > 0:
            out.append((key, float(weight)))
    if not out:
        raise ConfigError(f"{what}: at least one message kind needs a positive weight")
    return tuple(out)


_TOP_KEYS: Final = frozenset(
    {"name", "start", "duration", "lines", "background", "rekey", "fleets", "faults", "decoys"}
)


def parse_scenario(data: object) -> Scenario:
    """Validate a decoded scenario mapping; raises :class:`ConfigError` on any problem."""
    top = _mapping(data, "scenario")
    _check_keys(top, _TOP_KEYS, "scenario")
    start_raw = top.get("start", "2024-03-05T00:00:00Z")
    try:
        start = (
            start_raw
            if isinstance(start_raw, datetime)
            else datetime.fromisoformat(str(start_raw).replace("Z", "+00:00"))
        )
    except ValueError as exc:
        raise ConfigError(f"scenario.start: {exc}") from exc
    if start.tzinfo is None:
        raise ConfigError("scenario.start must carry a timezone (e.g. 2024-03-05T00:00:00Z)")
    start = start.astimezone(UTC)
    span_s = parse_duration(top.get("duration", "24h"), "scenario.duration")
    if span_s < 600:
        raise ConfigError("scenario.duration must be at least 10 minutes")
    lines = _int(top, "lines", "scenario", 100_000)

    background = _mapping(top.get("background", {}), "background")
    _check_keys(background, frozenset({"ios_mix", "asa_mix"}), "background")
    rekey = _mapping(top.get("rekey", {}), "rekey")
    _check_keys(rekey, frozenset({"phase1_lifetime", "phase2_lifetime"}), "rekey")
    p2 = parse_duration(rekey.get("phase2_lifetime", "8h"), "rekey.phase2_lifetime")
    p1 = parse_duration(rekey.get("phase1_lifetime", "24h"), "rekey.phase1_lifetime")
    if p2 < 600 or p1 < 600:
        raise ConfigError("rekey lifetimes must be at least 10 minutes")

    raw_fleets = top.get("fleets")
    if not isinstance(raw_fleets, list) or not raw_fleets:
        raise ConfigError("scenario.fleets must be a non-empty list")
    devices: list[Device] = []
    for i, fleet in enumerate(raw_fleets):
        devices.extend(_parse_fleet(_mapping(fleet, f"fleets[{i}]"), f"fleets[{i}]"))
    by_name: dict[str, Device] = {}
    for dev in devices:
        if dev.name in by_name:
            raise ConfigError(f"device name {dev.name!r} is used twice")
        by_name[dev.name] = dev

    raw_faults = top.get("faults", [])
    raw_decoys = top.get("decoys", [])
    if not isinstance(raw_faults, list) or not isinstance(raw_decoys, list):
        raise ConfigError("scenario.faults and scenario.decoys must be lists")
    faults = tuple(
        _parse_fault(_mapping(f, f"faults[{i}]"), by_name, span_s, i)
        for i, f in enumerate(raw_faults)
    )
    decoys = tuple(
        _parse_decoy(_mapping(d, f"decoys[{i}]"), by_name, span_s, i)
        for i, d in enumerate(raw_decoys)
    )
    ids = [f.id for f in faults] + [d.id for d in decoys]
    if len(set(ids)) != len(ids):
        raise ConfigError("fault and decoy ids must be unique")

    return Scenario(
        name=str(top.get("name", "unnamed")),
        start=start,
        duration_s=span_s,
        lines=lines,
        devices=tuple(devices),
        faults=faults,
        decoys=decoys,
        ios_mix=_parse_mix(
            background.get("ios_mix"), IOS_MIX_KINDS, DEFAULT_IOS_MIX, "background.ios_mix"
        ),
        asa_mix=_parse_mix(
            background.get("asa_mix"), ASA_MIX_KINDS, DEFAULT_ASA_MIX, "background.asa_mix"
        ),
        phase2_lifetime_s=p2,
        phase1_lifetime_s=p1,
    )


def parse_scenario_yaml(text: str) -> Scenario:
    """Parse a scenario from YAML text."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"scenario YAML: {exc}") from exc
    return parse_scenario(data)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate the scenario YAML file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read scenario {path}: {exc}") from exc
    return parse_scenario_yaml(text)


def default_scenario() -> Scenario:
    """The scenario shipped as ``load/scenarios/default.yaml``."""
    text = resources.files("load").joinpath("scenarios/default.yaml").read_text("utf-8")
    return parse_scenario_yaml(text)
