"""What captures say: SA states and packet counters turned into findings.

One capture of ``show crypto isakmp sa`` gives states (MM_NO_STATE, MM_KEY_EXCH;
QM_IDLE and MM_ACTIVE are healthy and give nothing). One capture of ``show crypto
ipsec sa`` gives counters as a state (errors since the SA came up); two captures of
the same device give deltas, and rates when both are dated. Pure: findings are
handed to :func:`streams.core.engine.evidence_incident`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from streams.core.captures.compare import one_end
from streams.core.captures.model import Capture, Finding, IpsecSa

# As the syslog rules (>= 5 within 10 minutes): a lone HMAC or replay failure raises
# nothing, in one capture (errors since the SA came up) or between two.
MIN_ERRORS = 5
MM_NO_STATE = "MM_NO_STATE"
MM_KEY_EXCH = "MM_KEY_EXCH"


def local_addresses(cap: Capture) -> set[str]:
    """The device's own addresses that the capture shows."""
    out: set[str] = set()
    for _, blocks in cap.ipsec_snapshots:
        out |= {b.local_addr for b in blocks if b.local_addr}
    out |= {i.address for i in cap.config.interfaces.values() if i.address}
    out |= {c.address for c in cap.engine_connections if c.address}
    return out


def _flow(b: IpsecSa) -> str:
    def short(ident: str | None) -> str:
        if not ident:
            return "?"
        addr, _, rest = ident.partition("/")
        mask = rest.split("/")[0]
        return f"{addr}/{mask}" if mask else addr

    return f"{short(b.local_ident)} to {short(b.remote_ident)}"


def _quote(name: str, lines: Iterable[str]) -> list[str]:
    return [f"{name}: {line}" for line in lines]


def isakmp_findings(cap: Capture, device: str, ts: float) -> list[Finding]:
    own = local_addresses(cap)
    out: list[Finding] = []
    for sa in cap.isakmp_sas:
        if sa.state not in (MM_NO_STATE, MM_KEY_EXCH):
            continue
        peer = sa.src if sa.dst in own and sa.src else sa.dst
        ev = "isakmp-mm-no-state" if sa.state == MM_NO_STATE else "isakmp-mm-key-exch"
        quoted = _quote(cap.name, [sa.line])
        vals = {"state": sa.state}
        out.append(Finding(ev, device, peer, ts, ts, vals, quoted, addresses=sorted(own)))
    return out


# ASA counters of fragmentation trouble: packets it could not fragment before
# encryption, path-MTU messages it received.
_FRAGMENT = {
    "pre_frag_failures": "pre-fragmentation failures",
    "pmtus_rcvd": "PMTU messages received",
}


def _fragment_text(counts: dict[str, int]) -> str:
    return " and ".join(f"{n} {_FRAGMENT[k]}" for k, n in counts.items())


def _key(b: IpsecSa) -> tuple[str | None, str, str | None]:
    return (b.peer, b.local_ident, b.remote_ident)


def _rate(delta: int, seconds: float | None) -> tuple[str, str]:
    if seconds is None or seconds <= 0:
        return "between the two captures", ""
    return f"in {seconds:.0f} s", f" ({delta / seconds:.2f}/s)"


