"""The correlation engine: ``step(state, event) -> (state, incidents)`` per device.

Pure and deterministic. Driven only by event time: ``step`` takes events in
arrival order and ``advance(state, watermark)`` closes windows, fires absence
rules and resolves quiet incidents. The state of one device is a plain
dataclass that round-trips through JSON (``to_dict``/``from_dict``), so the
streaming worker can keep it in a changelog-backed table.

The correlation key that partitions work is the device: all rules of a device
(per peer, or per device) live in its state, so corroboration across the peers
of one device needs no cross-partition traffic.
"""

from __future__ import annotations

import hashlib
from bisect import insort
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from streams.core.event import Event, iso_utc
from streams.core.fleet import DeviceClock, FleetClock, FleetCore, Taken
from streams.core.kb import KnowledgeBase, Rule
from streams.core.stories import is_address

INCIDENT_SCHEMA_VERSION = 2
MAX_CONN_IDS = 4096
MAX_RECENT = 256
MAX_ADDRESSES = 16
EMIT_EVERY = 300.0  # seconds of event time between two updates of one incident
SEP = "\x1f"


def incident_id(device: str, peer: str | None, cause: str, first_seen: float) -> str:
    """Deterministic id: the same archive always gives the same ids."""
    text = f"{device}|{peer or ''}|{cause}|{first_seen:.3f}"
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


