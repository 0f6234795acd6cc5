"""Compare the crypto configuration of both ends of a tunnel, line by line.

Pure: two :class:`~streams.core.captures.model.Capture` records (a running-config, or
``show crypto isakmp policy`` / ``transform-set`` / ``map`` / ``access-lists`` outputs)
in, :class:`~streams.core.captures.evidence.Finding` records out. Each finding quotes
the lines of each side and the fix.

Phase-1 matching follows IOS: two policies match when encryption, hash,
authentication and DH group are equal and the initiator's lifetime is not longer than
the responder's.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.core.captures.acl import first_match
from streams.core.captures.model import (
    AclEntry,
    Capture,
    Config,
    CryptoMapEntry,
    Finding,
    IsakmpPolicy,
    Net,
)


@dataclass(slots=True)
class Side:
    name: str  # the device
    cap: Capture

    @property
    def cfg(self) -> Config:
        return self.cap.config

    def addresses(self) -> list[str]:
        """The addresses this end talks IKE from: crypto map interfaces and local-address
        interfaces first, then every interface and SA local address."""
        cfg = self.cfg
        first = [i.address for i in cfg.interfaces.values() if i.crypto_map and i.address]
        first += [
            cfg.interfaces[i].address or ""
            for i in cfg.local_address.values()
            if i in cfg.interfaces and cfg.interfaces[i].address
        ]
        rest = [i.address for i in cfg.interfaces.values() if i.address]
        rest += [b.local_addr for _, bl in self.cap.ipsec_snapshots for b in bl if b.local_addr]
        out: list[str] = []
        for a in first + rest:
            if a and a not in out:
                out.append(a)
        return out

    def crypto_address(self) -> str | None:
        cfg = self.cfg
        for m, itf in cfg.local_address.items():
            if itf in cfg.interfaces and cfg.interfaces[itf].address and m:
                return cfg.interfaces[itf].address
        for i in cfg.interfaces.values():
            if i.crypto_map and i.address:
                return i.address
        return None

    def entries_towards(self, other: Side) -> list[CryptoMapEntry]:
        """This end's crypto map entries for the other end (by its addresses); all of them
        when no entry names one of its addresses."""
        theirs = set(other.addresses())
        hits = [e for e in self.cfg.crypto_maps if set(e.peers) & theirs]
        return hits or list(self.cfg.crypto_maps)


def _q(side: Side, lines: list[str]) -> list[str]:
    return [f"{side.name}: {line}" for line in lines]


def _proposal(p: IsakmpPolicy) -> str:
    return f"{p.encryption}/{p.hash}/{p.authentication}/group {p.group}/{p.lifetime} s"


def _policies(a: Side, b: Side, peer: str | None, ts: float) -> list[Finding]:
    pa, pb = a.cfg.policies, b.cfg.policies
    if not pa or not pb:
        return []

    def accepts(init: list[IsakmpPolicy], resp: list[IsakmpPolicy]) -> bool:
        return any(
            x.proposal() == y.proposal() and (x.lifetime or 0) <= (y.lifetime or 0)
            for x in init
            for y in resp
        )

    lines = _q(a, [ln for p in pa for ln in p.lines]) + _q(b, [ln for p in pb for ln in p.lines])
    same = [(x, y) for x in pa for y in pb if x.proposal() == y.proposal()]
    if not same:
        detail = (
            f"No common phase-1 proposal: {a.name} offers "
            f"{', '.join(f'policy {p.priority} {_proposal(p)}' for p in pa)}; {b.name} offers "
            f"{', '.join(f'policy {p.priority} {_proposal(p)}' for p in pb)}"
        )
        x = pa[0]
        fix = (
            f"add to {b.name} a policy equal to one of {a.name}'s: crypto isakmp policy <n> / "
            f"encryption {x.encryption} / hash {x.hash} / authentication {x.authentication} / "
            f"group {x.group} / lifetime {x.lifetime} (ASA: crypto ikev1 policy <n> …)"
        )
        return [_finding("compare-ike-policy", a, peer, ts, detail, lines, fix)]
    out = []
    for init, resp, i_side, r_side in ((pa, pb, a, b), (pb, pa, b, a)):
        if not accepts(init, resp):
            x, y = same[0] if init is pa else (same[0][1], same[0][0])
            detail = (
                f"Phase-1 proposals match but the lifetimes do not: when {i_side.name} "
                f"initiates, {r_side.name} refuses its lifetime {x.lifetime} s (longer than "
                f"its own {y.lifetime} s in policy {y.priority})"
            )
            shorter = min(x.lifetime or 0, y.lifetime or 0)
            fix = f"set the same lifetime on both ends: lifetime {shorter}"
            out.append(_finding("compare-ike-policy", a, peer, ts, detail, lines, fix))
    return out


def _sets(side: Side, entry: CryptoMapEntry) -> dict[str, tuple[tuple[str, ...], str]]:
    by_name = {t.name: t for t in side.cfg.transform_sets}
    return {
        n: (by_name[n].transforms, by_name[n].line) for n in entry.transform_sets if n in by_name
    }


def _transforms(
    a: Side, ea: CryptoMapEntry, b: Side, eb: CryptoMapEntry, peer: str | None, ts: float
) -> list[Finding]:
    out = []
    sa, sb = _sets(a, ea), _sets(b, eb)
    if sa and sb and not {t for t, _ in sa.values()} & {t for t, _ in sb.values()}:
        lines = _q(a, [ln for ln in ea.lines if "transform-set" in ln or "Transform" in ln])
        lines += _q(a, [ln for _, ln in sa.values()])
        lines += _q(b, [ln for ln in eb.lines if "transform-set" in ln or "Transform" in ln])
        lines += _q(b, [ln for _, ln in sb.values()])
        detail = (
            f"No transform set in common: {a.name} crypto map {ea.map} {ea.seq} offers "
            + "; ".join(f"{n} {{{' '.join(t)}}}" for n, (t, _) in sa.items())
            + f", {b.name} crypto map {eb.map} {eb.seq} offers "
            + "; ".join(f"{n} {{{' '.join(t)}}}" for n, (t, _) in sb.items())
        )
        first = next(iter(sa.values()))[0]
        fix = (
            f"configure on {b.name} a transform set with the same transforms as {a.name}'s: "
            f"crypto ipsec transform-set <name> {' '.join(first)}, and add it to "
            f"crypto map {eb.map} {eb.seq} (set transform-set)"
        )
        out.append(_finding("compare-transform-set", a, peer, ts, detail, lines, fix))
    if (ea.pfs or "off") != (eb.pfs or "off"):
        lines = _q(a, [ln for ln in ea.lines if "pfs" in ln.lower()] or [ea.lines[0]])
        lines += _q(b, [ln for ln in eb.lines if "pfs" in ln.lower()] or [eb.lines[0]])
        detail = (
            f"PFS differs: {a.name} crypto map {ea.map} {ea.seq} uses {ea.pfs or 'no PFS'}, "
            f"{b.name} crypto map {eb.map} {eb.seq} uses {eb.pfs or 'no PFS'}"
        )
        want = ea.pfs or eb.pfs or "group2"
        fix = f"set the same PFS group on both ends: crypto map <map> <seq> / set pfs {want}"
        out.append(_finding("compare-pfs", a, peer, ts, detail, lines, fix))
    return out


def _permits(entries: list[AclEntry]) -> list[AclEntry]:
    return [e for e in entries if e.action == "permit"]


def _mirror(
    a: Side, ea: CryptoMapEntry, b: Side, eb: CryptoMapEntry, peer: str | None, ts: float
) -> list[Finding]:
    pa, pb = _permits(ea.acl_entries), _permits(eb.acl_entries)
    if not pa or not pb:
        return []
    keys_b = {(e.protocol, e.dst, e.src) for e in pb}
    keys_a = {(e.protocol, e.src, e.dst) for e in pa}
    only_a = [e for e in pa if (e.protocol, e.src, e.dst) not in keys_b]
    only_b = [e for e in pb if (e.protocol, e.dst, e.src) not in keys_a]
    if not only_a and not only_b:
        return []
    parts = []
    if only_a:
        parts.append(
            f"{a.name} ACL {ea.acl} has "
            + "; ".join(f"'{e.line}'" for e in only_a)
            + f" with no mirror in {b.name} ACL {eb.acl}"
        )
    if only_b:
        parts.append(
            f"{b.name} ACL {eb.acl} has "
            + "; ".join(f"'{e.line}'" for e in only_b)
            + f" with no mirror in {a.name} ACL {ea.acl}"
        )
    detail = "The crypto ACLs are not mirror images: " + ", and ".join(parts)
    lines = _q(a, [e.line for e in ea.acl_entries]) + _q(b, [e.line for e in eb.acl_entries])
    e, mine, other, acl = (only_a[0], a, b, eb.acl) if only_a else (only_b[0], b, a, ea.acl)
    fix = (
        f"make them mirror images: for '{e.line}' on {mine.name}, {other.name} needs "
        f"permit {e.protocol} {_ios(e.dst)} {_ios(e.src)} in ACL {acl}, and no other entry"
    )
    return [_finding("compare-acl-mirror", a, peer, ts, detail, lines, fix)]


def _ios(net: Net) -> str:
    """An address operand as IOS writes it (wildcard mask)."""
    n = net.network
    if n.prefixlen == 0:
        return "any"
    if n.prefixlen == 32:
        return f"host {n.network_address}"
    return f"{n.network_address} {n.hostmask}"


def _netmask(net: Net) -> str:
    """An address operand as PIX/ASA write it (netmask)."""
    n = net.network
    if n.prefixlen == 0:
        return "any"
    if n.prefixlen == 32:
        return f"host {n.network_address}"
    return f"{n.network_address} {n.netmask}"


def _nat(side: Side, entries: list[CryptoMapEntry], peer: str | None, ts: float) -> list[Finding]:
    cfg = side.cfg
    translate = [r for r in cfg.nat if r.kind == "translate"]
    if not translate:
        return []
    exempt = [r for r in cfg.nat if r.kind == "exempt"]
    out = []
    for entry in entries:
        for ce in _permits(entry.acl_entries):
            if any(
                r.acl is None
                or ((m := first_match(cfg.acls.get(r.acl, []), ce.src, ce.dst)) is not None
                    and m.action == "permit")
                for r in exempt
            ):  # fmt: skip
                continue
            for r in translate:
                acl_names = (
                    cfg.route_maps.get(r.acl[len("route-map:") :], [])
                    if r.acl and r.acl.startswith("route-map:")
                    else [r.acl or "any"]
                )
                for n in acl_names:
                    m = None if n == "any" else first_match(cfg.acls.get(n, []), ce.src, ce.dst)
                    if n != "any" and (m is None or m.action != "permit"):
                        continue
                    quoted = [r.line] + ([m.line] if m else []) + [ce.line]
                    detail = (
                        f"NAT catches the VPN traffic before crypto on {side.name}: "
                        f"'{ce.line}' (crypto ACL {entry.acl}) is translated by '{r.line}'"
                        + (f" (its ACL {n} matches with '{m.line}')" if m else "")
                        + ": no NAT exemption"
                    )
                    if n == "any":
                        fix = (
                            f"exempt the VPN traffic from NAT: access-list NONAT permit ip "
                            f"{_netmask(ce.src)} {_netmask(ce.dst)} and nat (inside) 0 access-list "
                            "NONAT (PIX/ASA before 8.3; from 8.3 a twice NAT identity rule)"
                        )
                    else:
                        fix = (
                            f"exempt the VPN traffic from NAT: deny ip {_ios(ce.src)} "
                            f"{_ios(ce.dst)} before the permit in ACL {n} (or a route-map that "
                            "denies it)"
                        )
                    out.append(
                        _finding("compare-nat-exemption", side, peer, ts, detail,
                                 _q(side, quoted), fix)
                    )  # fmt: skip
                    break
                else:
                    continue
                break
    return out


def _psk(a: Side, b: Side, peer: str | None, ts: float) -> list[Finding]:
    """Keys and ``set peer`` of ``a`` that do not name the address ``b`` uses."""
    theirs = b.crypto_address()
    if theirs is None:
        return []
    out = []
    keys = a.cfg.keys
    if keys and not any(k.matches(theirs) for k in keys):
        detail = (
            f"{a.name} has no pre-shared key for the address {b.name} uses ({theirs}): its keys "
            f"are bound to {', '.join(k.address for k in keys)}"
        )
        lines = _q(a, [k.line for k in keys]) + _q(b, _crypto_itf_lines(b))
        fix = (
            f"bind the key to {theirs}: crypto isakmp key <key> address {theirs} "
            f"(ASA: tunnel-group {theirs} ipsec-attributes / ikev1 pre-shared-key <key>)"
        )
        out.append(_finding("compare-psk-address", a, theirs, ts, detail, lines, fix))
    wrong = [e for e in a.cfg.crypto_maps if e.peers and theirs not in e.peers]
    if wrong and len(wrong) == len([e for e in a.cfg.crypto_maps if e.peers]):
        e = wrong[0]
        detail = (
            f"{a.name} crypto map {e.map} {e.seq} sets peer {', '.join(e.peers)}, but {b.name} "
            f"talks from {theirs}"
        )
        lines = _q(a, [ln for ln in e.lines if "peer" in ln.lower()]) + _q(b, _crypto_itf_lines(b))
        fix = f"crypto map {e.map} {e.seq} / set peer {theirs}"
        out.append(_finding("compare-psk-address", a, theirs, ts, detail, lines, fix))
    return out


def _unapplied(a: Side, towards: str, peer: str | None, ts: float) -> list[Finding]:
    """``a``'s crypto maps applied to no interface (when its interfaces are known)."""
    cfg = a.cfg
    out = []
    maps = {e.map for e in cfg.crypto_maps if e.peers or e.acl}
    applied = {i.crypto_map for i in cfg.interfaces.values() if i.crypto_map}
    for m in sorted(maps - applied):
        if not any(i.address for i in cfg.interfaces.values()):
            continue  # only show outputs of this end: its interfaces are unknown
        e = next(x for x in cfg.crypto_maps if x.map == m)
        detail = f"{a.name} crypto map {m} is applied to no interface: it never matches traffic"
        fix = f"apply it to the interface that faces {towards}: interface <if> / crypto map {m}"
        out.append(_finding("compare-local-address", a, peer, ts, detail, _q(a, e.lines), fix))
    return out


