"""Joining both ends of a tunnel into one story.

When the archive holds both peers (A says "sanity check failed from B", B says
"main mode failed with A"), their incidents name each other: A's incident has
peer = an address of B, and B's incident has peer = an address of A. Addresses
of a device are learned from the ``local`` field of its events and from device
names that are addresses.
"""

from __future__ import annotations

import ipaddress
from typing import Any


def is_address(text: str) -> bool:
    """True for an IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# Cause pairs that are two views of one fault: a key mismatch makes the other
# side's main mode fail; a proxy-ID refusal is seen as a failed quick mode.
SAME_FAULT = frozenset(
    {
        frozenset(("psk_mismatch", "ike_policy_mismatch")),
        frozenset(("crypto_acl_mismatch", "transform_set_mismatch")),
        frozenset(("sa_out_of_sync", "peer_unreachable")),
    }
)
OVERLAP_SLACK = 1800.0


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True when two incidents' active periods overlap (within the slack)."""
    from datetime import datetime

    def ts(text: str) -> float:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    return (
        ts(a["first_seen"]) <= ts(b["last_seen"]) + OVERLAP_SLACK
        and ts(b["first_seen"]) <= ts(a["last_seen"]) + OVERLAP_SLACK
    )


def join_stories(
    records: list[dict[str, Any]], addresses: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Fill ``related`` and extend ``summary`` where both ends of a tunnel have incidents.

    A device's addresses come from its records' ``device_addresses`` (what the engine
    learned from its events), from ``addresses``, and from device names that are addresses.
    Works on any set of records: an archive's, or what a consumer read from the topic.
    """
    addr = dict(addresses or {})
    for rec in records:
        for a in rec.get("device_addresses") or ():
            addr.setdefault(a, rec["device"])
    for rec in records:
        if is_address(rec["device"]):
            addr.setdefault(rec["device"], rec["device"])
    by_device: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_device.setdefault(rec["device"], []).append(rec)
    for rec in records:
        peer = rec.get("peer")
        if not peer or peer not in addr:
            continue
        other = addr[peer]
        if other == rec["device"]:
            continue
        for o in by_device.get(other, ()):
            o_peer = o.get("peer")
            if o_peer is None or (addr.get(o_peer) != rec["device"] and o_peer != rec["device"]):
                continue
            if o["incident_id"] in rec["related"] or not _overlap(rec, o):
                continue
            rec["related"].append(o["incident_id"])
            pair = frozenset((rec["cause"], o["cause"]))
            tail = ": both views describe one fault" if len(pair) == 1 or pair in SAME_FAULT else ""
            sep = "" if rec["summary"].endswith(".") else "."
            rec["summary"] += (
                f"{sep} The other end, {other}, reports {o['cause']} for this tunnel"
                f" at the same time (incident {o['incident_id']}){tail}."
            )
    return records
