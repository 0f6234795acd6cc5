"""Golden cases: raw Cisco lines and the event fields they must parse to.

Layout (napalm-logs style)::

    tests/golden/<family>/<KIND>/<case>/input.log      one or a few raw lines
    tests/golden/<family>/<KIND>/<case>/expected.json  {"year": 2024, "events": [...]}
    tests/golden/<family>/<KIND>/<case>/source.txt     where the line comes from

``events`` holds one object per record of ``input.log`` (after framing), in
order. Each object lists the fields of ``Event.to_record()`` to check;
``fields`` is checked as a subset. ``{"unparsed": true}`` expects an
:class:`Unparsed` record. An optional ``start`` (ISO 8601 with offset) is the capture's
time (``--start``), the time of uptime-stamped and unstamped lines. The expected values were worked out from the line
itself, not copied from the parser's output.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from streams.core.catalog import default_catalog
from streams.core.event import Event, Unparsed
from streams.core.framing import iter_records
from streams.core.parse import Parser

GOLDEN = Path(__file__).parent / "golden"
# tests/golden/captures/ holds the `show` capture cases (tests/test_captures_golden.py).
CASE_DIRS = sorted(
    p.parent for p in GOLDEN.glob("*/*/*/expected.json") if p.parts[-4] != "captures"
)
REQUIRED = ("entry", "kind", "device", "timestamp")


def _case_id(case: Path) -> str:
    return case.relative_to(GOLDEN).as_posix()


def _expected(case: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((case / "expected.json").read_text(encoding="utf-8"))
    return data


def _parse_case(case: Path) -> list[Event | Unparsed]:
    expected = _expected(case)
    start = expected.get("start")
    context = datetime.fromisoformat(start).timestamp() if start is not None else None
    parser = Parser(year=expected["year"], context_ts=context, captures=True)
    text = (case / "input.log").read_text(encoding="utf-8")
    return [parser.parse(rec) for rec in iter_records(text.splitlines())]


def _first_classified(events: list[Event | Unparsed]) -> Event | None:
    for ev in events:
        if isinstance(ev, Event) and ev.entry is not None:
            return ev
    return None


def test_the_golden_directory_holds_cases() -> None:
    assert len(CASE_DIRS) >= 80


@pytest.mark.parametrize("case", CASE_DIRS, ids=_case_id)
def test_a_golden_line_parses_to_its_expected_fields(case: Path) -> None:
    expected = _expected(case)
    assert isinstance(expected.get("year"), int)
    wanted: list[dict[str, Any]] = expected["events"]
    got = _parse_case(case)
    assert len(got) == len(wanted), f"{len(got)} records after framing, expected {len(wanted)}"
    for i, (ev, want) in enumerate(zip(got, wanted, strict=True)):
        if want.get("unparsed"):
            assert isinstance(ev, Unparsed), f"record {i}: expected Unparsed, got {ev!r}"
            continue
        assert isinstance(ev, Event), f"record {i}: {ev!r}"
        for key in REQUIRED:
            assert key in want, f"record {i}: expected.json must state {key!r}"
        record = ev.to_record()
        for key, value in want.items():
            assert key in record, f"record {i}: {key!r} is not an event field"
            if key == "fields":
                for fkey, fvalue in value.items():
                    assert record["fields"].get(fkey) == fvalue, (
                        f"record {i}: fields[{fkey!r}] = {record['fields'].get(fkey)!r}, "
                        f"expected {fvalue!r}\n  raw: {ev.raw!r}"
                    )
            else:
                assert record[key] == value, (
                    f"record {i}: {key} = {record[key]!r}, expected {value!r}\n  raw: {ev.raw!r}"
                )


@pytest.mark.parametrize("case", CASE_DIRS, ids=_case_id)
def test_a_golden_case_sits_under_the_family_and_kind_it_parses_to(case: Path) -> None:
    family, kind = case.relative_to(GOLDEN).parts[:2]
    ev = _first_classified(_parse_case(case))
    assert ev is not None, "no record of the case matched a catalog entry"
    classified = {(e.family, e.kind) for e in _parse_case(case) if isinstance(e, Event) and e.kind}
    assert (family, kind) in classified


@pytest.mark.parametrize("case", CASE_DIRS, ids=_case_id)
def test_a_golden_case_says_where_its_lines_come_from(case: Path) -> None:
    source = case / "source.txt"
    assert source.is_file() and source.read_text(encoding="utf-8").strip()


def test_every_catalog_entry_has_a_golden_case() -> None:
    covered: set[str] = set()
    for case in CASE_DIRS:
        for ev in _parse_case(case):
            if isinstance(ev, Event) and ev.entry is not None:
                covered.add(ev.entry)
    missing = sorted(e.id for e in default_catalog().entries if e.id not in covered)
    assert not missing, f"catalog entries without a golden case: {', '.join(missing)}"


def test_every_expected_entry_names_a_catalog_entry() -> None:
    ids = {e.id for e in default_catalog().entries}
    for case in CASE_DIRS:
        for want in _expected(case)["events"]:
            entry = want.get("entry")
            assert entry is None or entry in ids, f"{_case_id(case)}: unknown entry {entry!r}"
