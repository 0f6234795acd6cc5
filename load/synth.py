"""Deterministic synthetic Cisco IOS/ASA syslog from a :class:`~load.scenario.Scenario`.

Usage::

    synth = generate(default_scenario(), lines=100_000, seed=7)
    synth.ground_truth          # list[TruthFault], known before iterating
    for line in synth:          # lines in time order, no trailing newline
        ...

Everything random comes from ``random.Random`` instances seeded from ``seed``; nothing
reads the clock, so the same scenario, line count and seed give byte-identical output.
Iterating twice gives the same lines again.

How a run is built:

1. *Scheduled* events are planned first: every fault and decoy (with the devices' real
   rate limits applied: IOS MAC_ERR one per 30 s, PKT_REPLAY_ERR and INV_SPI one per
   minute, ASA 4021xx one per 5 s per message id), and the healthy ASA re-keys
   (713119/713120/713049/602303/602304) of every tunnel.
2. The rest of the requested line count is *background* traffic (ACL logs, interface
   up/downs, config and login messages, ASA connection build/teardown, denies), spread
   evenly over the scenario's span with jitter and shared among the devices by weight.
3. Both streams are merged in time order and rendered with each device's header style:
   message counters and sequence numbers count up per device as lines are emitted.

The ground truth of a fault is its device, the peer as far as its lines reveal it
(``None`` when they carry no peer address, e.g. IOS PKT_REPLAY_ERR), its cause and the
UTC time of its first line.
"""

from __future__ import annotations

import json
import random
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, NamedTuple

from load.scenario import DecoySpec, Device, FaultSpec, Scenario, parse_duration
from streams.errors import ConfigError

MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
WEEKDAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

#: IOS logs to facility local7 (PRI 184 + severity), the ASA to local4 (160 + severity).
IOS_FACILITY_BASE: Final = 184
ASA_FACILITY_BASE: Final = 160
DEBUG_SEVERITY: Final = 7

#: Rate limits in ms. IOS: per device and message (INV_SPI also per source address:
#: two scanners 3 s apart are both logged in public captures). ASA: per message id.
IOS_RATE_LIMITS_MS: Final[Mapping[str, int]] = {
    "CRYPTO-4-RECVD_PKT_MAC_ERR": 30_000,
    "CRYPTO-4-PKT_REPLAY_ERR": 60_000,
    "CRYPTO-4-RECVD_PKT_INV_SPI": 60_000,
}
ASA_4021XX_LIMIT_MS: Final = 5_000


# ---------------------------------------------------------------------------
# public records


class Record(NamedTuple):
    """One output line with what the generator knows about it."""

    time_ms: int  # true emission time, ms since the epoch (UTC)
    device: str
    line: str
    origin: str  # "background", "rekey", "fault" or "decoy"
    ref: str | None  # fault or decoy id


def iso_utc(time_ms: int) -> str:
    """``2024-03-05T10:00:01.123Z`` for a time in ms since the epoch."""
    dt = datetime.fromtimestamp(time_ms // 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{time_ms % 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class TruthFault:
    """Ground truth for one injected fault."""

    id: str
    cause: str
    device: str
    device_ip: str  # management IP: the host field of relay-IP lines, the ASA ip device-id
    kind: str  # "ios" or "asa"
    peer: str | None  # the peer as the fault's lines show it; None if they show none
    first_line_at: str  # ISO 8601 UTC
    last_line_at: str
    lines: int
    variant: str

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "device": self.device,
            "device_ip": self.device_ip,
            "kind": self.kind,
            "peer": self.peer,
            "cause": self.cause,
            "first_line_at": self.first_line_at,
            "last_line_at": self.last_line_at,
            "lines": self.lines,
            "variant": self.variant,
        }


@dataclass(frozen=True, slots=True)
class TruthDecoy:
    """Where a decoy was put: lines there must raise no incident."""

    id: str
    kind: str
    device: str
    device_ip: str
    peer: str | None
    first_line_at: str
    last_line_at: str
    lines: int

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "kind": self.kind,
            "device": self.device,
            "device_ip": self.device_ip,
            "peer": self.peer,
            "first_line_at": self.first_line_at,
            "last_line_at": self.last_line_at,
            "lines": self.lines,
        }


# ---------------------------------------------------------------------------
# planning of scheduled events


@dataclass(slots=True)
class _Ev:
    t_ms: int
    order: int
    dev: int
    sev: int
    tag: str | None  # "CRYPTO-4-RECVD_PKT_MAC_ERR", "ASA-4-402120"; None for debug lines
    text: str
    origin: str
    ref: str | None
    limit_key: tuple[object, ...] | None
    limit_ms: int


class _Planner:
    """Collects the scheduled events of one run."""

    def __init__(self, scenario: Scenario, start_ms: int, end_ms: int) -> None:
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.index = {dev.name: i for i, dev in enumerate(scenario.devices)}
        self.events: list[_Ev] = []

    def emitter(self, dev: Device, origin: str, ref: str | None) -> _Emit:
        return _Emit(self, dev, origin, ref)

    def add(
        self, emit: _Emit, t_ms: int, sev: int, tag: str | None, text: str, peer: str | None
    ) -> None:
        if not self.start_ms <= t_ms < self.end_ms:
            return
        dev = emit.dev
        limit_key: tuple[object, ...] | None = None
        limit_ms = 0
        if tag is not None:
            if dev.kind == "ios" and tag in IOS_RATE_LIMITS_MS:
                limit_ms = IOS_RATE_LIMITS_MS[tag]
                extra = peer if tag == "CRYPTO-4-RECVD_PKT_INV_SPI" else None
                limit_key = (dev.name, tag, extra)
            elif dev.kind == "asa" and tag[6:10] == "4021":
                limit_ms = ASA_4021XX_LIMIT_MS
                limit_key = (dev.name, tag[6:])
        order = len(self.events)
        self.events.append(
            _Ev(
                t_ms,
                order,
                self.index[dev.name],
                sev,
                tag,
                text,
                emit.origin,
                emit.ref,
                limit_key,
                limit_ms,
            )
        )

    def finish(self) -> list[_Ev]:
        """Events in time order, with rate-limited repeats dropped as the device would."""
        self.events.sort(key=lambda e: (e.t_ms, e.order))
        last: dict[tuple[object, ...], int] = {}
        kept = []
        for ev in self.events:
            if ev.limit_key is not None:
                prev = last.get(ev.limit_key)
                if prev is not None and ev.t_ms - prev < ev.limit_ms:
                    continue
                last[ev.limit_key] = ev.t_ms
            kept.append(ev)
        return kept


class _Emit:
    """Adds lines of one fault, decoy or re-key on one device to the plan."""

    __slots__ = ("dev", "origin", "planner", "ref")

    def __init__(self, planner: _Planner, dev: Device, origin: str, ref: str | None) -> None:
        self.planner = planner
        self.dev = dev
        self.origin = origin
        self.ref = ref

    def __call__(
        self, t_ms: int, sev: int, tag: str | None, text: str, peer: str | None = None
    ) -> None:
        """Schedule one line; ``peer`` matters for rate limits keyed by source address."""
        self.planner.add(self, t_ms, sev, tag, text, peer)


