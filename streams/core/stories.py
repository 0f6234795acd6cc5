"""Joining both ends of a tunnel into one story.

When the archive holds both peers (A says "sanity check failed from B", B says
"main mode failed with A"), their incidents name each other: A's incident has
peer = an address of B, and B's incident has peer = an address of A. Addresses
of a device are learned from the ``local`` field of its events and from device
names that are addresses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def device_addresses(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Map address -> device from (device, local address) pairs."""
    out: dict[str, str] = {}
    for device, local in pairs:
        if local and _is_ip(local):
            out.setdefault(local, device)
    return out


def join_stories(records: list[dict[str, Any]], addresses: dict[str, str]) -> list[dict[str, Any]]:
    """Fill ``related`` and extend ``summary`` where both ends of a tunnel have incidents."""
    addr = dict(addresses)
    for rec in records:
        if _is_ip(rec["device"]):
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
            if o["incident_id"] in rec["related"]:
                continue
            rec["related"].append(o["incident_id"])
            rec["summary"] += (
                f" The other end, {other}, reports {o['cause']} for this tunnel"
                f" (incident {o['incident_id']}): both views describe one fault."
            )
    return records
