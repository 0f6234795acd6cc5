"""Typed records of `show crypto …` captures and crypto/NAT configuration.

Pure data: what :mod:`streams.core.captures.show` and
:mod:`streams.core.captures.config` read, and what the evidence and comparison
functions take. Every record keeps the text lines it was read from, so findings
can quote them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

# Canonical names of the commands tunnelwatch reads.
ISAKMP_SA = "show_crypto_isakmp_sa"
IPSEC_SA = "show_crypto_ipsec_sa"
ENGINE_CONNECTIONS = "show_crypto_engine_connections_active"
CRYPTO_MAP = "show_crypto_map"
ISAKMP_POLICY = "show_crypto_isakmp_policy"
TRANSFORM_SET = "show_crypto_ipsec_transform_set"
ACCESS_LISTS = "show_access_lists"
RUNNING_CONFIG = "show_running_config"
COMMANDS: tuple[str, ...] = (
    ISAKMP_SA,
    IPSEC_SA,
    ENGINE_CONNECTIONS,
    CRYPTO_MAP,
    ISAKMP_POLICY,
    TRANSFORM_SET,
    ACCESS_LISTS,
    RUNNING_CONFIG,
)

# Kinds of problems found in a capture file (counted and reported per file).
UNKNOWN_COMMAND = "unknown_command"
TRUNCATED = "truncated"
OTHER_VENDOR = "other_vendor"
UNRECOGNIZED = "unrecognized_text"


@dataclass(slots=True, frozen=True)
class Problem:
    """Something in a capture file that could not be read (never fatal)."""

    kind: str  # UNKNOWN_COMMAND | TRUNCATED | OTHER_VENDOR | UNRECOGNIZED
    line: int  # 1-based line of the file where the section starts
    detail: str


@dataclass(slots=True, frozen=True)
class Net:
    """An address and mask of an ACL entry or proxy identity (``any`` is 0.0.0.0/0)."""

    network: ipaddress.IPv4Network

    @classmethod
    def of(cls, addr: str, mask: str | None = None, wildcard: bool = False) -> Net | None:
        """``addr`` with a netmask, a wildcard (inverse) mask or none (a host)."""
        try:
            if addr == "any":
                return cls(ipaddress.IPv4Network("0.0.0.0/0"))
            if mask is None:
                return cls(ipaddress.IPv4Network(f"{addr}/32"))
            if wildcard:
                inv = int(ipaddress.IPv4Address(mask))
                mask = str(ipaddress.IPv4Address(inv ^ 0xFFFFFFFF))
            return cls(ipaddress.IPv4Network(f"{addr}/{mask}", strict=False))
        except ValueError:
            return None

    def covers(self, other: Net) -> bool:
        return other.network.subnet_of(self.network)

    def __str__(self) -> str:
        n = self.network
        if n.prefixlen == 0:
            return "any"
        if n.prefixlen == 32:
            return f"host {n.network_address}"
        return str(n)


@dataclass(slots=True, frozen=True)
class AclEntry:
    acl: str
    action: str  # permit | deny
    protocol: str
    src: Net
    dst: Net
    line: str

    def mirrored(self) -> tuple[str, str, Net, Net]:
        return (self.action, self.protocol, self.dst, self.src)

    def key(self) -> tuple[str, str, Net, Net]:
        return (self.action, self.protocol, self.src, self.dst)


@dataclass(slots=True)
class IsakmpSa:
    dst: str
    src: str
    state: str
    conn_id: str | None
    line: str


@dataclass(slots=True)
class IpsecSa:
    """One proxy-identity block of ``show crypto ipsec sa`` with its counters."""

    interface: str | None
    crypto_map: str | None
    local_addr: str | None
    local_ident: str
    remote_ident: str | None
    peer: str | None
    counters: dict[str, int]
    pfs: str | None
    transform: str | None
    lines: list[str]


@dataclass(slots=True)
class EngineConnection:
    conn_id: str
    type: str | None
    interface: str | None
    address: str | None
    algorithm: str
    encrypt: int
    decrypt: int
    line: str


@dataclass(slots=True)
class IsakmpPolicy:
    priority: str  # a number, or "default"
    encryption: str | None
    hash: str | None
    authentication: str | None
    group: int | None
    lifetime: int | None
    lines: list[str]

    def proposal(self) -> tuple[str | None, str | None, str | None, int | None]:
        return (self.encryption, self.hash, self.authentication, self.group)


@dataclass(slots=True)
class TransformSet:
    name: str
    transforms: tuple[str, ...]  # normalized, sorted
    mode: str | None
    line: str


@dataclass(slots=True)
class CryptoMapEntry:
    map: str
    seq: int
    peers: list[str]
    acl: str | None
    acl_entries: list[AclEntry]
    pfs: str | None  # DH group of PFS ("group2"), or None when off
    transform_sets: list[str]
    interfaces: list[str]
    lines: list[str]


@dataclass(slots=True)
class PskBinding:
    address: str
    mask: str | None
    line: str

    def matches(self, addr: str) -> bool:
        try:
            net = ipaddress.IPv4Network(f"{self.address}/{self.mask or '255.255.255.255'}", False)
            return ipaddress.IPv4Address(addr) in net
        except ValueError:
            return False


@dataclass(slots=True)
class NatRule:
    """A NAT statement: ``exempt`` rules keep traffic out of NAT, ``translate`` ones NAT it."""

    kind: str  # exempt | translate
    acl: str | None
    line: str


@dataclass(slots=True)
class Interface:
    name: str
    address: str | None = None
    crypto_map: str | None = None
    nat_side: str | None = None  # inside | outside
    lines: list[str] = field(default_factory=list)


@dataclass(slots=True)
class SplitTunnel:
    """A remote-access group's split tunnelling: its policy and the ACL of its networks."""

    group: str
    policy: str | None  # tunnelspecified | excludespecified | tunnelall | None (IOS/PIX: an ACL)
    acl: str | None
    lines: list[str]