def _spi(rng: random.Random) -> int:
    return rng.randrange(0x1000_0000, 0xFFFF_FFFF)


def _hex_seq(rng: random.Random) -> int:
    return rng.randrange(0x10, 0x40000)


def _ms(rng: random.Random, lo: int, hi: int) -> int:
    return rng.randint(lo, hi)


def _gaps(
    rng: random.Random,
    t0: int,
    t_end: int,
    lo_s: float,
    hi_s: float,
    options: Mapping[str, object],
    floor_s: float = 0.0,
) -> list[int]:
    """Times from ``t0`` to before ``t_end`` with gaps drawn from [lo, hi] seconds.

    ``options["interval"]`` overrides the typical gap; gaps never go below ``floor_s``
    (the rate limit), so a device never has to suppress the fault's own lines.
    """
    if "interval" in options:
        typical = parse_duration(options["interval"], "interval")
        lo_s, hi_s = typical * 0.85, typical * 1.15
    lo_s = max(lo_s, floor_s)
    hi_s = max(hi_s, lo_s)
    out = []
    t = t0
    while t < t_end:
        out.append(t)
        t += int(rng.uniform(lo_s, hi_s) * 1000)
    return out


def _group(peer: str) -> str:
    return f"Group = {peer}, IP = {peer}"


def _asa_esp(spi: int, seq: int, peer: str, local: str, user: bool = True) -> str:
    who = f"{peer} (user= {peer})" if user else peer
    return (
        f"IPSEC: Received an ESP packet (SPI= 0x{spi:08X}, sequence number= 0x{seq:X}) "
        f"from {who} to {local}"
    )


def _sa_line(direction: str, spi: int, local: str, peer: str, what: str) -> str:
    return (
        f"IPSEC: An {direction} LAN-to-LAN SA (SPI= 0x{spi:08X}) between {local} and "
        f"{peer} (user= {peer}) has been {what}."
    )


def _duration(seconds: int) -> str:
    h, rest = divmod(seconds, 3600)
    return f"{h}h:{rest // 60:02d}m:{rest % 60:02d}s"


def _l2l_disconnect(rng: random.Random, peer: str, up_s: int, reason: str) -> str:
    xmt = rng.randint(0, 4_000_000) if up_s else 0
    rcv = rng.randint(0, 9_000_000) if up_s else 0
    return (
        f"Group = {peer}, Username = {peer}, IP = {peer}, Session disconnected. "
        f"Session Type: LAN-to-LAN, Duration: {_duration(up_s)}, Bytes xmt: {xmt}, "
        f"Bytes rcv: {rcv}, Reason: {reason}"
    )


def _qm_fsm(rng: random.Random, peer: str) -> str:
    ptr = 0x00007FFF00000000 + rng.getrandbits(32)
    mess = rng.getrandbits(32)
    return f"{_group(peer)}, QM FSM error (P2 struct &0x{ptr:016x}, mess id 0x{mess:08x})!"


def _mac_err_text(conn: int, local: str | None, peer: str, spi: int, seq: int) -> str:
    where = "" if local is None else f" local={local} remote={peer}"
    return (
        f"decrypt: mac verify failed for connection id={conn}{where} spi={spi:08X} seqno={seq:08X}"
    )


def _inv_spi_text(dev: Device, peer: str, spi: int) -> str:
    return (
        f"decaps: rec'd IPSEC packet has invalid spi for destaddr={dev.outside_ip}, prot=50, "
        f"spi=0x{spi:08X}({spi}), srcaddr={peer}, input interface={dev.outside_if}"
    )


def _need_peer(spec: FaultSpec | DecoySpec) -> str:
    if spec.peer is None:
        what = spec.cause if isinstance(spec, FaultSpec) else spec.kind
        raise ConfigError(f"{spec.id}: {what} needs a peer")
    return spec.peer


# Each injector schedules the lines of one fault between t0 and t1 and returns the peer
# as the lines show it (None when they carry no peer address).
_Injector = Callable[[_Emit, random.Random, FaultSpec, int, int], str | None]


def _crypto_engine_fault(
    emit: _Emit, rng: random.Random, f: FaultSpec, t0: int, t1: int
) -> str | None:
    dev, peer = emit.dev, _need_peer(f)
    spi, seq = _spi(rng), _hex_seq(rng)
    if dev.kind == "asa":
        for t in _gaps(rng, t0, t1, 6, 30, f.options, 5):
            seq += rng.randint(50, 4000)
            text = _asa_esp(spi, seq, peer, dev.outside_ip) + " that failed authentication."
            emit(t, 4, "ASA-4-402120", text, peer)
        return peer
    legacy = bool(f.options.get("legacy_format", False))
    motcr = bool(f.options.get("motcr", False))
    conn = rng.randint(200, 4000)
    local = None if legacy else dev.outside_ip
    for n, t in enumerate(_gaps(rng, t0, t1, 30.5, 38, f.options, 30)):
        seq += rng.randint(200, 9000)
        emit(t, 4, "CRYPTO-4-RECVD_PKT_MAC_ERR", _mac_err_text(conn, local, peer, spi, seq))
        if motcr and n % 2 == 0:
            text = "MOTCR PktEng Return Value = 0x20000,  PktEngReturn_MACMiscompare"
            emit(t + _ms(rng, 20, 900), 1, "MOTCR-1-PKTENGRET_ERROR", text)
    return None if legacy else peer


def _qos_reordering(emit: _Emit, rng: random.Random, f: FaultSpec, t0: int, t1: int) -> str | None:
    dev = emit.dev
    if dev.kind == "asa":
        peer = _need_peer(f)
        spi, seq = _spi(rng), _hex_seq(rng)
        for t in _gaps(rng, t0, t1, 8, 40, f.options, 5):
            seq += rng.randint(100, 6000)
            text = _asa_esp(spi, seq - rng.randint(70, 400), peer, dev.outside_ip)
            emit(t, 4, "ASA-4-402119", text + " that failed anti-replay checking.", peer)
        return peer
    if f.variant == "c1700_em":
        sa_id = rng.randint(20, 200)
        for t in _gaps(rng, t0, t1, 30, 60, f.options):
            text = f"packet-rx error: ESP sequence fail, id {sa_id}, pool offset 0"
            emit(t, 1, "C1700_EM-1-ERROR", text)
        return None
    conn = rng.randint(20, 3000)
    seq = rng.randint(1000, 200_000)
    for t in _gaps(rng, t0, t1, 60.5, 75, f.options, 60):
        seq += rng.randint(500, 30_000)
        text = f"decrypt: replay check failed connection id={conn}, sequence number={seq}"
        emit(t, 4, "CRYPTO-4-PKT_REPLAY_ERR", text)
    return None