def _split_tunnel(a: Side, ts: float) -> list[Finding]:
    """Remote-access groups whose split tunnelling names no network list, or a list that
    the configuration does not define (the guide's split tunnelling sections)."""
    out = []
    for st in a.cfg.split_tunnels:
        if st.policy == "tunnelall":
            continue
        if st.acl is not None and st.acl in a.cfg.acls:
            continue
        if st.acl is None:
            detail = (
                f"{a.name} group-policy {st.group} has split-tunnel-policy {st.policy} but no "
                "split-tunnel-network-list: the clients get no networks to tunnel"
            )
            fix = (
                f"group-policy {st.group} attributes / split-tunnel-network-list value <acl> "
                "with an ACL of the networks behind this end"
            )
        else:
            detail = (
                f"{a.name} group {st.group} tunnels the networks of ACL {st.acl}, which the "
                "configuration does not define"
            )
            fix = (
                f"define access-list {st.acl} with the networks behind this end (the same "
                "content as the NAT exemption)"
            )
        out.append(_finding("config-split-tunnel", a, None, ts, detail, _q(a, st.lines), fix))
    return out


def one_end(cap: Capture, name: str, ts: float) -> list[Finding]:
    """What one end's configuration shows on its own, without the other end's: crypto map
    entries shadowed by a broader one, crypto maps applied to no interface, split
    tunnelling without a network list."""
    side = Side(name, cap)
    return _order(side, None, ts) + _unapplied(side, "the peer", None, ts) + _split_tunnel(side, ts)


