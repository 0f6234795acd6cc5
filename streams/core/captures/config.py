"""The crypto and NAT parts of an IOS, PIX or ASA running-config.

A small reader of Cisco's indented configuration (a top-level command and the
lines indented under it), written for tunnelwatch: ciscoconfparse2 would read the
hierarchy but is GPL-3.0 (see README). Lines it does not need are skipped; a
line it needs but cannot read is left out of the comparison, never an error.
"""

from __future__ import annotations

import re

from streams.core.captures import acl as acl_mod
from streams.core.captures.model import (
    Config,
    CryptoMapEntry,
    Interface,
    IsakmpPolicy,
    NatRule,
    PskBinding,
    SplitTunnel,
    TransformSet,
)
from streams.core.captures.show import norm_auth, norm_encryption, norm_hash, norm_transforms


def _after(words: list[str], key: str) -> str | None:
    """The word after ``key``, None when there is none."""
    if key in words:
        i = words.index(key)
        if i + 1 < len(words):
            return words[i + 1]
    return None


def _blocks(lines: list[str]) -> list[tuple[str, list[str]]]:
    """Top-level commands with the lines indented under them (comments dropped)."""
    out: list[tuple[str, list[str]]] = []
    for raw in lines:
        line = raw.rstrip()
        s = line.strip()
        if not s or s.startswith(("!", ":")):
            continue
        if line[:1].isspace() and out:
            out[-1][1].append(s)
        else:
            out.append((s, []))
    return out


def _policy(prio: str, body: list[str], head: str, asa: bool) -> IsakmpPolicy:
    pol = IsakmpPolicy(prio, None, None, None, None, None, [head])
    for s in body:
        w = s.split()
        if not w:
            continue
        key, rest = w[0], " ".join(w[1:])
        if key in ("encr", "encryption"):
            pol.encryption = norm_encryption(rest)
        elif key == "hash":
            pol.hash = norm_hash(rest)
        elif key == "authentication":
            pol.authentication = norm_auth(rest)
        elif key == "group" and w[1:2] and w[1].isdigit():
            pol.group = int(w[1])
        elif key == "lifetime" and w[1:2] and w[1].isdigit():
            pol.lifetime = int(w[1])
        else:
            continue
        pol.lines.append(s)
    # The defaults of a policy that does not set them (IOS and ASA: DES, SHA, RSA
    # signatures on IOS / pre-share on ASA, group 1, 86400 s).
    pol.encryption = pol.encryption or "des"
    pol.hash = pol.hash or "sha"
    pol.authentication = pol.authentication or ("pre-share" if asa else "rsa-sig")
    pol.group = pol.group or 1
    pol.lifetime = pol.lifetime or 86400
    return pol


