"""Split a capture file into the outputs of its commands.

A capture is what an engineer pastes or automation collects: outputs with or
without the ``router#show …`` prompt line, several commands in one file, headers
written by netmiko-style scripts (``===== show crypto isakmp sa =====``), Ansible's
JSON results (``stdout`` / ``stdout_lines``), Oxidized's configs (``!`` comments).
Without a header line the command is recognized from the output itself.

Pure: text in, :class:`Section` records out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime

from streams.core.captures.model import (
    ACCESS_LISTS,
    CRYPTO_MAP,
    ENGINE_CONNECTIONS,
    IPSEC_SA,
    ISAKMP_POLICY,
    ISAKMP_SA,
    RUNNING_CONFIG,
    TRANSFORM_SET,
    Section,
)

# A word and how short it may be abbreviated; a step is a tuple of alternatives.
_Step = tuple[tuple[str, int], ...]


def _w(*alts: tuple[str, int]) -> _Step:
    return alts


_SHOW = _w(("show", 2))
_CRYPTO = _w(("crypto", 3))
# (canonical command, the words it must start with, whether more words may follow)
_GRAMMAR: tuple[tuple[str, tuple[_Step, ...], bool], ...] = (
    (ISAKMP_SA, (_SHOW, _CRYPTO, _w(("isakmp", 3), ("ikev1", 5)), _w(("sa", 2))), True),
    (ISAKMP_POLICY, (_SHOW, _CRYPTO, _w(("isakmp", 3), ("ikev1", 5)), _w(("policy", 3))), True),
    (IPSEC_SA, (_SHOW, _CRYPTO, _w(("ipsec", 2)), _w(("sa", 2))), True),
    (IPSEC_SA, (_SHOW, _w(("ipsec", 2)), _w(("sa", 2))), True),
    (TRANSFORM_SET, (_SHOW, _CRYPTO, _w(("ipsec", 2)), _w(("transform-set", 2))), True),
    (
        ENGINE_CONNECTIONS,
        (_SHOW, _CRYPTO, _w(("engine", 2)), _w(("connections", 2)), _w(("active", 2))),
        True,
    ),
    (CRYPTO_MAP, (_SHOW, _CRYPTO, _w(("map", 1))), True),
    (ACCESS_LISTS, (_SHOW, _w(("access-lists", 3))), True),
    (ACCESS_LISTS, (_SHOW, _w(("ip", 2)), _w(("access-lists", 3))), True),
    (RUNNING_CONFIG, (_SHOW, _w(("running-config", 3))), True),
    (RUNNING_CONFIG, (_SHOW, _w(("startup-config", 3))), True),
    (RUNNING_CONFIG, (_SHOW, _w(("configuration", 4))), True),
    (RUNNING_CONFIG, (_w(("write", 2)), _w(("terminal", 1))), False),
    (RUNNING_CONFIG, (_w(("more", 3)), _w(("system:running-config", 8))), False),
)


def canonical_command(text: str) -> str | None:
    """The canonical name of a typed command (abbreviations and ``| filters`` allowed),
    None when tunnelwatch does not read its output."""
    words = text.split("|", 1)[0].lower().split()
    for name, steps, more in _GRAMMAR:
        if len(words) < len(steps) or (not more and len(words) > len(steps)):
            continue
        ok = all(
            any(w.startswith(word) and len(word) >= n for w, n in step)
            for word, step in zip(words, steps, strict=False)
        )
        if ok:
            return name
    return None


def is_show_like(text: str) -> bool:
    """Whether a typed command prints something to read (not ``terminal length 0``)."""
    first = text.lower().split()[:1]
    return bool(first) and (
        ("show".startswith(first[0]) and len(first[0]) >= 2)
        or first[0] in ("more", "write", "debug", "ping", "traceroute", "dir")
    )


# router#show …, PIX(config)#show …, asa/ctx# …, R1>show …
_PROMPT = re.compile(
    r"^(?P<dev>[A-Za-z0-9][\w.\-/:]*?)(?P<mode>\([\w\-/ ]*\))?[#>][ \t]*(?P<cmd>\S.*?)?\s*$"
)
# ===== show crypto isakmp sa =====, --- sh cry ipsec sa ---, *** show run ***, [show …]
_DECORATED = re.compile(
    r"^[\s=*\-#!\[<>:]*?(?P<cmd>(?:show|sh|sho|more|write)\s+[\w\-:|. /]+?)[\s=*\-#!\]<>:]*$",
    re.IGNORECASE,
)
_TIME_SOURCE = re.compile(
    r"^\s*Time source is [^,]*,\s*\*?(?P<h>\d{1,2}):(?P<m>\d\d):(?P<s>\d\d)(?:\.(?P<ms>\d+))?\s+"
    r"(?P<tz>\S+)\s+\w{3}\s+(?P<mon>\w{3})\s+(?P<day>\d{1,2})\s+(?P<year>\d{4})\s*$"
)
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, 1)}

# Lines that start an output when no header names the command.
_STARTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (ISAKMP_SA, re.compile(r"^\s*(dst\s+src\s+state\b|IPv[46] Crypto ISAKMP SA\s*$|IKEv1 SAs:|"
                           r"\s*Active SA:\s*\d|\d+\s+IKE Peer:|IKE Peer\s+Type\s+Dir|"
                           r"Total\s*:\s*\d+\s*$)")),
    (IPSEC_SA, re.compile(r"^\s*(interface:\s+\S+\s*$|Crypto map tag:\s)")),
    (ENGINE_CONNECTIONS, re.compile(r"^\s*(ID\s+(Interface|Type)\s+.*Encrypt\s+Decrypt|"
                                    r"Crypto Engine Connections\s*$)")),
    (CRYPTO_MAP, re.compile(r"^\s*Crypto Map (IPv[46] )?\"")),
    (ISAKMP_POLICY, re.compile(r"^\s*(Global IKE policy\s*$|Protection suite of priority\s)")),
    (TRANSFORM_SET, re.compile(r"^\s*Transform set \S+:\s*\{")),
    (ACCESS_LISTS, re.compile(r"^((Standard|Extended|Reflexive) IP access list\s|"
                              r"access-list cached ACL log flows|access-list \S+; \d+ elements)")),
    (RUNNING_CONFIG, re.compile(
        r"^(Building configuration|Current configuration\s*:|: Saved|ASA Version |PIX Version |"
        r"hostname \S|version \d|crypto (isakmp|ikev1|ipsec|map|dynamic-map) |isakmp |"
        r"tunnel-group \S|interface \S|access-list (?!\S+; )(?!.*\bline \d+ )\S|"
        r"ip access-list |ip nat |nat \(|route-map \S|object network |sysopt |vpngroup )"
    )),
)  # fmt: skip
# Configuration of other vendors: reported as such, never guessed at.
_OTHER_VENDOR = re.compile(
    r"^\s*(set (security|vpn|interfaces|system) |config (vpn|firewall|system) |edit \"|"
    r"/ip ipsec|/interface |conn \S+\s*$|config setup\s*$|security \{|interfaces \{|"
    r"system \{|policy-options \{|ike \{|ipsec \{|crypto ikev2 proposal-junos)"
)


def other_vendor(lines: Iterable[str]) -> bool:
    return any(_OTHER_VENDOR.match(line) for line in lines)


def detect_command(line: str) -> str | None:
    """The command whose output a line starts, when no header names it."""
    for name, pattern in _STARTS:
        if pattern.match(line):
            return name
    return None


def section_time(line: str) -> float | None:
    """POSIX seconds of an IOS ``Time source is NTP, 10:15:03.123 UTC Fri Dec 4 2026``
    line (labels other than UTC/GMT are read as UTC)."""
    m = _TIME_SOURCE.match(line)
    if m is None:
        return None
    month = _MONTHS.get(m["mon"].lower())
    if month is None:
        return None
    try:
        dt = datetime(
            int(m["year"]),
            month,
            int(m["day"]),
            int(m["h"]),
            int(m["m"]),
            int(m["s"]),
            tzinfo=UTC,
        )
    except ValueError:
        return None
    ms = int((m["ms"] or "0")[:3].ljust(3, "0"))
    return dt.timestamp() + ms / 1000.0


def _ansible(text: str) -> tuple[str, str | None] | None:
    """Ansible's JSON result of ios_command/asa_command (or a callback line
    ``ok: [host] => {…}``) as prompt-headed text; None when the text is not that."""
    head = text.lstrip()
    host = None
    m = re.match(r"^(?:ok|changed):\s*\[(?P<host>[^\]]+)\]\s*=>\s*", head)
    if m is not None:
        host = m["host"]
        head = head[m.end() :]
    if not head.startswith("{"):
        return None
    try:
        doc, _ = json.JSONDecoder().raw_decode(head)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    outs = doc.get("stdout")
    if not isinstance(outs, list) and isinstance(doc.get("stdout_lines"), list):
        outs = ["\n".join(x if isinstance(x, str) else "\n".join(x) for x in doc["stdout_lines"])]
    if not isinstance(outs, list) or not all(isinstance(o, str) for o in outs):
        return None
    args = (doc.get("invocation") or {}).get("module_args") or {}
    cmds: list[str] = []
    for c in args.get("commands") or []:
        cmds.append(
            c if isinstance(c, str) else str(c.get("command", "")) if isinstance(c, dict) else ""
        )
    parts: list[str] = []
    for i, out in enumerate(outs):
        cmd = cmds[i] if i < len(cmds) else ""
        if cmd:
            parts.append(f"{host or 'device'}#{cmd}")
        parts.append(out)
    return "\n".join(parts) + "\n", host


def split(text: str) -> tuple[list[Section], str | None]:
    """The sections of a capture file and the device its prompts or hostname name."""
    device: str | None = None
    converted = _ansible(text)
    if converted is not None:
        text, device = converted
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    sections: list[Section] = []
    cur: Section | None = None
    t: float | None = None

    def close() -> None:
        nonlocal cur
        if cur is not None:
            while cur.lines and not cur.lines[-1].strip():
                cur.lines.pop()
            if cur.lines or cur.command is not None:
                sections.append(cur)
        cur = None

    for i, raw in enumerate(lines, 1):
        line = raw.rstrip()
        m = _PROMPT.match(line)
        if m is not None and not line.lstrip().startswith(("#", "!")):
            cmd = m["cmd"] or ""
            if m["mode"] and "config" in m["mode"] and not is_show_like(cmd):
                # A configuration-mode command: a configuration line.
                if cur is None or cur.command != RUNNING_CONFIG:
                    close()
                    cur = Section(RUNNING_CONFIG, "configuration mode", m["dev"], i, [], t)
                device = device or m["dev"]
                cur.lines.append(("" if m["mode"] == "(config)" else " ") + cmd)
                continue
            close()
            if cmd:
                device = device or m["dev"]
                if is_show_like(cmd) or canonical_command(cmd):
                    cur = Section(canonical_command(cmd), cmd, m["dev"], i + 1, [], None)
                else:
                    cur = Section(None, cmd, m["dev"], i + 1, [], None)
            t = None
            continue
        d = _DECORATED.match(line)
        if d is not None and (
            canonical_command(d["cmd"]) is not None or line.strip() != d["cmd"].strip()
        ):
            close()
            cur = Section(canonical_command(d["cmd"]), d["cmd"].strip(), None, i + 1, [], None)
            t = None
            continue
        ts = section_time(line)
        if ts is not None:
            t = ts
            if cur is not None:
                cur.time = ts
            continue
        if line.startswith(("Load for ", "No time source")):
            continue
        started = detect_command(line)
        if cur is None:
            if not line.strip() or line.lstrip().startswith("!"):
                continue
            cur = Section(started, started or "", None, i, [], t)
        elif (
            started is not None
            and cur.command_text == (cur.command or "")  # recognized from content, no header
            and started != cur.command
        ) or (cur.command is None and cur.command_text == "" and started is not None):
            close()
            cur = Section(started, started, None, i, [], t)
        cur.lines.append(line)
    close()
    return sections, device