def _local_address(a: Side, b: Side, peer: str | None, ts: float) -> list[Finding]:
    """``a``'s crypto map applied to no interface, or identifying ``a`` by an address
    (``local-address``, or the interface it is on) that ``b`` does not expect."""
    out = _unapplied(a, b.name, peer, ts)
    ours = a.crypto_address()
    expected = {p for e in b.cfg.crypto_maps for p in e.peers} | {k.address for k in b.cfg.keys}
    if ours is None or not expected or ours in expected:
        return out
    if not any(e.peers for e in b.cfg.crypto_maps):
        return out
    itf = next((i for i in a.cfg.interfaces.values() if i.address == ours and i.crypto_map), None)
    how = (
        f"crypto map local-address {next(iter(a.cfg.local_address.values()))}"
        if a.cfg.local_address
        else f"the crypto map is on {itf.name if itf else 'an interface'}"
    )
    wanted = sorted(expected & set(a.addresses()))
    if not wanted:
        return out  # b expects an address a does not have: a key or set peer problem
    detail = (
        f"{a.name} identifies itself as {ours} ({how}), but {b.name} expects {', '.join(wanted)}"
    )
    lines = _q(a, [ln for i in a.cfg.interfaces.values() if i.address == ours for ln in i.lines])
    lines += _q(b, [ln for e in b.cfg.crypto_maps for ln in e.lines if "peer" in ln.lower()])
    fix = (
        f"apply the crypto map to the interface with {wanted[0]}, or point crypto map "
        f"local-address at it"
    )
    out.append(_finding("compare-local-address", a, peer, ts, detail, lines, fix))
    return out


