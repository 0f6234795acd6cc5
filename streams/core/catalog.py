"""The message catalog: data files that turn message text into normalized kinds.

One YAML file per message family in ``streams/core/catalog/``. Each entry names
either a ``tag`` (``FACILITY-MNEMONIC``; ASA, PIX, FTD and FWSM as ``ASA-<id>``),
a list of ``tags``, or a ``text`` pattern for untagged debug lines; a ``regex``
(a string or a list of strings joined) with named groups; the normalized
``kind``; the ``plane`` (data, ike, lifecycle) and the ``source`` of the format.
Named groups ``peer``, ``local``, ``spi``, ``sequence`` and ``conn_id`` fill the
event's fields of those names; other groups go to ``event.fields``.

Entries sharing a tag are tried in file order; the first whose regex matches
wins. An entry with ``optional_regex: true`` matches its tag even when its regex
does not (its groups are then empty).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from streams.errors import CatalogError

ASA_FACILITIES = frozenset({"ASA", "PIX", "FTD", "FWSM"})
PLANES = frozenset({"data", "ike", "lifecycle"})
STANDARD_GROUPS = ("peer", "local", "spi", "sequence", "conn_id")
_KIND_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_TAG_RE = re.compile(r"^[A-Z][A-Z0-9_]*(?:-[A-Z0-9_]+)*$")

# "Group = <g>, [Username = <u>, ]IP = <peer>," before ASA ISAKMP texts.
ASA_IKE_PREFIX = re.compile(
    r"^\s*(?:Group = (?P<group>[^,]*), )?(?:Username = (?P<user>[^,]*), )?(?:IP = (?P<ip>[^,]*), )?"
)


@dataclass(slots=True, frozen=True)
class Entry:
    id: str
    family: str
    kind: str
    plane: str
    tags: tuple[str, ...]
    text: re.Pattern[str] | None
    regex: re.Pattern[str] | None
    optional_regex: bool
    source: str
    doc: str = ""


@dataclass(slots=True)
class Catalog:
    entries: list[Entry] = field(default_factory=list)
    by_tag: dict[str, tuple[Entry, ...]] = field(default_factory=dict)
    text_entries: tuple[Entry, ...] = ()
    families: dict[str, str] = field(default_factory=dict)

    def kinds(self) -> set[str]:
        return {e.kind for e in self.entries}

    def lookup(self, tag_key: str, body: str) -> tuple[Entry, dict[str, str]] | None:
        """Classify a tagged message; ``None`` when the tag is not in the catalog."""
        entries = self.by_tag.get(tag_key)
        if not entries:
            return None
        for e in entries:
            if e.regex is None:
                return e, {}
            m = e.regex.search(body)
            if m:
                return e, {k: v for k, v in m.groupdict().items() if v}
        for e in entries:
            if e.optional_regex:
                return e, {}
        return None

    def lookup_text(self, line: str) -> tuple[Entry, re.Match[str]] | None:
        """Find an untagged debug pattern in a line."""
        for e in self.text_entries:
            assert e.text is not None
            m = e.text.search(line)
            if m:
                return e, m
        return None


def tag_key(facility: str, mnemonic: str) -> str:
    """The catalog key of a tag: ``CRYPTO-RECVD_PKT_MAC_ERR`` or ``ASA-402120``."""
    if facility in ASA_FACILITIES:
        return "ASA-" + mnemonic
    return facility + "-" + mnemonic


def _regex(value: Any, where: str) -> re.Pattern[str]:
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise CatalogError(f"{where}: regex list must hold strings")
        text = "".join(value)
    elif isinstance(value, str):
        text = value
    else:
        raise CatalogError(f"{where}: regex must be a string or a list of strings")
    try:
        return re.compile(text)
    except re.error as exc:
        raise CatalogError(f"{where}: invalid regex: {exc}") from exc


_ALLOWED_KEYS = frozenset(
    {"id", "tag", "tags", "text", "regex", "kind", "plane", "source", "doc", "optional_regex"}
)


def _entry(raw: Any, family: str, where: str) -> Entry:
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: entry must be a mapping")
    unknown = set(raw) - _ALLOWED_KEYS
    if unknown:
        raise CatalogError(f"{where}: unknown keys {sorted(unknown)}")
    eid = raw.get("id")
    if not isinstance(eid, str) or not eid:
        raise CatalogError(f"{where}: missing id")
    where = f"{where} ({eid})"
    kind = raw.get("kind")
    if not isinstance(kind, str) or not _KIND_RE.match(kind):
        raise CatalogError(f"{where}: kind must be UPPER_SNAKE_CASE")
    plane = raw.get("plane")
    if plane not in PLANES:
        raise CatalogError(f"{where}: plane must be one of {sorted(PLANES)}")
    tags: list[str] = []
    if "tag" in raw:
        tags.append(raw["tag"])
    if "tags" in raw:
        if not isinstance(raw["tags"], list):
            raise CatalogError(f"{where}: tags must be a list")
        tags.extend(raw["tags"])
    for t in tags:
        if not isinstance(t, str) or not _TAG_RE.match(t):
            raise CatalogError(f"{where}: bad tag {t!r} (want FACILITY-MNEMONIC or ASA-<id>)")
    text = _regex(raw["text"], where) if "text" in raw else None
    if bool(tags) == (text is not None):
        raise CatalogError(f"{where}: an entry needs either tag(s) or text, not both")
    regex = _regex(raw["regex"], where) if "regex" in raw else None
    source = raw.get("source")
    if not isinstance(source, str) or not source:
        raise CatalogError(f"{where}: source (verification label) is required")
    return Entry(
        id=eid,
        family=family,
        kind=kind,
        plane=plane,
        tags=tuple(tags),
        text=text,
        regex=regex,
        optional_regex=bool(raw.get("optional_regex", False)),
        source=source,
        doc=str(raw.get("doc", "")),
    )


def load_documents(docs: Iterable[tuple[str, Any]]) -> Catalog:
    """Build a catalog from parsed YAML documents ``(where, document)``."""
    cat = Catalog()
    ids: set[str] = set()
    by_tag: dict[str, list[Entry]] = {}
    texts: list[Entry] = []
    for where, doc in docs:
        if not isinstance(doc, dict):
            raise CatalogError(f"{where}: top level must be a mapping")
        family = doc.get("family")
        if not isinstance(family, str) or not family:
            raise CatalogError(f"{where}: missing family")
        if family in cat.families:
            raise CatalogError(f"{where}: family {family!r} defined twice")
        cat.families[family] = str(doc.get("description", ""))
        messages = doc.get("messages")
        if not isinstance(messages, list) or not messages:
            raise CatalogError(f"{where}: messages must be a non-empty list")
        for i, raw in enumerate(messages):
            e = _entry(raw, family, f"{where}: messages[{i}]")
            if e.id in ids:
                raise CatalogError(f"{where}: duplicate entry id {e.id!r}")
            ids.add(e.id)
            cat.entries.append(e)
            for t in e.tags:
                by_tag.setdefault(t, []).append(e)
            if e.text is not None:
                texts.append(e)
    cat.by_tag = {k: tuple(v) for k, v in by_tag.items()}
    cat.text_entries = tuple(texts)
    return cat


def load_files(paths: Sequence[Path]) -> Catalog:
    docs = []
    for p in paths:
        try:
            docs.append((p.name, yaml.safe_load(p.read_text(encoding="utf-8"))))
        except yaml.YAMLError as exc:
            raise CatalogError(f"{p.name}: not valid YAML: {exc}") from exc
    return load_documents(docs)


_DEFAULT: Catalog | None = None


def default_catalog() -> Catalog:
    """The catalog shipped with the package (loaded once)."""
    global _DEFAULT
    if _DEFAULT is None:
        base = resources.files("streams.core") / "catalog"
        docs = []
        for item in sorted(base.iterdir(), key=lambda t: t.name):
            if item.name.endswith(".yaml"):
                docs.append((item.name, yaml.safe_load(item.read_text(encoding="utf-8"))))
        _DEFAULT = load_documents(docs)
    return _DEFAULT
