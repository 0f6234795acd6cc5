"""Parse the output of one ``show`` command with TextFSM into typed records.

Network to Code's ntc-templates are tried first where they have a template for the
command (IOS ``show crypto ipsec sa detail``, ASA ``show crypto ipsec sa``, ASA
``show crypto ikev1 sa detail``, IOS/ASA ``show access-list``); tunnelwatch's own
templates (``templates/tw_*.textfsm``) read what they do not: the older layouts of
the troubleshooting guide (IOS 12.x, PIX 6.x) and the commands ntc-templates has no
template for. The templates are data shipped in the packages; the parsing is pure.
"""

from __future__ import annotations

import functools
import io
import re
from importlib import resources
from typing import Any

import textfsm

from streams.core.captures import acl as acl_mod
from streams.core.captures.model import (
    ACCESS_LISTS,
    CRYPTO_MAP,
    ENGINE_CONNECTIONS,
    IPSEC_SA,
    ISAKMP_POLICY,
    ISAKMP_SA,
    TRANSFORM_SET,
    TRUNCATED,
    AclEntry,
    CryptoMapEntry,
    EngineConnection,
    IpsecSa,
    IsakmpPolicy,
    IsakmpSa,
    Problem,
    Section,
    TransformSet,
)


@functools.cache
def _template_text(package: str, name: str) -> str | None:
    try:
        return (resources.files(package) / "templates" / name).read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError, OSError):
        return None


def own(name: str) -> str:
    text = _template_text("streams.core.captures", name)
    assert text is not None, f"missing template {name}"
    return text


def ntc(name: str) -> str | None:
    """An ntc-templates template, None when the installed release lacks it."""
    return _template_text("ntc_templates", name)


class ParseError(ValueError):
    """A template refused a line of the output (a truncated or unexpected paste)."""


def run(template: str, text: str) -> list[dict[str, Any]]:
    """Rows of ``text`` read with a TextFSM template, as dicts of its value names."""
    fsm = textfsm.TextFSM(io.StringIO(template))
    try:
        rows = fsm.ParseText(text)
    except textfsm.TextFSMError as exc:
        raise ParseError(str(exc).splitlines()[0]) from exc
    return [dict(zip(fsm.header, row, strict=True)) for row in rows]


def _first(*attempts: tuple[str | None, str]) -> tuple[list[dict[str, Any]], str]:
    """The rows of the first template that reads the text without error and finds rows."""
    last: ParseError | None = None
    for template, text in attempts:
        if template is None:
            continue
        try:
            rows = run(template, text)
        except ParseError as exc:
            last = last or exc  # the first template's complaint: the layout tried first
            continue
        if rows:
            return rows, "ok"
    if last is not None:
        return [], str(last)
    return [], "ok"


def _int(v: Any) -> int | None:
    if isinstance(v, str) and v.isdigit():
        return int(v)
    return None


def _find_line(lines: list[str], *needles: str) -> str:
    for line in lines:
        if all(n in line for n in needles):
            return line.strip()
    return " ".join(needles)


# --- show crypto isakmp sa / show crypto ikev1 sa ---------------------------------------


def isakmp_sas(section: Section) -> tuple[list[IsakmpSa], list[Problem]]:
    text = "\n".join(section.lines) + "\n"
    rows, err = _first(
        (own("tw_show_crypto_isakmp_sa.textfsm"), text),
        (ntc("cisco_asa_show_crypto_ikev1_sa_detail.textfsm"), text),
        (own("tw_asa_show_crypto_isakmp_sa.textfsm"), text),
    )
    out: list[IsakmpSa] = []
    for r in rows:
        if "DST" in r:
            line = _find_line(section.lines, r["DST"], r["SRC"], r["STATE"])
            out.append(IsakmpSa(r["DST"], r["SRC"], r["STATE"].upper(), r["CONN_ID"] or None, line))
        else:  # ASA: the peer, the local end unknown
            line = _find_line(section.lines, "State", r["STATE"])
            peer_line = _find_line(section.lines, "IKE Peer", r["PEER"])
            out.append(
                IsakmpSa(
                    r["PEER"],
                    "",
                    r["STATE"].upper(),
                    r.get("SEQUENCE") or None,
                    f"{peer_line} / {line}",
                )
            )
    problems = _problems(section, err, bool(out))
    return out, problems


