"""``show crypto …`` captures and crypto/NAT configs: text in, typed records out.

Pure (no I/O but reading the packaged TextFSM templates): :func:`read` splits a
capture file into its commands' outputs (:mod:`.sections`), reads each one
(:mod:`.show` with TextFSM, :mod:`.config` for running-configs) and counts what it
could not read as :class:`~streams.core.captures.model.Problem` records.
"""

from __future__ import annotations

import re

from streams.core.captures import config as config_mod
from streams.core.captures import sections as sections_mod
from streams.core.captures import show
from streams.core.captures.model import (
    ACCESS_LISTS,
    CRYPTO_MAP,
    ENGINE_CONNECTIONS,
    IPSEC_SA,
    ISAKMP_POLICY,
    ISAKMP_SA,
    OTHER_VENDOR,
    RUNNING_CONFIG,
    TRANSFORM_SET,
    TRUNCATED,
    UNKNOWN_COMMAND,
    UNRECOGNIZED,
    Capture,
    Config,
    Problem,
)

__all__ = ["Capture", "Problem", "is_capture", "read"]

_SYSLOG_TAG = re.compile(r"%[A-Z][A-Z0-9_]*-(?:[A-Z0-9_]+-)*\d-[A-Z0-9_]+\s*:")


def is_capture(text: str) -> bool:
    """Whether a file holds ``show`` outputs or a config rather than syslog: some line
    starts a known output (or is a ``show`` prompt) and no line is a tagged syslog
    message. A ``show logging`` capture is syslog."""
    lines = text.splitlines()[:400]
    if any(_SYSLOG_TAG.search(line) for line in lines):
        return False
    if text.lstrip().startswith(("{", "ok: [", "changed: [")):
        return True
    for line in lines:
        m = sections_mod._PROMPT.match(line.rstrip())
        if m is not None and m["cmd"]:
            if sections_mod.canonical_command(m["cmd"]) is not None:
                return True
            if m["mode"] and "config" in m["mode"]:
                return True
        if sections_mod.detect_command(line) is not None:
            return True
    return False


def read(name: str, text: str, time: float | None = None) -> Capture:
    """Everything tunnelwatch reads in one capture file. ``time`` is when it was taken
    (the file's modification time) for outputs that carry no ``Time source`` line."""
    secs, device = sections_mod.split(text)
    cap = Capture(name=name, device=device, time=time, sections=secs)
    config_lines: list[str] = []
    for sec in secs:
        cmd = sec.command
        if cmd is None:
            if sec.command_text:
                cap.problems.append(
                    Problem(
                        UNKNOWN_COMMAND, sec.start, f"output of {sec.command_text!r} is not read"
                    )
                )
            elif sections_mod.other_vendor(sec.lines):
                cap.problems.append(
                    Problem(
                        OTHER_VENDOR,
                        sec.start,
                        "configuration of another vendor (not Cisco IOS/ASA)",
                    )
                )
            else:
                cap.problems.append(
                    Problem(UNRECOGNIZED, sec.start, f"{len(sec.lines)} line(s) of no known output")
                )
            continue
        if cmd == RUNNING_CONFIG:
            if config_mod.cut_before_end(sec.lines):
                cap.problems.append(
                    Problem(TRUNCATED, sec.start, "running-config ends before its 'end' line")
                )
            if sections_mod.other_vendor(sec.lines) and not config_mod.looks_like_config(sec.lines):
                cap.problems.append(
                    Problem(
                        OTHER_VENDOR,
                        sec.start,
                        "configuration of another vendor (not Cisco IOS/ASA)",
                    )
                )
                continue
            config_lines.extend(sec.lines)
            continue
        if cmd == ISAKMP_SA:
            sas, probs = show.isakmp_sas(sec)
            cap.isakmp_sas.extend(sas)
            cap.records += len(sas)
        elif cmd == IPSEC_SA:
            blocks, probs = show.ipsec_sas(sec)
            if blocks:
                cap.ipsec_snapshots.append((sec.time if sec.time is not None else time, blocks))
            cap.records += len(blocks)
        elif cmd == ENGINE_CONNECTIONS:
            conns, probs = show.engine_connections(sec)
            cap.engine_connections.extend(conns)
            cap.records += len(conns)
        elif cmd == ISAKMP_POLICY:
            pols, probs = show.isakmp_policies(sec)
            cap.config.policies.extend(p for p in pols if p.priority != "default")
            cap.records += len(pols)
        elif cmd == TRANSFORM_SET:
            sets, probs = show.transform_sets(sec)
            cap.config.transform_sets.extend(sets)
            cap.records += len(sets)
        elif cmd == CRYPTO_MAP:
            entries, probs = show.crypto_maps(sec)
            cap.config.crypto_maps.extend(entries)
            cap.records += len(entries)
        else:
            assert cmd == ACCESS_LISTS
            acls, probs = show.access_lists(sec)
            for k, v in acls.items():
                cap.acl_lines.setdefault(k, []).extend(v)
                cap.config.acls.setdefault(k, []).extend(v)
            cap.records += sum(len(v) for v in acls.values())
        cap.problems.extend(probs)
    if config_lines:
        parsed = config_mod.parse(config_lines)
        merge(cap, parsed)
        cap.records += parsed.lines
    if cap.device is None:
        cap.device = cap.config.hostname
    return cap


def merge(cap: Capture, parsed: Config) -> None:
    """Add a parsed running-config to what the show outputs gave."""
    c = cap.config
    c.hostname = c.hostname or parsed.hostname
    c.policies.extend(parsed.policies)
    c.keys.extend(parsed.keys)
    c.transform_sets.extend(parsed.transform_sets)
    c.crypto_maps.extend(parsed.crypto_maps)
    c.local_address.update(parsed.local_address)
    for k, v in parsed.acls.items():
        c.acls.setdefault(k, []).extend(v)
    c.nat.extend(parsed.nat)
    for k2, v2 in parsed.route_maps.items():
        c.route_maps.setdefault(k2, []).extend(v2)
    for k3, itf in parsed.interfaces.items():
        c.interfaces.setdefault(k3, itf)
    c.split_tunnels.extend(parsed.split_tunnels)
    c.lines += parsed.lines
