"""`tunnelwatch compare`: both ends' configs, each finding with the lines of each side and
the fix; mirrored, matching configs give nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from streams.cli.main import main
from streams.core.captures import read
from streams.core.captures.compare import compare
from streams.core.kb import default_kb
from streams.shell.captures import finding_records

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "captures"
HQ = (DATA / "compare" / "hq-rtr.cfg").read_text(encoding="utf-8")
ASA = (DATA / "compare" / "branch-asa.cfg").read_text(encoding="utf-8")
T0 = 1796379303.0


def _validator() -> Draft202012Validator:
    schema = json.loads((ROOT / "schemas" / "incident.schema.json").read_text(encoding="utf-8"))
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _edit(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


def _compare(a: str = HQ, b: str = ASA) -> list[dict[str, Any]]:
    ca, cb = read("hq-rtr.cfg", a), read("branch-asa.cfg", b)
    assert ca.problems == [] and cb.problems == []
    recs = finding_records(default_kb(), compare(ca, ca.device or "a", cb, cb.device or "b", T0))
    for r in recs:
        _validator().validate(r)
    return recs


def _one(recs: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(recs) == 1, [r["summary"] for r in recs]
    return recs[0]


def test_matching_mirrored_configs_of_ios_and_asa_give_nothing() -> None:
    assert _compare() == []
    assert _compare(ASA, HQ) == []


def test_phase_one_policies_without_a_common_proposal() -> None:
    rec = _one(_compare(b=_edit(ASA, " group 14\n", " group 5\n")))
    assert rec["cause"] == "ike_policy_mismatch" and rec["rule"] == "capture:compare-ike-policy"
    assert (rec["device"], rec["peer"]) == ("hq-rtr", "203.0.113.2")
    assert "aes-256/sha/pre-share/group 14/86400 s" in rec["summary"]
    assert "aes-256/sha/pre-share/group 5/86400 s" in rec["summary"]
    assert "hq-rtr: group 14" in rec["evidence"] and "branch-asa: group 5" in rec["evidence"]
    assert rec["recommended_actions"][0].startswith("add to branch-asa a policy equal to")


def test_a_longer_lifetime_on_the_initiator_is_refused() -> None:
    rec = _one(_compare(b=_edit(ASA, " lifetime 86400\n", " lifetime 3600\n")))
    assert rec["cause"] == "ike_policy_mismatch"
    assert "when hq-rtr initiates, branch-asa refuses its lifetime 86400 s" in rec["summary"]
    assert "lifetime 3600" in rec["recommended_actions"][0]


def test_transform_sets_with_no_match() -> None:
    asa = _edit(
        ASA, "transform-set TS esp-aes-256 esp-sha-hmac", "transform-set TS esp-3des esp-md5-hmac"
    )
    rec = _one(_compare(b=asa))
    assert rec["cause"] == "transform_set_mismatch"
    assert "TS {esp-aes 256 esp-sha-hmac}" in rec["summary"]
    assert "TS {esp-3des esp-md5-hmac}" in rec["summary"]
    assert "hq-rtr: crypto ipsec transform-set TS esp-aes 256 esp-sha-hmac" in rec["evidence"]
    assert "branch-asa: crypto ipsec transform-set TS esp-3des esp-md5-hmac" in rec["evidence"]


def test_pfs_that_differs() -> None:
    rec = _one(_compare(b=_edit(ASA, "crypto map outside_map 10 set pfs group14\n", "")))
    assert rec["cause"] == "transform_set_mismatch" and rec["rule"] == "capture:compare-pfs"
    assert "hq-rtr crypto map CMAP 10 uses group14" in rec["summary"]
    assert "branch-asa crypto map outside_map 10 uses no PFS" in rec["summary"]
    assert "hq-rtr: set pfs group14" in rec["evidence"]


def test_crypto_acls_that_are_not_mirror_images_quote_the_exact_entries() -> None:
    asa = _edit(ASA, "access-list VPN extended permit ip 10.20.0.0 255.255.255.0 10.10.0.0 255.255.255.0",
                "access-list VPN extended permit ip 10.20.0.0 255.255.255.0 10.10.0.0 255.255.0.0")  # fmt: skip
    recs = _compare(b=asa)
    # The ASA's NAT exemption (NONAT, 10.10.0.0/24) no longer covers its crypto ACL either.
    assert sorted(r["rule"] for r in recs) == [
        "capture:compare-acl-mirror",
        "capture:compare-nat-exemption",
    ]
    rec = next(r for r in recs if r["rule"] == "capture:compare-acl-mirror")
    assert rec["cause"] == "crypto_acl_mismatch"
    assert (
        "hq-rtr ACL VPN has 'permit ip 10.10.0.0 0.0.0.255 10.20.0.0 0.0.0.255'" in rec["summary"]
    )
    assert (
        "branch-asa ACL VPN has 'access-list VPN extended permit ip 10.20.0.0 255.255.255.0 10.10.0.0 255.255.0.0'"
        in rec["summary"]
    )
    assert (
        "permit ip 10.20.0.0 0.0.0.255 10.10.0.0 0.0.0.255 in ACL VPN"
        in rec["recommended_actions"][0]
    )


def test_vpn_traffic_caught_by_nat_before_crypto_on_ios() -> None:
    rec = _one(_compare(a=_edit(HQ, " deny   ip 10.10.0.0 0.0.0.255 10.20.0.0 0.0.0.255\n", "")))
    assert rec["cause"] == "crypto_acl_mismatch" and rec["device"] == "hq-rtr"
    assert (
        "is translated by 'ip nat inside source list NAT interface GigabitEthernet0/0 overload'"
        in rec["summary"]
    )
    assert "its ACL NAT matches with 'permit ip 10.10.0.0 0.0.0.255 any'" in rec["summary"]
    assert "deny ip 10.10.0.0 0.0.0.255 10.20.0.0 0.0.0.255" in rec["recommended_actions"][0]


def test_vpn_traffic_caught_by_nat_on_an_asa_without_nat_zero() -> None:
    rec = _one(_compare(b=_edit(ASA, "nat (inside) 0 access-list NONAT\n", "")))
    assert rec["rule"] == "capture:compare-nat-exemption"
    assert (rec["device"], rec["peer"]) == ("branch-asa", "198.51.100.1")
    assert "branch-asa: nat (inside) 1 0.0.0.0 0.0.0.0" in rec["evidence"]
    assert "nat (inside) 0 access-list NONAT" in rec["recommended_actions"][0]
    assert "10.20.0.0 255.255.255.0 10.10.0.0 255.255.255.0" in rec["recommended_actions"][0]


def test_a_pre_shared_key_bound_to_an_address_the_peer_does_not_use() -> None:
    hq = _edit(
        HQ,
        "crypto isakmp key s3cr3t address 203.0.113.2",
        "crypto isakmp key s3cr3t address 203.0.113.99",
    )
    rec = _one(_compare(a=hq))
    assert rec["cause"] == "peer_address_mismatch"
    assert (
        "hq-rtr has no pre-shared key for the address branch-asa uses (203.0.113.2)"
        in rec["summary"]
    )
    assert "hq-rtr: crypto isakmp key s3cr3t address 203.0.113.99" in rec["evidence"]
    assert "branch-asa: ip address 203.0.113.2 255.255.255.0" in rec["evidence"]


def test_a_broader_crypto_map_entry_that_matches_first() -> None:
    hq = _edit(HQ, "crypto map CMAP 10 ipsec-isakmp", (
        "crypto map CMAP 5 ipsec-isakmp\n set peer 192.0.2.50\n set transform-set TS\n"
        " match address BROAD\n!\ncrypto map CMAP 10 ipsec-isakmp"))  # fmt: skip
    hq = _edit(
        hq,
        "\nend\n",
        "\nip access-list extended BROAD\n permit ip 10.0.0.0 0.255.255.255 any\nend\n",
    )
    rec = _one(_compare(a=hq))
    assert rec["rule"] == "capture:compare-map-order" and rec["cause"] == "crypto_acl_mismatch"
    assert (
        "crypto map CMAP 5 (ACL BROAD: 'permit ip 10.0.0.0 0.255.255.255 any') matches all the traffic of entry 10"
        in rec["summary"]
    )
    assert "entry 10 is never used" in rec["summary"]


def test_show_isakmp_policy_captures_of_both_ends_compare_too() -> None:
    a = read(
        "r1.txt",
        (
            Path(__file__).parent
            / "golden/captures/show_crypto_isakmp_policy/built_ios_15/input.txt"
        ).read_text(encoding="utf-8"),
    )
    b = read("r2.txt", _edit(HQ, "encr aes 256", "encr aes 128"))
    (f,) = compare(a, "R1", b, "hq-rtr", T0)
    assert f.evidence == "compare-ike-policy"
    assert "R1: Protection suite of priority 10" in f.lines
    assert "hq-rtr: encr aes 128" in f.lines


def _write(tmp: Path, name: str, text: str) -> str:
    p = tmp / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def test_the_compare_command_prints_jsonl_in_the_incident_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _write(tmp_path, "hq.cfg", HQ)
    b = _write(tmp_path, "asa.cfg", _edit(ASA, " group 14\n", " group 2\n"))
    assert main(["compare", "--format", "jsonl", a, b]) == 0
    out, err = capsys.readouterr()
    (rec,) = [json.loads(line) for line in out.splitlines()]
    _validator().validate(rec)
    assert rec["cause"] == "ike_policy_mismatch"
    assert "compare hq-rtr (" in err and "findings=1 problems=0" in err
    assert main(["compare", a, b]) == 0
    assert "ike_policy_mismatch" in capsys.readouterr().out


def test_the_compare_command_reports_bad_input_per_file_and_strict_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _write(tmp_path, "hq.cfg", HQ)
    srx = _write(
        tmp_path,
        "srx.conf",
        "set security ike policy P mode main\nset security ipsec vpn V ike gateway G\n",
    )
    assert main(["compare", a, srx]) == 0
    err = capsys.readouterr().err
    assert f"{srx}:1: other_vendor: configuration of another vendor" in err
    assert f"{srx}: no crypto configuration found for srx" in err
    assert main(["compare", "--strict", a, srx]) == 2
    capsys.readouterr()
    assert main(["compare", a, str(tmp_path / "missing.cfg")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_one_end_may_be_a_directory_of_show_captures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "r1"
    d.mkdir()
    golden = Path(__file__).parent / "golden" / "captures"
    for case in (
        "show_crypto_isakmp_policy/built_ios_15",
        "show_crypto_ipsec_transform_set/built_ios",
    ):
        (d / (case.split("/")[0] + ".txt")).write_bytes((golden / case / "input.txt").read_bytes())
    b = _write(tmp_path, "hq.cfg", _edit(HQ, " group 14\n", " group 19\n"))
    assert main(["compare", "--format", "jsonl", str(d), b]) == 0
    (rec,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rec["device"] == "R1" and rec["cause"] == "ike_policy_mismatch"


def test_a_set_peer_that_is_not_the_other_ends_address() -> None:
    asa = _edit(
        ASA,
        "crypto map outside_map 10 set peer 198.51.100.1",
        "crypto map outside_map 10 set peer 198.51.100.9",
    )
    rec = _one(_compare(b=asa))
    assert rec["cause"] == "peer_address_mismatch" and rec["device"] == "branch-asa"
    assert "sets peer 198.51.100.9, but hq-rtr talks from 198.51.100.1" in rec["summary"]
    assert rec["recommended_actions"][0] == "crypto map outside_map 10 / set peer 198.51.100.1"


def test_a_crypto_map_applied_to_no_interface() -> None:
    rec = _one(_compare(a=_edit(HQ, " crypto map CMAP\n", "")))
    assert rec["cause"] == "local_address_misconfig"
    assert "hq-rtr crypto map CMAP is applied to no interface" in rec["summary"]


def test_a_crypto_map_on_the_wrong_interface_gives_a_wrong_local_address() -> None:
    # The guide's "Invalid Local Address": the map is applied to the inside interface.
    hq = _edit(HQ, " ip nat outside\n crypto map CMAP\n", " ip nat outside\n")
    hq = _edit(
        hq,
        " ip address 10.10.0.1 255.255.255.0\n",
        " ip address 10.10.0.1 255.255.255.0\n crypto map CMAP\n",
    )
    rec = _one(_compare(a=hq))
    assert rec["cause"] == "local_address_misconfig" and rec["device"] == "hq-rtr"
    assert "hq-rtr identifies itself as 10.10.0.1" in rec["summary"]
    assert "branch-asa expects 198.51.100.1" in rec["summary"]


_CONFIG_LINES = st.sampled_from(HQ.splitlines() + ASA.splitlines() + [
    "crypto map CMAP 20 ipsec-isakmp", " set peer", " match address", " set pfs",
    "crypto map X local-address GigabitEthernet0/0", "crypto map X local-address",
    "ip access-list extended VPN", " permit ip any any", " deny ip", "route-map RM permit 10",
    " match ip address NAT", "ip nat inside source route-map RM interface Gi0/0 overload",
    "nat (inside) 0 access-list", "crypto isakmp key k address 0.0.0.0 0.0.0.0",
    "isakmp policy 10 lifetime", "isakmp key k address 1.2.3.4 netmask 255.255.255.255",
])  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.lists(_CONFIG_LINES, max_size=30), st.lists(_CONFIG_LINES, max_size=30))
def test_compare_never_raises_on_partial_or_odd_configs(a: list[str], b: list[str]) -> None:
    ca, cb = read("a.cfg", "\n".join(a)), read("b.cfg", "\n".join(b))
    recs = finding_records(default_kb(), compare(ca, "a", cb, "b", T0))
    for r in recs:
        assert r["evidence"] and r["recommended_actions"]