def _problems(section: Section, err: str, any_rows: bool) -> list[Problem]:
    if err != "ok":
        return [Problem(TRUNCATED, section.start, f"{section.command_text}: {err}")]
    if not any_rows and any(line.strip() for line in section.lines):
        return [Problem(TRUNCATED, section.start, f"{section.command_text}: no record found")]
    return []


# --- show crypto ipsec sa [detail] --------------------------------------------------------

_COUNTERS_OWN = {
    "ENCAPS": "encaps",
    "ENCRYPT": "encrypt",
    "DIGEST": "digest",
    "DECAPS": "decaps",
    "DECRYPT": "decrypt",
    "VERIFY": "verify",
    "VERIFY_FAILED": "verify_failed",
    "REPLAY_FAILED": "replay_failed",
    "SEND_ERRORS": "send_errors",
    "RECV_ERRORS": "recv_errors",
    "PRE_FRAG_FAILURES": "pre_frag_failures",
    "PMTUS_RCVD": "pmtus_rcvd",
}
_COUNTERS_NTC_IOS = {
    "PKTS_ENCAPS": "encaps",
    "PKTS_ENCRYPT": "encrypt",
    "PKTS_DIGEST": "digest",
    "PKTS_DECAPS": "decaps",
    "PKTS_DECRYPT": "decrypt",
    "PKTS_VERIFY": "verify",
    "PKTS_VERIFY_FAILED": "verify_failed",
    "PKTS_REPLAY_FAILED": "replay_failed",
}
_COUNTERS_NTC_ASA = {
    "PACKETS_ENCAPSULATED": "encaps",
    "PACKETS_ENCRYPTED": "encrypt",
    "PACKETS_DIGESTED": "digest",
    "PACKETS_DECAPSULATED": "decaps",
    "PACKETS_DECRYPTED": "decrypt",
    "PACKETS_VERIFIED": "verify",
    "SEND_ERRORS": "send_errors",
    "RECEIVE_ERRORS": "recv_errors",
    "PRE_FRAGMENT_FAILURES": "pre_frag_failures",
    "PMTUS_RECEIVED": "pmtus_rcvd",
}
_COUNTER_LINE = re.compile(
    r"#pkts (encaps|decaps):|verify failed|replay failed|#send errors|#pre-frag|#PMTUs", re.I
)


_IDENT = re.compile(r"local\s+ident\s+\(addr/mask/prot/port\):\s+\((\S+)\)")

_Quoted = dict[str, list[tuple[str, list[str]]]]


def _counter_lines(lines: list[str]) -> _Quoted:
    """The counter lines of each block (to quote them), by local ident, with the block's
    current_peer line; in one pass."""
    out: _Quoted = {}
    cur: list[str] | None = None
    peer_at: tuple[str, int] | None = None
    for line in lines:
        m = _IDENT.search(line)
        if m is not None:
            cur = []
            lst = out.setdefault(m.group(1), [])
            lst.append(("", cur))
            peer_at = (m.group(1), len(lst) - 1)
        elif cur is not None and peer_at is not None and "current_peer" in line:
            ident, i = peer_at
            out[ident][i] = (line, cur)
        elif cur is not None and _COUNTER_LINE.search(line):
            cur.append(line.strip())
    return out


def _block_lines(blocks: _Quoted, local_ident: str, peer: str | None) -> list[str]:
    """The counter lines of the block of ``local_ident`` (and ``peer``)."""
    for peer_line, counters in blocks.get(local_ident, ()):
        if not peer or peer in peer_line:
            return counters
    return []


def _ident(addr: str | None, mask: str | None, prot: str | None, port: str | None) -> str:
    return f"{addr}/{mask}/{prot or 0}/{port or 0}"


