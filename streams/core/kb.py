"""The knowledge base: causes, rules and seed coverage, loaded from ``kb/rules.yaml``.

Validated on load; every problem is reported as a :class:`KnowledgeBaseError`
naming the rule and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from streams.errors import KnowledgeBaseError

# The closed vocabulary of causes. Version 1 had the first 13; version 2 added
# split_tunnel_misconfig (ASA 713140, the seed's split tunnelling sections).
CAUSES_V2: tuple[str, ...] = (
    "crypto_engine_fault",
    "qos_reordering",
    "fragmentation_mtu",
    "psk_mismatch",
    "ike_policy_mismatch",
    "transform_set_mismatch",
    "crypto_acl_mismatch",
    "peer_address_mismatch",
    "local_address_misconfig",
    "sa_out_of_sync",
    "peer_unreachable",
    "tunnel_flapping",
    "hardware_unsupported",
    "split_tunnel_misconfig",
)
CAUSES = CAUSES_V2
SEVERITIES = ("critical", "major", "minor", "warning")
RULE_TYPES = ("threshold", "sequence", "absence")
KEYS = ("device+peer", "device")


@dataclass(slots=True, frozen=True)
class Corroboration:
    kinds: frozenset[str]
    window: float
    confidence: float
    note: str
    distinct_peers: int = 0


@dataclass(slots=True, frozen=True)
class Cause:
    name: str
    severity: str
    title: str
    actions: tuple[str, ...]


@dataclass(slots=True, frozen=True)
class Rule:
    id: str
    type: str
    key: str
    window: float
    cause: str
    confidence: float
    summary: str
    kinds: frozenset[str] = frozenset()
    threshold: int = 1
    first: frozenset[str] = frozenset()
    then: frozenset[str] = frozenset()
    expect: frozenset[str] = frozenset()
    unless: frozenset[str] = frozenset()
    resolve_on: frozenset[str] = frozenset()
    corroborate: tuple[Corroboration, ...] = ()
    alternative: str = ""
    seed: str = ""
    quiet_period: float | None = None

    def triggers(self) -> frozenset[str]:
        """Kinds that feed this rule's counting (not the ones that cancel or resolve)."""
        return self.kinds | self.first | self.then


@dataclass(slots=True, frozen=True)
class CaptureEvidence:
    """Evidence read from a `show` capture or a config (``capture_evidence`` in the KB)."""

    id: str
    kind: str
    cause: str
    confidence: float
    corroborate: float
    summary: str
    also_corroborates: frozenset[str] = frozenset()


@dataclass(slots=True, frozen=True)
class Negotiation:
    """How lines of one IKE exchange are grouped (``negotiation`` in ``rules.yaml``).

    ``kinds``: the kinds that belong to an exchange; ``start``: kinds that begin a new
    one (``processing SA payload``); ``success``: kinds that end it well (a proposal
    accepted, phase 1 or 2 done, an SA created); ``gap``: seconds within which lines of
    one exchange follow each other.
    """

    kinds: frozenset[str] = frozenset()
    start: frozenset[str] = frozenset()
    success: frozenset[str] = frozenset()
    gap: float = 5.0


@dataclass(slots=True)
class KnowledgeBase:
    version: int
    quiet_period: float
    lateness: float
    evidence_lines: int
    causes: dict[str, Cause]
    rules: tuple[Rule, ...]
    seed_sections: dict[str, tuple[str, ...]]
    negotiation: Negotiation = field(default_factory=Negotiation)
    by_kind: dict[str, tuple[Rule, ...]] = field(default_factory=dict)
    rule_by_id: dict[str, Rule] = field(default_factory=dict)
    resolvers: dict[str, tuple[Rule, ...]] = field(default_factory=dict)
    watched: frozenset[str] = frozenset()  # kinds remembered for corroborate/unless
    max_window: float = 0.0
    capture_evidence: dict[str, CaptureEvidence] = field(default_factory=dict)

    def __post_init__(self) -> None:
        by_kind: dict[str, list[Rule]] = {}
        resolvers: dict[str, list[Rule]] = {}
        watched: set[str] = set()
        for r in self.rules:
            for k in r.triggers() | r.expect:
                by_kind.setdefault(k, []).append(r)
            for k in r.resolve_on:
                resolvers.setdefault(k, []).append(r)
            watched |= r.unless
            for c in r.corroborate:
                watched |= c.kinds
            self.max_window = max(self.max_window, r.window, *(c.window for c in r.corroborate))
        self.by_kind = {k: tuple(v) for k, v in by_kind.items()}
        self.rule_by_id = {r.id: r for r in self.rules}
        self.resolvers = {k: tuple(v) for k, v in resolvers.items()}
        self.watched = frozenset(watched)

    def kinds_used(self) -> set[str]:
        out: set[str] = set()
        for r in self.rules:
            out |= r.triggers() | r.expect | r.unless | r.resolve_on
            for c in r.corroborate:
                out |= c.kinds
        return out