@dataclass(slots=True)
class Config:
    """The crypto and NAT parts of a running-config (IOS, PIX or ASA)."""

    hostname: str | None = None
    policies: list[IsakmpPolicy] = field(default_factory=list)
    keys: list[PskBinding] = field(default_factory=list)
    transform_sets: list[TransformSet] = field(default_factory=list)
    crypto_maps: list[CryptoMapEntry] = field(default_factory=list)
    local_address: dict[str, str] = field(default_factory=dict)  # map -> interface
    acls: dict[str, list[AclEntry]] = field(default_factory=dict)
    nat: list[NatRule] = field(default_factory=list)
    route_maps: dict[str, list[str]] = field(default_factory=dict)  # name -> ACLs matched
    interfaces: dict[str, Interface] = field(default_factory=dict)
    split_tunnels: list[SplitTunnel] = field(default_factory=list)
    lines: int = 0


@dataclass(slots=True)
class Section:
    """One command's output (or a config) inside a capture file."""

    command: str | None  # a canonical name of COMMANDS, or None when unknown
    command_text: str  # the command as typed (or what the content was recognized as)
    device: str | None  # from the prompt, when there is one
    start: int  # 1-based line of the file where the output starts
    lines: list[str]
    time: float | None = None  # from a "Time source is …" line (exec prompt timestamp)


@dataclass(slots=True)
class Capture:
    """Everything read from one capture file."""

    name: str
    device: str | None = None
    time: float | None = None
    sections: list[Section] = field(default_factory=list)
    isakmp_sas: list[IsakmpSa] = field(default_factory=list)
    # One list of blocks per `show crypto ipsec sa` output, in file order, with the
    # output's own time when it has one: two outputs of one device give deltas.
    ipsec_snapshots: list[tuple[float | None, list[IpsecSa]]] = field(default_factory=list)
    engine_connections: list[EngineConnection] = field(default_factory=list)
    config: Config = field(default_factory=Config)
    acl_lines: dict[str, list[AclEntry]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    records: int = 0  # records read (SAs, blocks, policies, entries, config lines)


@dataclass(slots=True)
class Finding:
    """One piece of evidence of a capture or a config comparison."""

    evidence: str  # an id of the KB's capture_evidence
    device: str
    peer: str | None
    first_seen: float
    last_seen: float
    values: dict[str, Any]
    lines: list[str]
    fix: str | None = None
    addresses: list[str] = field(default_factory=list)