def _crypto_itf_lines(side: Side) -> list[str]:
    for i in side.cfg.interfaces.values():
        if i.crypto_map and i.address:
            return i.lines
    return []


def _order(side: Side, peer: str | None, ts: float) -> list[Finding]:
    out = []
    maps: dict[str, list[CryptoMapEntry]] = {}
    for e in side.cfg.crypto_maps:
        maps.setdefault(e.map, []).append(e)
    for entries in maps.values():
        entries.sort(key=lambda e: e.seq)
        for i, broad in enumerate(entries):
            for narrow in entries[i + 1 :]:
                pb, pn = _permits(broad.acl_entries), _permits(narrow.acl_entries)
                if not pb or not pn or broad.acl == narrow.acl:
                    continue
                if all(any(x.src.covers(y.src) and x.dst.covers(y.dst) for x in pb) for y in pn):
                    detail = (
                        f"On {side.name}, crypto map {broad.map} {broad.seq} (ACL {broad.acl}: "
                        + "; ".join(f"'{x.line}'" for x in pb)
                        + f") matches all the traffic of entry {narrow.seq} (ACL {narrow.acl}: "
                        + "; ".join(f"'{y.line}'" for y in pn)
                        + f") first: entry {narrow.seq} is never used"
                    )
                    lines = _q(side, broad.lines + narrow.lines)
                    fix = (
                        f"give the specific entry a lower sequence number than the broader one: "
                        f"move crypto map {narrow.map} {narrow.seq} before {broad.seq} "
                        f"(e.g. crypto map {narrow.map} {max(1, broad.seq - 1)} ipsec-isakmp)"
                    )
                    out.append(_finding("compare-map-order", side, peer, ts, detail, lines, fix))
    return out