def _err(where: str, msg: str) -> KnowledgeBaseError:
    return KnowledgeBaseError(f"knowledge base: {where}: {msg}")


def _kinds(raw: dict[str, Any], name: str, where: str, required: bool = False) -> frozenset[str]:
    v = raw.get(name)
    if v is None:
        if required:
            raise _err(where, f"'{name}' is required")
        return frozenset()
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
        raise _err(where, f"'{name}' must be a non-empty list of kinds")
    return frozenset(v)


def _number(raw: dict[str, Any], name: str, where: str, lo: float, hi: float) -> float:
    v = raw.get(name)
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        raise _err(where, f"'{name}' must be a number in [{lo}, {hi}], got {v!r}")
    return float(v)


_RULE_KEYS = frozenset(
    {
        "id", "type", "key", "window", "cause", "confidence", "summary", "kinds", "threshold",
        "first", "then", "expect", "unless", "resolve_on", "corroborate", "alternative", "seed",
        "quiet_period",
    }
)  # fmt: skip


def _rule(raw: Any, i: int, causes: dict[str, Cause], known_kinds: set[str] | None) -> Rule:
    where = f"rules[{i}]"
    if not isinstance(raw, dict):
        raise _err(where, "must be a mapping")
    rid = raw.get("id")
    if not isinstance(rid, str) or not rid:
        raise _err(where, "'id' is required")
    where = f"rule {rid!r}"
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise _err(where, f"unknown fields {sorted(unknown)}")
    rtype = raw.get("type")
    if rtype not in RULE_TYPES:
        raise _err(where, f"'type' must be one of {list(RULE_TYPES)}, got {rtype!r}")
    key = raw.get("key")
    if key not in KEYS:
        raise _err(where, f"'key' must be one of {list(KEYS)}, got {key!r}")
    cause = raw.get("cause")
    if cause not in causes:
        raise _err(where, f"'cause' {cause!r} is not in the closed vocabulary {list(CAUSES)}")
    summary = raw.get("summary")
    if not isinstance(summary, str) or not summary:
        raise _err(where, "'summary' is required")
    kinds = _kinds(raw, "kinds", where, required=rtype in ("threshold", "absence"))
    first = _kinds(raw, "first", where, required=rtype == "sequence")
    then = _kinds(raw, "then", where, required=rtype == "sequence")
    expect = _kinds(raw, "expect", where, required=rtype == "absence")
    threshold = 1
    if rtype == "threshold":
        threshold = int(_number(raw, "threshold", where, 1, 10_000))
    corr: list[Corroboration] = []
    for j, c in enumerate(raw.get("corroborate") or []):
        cw = f"{where} corroborate[{j}]"
        if not isinstance(c, dict):
            raise _err(cw, "must be a mapping")
        corr.append(
            Corroboration(
                kinds=_kinds(c, "kinds", cw, required=True),
                window=_number(c, "window", cw, 1, 86400),
                confidence=_number(c, "confidence", cw, 0, 1),
                note=str(c.get("note", "")),
                distinct_peers=int(c.get("distinct_peers", 0)),
            )
        )
    rule = Rule(
        id=rid,
        type=rtype,
        key=key,
        window=_number(raw, "window", where, 1, 86400),
        cause=cause,
        confidence=_number(raw, "confidence", where, 0, 1),
        summary=summary,
        kinds=kinds,
        threshold=threshold,
        first=first,
        then=then,
        expect=expect,
        unless=_kinds(raw, "unless", where),
        resolve_on=_kinds(raw, "resolve_on", where),
        corroborate=tuple(corr),
        alternative=str(raw.get("alternative", "")),
        seed=str(raw.get("seed", "")),
        quiet_period=(
            _number(raw, "quiet_period", where, 60, 30 * 86400) if "quiet_period" in raw else None
        ),
    )
    if known_kinds is not None:
        for k in rule.triggers() | rule.expect | rule.unless | rule.resolve_on:
            if k not in known_kinds:
                raise _err(where, f"kind {k!r} is not produced by any catalog entry")
    return rule