def _block_fields(
    flavour: str, r: dict[str, Any]
) -> tuple[str, str | None, str, str, str, str, str | None, str | None]:
    """(local ident, remote ident, interface, crypto map, local address, peer, PFS group,
    transform) of a row of one of the three ipsec sa templates."""
    if flavour == "ios":
        local = _ident(
            r["LOCAL_IDENT_ADDR"],
            r["LOCAL_IDENT_MASK"],
            r["LOCAL_IDENT_PROT"],
            r["LOCAL_IDENT_PORT"],
        )
        remote: str | None = _ident(
            r["REMOTE_IDENT_ADDR"],
            r["REMOTE_IDENT_MASK"],
            r["REMOTE_IDENT_PROT"],
            r["REMOTE_IDENT_PORT"],
        )
        head = (r["INTERFACE"], r["CRYPTO_MAP_TAG"], r["LOCAL_ADDR"], r["CURRENT_PEER"])
        pfs = r["DH_GROUP"] if r["PFS"] == "Y" else ("none" if r["PFS"] else None)
        transform = r["SA_TRANSFORM"] or None
    elif flavour == "asa":
        local = _ident(
            r["LOCAL_IDENTITY_ADDR"],
            r["LOCAL_IDENTITY_MASK"],
            r["LOCAL_IDENTITY_PROTOCOL"],
            r["LOCAL_IDENTITY_PORT"],
        )
        remote = _ident(
            r["REMOTE_IDENTITY_ADDR"],
            r["REMOTE_IDENTITY_MASK"],
            r["REMOTE_IDENTITY_PROTOCOL"],
            r["REMOTE_IDENTITY_PORT"],
        )
        peer = r["CURRENT_PEER"] or r["CURRENT_PEER_NAME"]
        head = (r["INTERFACE"], r["CRYPTO_MAP_TAG"], r["LOCAL_ADDRESS"], peer)
        pfs = None
        parts = (r["INBOUND_ENCRYPTION"], r["INBOUND_AUTHENTICATION"])
        transform = " ".join(x for x in parts if x) or None
    else:
        local, remote = r["LOCAL_IDENT"], r["REMOTE_IDENT"] or None
        head = (r["INTERFACE"], r["CRYPTO_MAP"], r["LOCAL_ADDR"], r["PEER"])
        pfs = r["DH_GROUP"] if r["PFS"] == "Y" else ("none" if r["PFS"] else None)
        transform = r["TRANSFORM"] or None
    return (local, remote, *head, pfs, transform)


def ipsec_sas(section: Section) -> tuple[list[IpsecSa], list[Problem]]:
    text = "\n".join(section.lines) + "\n"
    quoted = _counter_lines(section.lines)
    blocks: dict[tuple[str | None, str, str | None, str | None], IpsecSa] = {}
    err = "ok"
    for template, mapping, flavour in (
        (ntc("cisco_ios_show_crypto_ipsec_sa_detail.textfsm"), _COUNTERS_NTC_IOS, "ios"),
        (ntc("cisco_asa_show_crypto_ipsec_sa.textfsm"), _COUNTERS_NTC_ASA, "asa"),
        (own("tw_show_crypto_ipsec_sa.textfsm"), _COUNTERS_OWN, "own"),
    ):
        if template is None:
            continue
        try:
            rows = run(template, text)
        except ParseError as exc:
            err = str(exc)
            continue
        for r in rows:
            local, remote, iface, cmap, laddr, peer, pfs, transform = _block_fields(flavour, r)
            if not local or local.startswith(("/", "None")):
                continue
            counters = {name: v for k, name in mapping.items() if (v := _int(r.get(k))) is not None}
            if "encaps" not in counters and "decaps" not in counters:
                continue
            key = (iface or None, local, remote, peer or None)
            if key not in blocks:
                blocks[key] = IpsecSa(
                    interface=iface or None,
                    crypto_map=cmap or None,
                    local_addr=laddr or None,
                    local_ident=local,
                    remote_ident=remote,
                    peer=peer or None,
                    counters=counters,
                    pfs=pfs,
                    transform=transform,
                    lines=_block_lines(quoted, local, peer or None),
                )
        if blocks:
            err = "ok"
            break
    out = list(blocks.values())
    problems = _problems(section, err, bool(out))
    # A paste cut inside a block: its counter lines are missing, or half of them.
    if out and not problems:
        idents = sum(1 for line in section.lines if re.match(r"^\s*local\s+ident\s", line))
        half = [b for b in out if "encaps" not in b.counters or "decaps" not in b.counters]
        if half:
            problems.append(
                Problem(
                    TRUNCATED,
                    section.start,
                    f"{section.command_text}: the block of {half[0].local_ident} lacks its "
                    "encaps or decaps counters (cut paste?)",
                )
            )
        elif idents > len(out):
            problems.append(
                Problem(
                    TRUNCATED,
                    section.start,
                    f"{section.command_text}: {idents - len(out)} block(s) "
                    "without counters (cut paste?)",
                )
            )
    return out, problems