def _finding(
    evidence: str, side: Side, peer: str | None, ts: float, detail: str, lines: list[str], fix: str
) -> Finding:
    return Finding(
        evidence, side.name, peer, ts, ts, {"detail": detail}, lines, fix, side.addresses()
    )


def compare(a: Capture, a_name: str, b: Capture, b_name: str, ts: float) -> list[Finding]:
    """Everything in the two ends' configurations that keeps the tunnel from coming up
    or passing traffic. Findings are reported on ``a``'s device, with ``b`` as the peer
    (its crypto address, else its name), except those of one end only (NAT, key and
    map order), reported on that end."""
    sa, sb = Side(a_name, a), Side(b_name, b)
    peer_b = sb.crypto_address() or b_name
    peer_a = sa.crypto_address() or a_name
    out = _policies(sa, sb, peer_b, ts)
    ea_all, eb_all = sa.entries_towards(sb), sb.entries_towards(sa)
    if ea_all and eb_all:
        ea, eb = ea_all[0], eb_all[0]
        out += _transforms(sa, ea, sb, eb, peer_b, ts)
        out += _mirror(sa, ea, sb, eb, peer_b, ts)
    out += _nat(sa, ea_all, peer_b, ts) + _nat(sb, eb_all, peer_a, ts)
    local = _local_address(sa, sb, peer_b, ts) + _local_address(sb, sa, peer_a, ts)
    out += local
    if not local:  # a wrong local address also makes the other end's key and peer look wrong
        out += _psk(sa, sb, peer_b, ts) + _psk(sb, sa, peer_a, ts)
    out += _order(sa, peer_b, ts) + _order(sb, peer_a, ts)
    out += _split_tunnel(sa, ts) + _split_tunnel(sb, ts)
    return out