def load_document(doc: Any, known_kinds: set[str] | None = None) -> KnowledgeBase:
    """Validate a parsed ``rules.yaml``; ``known_kinds`` (from the catalog) checks kind names."""
    if not isinstance(doc, dict):
        raise _err("top level", "must be a mapping")
    version = doc.get("version")
    if not isinstance(version, int) or version < 1:
        raise _err("version", "must be a positive integer")
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise _err("defaults", "must be a mapping")
    raw_causes = doc.get("causes")
    if not isinstance(raw_causes, dict):
        raise _err("causes", "must be a mapping")
    causes: dict[str, Cause] = {}
    for name, c in raw_causes.items():
        if name not in CAUSES:
            raise _err(f"cause {name!r}", f"not in the closed vocabulary {list(CAUSES)}")
        if not isinstance(c, dict):
            raise _err(f"cause {name!r}", "must be a mapping")
        sev = c.get("severity")
        if sev not in SEVERITIES:
            raise _err(f"cause {name!r}", f"'severity' must be one of {list(SEVERITIES)}")
        actions = c.get("actions")
        if (
            not isinstance(actions, list)
            or not actions
            or not all(isinstance(a, str) and a for a in actions)
        ):
            raise _err(f"cause {name!r}", "'actions' must be a non-empty list of strings")
        causes[name] = Cause(name, sev, str(c.get("title", name)), tuple(actions))
    missing = [c for c in CAUSES if c not in causes]
    if missing:
        raise _err("causes", f"no entry for {missing}")
    raw_rules = doc.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise _err("rules", "must be a non-empty list")
    rules = tuple(_rule(r, i, causes, known_kinds) for i, r in enumerate(raw_rules))
    ids = [r.id for r in rules]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise _err("rules", f"duplicate ids {dupes}")
    sections: dict[str, tuple[str, ...]] = {}
    for title, refs in (doc.get("seed_sections") or {}).items():
        if not isinstance(refs, list) or not refs:
            raise _err(f"seed section {title!r}", "must list rule ids")
        for ref in refs:
            if ref not in ids:
                raise _err(f"seed section {title!r}", f"unknown rule {ref!r}")
        sections[str(title)] = tuple(refs)
    evidence = _capture_evidence(doc.get("capture_evidence") or {}, causes)
    return KnowledgeBase(
        capture_evidence=evidence,
        negotiation=_negotiation(doc.get("negotiation"), known_kinds),
        version=version,
        quiet_period=_number(defaults, "quiet_period", "defaults", 1, 7 * 86400),
        lateness=_number(defaults, "lateness", "defaults", 0, 86400),
        evidence_lines=int(_number(defaults, "evidence_lines", "defaults", 1, 100)),
        causes=causes,
        rules=rules,
        seed_sections=sections,
    )


def _capture_evidence(raw: Any, causes: dict[str, Cause]) -> dict[str, CaptureEvidence]:
    if not isinstance(raw, dict):
        raise _err("capture_evidence", "must be a mapping")
    out: dict[str, CaptureEvidence] = {}
    for eid, e in raw.items():
        where = f"capture evidence {eid!r}"
        if not isinstance(e, dict):
            raise _err(where, "must be a mapping")
        unknown = set(e) - {
            "kind",
            "cause",
            "confidence",
            "corroborate",
            "summary",
            "also_corroborates",
        }
        if unknown:
            raise _err(where, f"unknown fields {sorted(unknown)}")
        if e.get("cause") not in causes:
            raise _err(where, f"'cause' {e.get('cause')!r} is not in the closed vocabulary")
        for name in ("kind", "summary"):
            if not isinstance(e.get(name), str) or not e[name]:
                raise _err(where, f"'{name}' is required")
        out[str(eid)] = CaptureEvidence(
            id=str(eid),
            kind=e["kind"],
            cause=e["cause"],
            confidence=_number(e, "confidence", where, 0, 1),
            corroborate=_number(e, "corroborate", where, 0, 1),
            summary=e["summary"],
            also_corroborates=_kinds(e, "also_corroborates", where),
        )
        bad = sorted(out[str(eid)].also_corroborates - set(causes))
        if bad:
            raise _err(where, f"'also_corroborates' names unknown causes {bad}")
    return out


def _negotiation(raw: Any, known_kinds: set[str] | None) -> Negotiation:
    if raw is None:
        return Negotiation()
    where = "negotiation"
    if not isinstance(raw, dict):
        raise _err(where, "must be a mapping")
    unknown = set(raw) - {"kinds", "start", "success", "gap"}
    if unknown:
        raise _err(where, f"unknown fields {sorted(unknown)}")
    neg = Negotiation(
        kinds=_kinds(raw, "kinds", where, required=True),
        start=_kinds(raw, "start", where),
        success=_kinds(raw, "success", where),
        gap=_number(raw, "gap", where, 0, 600),
    )
    if known_kinds is not None:
        for k in neg.kinds | neg.start | neg.success:
            if k not in known_kinds:
                raise _err(where, f"kind {k!r} is not produced by any catalog entry")
    return neg


def load_file(path: Path, known_kinds: set[str] | None = None) -> KnowledgeBase:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise KnowledgeBaseError(f"knowledge base {path}: {exc}") from exc
    return load_document(doc, known_kinds)


_DEFAULT: KnowledgeBase | None = None


def default_kb() -> KnowledgeBase:
    """The knowledge base shipped with the package, checked against the default catalog."""
    global _DEFAULT
    if _DEFAULT is None:
        from streams.core.catalog import default_catalog

        text = (resources.files("streams.core") / "kb" / "rules.yaml").read_text(encoding="utf-8")
        _DEFAULT = load_document(yaml.safe_load(text), default_catalog().kinds())
    return _DEFAULT
