"""Access-list entries as IOS, PIX and ASA write them, in configs and in ``show``
outputs, read to :class:`AclEntry` (address/mask pairs, protocol, action)."""

from __future__ import annotations

import ipaddress
import re

from streams.core.captures.model import AclEntry, Net

_MATCHES = re.compile(r"\s*\((\d+ matches?|hitcnt=\d+)\)(\s+0x[0-9a-f]+)?\s*$", re.IGNORECASE)
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


def _is_ip(tok: str) -> bool:
    return bool(_IPV4.match(tok))


def _mask_kind(mask: str) -> str:
    """``netmask`` for 255.255.255.0-like masks, ``wildcard`` for 0.0.0.255-like ones."""
    try:
        v = int(ipaddress.IPv4Address(mask))
    except ValueError:
        return "bad"
    if v == 0:
        return "zero"
    if v == 0xFFFFFFFF:
        return "ones"
    inv = v ^ 0xFFFFFFFF
    if (inv & (inv + 1)) == 0:
        return "netmask"
    if (v & (v + 1)) == 0:
        return "wildcard"
    return "bad"


def _address(toks: list[str], i: int, netmask: bool | None) -> tuple[Net | None, int]:
    """The address operand at ``toks[i]``: ``any``, ``host A``, ``A M``, a lone ``A``."""
    if i >= len(toks):
        return None, i
    t = toks[i]
    if t in ("any", "any4"):
        return Net.of("any"), i + 1
    if t == "host" and i + 1 < len(toks):
        return Net.of(toks[i + 1]), i + 2
    if _is_ip(t):
        if i + 1 < len(toks) and _is_ip(toks[i + 1]):
            mask = toks[i + 1]
            kind = _mask_kind(mask)
            if kind == "zero":
                # IOS wildcard 0.0.0.0: a host; ASA netmask 0.0.0.0 with 0.0.0.0: any.
                net = Net.of("any") if netmask and t == "0.0.0.0" else Net.of(t)
            elif kind == "ones":
                net = Net.of(t) if netmask else Net.of("any")
            elif kind == "netmask" and netmask is not False:
                net = Net.of(t, mask)
            elif kind == "wildcard" and netmask is not True:
                net = Net.of(t, mask, wildcard=True)
            else:
                net = None
            return net, i + 2
        return Net.of(t), i + 1
    return None, i


def _skip_ports(toks: list[str], i: int) -> int:
    if i < len(toks) and toks[i] in ("eq", "gt", "lt", "neq"):
        return i + 2
    if i < len(toks) and toks[i] == "range":
        return i + 3
    return i


def parse_entry(acl: str | None, text: str, netmask: bool | None = None) -> AclEntry | None:
    """One ACL entry. ``text`` may start with ``access-list NAME [line N] [extended]`` or a
    sequence number, and end with a hit count; ``netmask`` says whether masks are netmasks
    (PIX/ASA), wildcards (IOS) or None (told apart by their shape). None when the entry is
    not an IPv4 permit/deny this reads (remarks, object groups, IPv6)."""
    line = text.strip()
    body = _MATCHES.sub("", line)
    toks = body.split()
    i = 0
    if toks[:1] == ["access-list"] and len(toks) > 1:
        acl = toks[1]
        i = 2
        if netmask is None and ("extended" in toks[2:4] or "line" in toks[2:3]):
            netmask = True
    if i < len(toks) and toks[i] == "line" and i + 1 < len(toks):
        i += 2
    if i < len(toks) and toks[i] in ("extended", "standard"):
        i += 1
    if i < len(toks) and toks[i].isdigit():
        i += 1  # IOS sequence number
    if acl is None or i >= len(toks) or toks[i] not in ("permit", "deny"):
        return None
    action = toks[i]
    i += 1
    if i < len(toks) and (_is_ip(toks[i].rstrip(",")) or toks[i] in ("any", "host")):
        # A standard ACL (source only): "permit 10.1.1.0, wildcard bits 0.0.0.255" or
        # "permit 10.1.1.0 0.0.0.255".
        rest = [
            t for t in " ".join(toks[i:]).replace(",", " ").split() if t not in ("wildcard", "bits")
        ]
        src, _ = _address(rest, 0, netmask)
        any_net = Net.of("any")
        if src is None or any_net is None:
            return None
        return AclEntry(acl, action, "ip", src, any_net, line)
    if i >= len(toks):
        return None
    protocol = toks[i]
    i += 1
    src, i = _address(toks, i, netmask)
    i = _skip_ports(toks, i)
    dst, i = _address(toks, i, netmask)
    if src is None or dst is None:
        return None
    return AclEntry(acl, action, protocol, src, dst, line)


def first_match(entries: list[AclEntry], src: Net, dst: Net) -> AclEntry | None:
    """The first entry whose source and destination contain the whole of ``src``/``dst``
    (the traffic of a crypto ACL entry), as the device evaluates an ACL in order."""
    for e in entries:
        if e.protocol in ("ip", "0") and e.src.covers(src) and e.dst.covers(dst):
            return e
    return None