def _fragmentation_mtu(
    emit: _Emit, rng: random.Random, f: FaultSpec, t0: int, t1: int
) -> str | None:
    dev = emit.dev
    if dev.kind == "ios":
        status = f.options.get("status", 4612)
        for t in _gaps(rng, t0, t1, 40, 90, f.options):
            text = f"Hardware VPN0/2: Packet Encryption/Decryption error, status={status}"
            emit(t, 1, "HW_VPN-1-HPRXERR", text)
        return None
    peer = _need_peer(f)
    spi, seq = _spi(rng), _hex_seq(rng)
    times = _gaps(rng, t0, t1, 10, 45, f.options, 5)
    for t in times:
        seq += rng.randint(100, 5000)
        length = rng.choice((1380, 1408, 1428, 1436))
        offset = rng.choice((1376, 1480, 2960))
        text = (
            _asa_esp(spi, seq, peer, dev.outside_ip)
            + f" containing an illegal IP fragment of length {length} with offset {offset}."
        )
        emit(t, 4, "ASA-4-402118", text, peer)
    if f.options.get("pmtu", True):
        router = f"198.18.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        old = 1500
        for t in sorted(rng.sample(times, min(3, len(times)))):
            new = old - rng.choice((24, 52, 80, 120))
            text = (
                f"IPSEC: Received an ICMP Destination Unreachable from {router} with "
                f"suggested PMTU of {new}; PMTU updated for SA with peer {peer}, "
                f"SPI 0x{spi:08X}, tunnel name {peer}, old PMTU {old}, new PMTU {new}."
            )
            emit(t + _ms(rng, 100, 2000), 6, "ASA-6-602103", text)
            old = new
    return peer


def _psk_mismatch(emit: _Emit, rng: random.Random, f: FaultSpec, t0: int, t1: int) -> str | None:
    peer = _need_peer(f)
    for t in _gaps(rng, t0, t1, 10, 20, f.options):
        text = f"IKE message from {peer} failed its sanity check or is malformed"
        emit(t, 4, "CRYPTO-4-IKMP_BAD_MESSAGE", text)
    return peer


def _ike_policy_mismatch(
    emit: _Emit, rng: random.Random, f: FaultSpec, t0: int, t1: int
) -> str | None:
    peer = _need_peer(f)
    for t in _gaps(rng, t0, t1, 10, 25, f.options):
        if emit.dev.kind == "asa":
            text = (
                f"{_group(peer)}, Phase 1 failure: Mismatched attribute types for class "
                "Encryption Alg: Rcv'd: 3DES Cfg'd: AES-256"
            )
            emit(t, 5, "ASA-5-713257", text)
        else:
            text = f"Processing of Main mode failed with peer at {peer}"
            emit(t, 6, "CRYPTO-6-IKMP_MODE_FAILURE", text)
    return peer


def _transform_set_mismatch(
    emit: _Emit, rng: random.Random, f: FaultSpec, t0: int, t1: int
) -> str | None:
    peer = _need_peer(f)
    asa_id = int(str(f.options.get("asa_id", 713902)))
    if not 713900 <= asa_id <= 713906:
        raise ConfigError(f"{f.id}: asa_id must be within 713900..713906")
    qm_fsm = bool(f.options.get("qm_fsm", False))
    for t in _gaps(rng, t0, t1, 15, 35, f.options):
        if emit.dev.kind == "asa":
            # 713900..713906 carry one text at severities 1..7.
            sev = asa_id - 713899
            text = f"{_group(peer)}, All IPSec SA proposals found unacceptable!"
            emit(t, sev, f"ASA-{sev}-{asa_id}", text)
            if qm_fsm:
                emit(t + _ms(rng, 1, 40), 3, "ASA-3-713902", _qm_fsm(rng, peer))
        else:
            text = f"Processing of Quick mode failed with peer at {peer}"
            emit(t, 6, "CRYPTO-6-IKMP_MODE_FAILURE", text)
    return peer


def _crypto_acl_mismatch(
    emit: _Emit, rng: random.Random, f: FaultSpec, t0: int, t1: int
) -> str | None:
    dev, peer = emit.dev, _need_peer(f)
    local_net = f"10.{rng.randint(1, 99)}.{rng.randint(0, 255)}.0"
    remote_net = f"10.{rng.randint(100, 199)}.{rng.randint(0, 255)}.0"
    local_proxy = f"{local_net}/255.255.255.0/0/0"
    remote_proxy = f"{remote_net}/255.255.255.0/0/0"
    if f.variant == "402116":
        spi, seq = _spi(rng), _hex_seq(rng)
        for t in _gaps(rng, t0, t1, 8, 30, f.options, 5):
            seq += rng.randint(10, 3000)
            dst = f"10.{rng.randint(200, 250)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            src = remote_net[:-1] + str(rng.randint(1, 254))
            text = (
                _asa_esp(spi, seq, peer, dev.outside_ip)
                + ". The decapsulated inner packet doesn't match the negotiated policy in the "
                f"SA. The packet specifies its destination as {dst}, its source as {src}, and "
                f"its protocol as {rng.choice((1, 6, 17))}. The SA specifies its local proxy as "
                f"{local_proxy} and its remote_proxy as {remote_proxy}."
            )
            emit(t, 4, "ASA-4-402116", text, peer)
        return peer
    # ASA 9.2: phase 1 comes up, quick mode finds no crypto map entry, the session dies.
    rejecting = (
        f"{_group(peer)}, Rejecting IPSec tunnel: no matching crypto map entry for remote "
        f"proxy {remote_proxy} local proxy {local_proxy} on interface outside"
    )
    torn = f"{_group(peer)}, Session is being torn down. Reason: crypto map policy not found"
    for t in _gaps(rng, t0, t1, 45, 75, f.options):
        steps = (
            (5, "ASA-5-713119", f"{_group(peer)}, PHASE 1 COMPLETED"),
            (3, "ASA-3-713061", rejecting),
            (3, "ASA-3-713902", _qm_fsm(rng, peer)),
            (5, "ASA-5-713259", torn),
            (4, "ASA-4-113019", _l2l_disconnect(rng, peer, 0, "crypto map policy not found")),
        )
        for sev, tag, text in steps:
            emit(t, sev, tag, text)
            t += _ms(rng, 1, 60)
    return peer


def _peer_address_mismatch(
    emit: _Emit, rng: random.Random, f: FaultSpec, t0: int, t1: int
) -> str | None:
    peer = _need_peer(f)
    no_cert = bool(f.options.get("no_cert_line", True))
    for t in _gaps(rng, t0, t1, 15, 30, f.options):
        emit(t, DEBUG_SEVERITY, None, f"ISAKMP-ERROR: (0):No pre-shared key with {peer}!")
        if no_cert:
            text = "ISAKMP-ERROR: (0):No Cert or pre-shared address key."
            emit(t + _ms(rng, 1, 8), DEBUG_SEVERITY, None, text)
    return peer