@dataclass(slots=True)
class Incident:
    incident_id: str
    device: str
    peer: str | None
    cause: str
    rule: str
    confidence: float
    status: str  # open | updated | resolved
    first_seen: float
    last_seen: float
    count: int
    kind_counts: dict[str, int]
    evidence_head: list[str]
    evidence_tail: list[str]
    notes: list[str]
    resolved_at: float | None = None
    resolution: str | None = None
    emitted_count: int = 0
    emitted_ts: float = 0.0
    emitted_confidence: float = 0.0
    # The IKE exchange (attempt) the newest counted event belonged to: more lines of the
    # same negotiation add evidence but do not count again.
    last_attempt: str = ""

    def to_record(self, kb: KnowledgeBase) -> dict[str, Any]:
        """The published record (``schemas/incident.schema.json``)."""
        cause = kb.causes[self.cause]
        rule = kb.rule_by_id[self.rule]
        peer_text = f" from {self.peer}" if self.peer else ""
        summary = rule.summary.format(
            count=self.count,
            peer=self.peer or "an unidentified peer",
            peer_text=peer_text,
            device=self.device,
            window_min=int(rule.window // 60),
        )
        if self.notes:
            summary = summary + ". " + " ".join(self.notes)
        elif not summary.endswith("."):
            summary += "."
        return {
            "schema": INCIDENT_SCHEMA_VERSION,
            "incident_id": self.incident_id,
            "device": self.device,
            "peer": self.peer,
            "cause": self.cause,
            "title": cause.title,
            "confidence": round(self.confidence, 2),
            "severity": cause.severity,
            "status": self.status,
            "first_seen": iso_utc(self.first_seen),
            "last_seen": iso_utc(self.last_seen),
            "resolved_at": iso_utc(self.resolved_at) if self.resolved_at is not None else None,
            "resolution": self.resolution,
            "count": self.count,
            "kinds": sorted(self.kind_counts),
            "kind_counts": dict(sorted(self.kind_counts.items())),
            "rule": self.rule,
            "summary": summary,
            "recommended_actions": list(cause.actions),
            "evidence": self.evidence_head + self.evidence_tail,
            "related": [],
            "device_addresses": [],
        }


@dataclass(slots=True)
class DeviceState:
    """Everything the engine remembers about one device."""

    device: str
    max_ts: float = float("-inf")
    late: int = 0
    conn_peers: dict[str, str] = field(default_factory=dict)
    # rule+peer -> [(ts, raw, kind, attempt)]; rule+peer -> (ts, raw, kind, n[, attempt]);
    # kind -> [(ts, peer, attempt)]
    windows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    pending: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    recent: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    incidents: dict[str, Incident] = field(default_factory=dict)
    # The device's own addresses, learned from the `local` field of its events (bounded):
    # published with its incidents so that consumers can join both ends of a tunnel.
    addresses: list[str] = field(default_factory=list)
    # Open IKE exchanges (see `negotiation` in the KB): attempt id -> [peer or "", newest
    # time]; handle ("c"/"m"/"p" + SEP + conn-id, message ID or peer) -> attempt id; the
    # attempt of the last negotiation line; a counter that makes attempt ids unique.
    exchanges: dict[str, list[Any]] = field(default_factory=dict)
    handles: dict[str, str] = field(default_factory=dict)
    current: str = ""
    serial: int = 0
    # A lower bound of the watermark at which advance() has work to do (not persisted:
    # -inf only costs one recomputation).
    due: float = field(default=float("-inf"), compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["due"]
        d["max_ts"] = None if self.max_ts == float("-inf") else self.max_ts
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeviceState:
        return cls(
            device=d["device"],
            max_ts=float("-inf") if d.get("max_ts") is None else float(d["max_ts"]),
            late=int(d.get("late", 0)),
            conn_peers=dict(d.get("conn_peers", {})),
            windows={k: [tuple(e) for e in v] for k, v in d.get("windows", {}).items()},
            pending={k: tuple(v) for k, v in d.get("pending", {}).items()},
            recent={k: [tuple(e) for e in v] for k, v in d.get("recent", {}).items()},
            incidents={k: Incident(**v) for k, v in d.get("incidents", {}).items()},
            addresses=list(d.get("addresses", [])),
            exchanges={k: list(v) for k, v in d.get("exchanges", {}).items()},
            handles=dict(d.get("handles", {})),
            current=str(d.get("current", "")),
            serial=int(d.get("serial", 0)),
        )


def _with_addresses(state: DeviceState, out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for rec in out:
        rec["device_addresses"] = list(state.addresses)
    return out


def _wkey(rule: Rule, peer: str | None) -> str:
    return rule.id + SEP + (peer or "")


def _ikey(cause: str, peer: str | None) -> str:
    return cause + SEP + (peer or "")


def _corroborate(state: DeviceState, rule: Rule, ts: float) -> tuple[float, list[str]]:
    conf = rule.confidence
    notes: list[str] = []
    for c in rule.corroborate:
        hits = [
            (e[0], e[1])
            for kind in c.kinds
            for e in state.recent.get(kind, ())
            if ts - c.window <= e[0] <= ts + c.window
        ]
        if c.distinct_peers:
            peers = {p for _, p in hits if p}
            ok = len(peers) >= c.distinct_peers
            note = c.note.format(peers=len(peers))
        else:
            ok = bool(hits)
            note = c.note
        if ok and c.confidence >= conf:
            conf = c.confidence
            notes.append(note)
    if not notes and rule.alternative:
        notes.append(rule.alternative)
    return conf, notes


def _seen(
    state: DeviceState, kinds: Iterable[str], peer: str | None, ts: float, window: float
) -> bool:
    for kind in kinds:
        for e in state.recent.get(kind, ()):
            if (peer is None or e[1] == peer) and ts - window <= e[0] <= ts + window:
                return True
    return False


def _attempt_of(entry: tuple[Any, ...] | list[Any], at: int) -> str:
    """The attempt id stored at ``entry[at]`` ("" for events outside an exchange, and for
    entries of states saved before attempts were kept)."""
    return str(entry[at]) if len(entry) > at else ""


def _attempts(entries: Iterable[tuple[Any, ...]]) -> int:
    """How many attempts a window holds: the lines of one exchange count once."""
    seen: set[str] = set()
    n = 0
    for e in entries:
        a = _attempt_of(e, 3)
        if not a:
            n += 1
        elif a not in seen:
            seen.add(a)
            n += 1
    return n


def _live(state: DeviceState, attempt: str, ts: float, gap: float) -> bool:
    ex = state.exchanges.get(attempt)
    return ex is not None and abs(ts - float(ex[1])) <= gap


def _forget_stale(state: DeviceState, ts: float, gap: float) -> None:
    """Drop exchanges that ended more than ``gap`` ago (and their handles)."""
    stale = {a for a, ex in state.exchanges.items() if float(ex[1]) < ts - gap}
    if stale:
        for a in stale:
            del state.exchanges[a]
        state.handles = {h: a for h, a in state.handles.items() if a not in stale}
        if state.current in stale:
            state.current = ""


def _withdraw(
    state: DeviceState, attempt: str, peers: Iterable[str], rule_ids: Iterable[str]
) -> None:
    """An exchange ended well: what its lines counted toward thresholds and sequences no
    longer counts (a refused proposal followed by an accepted one is no fault).

    Its lines are in the windows of its peer (``peers``: the exchange's and the line's),
    or in peer-less ones: only those are read, not every window of the device (a busy
    firewall keeps thousands, one per remote peer, and healthy re-keys end exchanges all
    day)."""
    keys = {rid + SEP + p for rid in rule_ids for p in {"", *peers}}
    windows = state.windows
    for wkey in keys & windows.keys():
        win = windows[wkey]
        kept = [e for e in win if _attempt_of(e, 3) != attempt]
        if len(kept) != len(win):
            if kept:
                windows[wkey] = kept
            else:
                del windows[wkey]
    for wkey in keys & state.pending.keys():
        if _attempt_of(state.pending[wkey], 4) == attempt:
            del state.pending[wkey]


def _adopt(state: DeviceState, attempt: str, peer: str) -> list[str]:
    """An exchange learned its peer: its peer-less lines so far are that peer's. Returns the
    windows that received lines (they may now reach their threshold)."""
    moved: list[str] = []
    for wkey, win in list(state.windows.items()):
        rule_id, wpeer = wkey.split(SEP, 1)
        if wpeer:
            continue
        mine = [e for e in win if _attempt_of(e, 3) == attempt]
        if not mine:
            continue
        rest = [e for e in win if _attempt_of(e, 3) != attempt]
        if rest:
            state.windows[wkey] = rest
        else:
            del state.windows[wkey]
        target = state.windows.setdefault(rule_id + SEP + peer, [])
        for e in mine:
            insort(target, e)
        moved.append(rule_id + SEP + peer)
    for wkey, p in list(state.pending.items()):
        rule_id, wpeer = wkey.split(SEP, 1)
        if not wpeer and _attempt_of(p, 4) == attempt:
            del state.pending[wkey]
            state.pending.setdefault(rule_id + SEP + peer, p)
    for lst in state.recent.values():
        for i, e in enumerate(lst):
            if e[1] is None and _attempt_of(e, 2) == attempt:
                lst[i] = (e[0], peer, attempt)
    return moved


def _reached(state: DeviceState, kb: KnowledgeBase, wkeys: list[str]) -> list[dict[str, Any]]:
    """Open the incidents of threshold windows that lines moved into reach (a peer named
    by the last line of an exchange, after its counted lines)."""
    out: list[dict[str, Any]] = []
    folded: set[tuple[str, float, str]] = set()
    for wkey in wkeys:
        rule_id, peer = wkey.split(SEP, 1)
        rule = kb.rule_by_id.get(rule_id)
        win = state.windows.get(wkey)
        if rule is None or rule.type != "threshold" or not win:
            continue
        ikey = _ikey(rule.cause, peer)
        inc = state.incidents.get(ikey)
        if inc is not None:
            # The peer's incident is open: the exchange's lines are more of its evidence
            # (once each, when two rules of its cause held them).
            del state.windows[wkey]
            worth = False
            for e in win:
                if (ikey, e[0], e[1]) not in folded:
                    folded.add((ikey, e[0], e[1]))
                    worth = _update(state, kb, inc, e[0], e[1], e[2], _attempt_of(e, 3)) or worth
            if worth:
                out.append(_emit(inc, kb))
            continue
        if _attempts(win) < rule.threshold:
            continue
        if rule.unless and _seen(state, rule.unless, peer, win[-1][0], rule.window):
            continue
        del state.windows[wkey]
        out.append(_emit(_open(state, kb, rule, peer, win), kb))
    return out


def _exchange(
    state: DeviceState, kb: KnowledgeBase, ev: Event, kind: str, peer: str | None
) -> tuple[str | None, str, list[str]]:
    """Put a negotiation line in its exchange; return its peer (the exchange's when the
    line names none), the attempt it counts for ("" once the exchange succeeded) and the
    windows that received the exchange's lines when it learned its peer."""
    neg = kb.negotiation
    ts = ev.ts
    handles: list[str] = []
    if ev.conn_id:
        handles.append("c" + SEP + ev.conn_id)
    msgid = ev.fields.get("msgid")
    if msgid and msgid != "0":
        handles.append("m" + SEP + msgid)
    if peer:
        handles.append("p" + SEP + peer)
    attempt = ""
    for h in handles:
        a = state.handles.get(h)
        if a is not None and _live(state, a, ts, neg.gap):
            ex_peer = state.exchanges[a][0]
            if not peer or not ex_peer or ex_peer == peer:
                attempt = a
                break
    cur = state.current
    if not attempt and not ev.conn_id and cur and _live(state, cur, ts, neg.gap):
        # A line that names no conn-id continues the exchange of the line before it,
        # unless it names another peer. A success that names a peer never takes over an
        # exchange whose peer is unknown: it could be another tunnel's, and it would
        # withdraw what that exchange counted.
        cur_peer = state.exchanges[cur][0]
        if not peer or cur_peer == peer or (not cur_peer and kind not in neg.success):
            attempt = cur
    if kind in neg.start or not attempt:
        inherited = state.exchanges[attempt][0] if attempt else ""
        _forget_stale(state, ts, neg.gap)
        attempt = f"{ts:.3f}{SEP}{state.serial}"
        state.serial += 1
        state.exchanges[attempt] = [peer or inherited, ts]
        if len(state.exchanges) > MAX_CONN_IDS:
            oldest = next(iter(state.exchanges))
            del state.exchanges[oldest]
    ex = state.exchanges[attempt]
    ex[1] = max(float(ex[1]), ts)
    for h in handles:
        state.handles[h] = attempt
    if len(state.handles) > MAX_CONN_IDS:
        del state.handles[next(iter(state.handles))]
    state.current = attempt
    moved: list[str] = []
    if peer is None:
        peer = ex[0] or None
    elif not ex[0]:
        ex[0] = peer
        moved = _adopt(state, attempt, peer)
    if kind in neg.success:
        _withdraw(state, attempt, (peer or "", ex[0] or ""), kb.rule_by_id)
        # The exchange goes on (phase 2 after phase 1) as a new attempt of the same peer.
        fresh = f"{ts:.3f}{SEP}{state.serial}"
        state.serial += 1
        state.exchanges[fresh] = [ex[0], ts]
        del state.exchanges[attempt]
        for h, a in list(state.handles.items()):
            if a == attempt:
                state.handles[h] = fresh
        state.current = fresh
        return peer, "", moved
    return peer, attempt, moved


def _open(
    state: DeviceState,
    kb: KnowledgeBase,
    rule: Rule,
    peer: str | None,
    entries: list[tuple[Any, ...]],
    count: int | None = None,
) -> Incident:
    first = entries[0][0]
    last = max(e[0] for e in entries)
    kinds: dict[str, int] = {}
    for e in entries:
        kinds[e[2]] = kinds.get(e[2], 0) + 1
    raws = [e[1] for e in entries]
    head_n = max(1, kb.evidence_lines - 2)
    conf, notes = _corroborate(state, rule, last)
    newest = max(entries, key=lambda e: e[0])
    inc = Incident(
        incident_id=incident_id(state.device, peer, rule.cause, first),
        device=state.device,
        peer=peer,
        cause=rule.cause,
        rule=rule.id,
        confidence=conf,
        status="open",
        first_seen=first,
        last_seen=last,
        count=count if count is not None else _attempts(entries),
        kind_counts=kinds,
        evidence_head=raws[:head_n],
        evidence_tail=raws[head_n:][-(kb.evidence_lines - head_n) :],
        notes=notes,
        last_attempt=_attempt_of(newest, 3),
    )
    state.incidents[_ikey(rule.cause, peer)] = inc
    state.due = min(state.due, last + kb.quiet_period)
    return inc


def _update(
    state: DeviceState,
    kb: KnowledgeBase,
    inc: Incident,
    ts: float,
    raw: str,
    kind: str,
    attempt: str,
) -> bool:
    """Add one event to an incident; True when the change is worth publishing. A line of
    the attempt counted last adds evidence, not count."""
    if not attempt or attempt != inc.last_attempt:
        inc.count += 1
    inc.last_attempt = attempt
    inc.kind_counts[kind] = inc.kind_counts.get(kind, 0) + 1
    inc.first_seen = min(inc.first_seen, ts)
    inc.last_seen = max(inc.last_seen, ts)
    head_n = max(1, kb.evidence_lines - 2)
    if len(inc.evidence_head) < head_n:
        inc.evidence_head.append(raw)
    else:
        inc.evidence_tail.append(raw)
        del inc.evidence_tail[: -(kb.evidence_lines - head_n)]
    inc.status = "updated"
    rule = kb.rule_by_id[inc.rule]
    inc.confidence, inc.notes = _corroborate(state, rule, inc.last_seen)
    n = inc.count
    return (
        (n & (n - 1)) == 0
        or inc.confidence != inc.emitted_confidence
        or inc.last_seen - inc.emitted_ts >= EMIT_EVERY
    )


def _emit(inc: Incident, kb: KnowledgeBase) -> dict[str, Any]:
    inc.emitted_count = inc.count
    inc.emitted_ts = inc.last_seen
    inc.emitted_confidence = inc.confidence
    return inc.to_record(kb)


def _resolve(inc: Incident, at: float, how: str, kb: KnowledgeBase) -> dict[str, Any]:
    inc.status = "resolved"
    inc.resolved_at = at
    inc.resolution = how
    return _emit(inc, kb)


_NOTHING: tuple[dict[str, Any], ...] = ()


def _move_clock(
    state: DeviceState, ts: float, kb: KnowledgeBase
) -> list[dict[str, Any]] | tuple[dict[str, Any], ...] | None:
    """What every event does first: count it late (None), or move the device's clock to
    ``ts`` and return the records that moving it resolved or fired (usually none)."""
    if ts < state.max_ts - kb.lateness:
        state.late += 1
        return None
    if ts > state.max_ts:
        # The device's own clock moved on: first do what advance() would have done by now
        # (quiet incidents resolve, absences fire), so that an episode hours later is a new
        # incident however rarely the caller advances.
        wm = ts - kb.lateness
        if state.max_ts != float("-inf") and wm >= state.due:
            due = _next_due(state, kb)
            out: list[dict[str, Any]] | tuple[dict[str, Any], ...] = _NOTHING
            if wm >= due:
                _, out = advance(state, wm, kb)
                due = _next_due(state, kb)
            state.due = due
            state.max_ts = ts
            return out
        state.max_ts = ts
    return _NOTHING


def clock(state: DeviceState, ts: float, kb: KnowledgeBase) -> list[dict[str, Any]]:
    """``step`` for an event without a kind (a message outside the catalog): it only
    moves the device's clock. The incident records that changed."""
    moved = _move_clock(state, ts, kb)
    return _with_addresses(state, list(moved)) if moved else []


def step(
    state: DeviceState, ev: Event, kb: KnowledgeBase
) -> tuple[DeviceState, list[dict[str, Any]]]:
    """Feed one event of ``state.device``; return the state and the incident records it changed."""
    ts = ev.ts
    kind = ev.kind
    if kind is None:
        return state, clock(state, ts, kb)
    moved = _move_clock(state, ts, kb)
    if moved is None:
        return state, []
    out = list(moved)
    if (
        ev.local
        and ev.local not in state.addresses
        and len(state.addresses) < MAX_ADDRESSES
        and is_address(ev.local)
    ):
        state.addresses.append(ev.local)
    peer = ev.peer
    if ev.conn_id:
        if peer:
            if ev.conn_id not in state.conn_peers and len(state.conn_peers) >= MAX_CONN_IDS:
                del state.conn_peers[next(iter(state.conn_peers))]
            state.conn_peers[ev.conn_id] = peer
        else:
            peer = state.conn_peers.get(ev.conn_id)
    attempt = ""
    if kind in kb.negotiation.kinds:
        peer, attempt, filled = _exchange(state, kb, ev, kind, peer)
        if filled:
            out.extend(_reached(state, kb, filled))

    for r in kb.resolvers.get(kind, ()):
        ikey = _ikey(r.cause, peer if r.key == "device+peer" else None)
        inc = state.incidents.get(ikey)
        if inc is not None and inc.rule == r.id and inc.last_seen <= ts:
            del state.incidents[ikey]
            out.append(_resolve(inc, ts, f"{kind} seen: the tunnel came up", kb))

    if kind in kb.watched:
        lst = state.recent.setdefault(kind, [])
        lst.append((ts, peer, attempt))
        if len(lst) > MAX_RECENT:
            del lst[: len(lst) - MAX_RECENT]

    touched: set[str] = set()
    for r in kb.by_kind.get(kind, ()):
        kpeer = peer if r.key == "device+peer" else None
        ikey = _ikey(r.cause, kpeer)
        wkey = _wkey(r, kpeer)
        inc = state.incidents.get(ikey)
        if r.type == "absence" and kind in r.expect:
            state.pending.pop(wkey, None)
            continue
        if inc is not None:
            if ikey not in touched and kind in r.triggers():
                touched.add(ikey)
                if _update(state, kb, inc, ts, ev.raw, kind, attempt):
                    out.append(_emit(inc, kb))
            continue
        if r.unless and _seen(state, r.unless, kpeer, ts, r.window):
            continue
        if r.type == "threshold":
            win = state.windows.setdefault(wkey, [])
            insort(win, (ts, ev.raw, kind, attempt))
            newest = win[-1][0]
            while win and win[0][0] < newest - r.window:
                del win[0]
            if _attempts(win) >= r.threshold:
                del state.windows[wkey]
                touched.add(ikey)
                out.append(_emit(_open(state, kb, r, kpeer, win), kb))
        elif r.type == "sequence":
            p = state.pending.get(wkey)
            if kind in r.then and p is not None and 0 <= ts - p[0] <= r.window:
                del state.pending[wkey]
                touched.add(ikey)
                entries = [(p[0], p[1], p[2], _attempt_of(p, 4)), (ts, ev.raw, kind, attempt)]
                out.append(_emit(_open(state, kb, r, kpeer, entries), kb))
            elif kind in r.first:
                state.pending[wkey] = (ts, ev.raw, kind, 1, attempt)
        else:  # absence trigger
            p = state.pending.get(wkey)
            if p is None:
                state.pending[wkey] = (ts, ev.raw, kind, 1)
                state.due = min(state.due, ts + r.window)
            else:
                state.pending[wkey] = (p[0], p[1], p[2], p[3] + 1)
    return state, _with_addresses(state, out)


def _quiet(kb: KnowledgeBase, inc: Incident) -> float:
    """How long an incident stays open without evidence: the rule's own period, else the KB's.

    An outage (peer unreachable) is not over because it went quiet: its rule keeps it open
    for a day unless the tunnel is seen coming back (resolve_on).
    """
    q = kb.rule_by_id[inc.rule].quiet_period
    return q if q is not None else kb.quiet_period


def _next_due(state: DeviceState, kb: KnowledgeBase) -> float:
    """The earliest watermark at which advance() fires an absence or resolves an incident."""
    due = float("inf")
    for wkey, p in state.pending.items():
        rule = kb.rule_by_id.get(wkey.split(SEP, 1)[0])
        if rule is not None and rule.type == "absence":
            due = min(due, p[0] + rule.window)
    for inc in state.incidents.values():
        due = min(due, inc.last_seen + _quiet(kb, inc))
    return due


def advance(
    state: DeviceState, watermark: float, kb: KnowledgeBase
) -> tuple[DeviceState, list[dict[str, Any]]]:
    """Move event time to ``watermark``: fire absences, drop stale windows, resolve quiet ones."""
    out: list[dict[str, Any]] = []
    for wkey, p in list(state.pending.items()):
        rule = kb.rule_by_id.get(wkey.split(SEP, 1)[0])
        if rule is None or watermark < p[0] + rule.window:
            continue
        del state.pending[wkey]
        if rule.type == "absence":
            peer = wkey.split(SEP, 1)[1] or None
            if _ikey(rule.cause, peer) not in state.incidents:
                inc = _open(state, kb, rule, peer, [(p[0], p[1], p[2])], count=p[3])
                out.append(_emit(inc, kb))
    for wkey, win in list(state.windows.items()):
        rule = kb.rule_by_id.get(wkey.split(SEP, 1)[0])
        if rule is None or not win or win[-1][0] < watermark - rule.window:
            del state.windows[wkey]
    horizon = watermark - kb.max_window
    for kind, lst in list(state.recent.items()):
        while lst and lst[0][0] < horizon:
            del lst[0]
        if not lst:
            del state.recent[kind]
    for ikey, inc in list(state.incidents.items()):
        quiet = _quiet(kb, inc)
        if inc.last_seen + quiet <= watermark:
            del state.incidents[ikey]
            out.append(_resolve(inc, inc.last_seen + quiet, "quiet period elapsed", kb))
    return state, _with_addresses(state, out)


def flush(state: DeviceState, kb: KnowledgeBase) -> list[dict[str, Any]]:
    """Current records of every active incident (end of an archive)."""
    return _with_addresses(state, [inc.to_record(kb) for inc in state.incidents.values()])


def next_due(state: DeviceState, kb: KnowledgeBase) -> float:
    """The engine time at which the device has work to do without a new line (inf: none);
    kept in ``state.due``."""
    if state.due == float("-inf"):
        state.due = _next_due(state, kb)
    return state.due


def apply_admitted(
    state: DeviceState, admitted: Iterable[tuple[Event | None, float]], kb: KnowledgeBase
) -> list[dict[str, Any]]:
    """Feed a device the lines its fleet clock admitted (:meth:`FleetClock.admit`), each
    at its engine time; ``None`` items are clock rows. The incident records changed."""
    out: list[dict[str, Any]] = []
    for item, ts in admitted:
        if item is None or item.kind is None:
            out.extend(clock(state, ts, kb))
        else:
            e = item if item.ts == ts else replace(item, ts=ts)
            out.extend(step(state, e, kb)[1])
    return out


def advance_due(
    fleet: FleetClock[Any], state_of: Callable[[str], DeviceState | None], kb: KnowledgeBase
) -> list[dict[str, Any]]:
    """One tick of the fleet clock, for ``analyze`` and the worker alike: settle the clock
    jumps held too long, then advance the devices that have work to do (silent ones) to
    their watermarks and schedule their next work."""
    out: list[dict[str, Any]] = []
    for device, dc in fleet.overdue():
        st = state_of(device)
        if st is not None:
            out.extend(apply_admitted(st, fleet.settle(device, dc), kb))
    for device, dc in list(fleet.due()):
        st = state_of(device)
        if st is None:
            continue
        out.extend(advance(st, fleet.watermark(dc, st.max_ts), kb)[1])
        st.due = _next_due(st, kb)
        fleet.schedule(device, dc, st.due)
    return out


def from_core(
    fleet: FleetClock[Event | None], name: str, got: Taken
) -> tuple[DeviceState, DeviceClock[Event | None]]:
    """The state and clock of a device the native core held (``FleetCore.promote``'s
    fields), its clock in ``fleet``: its numbers carry on (its lane already counts it)."""
    lane, offset, last, reading, seen, skew, max_ts, late = got[:8]
    dc: DeviceClock[Event | None] = DeviceClock(
        lane=lane, offset=offset, last=last, reading=reading, seen=seen, skew=skew
    )
    fleet.devices[name] = dc
    if offset is not None:
        fleet.lane(lane)  # the core's, which FleetClock.ordinary reads
    return DeviceState(name, max_ts=max_ts, late=late), dc


@dataclass
class Correlator:
    """Runs the engine in-process over many devices (``tunnelwatch analyze``).

    Each device runs on its own clock; the fleet clock (:mod:`streams.core.fleet`) holds
    back stamps that jump and advances the devices that fell silent. ``lane_of`` names the
    lane of a device (the stream's partition: ``analyze`` passes the partitioner of the
    stream so that both read each lane in the same order); None: one lane.

    With a native fleet core (:meth:`use_core`), the lanes and the devices that only ever
    moved their clock live in Rust: the scanner applies their clock rows there
    (``Scanner.scan_fleet``) and hands the others to :meth:`on_rows`; a device the core
    held comes here (:meth:`_pair`) with the numbers the core had for it.
    """

    kb: KnowledgeBase
    lane_of: Callable[[str], int] | None = None
    states: dict[str, DeviceState] = field(default_factory=dict)
    unknown_device: str = "unknown"
    fleet: FleetClock[Event | None] = field(init=False)
    core: FleetCore | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.fleet = FleetClock(self.kb.lateness, self.lane_of)
        # (state, clock) of each device, for the hot path (clocks); the clock of a device
        # never changes object in analyze (only the worker's Shard moves devices).
        self._pairs: dict[str, tuple[DeviceState, DeviceClock[Event | None]]] = {}
        # The incident records of the rows given to on_rows, for the caller to take.
        self.changed: list[dict[str, Any]] = []

    def use_core(self, core: FleetCore) -> None:
        """Keep the lanes and the native devices in ``core`` (before any line)."""
        if self.fleet.devices or self.fleet.lanes or self._pairs:
            raise RuntimeError("use_core: the correlator has already read lines")
        self.core = core
        self.fleet.make_lane = core.lane

    def _pair(self, name: str) -> tuple[DeviceState, DeviceClock[Event | None]]:
        """The state and clock of a device, made (or taken from the core) when new."""
        pair = self._pairs.get(name)
        if pair is not None:
            return pair
        core = self.core
        got = core.promote(name) if core is not None else None
        if got is None:
            pair = (self._state(name), self.fleet.device(name))
        else:
            pair = from_core(self.fleet, name, got)
            self.states[name] = pair[0]
        self._pairs[name] = pair
        return pair

    def _state(self, device: str) -> DeviceState:
        st = self.states.get(device)
        if st is None:
            st = self.states[device] = DeviceState(device)
        return st

    def feed(self, ev: Event) -> list[dict[str, Any]]:
        device = ev.device or self.unknown_device
        st, dc = self._pair(device)
        fleet = self.fleet
        out = apply_admitted(
            st, fleet.admit(device, dc, ev, ev.ts, ev.time_source != "inferred", ev.raw), kb=self.kb
        )
        fleet.schedule(device, dc, next_due(st, self.kb))
        return out

    def clock(self, device: str | None, ts: float, time_source: str) -> list[dict[str, Any]]:
        """``feed`` of an event without a kind, given only what the engine reads of it."""
        return self.clocks([(device, ts, time_source, None, None)])

    def clocks(self, rows: Iterable[tuple[Any, ...]]) -> list[dict[str, Any]]:
        """``clock`` of each row ``(device, ts, time_source, clock_synced, tz_known[,
        text])`` in order (the native scanner's clock rows; the text, when there, is what
        a held line is reported with): the incident records that changed."""
        out: list[dict[str, Any]] = []
        kb = self.kb
        fleet = self.fleet
        pairs = self._pairs
        unknown = self.unknown_device
        ordinary = fleet.ordinary
        first = fleet.first
        for row in rows:
            ts = row[1]
            source = row[2]
            name = row[0] or unknown
            # One lookup for the device's state and clock: with 100k devices neither
            # dict stays in the CPU's caches, and each lookup is a memory round trip.
            pair = pairs.get(name)
            if pair is None:
                pair = self._pair(name)
            st, dc = pair
            eng = ts + dc.correction
            if source == "inferred" or ordinary(name, dc, eng) or first(name, dc, eng):
                recs = clock(st, eng, kb)
                if recs:
                    out.extend(recs)
            else:
                raw = row[5] if len(row) > 5 else ""
                out.extend(apply_admitted(st, fleet.admit(name, dc, None, ts, True, raw), kb))
            due = st.due
            if due == float("-inf"):
                due = next_due(st, kb)
            fleet.schedule(name, dc, due)
        return out

    def on_rows(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """``clocks`` of rows the native core gave back (their devices are Python's); the
        incident records that changed go to :attr:`changed`."""
        recs = self.clocks(rows)
        if recs:
            self.changed.extend(recs)

    def tick(self) -> list[dict[str, Any]]:
        """Advance the devices that have work to do by the fleet clock (silent ones)."""
        return advance_due(self.fleet, self.states.get, self.kb)

    def finish(self) -> list[dict[str, Any]]:
        """The end of the input: undecided clock jumps settled, due work done, and the
        current records of every active incident."""
        out: list[dict[str, Any]] = []
        for device, dc in self.fleet.holding():
            out.extend(apply_admitted(self._state(device), self.fleet.settle(device, dc), self.kb))
        out.extend(self.tick())
        for st in self.states.values():
            out.extend(flush(st, self.kb))
        return out

    def skews(self, minimum: float = 60.0) -> dict[str, float]:
        """Devices whose clock is off from the fleet's by more than ``minimum`` seconds."""
        return self.fleet.skews(minimum, self.core)

    def clock_anomalies(self) -> dict[str, tuple[int, int, list[str]]]:
        """Devices whose clock jumped or sent outlier stamps: (jumps, outliers, lines)."""
        return {
            d: (dc.jumps, dc.outliers, list(dc.anomalies))
            for d, dc in self.fleet.devices.items()
            if dc.jumps or dc.outliers
        }


# --- Evidence from `show` captures and configs (streams.core.captures) -----------------

MAX_EVIDENCE = 20  # schemas/incident.schema.json: evidence maxItems


def evidence_incident(
    kb: KnowledgeBase,
    evidence: str,
    device: str,
    peer: str | None,
    first_seen: float,
    last_seen: float,
    values: dict[str, Any],
    lines: list[str],
    fix: str | None = None,
    addresses: Iterable[str] = (),
) -> dict[str, Any]:
    """The incident record of one piece of capture or config evidence (the KB's
    ``capture_evidence``): the same causes, titles and actions as syslog incidents; a
    specific ``fix`` comes first among the actions. The evidence is the quoted lines."""
    ev = kb.capture_evidence[evidence]
    cause = kb.causes[ev.cause]
    summary = ev.summary.format(peer=peer or "an unidentified peer", device=device, **values)
    if not summary.endswith("."):
        summary += "."
    return {
        "schema": INCIDENT_SCHEMA_VERSION,
        "incident_id": incident_id(device, peer, ev.cause + SEP + evidence, first_seen),
        "device": device,
        "peer": peer,
        "cause": ev.cause,
        "title": cause.title,
        "confidence": round(ev.confidence, 2),
        "severity": cause.severity,
        "status": "open",
        "first_seen": iso_utc(first_seen),
        "last_seen": iso_utc(last_seen),
        "resolved_at": None,
        "resolution": None,
        "count": 1,
        "kinds": [ev.kind],
        "kind_counts": {ev.kind: 1},
        "rule": f"capture:{evidence}",
        "summary": summary,
        "recommended_actions": ([fix] if fix else []) + list(cause.actions),
        "evidence": list(lines[:MAX_EVIDENCE]) or [summary],
        "related": [],
        "device_addresses": [a for a in addresses if is_address(a)][:MAX_ADDRESSES],
    }


def _same_device(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a["device"] == b["device"]:
        return True
    return bool(
        a["device"] in b["device_addresses"]
        or b["device"] in a["device_addresses"]
        or set(a["device_addresses"]) & set(b["device_addresses"])
    )


def corroborate_incidents(
    kb: KnowledgeBase, records: list[dict[str, Any]], evidence: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Join capture/config evidence records to the syslog incidents they corroborate: an
    incident of the same device (by name or address), cause (or one of the evidence's
    ``also_corroborates``) and peer (or a device-level incident without a peer) takes the
    capture's kind, lines and numbers, and its
    confidence rises to at least the evidence's ``corroborate``. Evidence that
    corroborates nothing stays an incident of its own. Returns the records to publish."""
    extra: list[dict[str, Any]] = []
    for ev in evidence:
        spec = kb.capture_evidence[ev["rule"].split(":", 1)[1]]
        hits = [
            r
            for r in records
            if (r["cause"] == ev["cause"] or r["cause"] in spec.also_corroborates)
            and _same_device(r, ev)
            and (r["peer"] is None or ev["peer"] is None or r["peer"] == ev["peer"])
        ]
        if not hits:
            extra.append(ev)
            continue
        for r in hits:
            r["confidence"] = round(max(r["confidence"], spec.corroborate), 2)
            kind = spec.kind
            r["kind_counts"][kind] = r["kind_counts"].get(kind, 0) + 1
            r["kind_counts"] = dict(sorted(r["kind_counts"].items()))
            r["kinds"] = sorted(r["kind_counts"])
            lines = ev["evidence"][: MAX_EVIDENCE // 2]
            r["evidence"] = r["evidence"][: MAX_EVIDENCE - len(lines)] + lines
            r["summary"] = r["summary"] + " Corroborated by a capture: " + ev["summary"]
    return records + extra
