"""Golden cases of `show crypto …` captures and config fragments.

Layout (as tests/golden/README.md, one directory per case)::

    tests/golden/captures/<COMMAND>/<case>/input.txt      the capture as pasted or collected
    tests/golden/captures/<COMMAND>/<case>/expected.json  the records it must read to
    tests/golden/captures/<COMMAND>/<case>/source.txt     where the output comes from

``COMMAND`` is the canonical command name (``streams.core.captures.model.COMMANDS``).
``expected.json`` lists, per kind of record, the fields to check of each record in
order (``isakmp_sas``, ``ipsec_sas`` across the outputs of the file,
``engine_connections``, ``policies``, ``transform_sets``, ``crypto_maps``; ``acls``
maps an ACL name to its entries as ``[action, protocol, src, dst]``, ``acls_include``
to entries it must hold among others), ``keys`` (``[address, mask]``), ``nat``
(``[kind, acl]``), ``interfaces`` (name to ``[address, crypto map]``), ``device``,
``config_lines`` and ``problems`` (the kinds of problems, exactly; none when absent).
Cases whose source is the seed guide are every ``show`` output and config fragment it
prints; ``ntc_*`` cases are real device outputs from ntc-templates' fixtures with the
values of their own expected files.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from streams.core.captures import is_capture, read
from streams.core.captures.model import COMMANDS, AclEntry, Capture

GOLDEN = Path(__file__).parent / "golden" / "captures"
CASES = sorted(p.parent for p in GOLDEN.glob("*/*/expected.json"))


def _id(case: Path) -> str:
    return case.relative_to(GOLDEN).as_posix()


def _read(case: Path) -> Capture:
    return read(case.name, (case / "input.txt").read_text(encoding="utf-8"))


def _entry(e: AclEntry) -> list[str]:
    return [e.action, e.protocol, str(e.src), str(e.dst)]


def _check(kind: str, got: list[Any], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want), f"{kind}: {len(got)} records, expected {len(want)}: {got!r}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        rec = dataclasses.asdict(g) if dataclasses.is_dataclass(g) else dict(g)
        for key, value in w.items():
            have = rec[key]
            if key == "acl_entries":
                have = [_entry(e) for e in g.acl_entries]
            elif key == "counters":
                have = {k: rec["counters"].get(k) for k in value}
            elif isinstance(have, tuple):
                have = list(have)
            assert have == value, f"{kind}[{i}].{key} = {have!r}, expected {value!r}"


def test_the_capture_golden_directory_holds_a_case_of_every_command() -> None:
    commands = {case.parent.name for case in CASES}
    assert commands >= set(COMMANDS), f"no golden case for {sorted(set(COMMANDS) - commands)}"


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_a_golden_capture_reads_to_its_expected_records(case: Path) -> None:
    want = json.loads((case / "expected.json").read_text(encoding="utf-8"))
    cap = _read(case)
    if "device" in want:
        assert cap.device == want["device"]
    assert [p.kind for p in cap.problems] == want.get("problems", []), cap.problems
    blocks = [b for _, snap in cap.ipsec_snapshots for b in snap]
    for kind, got in (
        ("isakmp_sas", cap.isakmp_sas),
        ("ipsec_sas", blocks),
        ("engine_connections", cap.engine_connections),
        ("policies", cap.config.policies),
        ("transform_sets", cap.config.transform_sets),
        ("crypto_maps", cap.config.crypto_maps),
    ):
        if kind in want:
            _check(kind, got, want[kind])
    for name, entries in want.get("acls", {}).items():
        assert [_entry(e) for e in cap.config.acls.get(name, [])] == entries, name
    for name, entries in want.get("acls_include", {}).items():
        have = [_entry(e) for e in cap.config.acls.get(name, [])]
        assert [e for e in entries if e not in have] == [], name
    if "keys" in want:
        assert [(k.address, k.mask) for k in cap.config.keys] == [tuple(k) for k in want["keys"]]
    if "nat" in want:
        assert [(r.kind, r.acl) for r in cap.config.nat] == [tuple(r) for r in want["nat"]]
    if "interfaces" in want:
        got = {n: (i.address, i.crypto_map) for n, i in cap.config.interfaces.items()}
        assert got == {n: tuple(v) for n, v in want["interfaces"].items()}
    if "config_lines" in want:
        assert cap.config.lines == want["config_lines"]


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_a_golden_capture_sits_under_the_command_it_holds(case: Path) -> None:
    cap = _read(case)
    assert case.parent.name in {s.command for s in cap.sections}
    assert is_capture((case / "input.txt").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_a_golden_capture_says_where_it_comes_from(case: Path) -> None:
    assert (case / "source.txt").read_text(encoding="utf-8").strip()