# --- show crypto engine connections active --------------------------------------------------


def engine_connections(section: Section) -> tuple[list[EngineConnection], list[Problem]]:
    text = "\n".join(section.lines) + "\n"
    rows, err = _first((own("tw_show_crypto_engine_connections_active.textfsm"), text))
    out = []
    for r in rows:
        line = _find_line(section.lines, r["CONN_ID"], r["ALGORITHM"])
        out.append(
            EngineConnection(
                conn_id=r["CONN_ID"],
                type=r["TYPE"] or None,
                interface=r["INTERFACE"] or None,
                address=r["ADDRESS"] or None,
                algorithm=r["ALGORITHM"],
                encrypt=int(r["ENCRYPT"]),
                decrypt=int(r["DECRYPT"]),
                line=line,
            )
        )
    return out, _problems(section, err, bool(out))


# --- show crypto isakmp policy ------------------------------------------------------------


def norm_encryption(text: str | None) -> str | None:
    """``aes-256``, ``3des``, ``des``… from IOS/ASA spellings (config or show)."""
    if not text:
        return None
    t = text.lower().strip()
    m = re.search(r"(\d{3})\s*bit", t)
    if t.startswith("aes") or "advanced encryption" in t:
        bits = m.group(1) if m else (re.findall(r"\d{3}", t) or ["128"])[0]
        return f"aes-{bits}"
    if "3des" in t or "triple des" in t or "three key" in t:
        return "3des"
    if t.startswith("des") or "data encryption standard" in t:
        return "des"
    return t.split()[0]


def norm_hash(text: str | None) -> str | None:
    if not text:
        return None
    t = text.lower().strip()
    if "md5" in t or "message digest" in t:
        return "md5"
    m = re.search(r"sha-?(256|384|512)|standard 2 \((256|384|512)", t)
    if m:
        return "sha" + (m.group(1) or m.group(2))
    if t.startswith("sha") or "secure hash" in t:
        return "sha"
    return t.split()[0]


def norm_auth(text: str | None) -> str | None:
    if not text:
        return None
    t = text.lower().strip()
    if "pre-share" in t or "pre-shared" in t or "preshared" in t:
        return "pre-share"
    if "signature" in t or t.startswith("rsa-sig"):
        return "rsa-sig"
    if "rsa-encr" in t or "rsa encryption" in t or "shamir-adleman encryption" in t:
        return "rsa-encr"
    return t.split()[0]


def isakmp_policies(section: Section) -> tuple[list[IsakmpPolicy], list[Problem]]:
    text = "\n".join(section.lines) + "\n"
    rows, err = _first((own("tw_show_crypto_isakmp_policy.textfsm"), text))
    out = []
    for r in rows:
        pr = r["PRIORITY"] or "default"
        out.append(
            IsakmpPolicy(
                priority=pr,
                encryption=norm_encryption(r["ENCRYPTION"]),
                hash=norm_hash(r["HASH"]),
                authentication=norm_auth(r["AUTHENTICATION"]),
                group=_int(r["GROUP"]),
                lifetime=_int(r["LIFETIME"]),
                lines=[_find_line(section.lines, "priority", pr)]
                if pr != "default"
                else ["Default protection suite"],
            )
        )
    return out, _problems(section, err, bool(out))


# --- show crypto ipsec transform-set --------------------------------------------------------

_TRANSFORM_ALIASES = {
    # ASA ikev1 transform names -> IOS ones (with the key size as IOS writes it).
    "esp-aes-128": "esp-aes 128",
    "esp-aes-192": "esp-aes 192",
    "esp-aes-256": "esp-aes 256",
    "esp-aes": "esp-aes 128",
    "esp-md5-hmac": "esp-md5-hmac",
    "esp-sha-hmac": "esp-sha-hmac",
}