def _local_address_misconfig(
    emit: _Emit, rng: random.Random, f: FaultSpec, t0: int, t1: int
) -> str | None:
    address = str(f.options.get("address", emit.dev.outside_ip))
    for t in _gaps(rng, t0, t1, 20, 40, f.options):
        text = f"IPSEC(validate_proposal_request): invalid local address {address}"
        emit(t, DEBUG_SEVERITY, None, text)
    return None


def _sa_out_of_sync(emit: _Emit, rng: random.Random, f: FaultSpec, t0: int, t1: int) -> str | None:
    dev, peer = emit.dev, _need_peer(f)
    spi = _spi(rng)
    if dev.kind == "asa":
        seq = _hex_seq(rng)
        for t in _gaps(rng, t0, t1, 30, 60, f.options, 5):
            seq += rng.randint(10, 900)
            text = _asa_esp(spi, seq, peer, dev.outside_ip, user=False) + " with an invalid SPI."
            emit(t, 4, "ASA-4-402114", text, peer)
        return peer
    # The peer keeps sending on an SA this router no longer has: once a minute, same SPI.
    for t in _gaps(rng, t0, t1, 60.2, 62, f.options, 60):
        emit(t, 4, "CRYPTO-4-RECVD_PKT_INV_SPI", _inv_spi_text(dev, peer, spi), peer)
    return peer


def _peer_unreachable(
    emit: _Emit, rng: random.Random, f: FaultSpec, t0: int, t1: int
) -> str | None:
    dev, peer = emit.dev, _need_peer(f)
    lost = (
        f"{_group(peer)}, IKE lost contact with remote peer, deleting connection "
        "(keepalive type: DPD)"
    )
    for n, t in enumerate(_gaps(rng, t0, t1, 90, 180, f.options)):
        emit(t, 3, "ASA-3-713123", lost)
        if n == 0:
            for direction in ("outbound", "inbound"):
                t += _ms(rng, 1, 30)
                emit(
                    t,
                    6,
                    "ASA-6-602304",
                    _sa_line(direction, _spi(rng), dev.outside_ip, peer, "deleted"),
                )
            text = _l2l_disconnect(rng, peer, rng.randint(3600, 80000), "Lost Service")
            emit(t + _ms(rng, 1, 10), 4, "ASA-4-113019", text)
    return peer