def parse(lines: list[str]) -> Config:
    """Read the configuration lines of a running-config (or a fragment of one)."""
    cfg = Config(lines=sum(1 for line in lines if line.strip()))
    asa = any(
        line.startswith(("ASA Version", "PIX Version", "nameif", " nameif", "tunnel-group"))
        for line in lines
    )
    maps: dict[tuple[str, int], CryptoMapEntry] = {}
    pix_policies: dict[str, list[str]] = {}

    def entry(name: str, seq: int, head: str | None) -> CryptoMapEntry:
        e = maps.get((name, seq))
        if e is None:
            e = maps[(name, seq)] = CryptoMapEntry(name, seq, [], None, [], None, [], [], [])
        if head is not None and head not in e.lines:
            e.lines.append(head)
        return e

    def set_line(e: CryptoMapEntry, s: str, quote: str | None = None) -> None:
        w = s.split()
        if w[:2] == ["set", "peer"] and len(w) > 2:
            e.peers.extend(w[2:3])
        elif w[:1] == ["set"] and "transform-set" in w:
            e.transform_sets.extend(w[w.index("transform-set") + 1 :])
        elif w[:2] == ["set", "pfs"]:
            e.pfs = w[2].lower() if len(w) > 2 else "group1"
        elif w[:2] == ["match", "address"] and len(w) > 2:
            e.acl = w[2]
        else:
            return
        e.lines.append(quote or s)

    for head, body in _blocks(lines):
        w = head.split()
        if w[0] == "hostname" and len(w) > 1:
            cfg.hostname = w[1]
        elif (
            w[:3] in (["crypto", "isakmp", "policy"], ["crypto", "ikev1", "policy"]) and len(w) > 3
        ):
            cfg.policies.append(_policy(w[3], body, head, asa))
        elif w[:2] == ["isakmp", "policy"] and len(w) > 3:
            # PIX 6.x / ASA 7.x: one line per attribute, "isakmp policy 10 encryption 3des".
            pix_policies.setdefault(w[2], []).append(" ".join(w[3:]))
        elif w[:3] == ["crypto", "isakmp", "key"] and "address" in w:
            i = w.index("address")
            if i + 1 < len(w):
                mask = w[i + 2] if i + 2 < len(w) and w[i + 2][0].isdigit() else None
                cfg.keys.append(PskBinding(w[i + 1], mask, head))
        elif w[:2] == ["isakmp", "key"] and "address" in w:
            i = w.index("address")
            mask = w[i + 3] if "netmask" in w and i + 3 < len(w) else None
            if i + 1 < len(w):
                cfg.keys.append(PskBinding(w[i + 1], mask, head))
        elif w[:1] == ["tunnel-group"] and len(w) > 2 and w[2] == "ipsec-attributes":
            for s in body:
                if "pre-shared-key" in s:
                    cfg.keys.append(PskBinding(w[1], None, f"{head} / {s}"))
        elif w[:3] == ["crypto", "ipsec", "transform-set"] and len(w) > 4:
            mode = next((s.split()[1] for s in body if s.startswith("mode ")), None)
            cfg.transform_sets.append(TransformSet(w[3], norm_transforms(w[4:]), mode, head))
        elif w[:4] == ["crypto", "ipsec", "ikev1", "transform-set"] and len(w) > 5:
            cfg.transform_sets.append(TransformSet(w[4], norm_transforms(w[5:]), None, head))
        elif w[:2] == ["crypto", "map"] and len(w) > 3:
            name = w[2]
            if w[3] == "local-address" and len(w) > 4:
                cfg.local_address[name] = w[4]
            elif w[3] == "interface" and len(w) > 4:
                cfg.interfaces.setdefault(w[4], Interface(w[4])).crypto_map = name
            elif w[3].isdigit():
                ios_head = len(w) == 4 or w[4].startswith("ipsec")
                e = entry(name, int(w[3]), head if ios_head else None)
                if not ios_head:
                    # ASA/PIX: one line per attribute, "crypto map M 10 set peer X".
                    set_line(e, " ".join(w[4:]), head)
                for s in body:
                    set_line(e, s)
        elif w[0] == "interface" and len(w) > 1:
            itf = cfg.interfaces.setdefault(w[1], Interface(w[1]))
            itf.lines.append(head)
            for s in body:
                sw = s.split()
                if sw[:2] == ["ip", "address"] and len(sw) > 2 and sw[2][0].isdigit():
                    itf.address = sw[2]
                elif sw[:2] == ["crypto", "map"] and len(sw) > 2:
                    itf.crypto_map = sw[2]
                elif sw[:2] == ["ip", "nat"] and len(sw) > 2:
                    itf.nat_side = sw[2]
                elif sw[:1] == ["nameif"] and len(sw) > 1:
                    itf.nat_side = "outside" if sw[1] == "outside" else "inside"
                    known = cfg.interfaces.get(sw[1])
                    if known is not None and known.crypto_map:
                        itf.crypto_map = known.crypto_map
                    cfg.interfaces[sw[1]] = itf  # ASA: commands name the interface by nameif
                else:
                    continue
                itf.lines.append(s)
        elif w[:2] == ["ip", "address"] and len(w) > 3 and w[3][0].isdigit():
            # PIX 6.x: "ip address outside 12.1.1.1 255.255.255.0"
            cfg.interfaces.setdefault(w[2], Interface(w[2])).address = w[3]
        elif w[0] == "access-list" and len(w) > 2:
            e2 = acl_mod.parse_entry(None, head, netmask=True if asa else None)
            if e2 is not None:
                cfg.acls.setdefault(e2.acl, []).append(e2)
        elif w[:3] == ["ip", "access-list", "extended"] and len(w) > 3:
            lst = cfg.acls.setdefault(w[3], [])
            for s in body:
                e3 = acl_mod.parse_entry(w[3], s, netmask=False)
                if e3 is not None:
                    lst.append(e3)
        elif w[:2] == ["ip", "nat"] and len(w) > 4 and w[3] == "source":
            # ip nat inside source list ACL … / route-map RM … / static …
            if w[4] == "list" and len(w) > 5:
                cfg.nat.append(NatRule("translate", w[5], head))
            elif w[4] == "route-map" and len(w) > 5:
                cfg.nat.append(NatRule("translate", "route-map:" + w[5], head))
        elif w[0] == "route-map" and len(w) > 1:
            permit = len(w) < 3 or w[2] == "permit"
            for s in body:
                sw = s.split()
                if sw[:3] == ["match", "ip", "address"] and permit:
                    cfg.route_maps.setdefault(w[1], []).extend(sw[3:])
        elif w[0] == "group-policy" and len(w) > 2 and w[2] == "attributes":
            # ASA: split-tunnel-policy tunnelspecified / split-tunnel-network-list value ACL
            st = SplitTunnel(w[1], None, None, [head])
            for s in body:
                sw = s.split()
                if sw[:1] == ["split-tunnel-policy"] and len(sw) > 1:
                    st.policy = sw[1]
                elif sw[:1] == ["split-tunnel-network-list"]:
                    st.acl = sw[2] if len(sw) > 2 and sw[1] == "value" else None
                else:
                    continue
                st.lines.append(s)
            if len(st.lines) > 1:
                cfg.split_tunnels.append(st)
        elif w[0] == "vpngroup" and len(w) > 3 and w[2] == "split-tunnel":
            cfg.split_tunnels.append(SplitTunnel(w[1], None, w[3], [head]))  # PIX 6.x
        elif w[:5] == ["crypto", "isakmp", "client", "configuration", "group"] and len(w) > 5:
            for s in body:  # IOS Easy VPN server: "acl 150" is the split tunnel list
                if s.split()[:1] == ["acl"] and len(s.split()) > 1:
                    cfg.split_tunnels.append(SplitTunnel(w[5], None, s.split()[1], [head, s]))
        elif w[0] == "nat" and len(w) > 2:
            # PIX/ASA < 8.3: "nat (inside) 0 access-list NONAT" exempts; "nat (inside) 1 …" NATs.
            if w[2] == "0" and "access-list" in w:
                cfg.nat.append(NatRule("exempt", _after(w, "access-list"), head))
            elif w[2] != "0" and w[2].isdigit():
                acl = _after(w, "access-list")
                cfg.nat.append(NatRule("translate", acl or "any", head))
            elif "source" in w and "static" in w and "destination" in w:
                cfg.nat.append(NatRule("exempt", None, head))  # twice NAT identity: exempt
            elif "source" in w and "dynamic" in w:
                cfg.nat.append(NatRule("translate", "any", head))
    for prio, attrs in pix_policies.items():
        cfg.policies.append(_policy(prio, attrs, f"isakmp policy {prio}", True))
    cfg.crypto_maps = sorted(maps.values(), key=lambda e: (e.map, e.seq))
    for e in cfg.crypto_maps:
        e.acl_entries = list(cfg.acls.get(e.acl or "", []))
        seen: set[int] = set()
        for n, itf in cfg.interfaces.items():
            if itf.crypto_map == e.map and id(itf) not in seen:
                seen.add(id(itf))  # an ASA interface is there under its nameif too
                e.interfaces.append(n)
    return cfg


_IOS_HINT = re.compile(r"^(crypto |hostname |interface |access-list |ip |isakmp |nat \()")


def looks_like_config(lines: list[str]) -> bool:
    return any(_IOS_HINT.match(line) for line in lines)


_WHOLE = re.compile(
    r"^(Building configuration|Current configuration\s*:|: Saved|ASA Version |PIX Version )"
)


def cut_before_end(lines: list[str]) -> bool:
    """Whether a whole running-config (one that starts with its header) lacks the ``end``
    line IOS, PIX and ASA close it with: the paste was cut."""
    text = [line.strip() for line in lines if line.strip()]
    if not text or not any(_WHOLE.match(line) for line in text[:5]):
        return False
    return text[-1] not in ("end", ": end")