def norm_transforms(words: list[str]) -> tuple[str, ...]:
    """The transforms of a set, in one spelling for IOS, PIX and ASA, sorted."""
    out: list[str] = []
    i = 0
    while i < len(words):
        w = words[i].lower().strip(",")
        if (
            w in ("esp-aes", "esp-gcm", "esp-gmac")
            and i + 1 < len(words)
            and words[i + 1].isdigit()
        ):
            out.append(f"{w} {words[i + 1]}")
            i += 2
            continue
        if w in ("mode", "tunnel", "transport"):
            break
        if w:
            out.append(_TRANSFORM_ALIASES.get(w, w))
        i += 1
    return tuple(sorted(out))


def transform_sets(section: Section) -> tuple[list[TransformSet], list[Problem]]:
    text = "\n".join(section.lines) + "\n"
    rows, err = _first((own("tw_show_crypto_ipsec_transform_set.textfsm"), text))
    out = [
        TransformSet(
            name=r["NAME"],
            transforms=norm_transforms(r["TRANSFORMS"].split()),
            mode=(r["MODE"] or "").strip().lower() or None,
            line=_find_line(section.lines, f"Transform set {r['NAME']}:"),
        )
        for r in rows
    ]
    return out, _problems(section, err, bool(out))


# --- show crypto map ----------------------------------------------------------------------


def crypto_maps(section: Section) -> tuple[list[CryptoMapEntry], list[Problem]]:
    text = "\n".join(section.lines) + "\n"
    rows, err = _first((own("tw_show_crypto_map.textfsm"), text))
    out = []
    for r in rows:
        if not r["SEQ"]:
            continue
        entries = [
            e
            for t in r["ACL_ENTRIES"]
            if (e := acl_mod.parse_entry(r["ACL"] or None, t)) is not None
        ]
        pfs = None
        if r["PFS"] == "Y":
            pfs = (r["PFS_GROUP"] or "group1").lower()
        head = _find_line(section.lines, f'"{r["MAP"]}"', r["SEQ"])
        out.append(
            CryptoMapEntry(
                map=r["MAP"],
                seq=int(r["SEQ"]),
                peers=list(r["PEERS"]),
                acl=r["ACL"] or None,
                acl_entries=entries,
                pfs=pfs,
                transform_sets=[t for t in re.split(r"[\s,]+", r["TRANSFORM_SETS"]) if t]
                + list(r["TRANSFORM_SET_NAMES"]),
                interfaces=list(r["INTERFACES"]),
                lines=[head] + [e.line for e in entries],
            )
        )
    return out, _problems(section, err, bool(out))


# --- show access-lists --------------------------------------------------------------------

_ACL_HEADER = re.compile(r"^(?:Standard|Extended|Reflexive) IP access list (\S+)")


def access_lists(section: Section) -> tuple[dict[str, list[AclEntry]], list[Problem]]:
    """IOS ``show access-lists`` (header + numbered entries) and ASA ``show access-list``
    (``access-list NAME line N extended …``). The entries are read by
    :func:`streams.core.captures.acl.parse_entry`; ntc-templates' rows serve as a check
    that the output is a whole access-list listing."""
    text = "\n".join(section.lines) + "\n"
    _, err = _first(
        (ntc("cisco_ios_show_access-list.textfsm"), text),
        (ntc("cisco_asa_show_access-list.textfsm"), text),
    )
    acls: dict[str, list[AclEntry]] = {}
    current: str | None = None
    seen = 0
    for line in section.lines:
        m = _ACL_HEADER.match(line)
        if m is not None:
            current = m.group(1)
            acls.setdefault(current, [])
            continue
        s = line.strip()
        if not s:
            continue
        netmask = bool(s.startswith("access-list "))
        e = acl_mod.parse_entry(current, s, netmask=netmask)
        if e is not None:
            seen += 1
            lst = acls.setdefault(e.acl, [])
            if not any(x.key() == e.key() for x in lst):
                lst.append(e)
    problems = [] if seen else _problems(section, err, False)
    return acls, problems


PARSERS = {
    ISAKMP_SA: isakmp_sas,
    IPSEC_SA: ipsec_sas,
    ENGINE_CONNECTIONS: engine_connections,
    ISAKMP_POLICY: isakmp_policies,
    TRANSFORM_SET: transform_sets,
    CRYPTO_MAP: crypto_maps,
    ACCESS_LISTS: access_lists,
}