def _tunnel_flapping(emit: _Emit, rng: random.Random, f: FaultSpec, t0: int, t1: int) -> str | None:
    dev, peer = emit.dev, _need_peer(f)
    spis = (_spi(rng), _spi(rng))
    up_s = rng.randint(3600, 40000)
    for t in _gaps(rng, t0, t1, 150, 210, f.options):
        for direction, spi in zip(("outbound", "inbound"), spis, strict=True):
            emit(t, 6, "ASA-6-602304", _sa_line(direction, spi, dev.outside_ip, peer, "deleted"))
            t += _ms(rng, 1, 15)
        emit(t, 4, "ASA-4-113019", _l2l_disconnect(rng, peer, up_s, "Peer Terminate"))
        down_ms = _ms(rng, 4000, 40000)
        t += down_ms
        spis = (_spi(rng), _spi(rng))
        for direction, spi in zip(("outbound", "inbound"), spis, strict=True):
            emit(t, 6, "ASA-6-602303", _sa_line(direction, spi, dev.outside_ip, peer, "created"))
            t += _ms(rng, 1, 15)
        up_s = max(1, (150_000 - down_ms) // 1000 + rng.randint(0, 60))
    return peer


def _split_tunnel_misconfig(
    emit: _Emit, rng: random.Random, f: FaultSpec, t0: int, t1: int
) -> str | None:
    # A remote-access client whose group policy says "tunnel specified" with no network
    # list: every connection attempt (the user retrying) logs 713140 (seed: split tunnel).
    peer = _need_peer(f)
    group = str(f.options.get("group", "RA-VPN"))
    user = rng.choice(_USERS)
    for t in _gaps(rng, t0, t1, 30, 90, f.options):
        text = (
            f"Group = {group}, Username = {user}, IP = {peer}, "
            "Split Tunneling Policy requires network list but none configured"
        )
        emit(t, 3, "ASA-3-713140", text, peer)
    return peer


def _hardware_unsupported(
    emit: _Emit, rng: random.Random, f: FaultSpec, t0: int, t1: int
) -> str | None:
    # A 7600 without an IPsec SPA refusing to bring the tunnel up, under debug crypto: the
    # text is the catalog's inferred one (ios_debug.yaml dbg-7600-no-spa); no syslog text
    # for it has been confirmed, so the variant says so.
    for t in _gaps(rng, t0, t1, 20, 60, f.options):
        emit(t, DEBUG_SEVERITY, None, "Software crypto is not supported on this platform")
    return None


_INJECTORS: Final[Mapping[str, _Injector]] = {
    "crypto_engine_fault": _crypto_engine_fault,
    "qos_reordering": _qos_reordering,
    "fragmentation_mtu": _fragmentation_mtu,
    "psk_mismatch": _psk_mismatch,
    "ike_policy_mismatch": _ike_policy_mismatch,
    "transform_set_mismatch": _transform_set_mismatch,
    "crypto_acl_mismatch": _crypto_acl_mismatch,
    "peer_address_mismatch": _peer_address_mismatch,
    "local_address_misconfig": _local_address_misconfig,
    "sa_out_of_sync": _sa_out_of_sync,
    "peer_unreachable": _peer_unreachable,
    "tunnel_flapping": _tunnel_flapping,
    "split_tunnel_misconfig": _split_tunnel_misconfig,
    "hardware_unsupported": _hardware_unsupported,
}


# ---------------------------------------------------------------------------
# healthy re-keys and decoys


class _Tunnel:
    """SPIs of one ASA tunnel, so that a re-key deletes the SAs the last one created."""

    __slots__ = ("in_spi", "out_spi")

    def __init__(self, rng: random.Random) -> None:
        self.in_spi = _spi(rng)
        self.out_spi = _spi(rng)


def _asa_rekey(
    emit: _Emit,
    rng: random.Random,
    peer: str,
    tunnel: _Tunnel,
    t: int,
    *,
    delete_first: bool = False,
    stale_spi_lines: int = 0,
) -> None:
    """A phase-2 re-key: 713120, 713049, 602303 x2 (new SAs), 602304 x2 (old SAs).

    With ``delete_first`` the old SAs go first, and ``stale_spi_lines`` 402114 lines
    (packets still using the old inbound SPI) fall between deletion and creation.
    """
    local = emit.dev.outside_ip
    old_in, old_out = tunnel.in_spi, tunnel.out_spi
    tunnel.in_spi, tunnel.out_spi = new_in, new_out = _spi(rng), _spi(rng)
    role = rng.choice(("Initiator", "Responder"))
    msgid = rng.getrandbits(32)
    create = (
        (5, "ASA-5-713120", f"{_group(peer)}, PHASE 2 COMPLETED (msgid={msgid:08x})"),
        (
            5,
            "ASA-5-713049",
            f"{_group(peer)}, Security negotiation complete for LAN-to-LAN "
            f"Group ({peer})  {role}, Inbound SPI = 0x{new_in:08x}, Outbound SPI = 0x{new_out:08x}",
        ),
        (6, "ASA-6-602303", _sa_line("outbound", new_out, local, peer, "created")),
        (6, "ASA-6-602303", _sa_line("inbound", new_in, local, peer, "created")),
    )
    delete = (
        (6, "ASA-6-602304", _sa_line("outbound", old_out, local, peer, "deleted")),
        (6, "ASA-6-602304", _sa_line("inbound", old_in, local, peer, "deleted")),
    )
    first, second = (delete, create) if delete_first else (create, delete)
    for sev, tag, text in first:
        emit(t, sev, tag, text)
        t += _ms(rng, 1, 20)
    seq = _hex_seq(rng)
    for _ in range(stale_spi_lines):
        t += _ms(rng, 5200, 7000)
        seq += rng.randint(1, 200)
        text = _asa_esp(old_in, seq, peer, local, user=False) + " with an invalid SPI."
        emit(t, 4, "ASA-4-402114", text, peer)
    t += _ms(rng, 300, 3000) if delete_first else _ms(rng, 2000, 20000)
    for sev, tag, text in second:
        emit(t, sev, tag, text)
        t += _ms(rng, 1, 20)


def _plan_decoy(emit: _Emit, rng: random.Random, d: DecoySpec, t: int) -> str | None:
    dev, peer = emit.dev, _need_peer(d)
    n_opt = d.options.get("lines")
    if d.kind == "isolated_hmac":
        if dev.kind == "asa":
            text = _asa_esp(_spi(rng), _hex_seq(rng), peer, dev.outside_ip)
            emit(t, 4, "ASA-4-402120", text + " that failed authentication.", peer)
        else:
            conn = rng.randint(200, 4000)
            text = _mac_err_text(conn, dev.outside_ip, peer, _spi(rng), _hex_seq(rng))
            emit(t, 4, "CRYPTO-4-RECVD_PKT_MAC_ERR", text)
    elif d.kind == "rekey_inv_spi":
        n = int(str(n_opt)) if n_opt is not None else rng.randint(1, 2)
        if not 1 <= n <= 2:
            raise ConfigError(f"{d.id}: a transient INV_SPI burst has 1 or 2 lines")
        if dev.kind == "asa":
            _asa_rekey(emit, rng, peer, _Tunnel(rng), t, delete_first=True, stale_spi_lines=n)
        else:
            # IOS logs nothing on a re-key; the stale SPI shows up once, maybe twice
            # (INV_SPI is rate-limited to one a minute).
            spi = _spi(rng)
            for k in range(n):
                at = t + k * _ms(rng, 60_500, 64_000)
                emit(at, 4, "CRYPTO-4-RECVD_PKT_INV_SPI", _inv_spi_text(dev, peer, spi), peer)
    elif d.kind == "lone_ikmp_no_sa":
        if dev.kind != "ios":
            raise ConfigError(f"{d.id}: IKMP_NO_SA is an IOS message")
        text = f"IKE message from {peer} has no SA and is not an initialization offer"
        emit(t, 4, "CRYPTO-4-IKMP_NO_SA", text)
    else:  # healthy_rekey
        _asa_rekey(emit, rng, peer, _Tunnel(rng), t)
    return peer


# ---------------------------------------------------------------------------
# rendering


class _RelayClock:
    """``Mmm dd hh:mm:ss`` of the syslog server (UTC), cached per second."""

    __slots__ = ("last", "text")

    def __init__(self) -> None:
        self.last = -1
        self.text = ""

    def stamp(self, t_ms: int) -> str:
        sec = t_ms // 1000
        if sec != self.last:
            tm = time.gmtime(sec)
            self.last = sec
            self.text = (
                f"{MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} "
                f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"
            )
        return self.text


class _Renderer:
    """Renders the lines of one device in its header style."""

    __slots__ = (
        "asa",
        "base",
        "clock",
        "dev",
        "last_sec",
        "msec",
        "msgcount",
        "name",
        "offset_ms",
        "origin",
        "pri_base",
        "relay",
        "relay_host",
        "seqno",
        "style",
        "tz",
        "wire",
    )

    def __init__(self, dev: Device, relay: _RelayClock, rng: random.Random) -> None:
        st = dev.style
        self.dev = dev
        self.style = st
        self.name = dev.name
        self.relay = relay
        self.asa = dev.kind == "asa"
        self.pri_base = ASA_FACILITY_BASE if self.asa else IOS_FACILITY_BASE
        self.wire = st.framing == "wire"
        self.relay_host: str | None = {"rsyslog": dev.name, "relay_ip": dev.mgmt_ip}.get(st.framing)
        self.msgcount = rng.randint(1000, 900_000)
        self.seqno = rng.randint(100, 900_000) if st.sequence_numbers else 0
        self.last_sec = -(10**12)
        self.base = ""
        if st.timestamp == "rfc5424" and self.asa:
            self.offset_ms = st.clock_offset_ms  # RFC 5424 stamps are UTC
        else:
            self.offset_ms = st.utc_offset_min * 60_000 + st.clock_offset_ms
        self.clock = st.clock
        self.msec = st.msec and not self.asa
        if st.timezone is None or self.asa:
            self.tz = ""
        else:
            self.tz = st.timezone if st.tz_glued else " " + st.timezone
        ident = {"hostname": dev.name, "ip": dev.mgmt_ip, None: None}
        self.origin = ident[st.device_id if self.asa else st.origin_id]

    def _base(self, sec: int) -> str:
        tm = time.gmtime(sec)
        hms = f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"
        mon = MONTHS[tm.tm_mon - 1]
        if self.asa:
            ts = self.style.timestamp
            if ts == "rfc5424":
                return f"{tm.tm_year}-{tm.tm_mon:02d}-{tm.tm_mday:02d}T{hms}Z"
            if ts == "legacy_year":
                return f"{mon} {tm.tm_mday:02d} {tm.tm_year} {hms}"
            return f"{mon} {tm.tm_mday:02d} {hms}"
        if self.style.year:
            return f"{mon} {tm.tm_mday:2d} {tm.tm_year} {hms}"
        return f"{mon} {tm.tm_mday:2d} {hms}"

    def local_time(self, t_ms: int) -> time.struct_time:
        """The device's own clock reading (for texts that quote it)."""
        return time.gmtime((t_ms + self.offset_ms) // 1000)

    def render(self, t_ms: int, sev: int, tag: str | None, text: str) -> str:
        local = t_ms + self.offset_ms
        sec = local // 1000
        if sec != self.last_sec:
            self.last_sec = sec
            self.base = self._base(sec)
        self.msgcount += 1
        if self.relay_host is not None:
            head = f"{self.relay.stamp(t_ms)} {self.relay_host} "
        elif self.wire:
            head = f"<{self.pri_base + sev}>"
        else:
            head = ""
        msg = text if tag is None else f"%{tag}: {text}"
        st = self.style
        if self.asa:
            return asa_line(head, "" if st.timestamp == "none" else self.base, self.origin, msg)
        parts = [head]
        if st.message_counter:
            parts.append(f"{self.msgcount}: ")
        elif self.wire:
            parts.append(": ")
        if self.origin:
            parts.append(f"{self.origin}: ")
        if st.sequence_numbers:
            self.seqno += 1
            parts.append(f"{self.seqno:06d}: ")
        parts.append(self.clock)
        parts.append(self.base)
        if self.msec:
            parts.append(f".{local % 1000:03d}")
        parts.append(self.tz)
        parts.append(": " if st.tag_space else ":")
        parts.append(msg)
        return "".join(parts)


def asa_line(head: str, stamp: str, origin: str | None, msg: str) -> str:
    """An ASA line after its syslog ``head``: ``stamp`` (empty: ``logging timestamp`` off)
    and ``origin`` (``logging device-id``, or None) before the message."""
    if stamp and origin:
        return f"{head}{stamp} {origin} : {msg}"
    if stamp:
        return f"{head}{stamp}: {msg}"
    if origin:
        return f"{head}{origin} {msg}"
    return head + msg


# ---------------------------------------------------------------------------
# background traffic

_USERS: Final = ("admin", "netops", "jsmith", "akumar", "backup", "noc")
_IOS_IFACES: Final = (
    "GigabitEthernet0/1",
    "GigabitEthernet0/2",
    "GigabitEthernet0/3",
    "Serial0/1/0",
    "FastEthernet0/1",
)
_IOS_ACLS: Final = ("INET-IN", "101", "OUTSIDE-IN", "ACL-MGMT")
_SERVICES: Final = (22, 23, 25, 53, 80, 123, 161, 443, 445, 1433, 3389, 5060, 8080, 8443)
_TCP_CLOSE: Final = (
    "TCP FINs",
    "TCP FINs",
    "TCP FINs",
    "TCP Reset-I",
    "TCP Reset-O",
    "Conn-timeout",
)


class _DevTraffic:
    """Per-device state of the background traffic."""

    __slots__ = ("acl", "conn_id", "if_up", "link_up", "open_tcp", "open_udp")

    def __init__(self, rng: random.Random, index: int) -> None:
        self.conn_id = rng.randint(10_000, 900_000_000)
        self.open_tcp: list[tuple[int, str]] = []
        self.open_udp: list[tuple[int, str]] = []
        self.if_up = [True] * len(_IOS_IFACES)
        self.link_up = [True] * len(_IOS_IFACES)
        self.acl = _IOS_ACLS[index % len(_IOS_ACLS)]


def _ext_ip(r: int) -> str:
    return f"198.{18 + (r & 1)}.{(r >> 1) & 255}.{((r >> 9) & 253) + 1}"


def _int_ip(r: int) -> str:
    return f"10.{(r >> 17) & 63}.{(r >> 23) & 255}.{((r >> 3) & 253) + 1}"


class _Background:
    """Ordinary messages at realistic proportions."""

    def __init__(self, scenario: Scenario, rng: random.Random, renderers: list[_Renderer]) -> None:
        self.rng = rng
        self.devices = scenario.devices
        self.renderers = renderers
        self.state = [_DevTraffic(rng, i) for i in range(len(scenario.devices))]
        ios_makers: dict[str, Callable[[int, int], tuple[int, str, str]]] = {
            "sec_ipaccesslogp": self._ios_acl,
            "lineproto_updown": self._ios_lineproto,
            "link_updown": self._ios_link,
            "sys_config_i": self._ios_config,
            "sec_login_success": self._ios_login,
        }
        asa_makers: dict[str, Callable[[int, int], tuple[int, str, str]]] = {
            "asa_302013": self._asa_tcp_built,
            "asa_302014": self._asa_tcp_teardown,
            "asa_302015": self._asa_udp_built,
            "asa_302016": self._asa_udp_teardown,
            "asa_106023": self._asa_deny,
            "asa_113019_ra": self._asa_ra_disconnect,
        }
        self.ios = self._table(scenario.ios_mix, ios_makers)
        self.asa = self._table(scenario.asa_mix, asa_makers)

    @staticmethod
    def _table(
        mix: tuple[tuple[str, float], ...],
        makers: Mapping[str, Callable[[int, int], tuple[int, str, str]]],
    ) -> tuple[list[float], list[Callable[[int, int], tuple[int, str, str]]], float]:
        cum: list[float] = []
        total = 0.0
        funcs = []
        for name, weight in mix:
            total += weight
            cum.append(total)
            funcs.append(makers[name])
        return cum, funcs, total

    def make(self, d: int, t_ms: int) -> tuple[int, str, str]:
        cum, funcs, total = self.asa if self.devices[d].kind == "asa" else self.ios
        i = bisect_right(cum, self.rng.random() * total)
        return funcs[min(i, len(funcs) - 1)](d, t_ms)

    # IOS -------------------------------------------------------------------
    def _ios_acl(self, d: int, t_ms: int) -> tuple[int, str, str]:
        r = self.rng.getrandbits(40)
        proto = "udp" if r & 3 == 0 else "tcp"
        verb = "permitted" if (r >> 2) & 15 == 0 else "denied"
        n = 1 if (r >> 6) & 7 else 2 + (r >> 30) % 60
        src = _ext_ip(r >> 9)
        dport = _SERVICES[(r >> 20) % len(_SERVICES)]
        sport = 1024 + (r >> 24) % 64000
        text = (
            f"list {self.state[d].acl} {verb} {proto} {src}({sport}) -> "
            f"{self.devices[d].outside_ip}({dport}), {n} packet{'s' if n > 1 else ''}"
        )
        return 6, "SEC-6-IPACCESSLOGP", text

    def _ios_lineproto(self, d: int, t_ms: int) -> tuple[int, str, str]:
        st = self.state[d]
        i = int(self.rng.random() * len(_IOS_IFACES))
        st.if_up[i] = not st.if_up[i]
        state = "up" if st.if_up[i] else "down"
        text = f"Line protocol on Interface {_IOS_IFACES[i]}, changed state to {state}"
        return 5, "LINEPROTO-5-UPDOWN", text

    def _ios_link(self, d: int, t_ms: int) -> tuple[int, str, str]:
        st = self.state[d]
        i = int(self.rng.random() * len(_IOS_IFACES))
        st.link_up[i] = not st.link_up[i]
        state = "up" if st.link_up[i] else "down"
        return 3, "LINK-3-UPDOWN", f"Interface {_IOS_IFACES[i]}, changed state to {state}"

    def _ios_config(self, d: int, t_ms: int) -> tuple[int, str, str]:
        r = self.rng.getrandbits(32)
        user = _USERS[r % len(_USERS)]
        src = f"10.99.0.{(r >> 12) % 250 + 2}"
        text = f"Configured from console by {user} on vty{(r >> 8) % 5} ({src})"
        return 5, "SYS-5-CONFIG_I", text

    def _ios_login(self, d: int, t_ms: int) -> tuple[int, str, str]:
        r = self.rng.getrandbits(32)
        tm = self.renderers[d].local_time(t_ms)
        tz = self.devices[d].style.timezone or "UTC"
        text = (
            f"Login Success [user: {_USERS[r % len(_USERS)]}] [Source: 10.99.0."
            f"{(r >> 8) % 250 + 2}] [localport: 22] at {tm.tm_hour:02d}:{tm.tm_min:02d}:"
            f"{tm.tm_sec:02d} {tz} {WEEKDAYS[tm.tm_wday]} {MONTHS[tm.tm_mon - 1]} "
            f"{tm.tm_mday} {tm.tm_year}"
        )
        return 5, "SEC_LOGIN-5-LOGIN_SUCCESS", text

    # ASA -------------------------------------------------------------------
    def _built(self, d: int, proto: str) -> tuple[int, str, str]:
        st = self.state[d]
        r = self.rng.getrandbits(64)
        st.conn_id += 1 + (r & 7)
        inside = _int_ip(r >> 3)
        outside = _ext_ip(r >> 30)
        svc = _SERVICES[(r >> 50) % len(_SERVICES)]
        eph = 1024 + (r >> 40) % 64000
        mapped = self.devices[d].outside_ip
        if (r >> 62) & 1:
            way, a, b = "inbound", f"outside:{outside}/{eph}", f"inside:{inside}/{svc}"
            nat = f"({outside}/{eph}) to {b} ({mapped}/{svc})"
        else:
            way, a, b = "outbound", f"outside:{outside}/{svc}", f"inside:{inside}/{eph}"
            nat = f"({outside}/{svc}) to {b} ({mapped}/{eph})"
        text = f"Built {way} {proto} connection {st.conn_id} for {a} {nat}"
        pool = st.open_tcp if proto == "TCP" else st.open_udp
        pool.append((st.conn_id, f"for {a} to {b}"))
        if len(pool) > 400:
            pool[(r >> 20) % 400] = pool.pop()
        return 6, "ASA-6-302013" if proto == "TCP" else "ASA-6-302015", text

    def _teardown(self, d: int, proto: str) -> tuple[int, str, str]:
        st = self.state[d]
        pool = st.open_tcp if proto == "TCP" else st.open_udp
        if not pool:
            return self._built(d, proto)
        r = self.rng.getrandbits(48)
        i = r % len(pool)
        pool[i], pool[-1] = pool[-1], pool[i]
        cid, ends = pool.pop()
        secs = (r >> 12) % 900 if proto == "TCP" else (r >> 12) % 120
        nbytes = (r >> 22) % 2_000_000
        dur = f"{secs // 3600}:{secs // 60 % 60:02d}:{secs % 60:02d}"
        text = f"Teardown {proto} connection {cid} {ends} duration {dur} bytes {nbytes}"
        if proto == "TCP":
            return 6, "ASA-6-302014", f"{text} {_TCP_CLOSE[(r >> 43) % len(_TCP_CLOSE)]}"
        return 6, "ASA-6-302016", text

    def _asa_tcp_built(self, d: int, t_ms: int) -> tuple[int, str, str]:
        return self._built(d, "TCP")

    def _asa_udp_built(self, d: int, t_ms: int) -> tuple[int, str, str]:
        return self._built(d, "UDP")

    def _asa_tcp_teardown(self, d: int, t_ms: int) -> tuple[int, str, str]:
        return self._teardown(d, "TCP")

    def _asa_udp_teardown(self, d: int, t_ms: int) -> tuple[int, str, str]:
        return self._teardown(d, "UDP")

    def _asa_deny(self, d: int, t_ms: int) -> tuple[int, str, str]:
        r = self.rng.getrandbits(64)
        proto = "udp" if r & 3 == 0 else "tcp"
        text = (
            f"Deny {proto} src outside:{_ext_ip(r >> 2)}/{1024 + (r >> 24) % 64000} "
            f"dst inside:{_int_ip(r >> 5)}/{_SERVICES[(r >> 40) % len(_SERVICES)]} "
            f'by access-group "outside_access_in" [0x{(r >> 16) & 0xFFFFFFFF:08x}, 0x0]'
        )
        return 4, "ASA-4-106023", text

    def _asa_ra_disconnect(self, d: int, t_ms: int) -> tuple[int, str, str]:
        r = self.rng.getrandbits(64)
        secs = (r >> 8) % 30000
        text = (
            f"Group = RA-VPN, Username = {_USERS[r % len(_USERS)]}, IP = {_ext_ip(r >> 4)}, "
            f"Session disconnected. Session Type: AnyConnect-Parent, Duration: "
            f"{_duration(secs)}, Bytes xmt: {(r >> 20) % 90_000_000}, "
            f"Bytes rcv: {(r >> 30) % 20_000_000}, Reason: User Requested"
        )
        return 4, "ASA-4-113019", text


# ---------------------------------------------------------------------------
# the run


class Synth:
    """One generation run: iterate for lines; ``ground_truth`` is known up front."""

    def __init__(self, scenario: Scenario, *, lines: int | None = None, seed: int = 0) -> None:
        self.scenario = scenario
        self.seed = seed
        master = random.Random(seed)
        plan_seed = master.getrandbits(64)
        self._bg_seed = master.getrandbits(64)
        self._start_ms = round(scenario.start.timestamp() * 1000)
        self._span_ms = round(scenario.duration_s * 1000)
        end_ms = self._start_ms + self._span_ms
        planner = _Planner(scenario, self._start_ms, end_ms)

        truth_peer: dict[str, str | None] = {}
        for f in scenario.faults:
            rng = random.Random(f"{plan_seed}:fault:{f.id}")
            dev = scenario.device(f.device)
            t0 = self._start_ms + round(f.at_s * 1000) + rng.randint(0, 999)
            t1 = t0 + round(f.duration_s * 1000)
            emit = planner.emitter(dev, "fault", f.id)
            truth_peer[f.id] = _INJECTORS[f.cause](emit, rng, f, t0, t1)
        for d in scenario.decoys:
            rng = random.Random(f"{plan_seed}:decoy:{d.id}")
            dev = scenario.device(d.device)
            t0 = self._start_ms + round(d.at_s * 1000) + rng.randint(0, 999)
            emit = planner.emitter(dev, "decoy", d.id)
            truth_peer[d.id] = _plan_decoy(emit, rng, d, t0)
        self._plan_rekeys(planner, random.Random(f"{plan_seed}:rekeys"))
        self._events = planner.finish()

        spans: dict[str, list[int]] = {}
        for ev in self._events:
            if ev.ref is not None:
                s = spans.setdefault(ev.ref, [ev.t_ms, ev.t_ms, 0])
                s[1] = ev.t_ms
                s[2] += 1
        self.ground_truth: list[TruthFault] = []
        for f in scenario.faults:
            if f.id not in spans:
                raise ConfigError(f"{f.id}: the fault produced no line (duration too short?)")
            first, last, count = spans[f.id]
            dev = scenario.device(f.device)
            self.ground_truth.append(
                TruthFault(
                    f.id,
                    f.cause,
                    f.device,
                    dev.mgmt_ip,
                    dev.kind,
                    truth_peer[f.id],
                    iso_utc(first),
                    iso_utc(last),
                    count,
                    f.variant,
                )
            )
        self.decoys: list[TruthDecoy] = []
        for d in scenario.decoys:
            if d.id not in spans:
                raise ConfigError(f"{d.id}: the decoy produced no line")
            first, last, count = spans[d.id]
            dev = scenario.device(d.device)
            self.decoys.append(
                TruthDecoy(
                    d.id,
                    d.kind,
                    d.device,
                    dev.mgmt_ip,
                    truth_peer[d.id],
                    iso_utc(first),
                    iso_utc(last),
                    count,
                )
            )

        self.scheduled_lines = len(self._events)
        self.fault_lines = sum(t.lines for t in self.ground_truth)
        total = scenario.lines if lines is None else lines
        if total < self.scheduled_lines:
            raise ConfigError(
                f"{total} lines are too few for scenario {scenario.name!r}: its faults, "
                f"decoys and re-keys alone take {self.scheduled_lines}"
            )
        self.lines = total
        self.background_lines = total - self.scheduled_lines

    def _plan_rekeys(self, p: _Planner, rng: random.Random) -> None:
        """Healthy phase-1/phase-2 re-keys on every ASA tunnel, away from faults and decoys."""
        sc = self.scenario
        busy: dict[tuple[str, str | None], list[tuple[int, int]]] = {}
        for f in sc.faults:
            t0 = self._start_ms + round(f.at_s * 1000)
            busy.setdefault((f.device, f.peer), []).append(
                (t0 - 600_000, t0 + round(f.duration_s * 1000) + 600_000)
            )
        for d in sc.decoys:
            t0 = self._start_ms + round(d.at_s * 1000)
            busy.setdefault((d.device, d.peer), []).append((t0 - 600_000, t0 + 600_000))
        p2 = round(sc.phase2_lifetime_s * 1000)
        p1 = round(sc.phase1_lifetime_s * 1000)
        end = self._start_ms + self._span_ms - 60_000
        for dev in sc.devices:
            if dev.kind != "asa":
                continue
            for peer in dev.peers:
                windows = busy.get((dev.name, peer), [])

                def free(t: int, windows: list[tuple[int, int]] = windows) -> bool:
                    return all(not a <= t <= b for a, b in windows)

                emit = p.emitter(dev, "rekey", None)
                tunnel = _Tunnel(rng)
                t = self._start_ms + int(rng.random() * p2)
                while t < end:
                    if free(t):
                        _asa_rekey(emit, rng, peer, tunnel, t)
                    t += p2 + rng.randint(-90_000, 90_000)
                t = self._start_ms + int(rng.random() * p1)
                while t < end:
                    if free(t):
                        emit(t, 5, "ASA-5-713119", f"{_group(peer)}, PHASE 1 COMPLETED")
                    t += p1 + rng.randint(-90_000, 90_000)

    def records(self) -> Iterator[Record]:
        """Every line with its true time, device, origin and fault/decoy id."""
        rng = random.Random(self._bg_seed)
        relay = _RelayClock()
        devices = self.scenario.devices
        renderers = [_Renderer(dev, relay, rng) for dev in devices]
        background = _Background(self.scenario, rng, renderers)
        cum: list[float] = []
        total_w = 0.0
        for dev in devices:
            total_w += dev.weight
            cum.append(total_w)
        last_dev = len(devices) - 1
        names = [dev.name for dev in devices]
        events = self._events
        n_events = len(events)
        i = 0
        start, span, count = self._start_ms, self._span_ms, self.background_lines
        rand = rng.random
        make = background.make
        for k in range(count):
            t = start + int((k + rand()) * span / count)
            while i < n_events and events[i].t_ms <= t:
                ev = events[i]
                i += 1
                line = renderers[ev.dev].render(ev.t_ms, ev.sev, ev.tag, ev.text)
                yield Record(ev.t_ms, names[ev.dev], line, ev.origin, ev.ref)
            d = min(bisect_right(cum, rand() * total_w), last_dev)
            sev, tag, text = make(d, t)
            yield Record(t, names[d], renderers[d].render(t, sev, tag, text), "background", None)
        while i < n_events:
            ev = events[i]
            i += 1
            line = renderers[ev.dev].render(ev.t_ms, ev.sev, ev.tag, ev.text)
            yield Record(ev.t_ms, names[ev.dev], line, ev.origin, ev.ref)

    def __iter__(self) -> Iterator[str]:
        for record in self.records():
            yield record.line


def generate(scenario: Scenario, *, lines: int | None = None, seed: int = 0) -> Synth:
    """Plan a run; iterate the result for lines, read ``.ground_truth`` for the faults."""
    return Synth(scenario, lines=lines, seed=seed)


def truth_path(path: str | Path) -> Path:
    """``<archive>.truth.jsonl``: one JSON object per injected fault."""
    return Path(f"{path}.truth.jsonl")


def decoys_path(path: str | Path) -> Path:
    """``<archive>.decoys.jsonl``: one JSON object per decoy."""
    return Path(f"{path}.decoys.jsonl")


def write_archive(
    scenario: Scenario, path: str | Path, lines: int | None = None, seed: int = 0
) -> Synth:
    """Write the archive to ``path`` plus ``<path>.truth.jsonl`` and ``<path>.decoys.jsonl``."""
    synth = generate(scenario, lines=lines, seed=seed)
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        buf: list[str] = []
        for line in synth:
            buf.append(line)
            if len(buf) >= 8192:
                buf.append("")
                out.write("\n".join(buf))
                buf.clear()
        if buf:
            buf.append("")
            out.write("\n".join(buf))
    for target, rows in (
        (truth_path(path), [t.to_json() for t in synth.ground_truth]),
        (decoys_path(path), [d.to_json() for d in synth.decoys]),
    ):
        with open(target, "w", encoding="utf-8", newline="\n") as out:
            for row in rows:
                out.write(json.dumps(row, separators=(",", ":")) + "\n")
    return synth