def _series(
    series: list[tuple[str, float | None, IpsecSa]],
    device: str,
    default_ts: float,
    addrs: list[str],
) -> list[Finding]:
    """Findings of one SA block seen in one or more outputs, oldest first."""
    name, t1, first = series[0]
    lname, t2, last = series[-1]
    c1, c2 = first.counters, last.counters
    ts_last = t2 if t2 is not None else default_ts
    ts_first = min(t1 if t1 is not None else ts_last, ts_last)
    quoted = _quote(name, first.lines) + (_quote(lname, last.lines) if len(series) > 1 else [])
    found: list[tuple[str, dict[str, Any]]] = []
    if len(series) == 1:
        if c2.get("verify_failed", 0) >= MIN_ERRORS:
            found.append(("ipsec-verify-failed", {"verify_failed": c2["verify_failed"]}))
        if c2.get("replay_failed", 0) >= MIN_ERRORS:
            found.append(("ipsec-replay-failed", {"replay_failed": c2["replay_failed"]}))
        if c2.get("encaps", 0) > 0 and c2.get("decaps", -1) == 0:
            found.append(("ipsec-no-decaps", {"encaps": c2["encaps"]}))
        frag = {k: c2[k] for k in _FRAGMENT if c2.get(k, 0) >= MIN_ERRORS}
        if frag:
            found.append(("ipsec-fragmentation", {"counts": _fragment_text(frag)}))
    elif all(c2.get(k, 0) >= c1.get(k, 0) for k in ("encaps", "decaps")):
        # (Counters that went down: the SA was cleared or re-created, no deltas.)
        seconds = (t2 - t1) if t1 is not None and t2 is not None else None
        d = {k: c2.get(k, 0) - c1.get(k, 0) for k in set(c1) | set(c2)}
        for counter, ev in (
            ("verify_failed", "ipsec-verify-failed-growing"),
            ("replay_failed", "ipsec-replay-failed-growing"),
        ):
            if d.get(counter, 0) >= MIN_ERRORS:
                span, rate = _rate(d[counter], seconds)
                found.append(
                    (
                        ev,
                        {
                            "delta": d[counter],
                            "before": c1.get(counter, 0),
                            "after": c2[counter],
                            "span": span,
                            "rate_text": rate,
                            "decaps_delta": d.get("decaps", 0),
                        },
                    )
                )
        frag = {k: d[k] for k in _FRAGMENT if d.get(k, 0) >= MIN_ERRORS}
        if frag:
            span, rate = _rate(sum(frag.values()), seconds)
            found.append(("ipsec-fragmentation-growing", {
                "counts": _fragment_text(frag), "span": span, "rate_text": rate,
            }))  # fmt: skip
        if d.get("encaps", 0) > 0 and d.get("decaps", 0) == 0 and "decaps" in c2:
            span, rate = _rate(d["encaps"], seconds)
            found.append(
                (
                    "ipsec-decaps-flat",
                    {
                        "delta": d["encaps"],
                        "before": c1.get("encaps", 0),
                        "after": c2["encaps"],
                        "decaps": c2["decaps"],
                        "span": span,
                        "rate_text": rate,
                    },
                )
            )
    vals = {"flow": _flow(last)}
    return [
        Finding(
            ev, device, last.peer, ts_first, ts_last, {**vals, **extra}, quoted, addresses=addrs
        )
        for ev, extra in found
    ]


def ipsec_findings(
    snapshots: list[tuple[str, float | None, list[IpsecSa]]],
    device: str,
    default_ts: float,
    addresses: Iterable[str] = (),
) -> list[Finding]:
    """Findings of the ``show crypto ipsec sa`` outputs of one device, oldest first
    (``(file name, time or None, blocks)``)."""
    seen: dict[tuple[str | None, str, str | None], list[tuple[str, float | None, IpsecSa]]] = {}
    for name, t, blocks in snapshots:
        for b in blocks:
            seen.setdefault(_key(b), []).append((name, t, b))
    addrs = sorted(addresses)
    out: list[Finding] = []
    for series in seen.values():
        out.extend(_series(series, device, default_ts, addrs))
    return out


def findings(captures: list[tuple[Capture, str, float]]) -> list[Finding]:
    """Findings of capture files ``(capture, device name, time)``: SA states and what a
    configuration shows on its own per file, counters per device across its files
    (ordered by time, then file order)."""
    out: list[Finding] = []
    per_device: dict[str, list[tuple[int, str, float | None, list[IpsecSa]]]] = {}
    addresses: dict[str, set[str]] = {}
    for order, (cap, device, ts) in enumerate(captures):
        out.extend(isakmp_findings(cap, device, ts))
        out.extend(one_end(cap, device, ts))
        addresses.setdefault(device, set()).update(local_addresses(cap))
        for i, (t, blocks) in enumerate(cap.ipsec_snapshots):
            per_device.setdefault(device, []).append((order * 1000 + i, cap.name, t, blocks))
    for device, snaps in per_device.items():
        snaps.sort(key=lambda s: (s[2] if s[2] is not None else float("-inf"), s[0]))
        default_ts = max((s[2] for s in snaps if s[2] is not None), default=0.0)
        series = [(name, t, blocks) for _, name, t, blocks in snaps]
        out.extend(ipsec_findings(series, device, default_ts, addresses.get(device, ())))
    return out
