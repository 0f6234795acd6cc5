"""Captures as evidence: SA states, counters of one and of two captures, and capture
evidence corroborating the syslog incident of the same device and peer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from streams.cli.main import main
from streams.core.captures import read
from streams.core.captures.evidence import findings
from streams.core.kb import default_kb
from streams.shell.captures import finding_records

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden" / "captures"
T0 = 1796379303.0  # 2026-12-04 10:15:03 UTC


def _validator() -> Draft202012Validator:
    schema = json.loads((ROOT / "schemas" / "incident.schema.json").read_text(encoding="utf-8"))
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _records(*files: tuple[str, str, float]) -> list[dict[str, Any]]:
    caps = []
    for name, text, t in files:
        cap = read(name, text, t)
        caps.append((cap, cap.device or "dev", t))
    recs = finding_records(default_kb(), findings(caps))
    for r in recs:
        _validator().validate(r)
    return recs


def _golden(case: str) -> str:
    return (GOLDEN / case / "input.txt").read_text(encoding="utf-8")


def ipsec_sa(
    encaps: int, decaps: int, verify_failed: int = 0, replay_failed: int = 0, when: str = ""
) -> str:
    """An IOS 15 `show crypto ipsec sa detail` output with the given counters."""
    stamp = (
        f"Load for five secs: 2%/0%; one minute: 1%; five minutes: 1%\nTime source is NTP, {when} UTC Fri Dec 4 2026\n"
        if when
        else ""
    )
    return f"""R1#show crypto ipsec sa detail
{stamp}
interface: GigabitEthernet0/0
    Crypto map tag: CMAP, local addr 198.51.100.1

   protected vrf: (none)
   local  ident (addr/mask/prot/port): (10.10.0.0/255.255.255.0/0/0)
   remote ident (addr/mask/prot/port): (10.20.0.0/255.255.255.0/0/0)
   current_peer 203.0.113.2 port 500
     PERMIT, flags={{origin_is_acl,}}
    #pkts encaps: {encaps}, #pkts encrypt: {encaps}, #pkts digest: {encaps}
    #pkts decaps: {decaps}, #pkts decrypt: {decaps}, #pkts verify: {decaps}
    #pkts compressed: 0, #pkts decompressed: 0
    #pkts not compressed: 0, #pkts compr. failed: 0
    #pkts not decompressed: 0, #pkts decompress failed: 0
    #pkts no sa (send) 0, #pkts invalid sa (rcv) 0
    #pkts encaps failed (send) 0, #pkts decaps failed (rcv) 0
    #pkts invalid prot (recv) 0, #pkts verify failed: {verify_failed}
    #pkts invalid identity (recv) 0, #pkts invalid len (rcv) 0
    #pkts replay rollover (send): 0, #pkts replay rollover (rcv) 0
    ##pkts replay failed (rcv): {replay_failed}
    #pkts tagged (send): 0, #pkts untagged (rcv): 0
    #pkts not tagged (send): 0, #pkts not untagged (rcv): 0
    #pkts internal err (send): 0, #pkts internal err (recv) 0

     local crypto endpt.: 198.51.100.1, remote crypto endpt.: 203.0.113.2
     plaintext mtu 1438, path mtu 1500, ip mtu 1500, ip mtu idb GigabitEthernet0/0
     current outbound spi: 0x5C1B6D4A(1545301322)
     PFS (Y/N): N, DH group: none
"""


def asa_ipsec_sa(encaps: int, decaps: int, pre_frag_failures: int = 0, pmtus_rcvd: int = 0) -> str:
    """An ASA 9.x `show crypto ipsec sa` output with the given counters."""
    return f"""asa-dc# show crypto ipsec sa
interface: outside
    Crypto map tag: outside_map, seq num: 10, local addr: 192.0.2.1

      access-list VPN extended permit ip 10.20.0.0 255.255.255.0 10.10.0.0 255.255.255.0
      local ident (addr/mask/prot/port): (10.20.0.0/255.255.255.0/0/0)
      remote ident (addr/mask/prot/port): (10.10.0.0/255.255.255.0/0/0)
      current_peer: 198.51.100.1

      #pkts encaps: {encaps}, #pkts encrypt: {encaps}, #pkts digest: {encaps}
      #pkts decaps: {decaps}, #pkts decrypt: {decaps}, #pkts verify: {decaps}
      #pkts compressed: 0, #pkts decompressed: 0
      #pkts not compressed: {encaps}, #pkts comp failed: 0, #pkts decomp failed: 0
      #pre-frag successes: 0, #pre-frag failures: {pre_frag_failures}, #fragments created: 0
      #PMTUs sent: 0, #PMTUs rcvd: {pmtus_rcvd}, #decapsulated frgs needing reassembly: 0
      #TFC rcvd: 0, #TFC sent: 0
      #Valid ICMP Errors rcvd: 0, #Invalid ICMP Errors rcvd: 0
      #send errors: 0, #recv errors: 0

      local crypto endpt.: 192.0.2.1/0, remote crypto endpt.: 198.51.100.1/0
      path mtu 1500, ipsec overhead 74(44), media mtu 1500
      PMTU time remaining (sec): 0, DF policy: copy-df
      ICMP error validation: disabled, TFC packets: disabled
      current outbound spi: 50023DDC
      current inbound spi : 32F752FF
"""


def test_asa_pre_fragmentation_failures_and_pmtu_messages_give_fragmentation_mtu() -> None:
    (rec,) = _records(("asa.txt", asa_ipsec_sa(5000, 4900, pre_frag_failures=41, pmtus_rcvd=7), T0))
    assert rec["cause"] == "fragmentation_mtu" and rec["device"] == "asa-dc"
    assert "41 pre-fragmentation failures and 7 PMTU messages received" in rec["summary"]
    assert any("#pre-frag failures: 41" in line for line in rec["evidence"])
    (grow,) = _records(
        ("t1.txt", asa_ipsec_sa(5000, 4900, pre_frag_failures=41), T0),
        ("t2.txt", asa_ipsec_sa(6000, 5900, pre_frag_failures=71), T0 + 120),
    )
    assert grow["rule"] == "capture:ipsec-fragmentation-growing"
    assert (
        "30 pre-fragmentation failures more on the SA with 198.51.100.1 in 120 s (0.25/s)"
        in grow["summary"]
    )


def test_a_healthy_asa_capture_gives_nothing() -> None:
    assert (
        _records(("asa.txt", asa_ipsec_sa(5000, 4900, pre_frag_failures=1, pmtus_rcvd=2), T0)) == []
    )


def test_mm_key_exch_in_the_guides_pix_capture_gives_a_psk_mismatch() -> None:
    (rec,) = _records(("pix.txt", _golden("show_crypto_isakmp_sa/guide_pix_mm_key_exch"), T0))
    assert rec["cause"] == "psk_mismatch"
    assert rec["device"] == "PIX" and rec["peer"] == "192.168.254.250"
    assert "MM_KEY_EXCH" in rec["summary"]
    assert rec["evidence"] == ["pix.txt: 192.168.254.250  10.177.243.187  MM_KEY_EXCH  0        0"]


def test_mm_no_state_gives_a_phase_one_policy_mismatch_and_qm_idle_gives_nothing() -> None:
    recs = _records(("r1.txt", _golden("show_crypto_isakmp_sa/built_ios_15_mm_no_state"), T0))
    assert [(r["cause"], r["peer"]) for r in recs] == [("ike_policy_mismatch", "10.0.0.2")]
    assert "peer does not answer" in recs[0]["summary"]


@pytest.mark.parametrize(
    "case",
    [
        "show_crypto_isakmp_sa/guide_ios_qm_idle",
        "show_crypto_isakmp_sa/built_asa_mm_active",
        "show_crypto_ipsec_sa/guide_ios_12",
        "show_crypto_ipsec_sa/guide_pix_6",
        "show_crypto_ipsec_sa/ntc_ios_detail_1",
    ],
)
def test_a_healthy_capture_gives_nothing(case: str) -> None:
    assert _records(("x.txt", _golden(case), T0)) == []


def test_one_capture_with_verify_failures_states_them_as_a_crypto_engine_fault() -> None:
    (rec,) = _records(("a.txt", ipsec_sa(500, 480, verify_failed=37), T0))
    assert rec["cause"] == "crypto_engine_fault"
    assert rec["confidence"] == 0.5
    assert "37 packets from 203.0.113.2 failed verification" in rec["summary"]
    assert any("#pkts verify failed: 37" in line for line in rec["evidence"])


def test_one_capture_with_encaps_and_no_decaps_says_the_peer_does_not_answer() -> None:
    (rec,) = _records(("a.txt", ipsec_sa(812, 0), T0))
    assert rec["cause"] == "crypto_acl_mismatch"
    assert "812 packets encapsulated towards 203.0.113.2 and none decapsulated" in rec["summary"]
    assert "10.10.0.0/255.255.255.0 to 10.20.0.0/255.255.255.0" in rec["summary"]


def test_verify_failures_growing_between_two_dated_captures_give_a_rate() -> None:
    recs = _records(
        ("t1.txt", ipsec_sa(1000, 990, verify_failed=10, when="10:15:03.000"), 0.0),
        ("t2.txt", ipsec_sa(1600, 1570, verify_failed=130, when="10:20:03.000"), 0.0),
    )
    (rec,) = recs
    assert rec["cause"] == "crypto_engine_fault" and rec["confidence"] == 0.8
    assert "grew by 120 (10 to 130) in 300 s (0.40/s)" in rec["summary"]
    assert rec["first_seen"] == "2026-12-04T10:15:03.000Z"
    assert rec["last_seen"] == "2026-12-04T10:20:03.000Z"
    assert any(line.startswith("t1.txt: ") for line in rec["evidence"])
    assert any(line.startswith("t2.txt: ") for line in rec["evidence"])


def test_replay_failures_growing_give_qos_reordering() -> None:
    (rec,) = _records(
        ("t1.txt", ipsec_sa(1000, 990, replay_failed=4), T0),
        ("t2.txt", ipsec_sa(2000, 1985, replay_failed=29), T0 + 60),
    )
    assert rec["cause"] == "qos_reordering"
    assert "grew by 25 (4 to 29) in 60 s (0.42/s)" in rec["summary"]


def test_encaps_growing_with_decaps_flat_blames_the_peer_side() -> None:
    (rec,) = _records(
        ("t1.txt", ipsec_sa(1000, 990), T0),
        ("t2.txt", ipsec_sa(1450, 990), T0 + 90),
    )
    assert rec["cause"] == "crypto_acl_mismatch" and rec["confidence"] == 0.7
    assert (
        "grew by 450 (1000 to 1450) in 90 s (5.00/s) while decaps stayed at 990" in rec["summary"]
    )


def test_two_healthy_captures_and_old_errors_that_stopped_growing_give_nothing() -> None:
    assert (
        _records(
            ("t1.txt", ipsec_sa(1000, 990, verify_failed=12, replay_failed=3), T0),
            ("t2.txt", ipsec_sa(1500, 1480, verify_failed=12, replay_failed=3), T0 + 60),
        )
        == []
    )


def test_a_lone_replay_failure_raises_nothing_as_a_lone_syslog_message_would() -> None:
    # ntc_ios_detail_1 (a real device): "##pkts replay failed (rcv): 1" on 12 million packets.
    assert _records(("x.txt", _golden("show_crypto_ipsec_sa/ntc_ios_detail_1"), T0)) == []
    assert (
        _records(
            ("t1.txt", ipsec_sa(1000, 990, verify_failed=2), T0),
            ("t2.txt", ipsec_sa(1500, 1480, verify_failed=6), T0 + 60),
        )
        == []
    )


def test_counters_that_went_down_between_captures_give_no_delta() -> None:
    assert (
        _records(
            ("t1.txt", ipsec_sa(1000, 990, verify_failed=50), T0),
            ("t2.txt", ipsec_sa(20, 0, verify_failed=60), T0 + 60),
        )
        == []
    )


SYSLOG_PSK = "".join(
    f"<188>{n}: R1: {n}: Dec  4 10:1{n}:00 UTC: %CRYPTO-4-IKMP_BAD_MESSAGE: IKE message from 203.0.113.2 failed its sanity check or is malformed\n"
    for n in range(3)
)
CAPTURE_KEY_EXCH = """R1#show crypto isakmp sa
IPv4 Crypto ISAKMP SA
dst             src             state          conn-id status
203.0.113.2     198.51.100.1    MM_KEY_EXCH       1004 ACTIVE
"""


def test_analyze_takes_syslog_and_a_capture_and_the_capture_corroborates_the_incident(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "r1.log"
    log.write_text(SYSLOG_PSK, encoding="utf-8")
    alone = main(["analyze", "--year", "2026", "--format", "jsonl", str(log)])
    assert alone == 0
    (before,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    cap = tmp_path / "r1-isakmp.txt"
    cap.write_text(CAPTURE_KEY_EXCH, encoding="utf-8")
    rc = main(["analyze", "--year", "2026", "--format", "jsonl", "--strict", str(cap), str(log)])
    out, err = capsys.readouterr()
    assert rc == 0
    (after,) = [json.loads(x) for x in out.splitlines()]
    _validator().validate(after)
    assert after["incident_id"] == before["incident_id"]
    assert after["cause"] == "psk_mismatch" and after["peer"] == "203.0.113.2"
    assert before["confidence"] == 0.8 and after["confidence"] == 0.9
    assert "SHOW_ISAKMP_MM_KEY_EXCH" in after["kinds"]
    assert any("MM_KEY_EXCH" in line and line.startswith(str(cap)) for line in after["evidence"])
    assert "Corroborated by a capture" in after["summary"]
    assert "captures=1 records=1 problems=0" in err


def test_a_capture_of_another_peer_does_not_corroborate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "r1.log"
    log.write_text(SYSLOG_PSK, encoding="utf-8")
    cap = tmp_path / "r1.txt"
    cap.write_text(CAPTURE_KEY_EXCH.replace("203.0.113.2 ", "203.0.113.77"), encoding="utf-8")
    assert main(["analyze", "--year", "2026", "--format", "jsonl", str(cap), str(log)]) == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert sorted((r["peer"], r["confidence"]) for r in recs) == [
        ("203.0.113.2", 0.8),
        ("203.0.113.77", 0.7),
    ]


def test_analyze_reports_capture_problems_per_file_and_strict_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cap = tmp_path / "cut.txt"
    cap.write_text(
        CAPTURE_KEY_EXCH + "203.0.113.9     198.5\nR1#show version\nCisco IOS\n", encoding="utf-8"
    )
    assert main(["analyze", str(cap)]) == 0
    err = capsys.readouterr().err
    assert f"{cap}:2: truncated:" in err
    assert f"{cap}:7: unknown_command: output of 'show version' is not read" in err
    assert "captures=1 records=0 problems=2" in err
    assert main(["analyze", "--strict", str(cap)]) == 2


def test_the_demo_capture_adds_one_finding_and_leaves_the_syslog_incidents_unchanged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = ROOT / "streams" / "data"
    assert main(["analyze", "--year", "2024", "--format", "jsonl", str(data / "sample.log")]) == 0
    alone = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    argv = ["analyze", "--year", "2024", "--format", "jsonl", "--strict"]
    assert main([*argv, str(data / "sample.log"), str(data / "rtr-branch4-show-crypto.txt")]) == 0
    both = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    extra = [r for r in both if r not in alone]
    assert [r for r in both if r in alone] == alone
    assert [(r["device"], r["peer"], r["cause"], r["rule"]) for r in extra] == [
        ("rtr-branch4", "198.51.100.1", "crypto_acl_mismatch", "capture:ipsec-decaps-flat")
    ]
    assert "grew by 1608 (15234 to 16842) in 300 s (5.36/s)" in extra[0]["summary"]


def test_mm_no_state_corroborates_a_peer_unreachable_incident_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "pix.log"
    log.write_text(
        "<163>Mar 10 2024 01:02:03 pix515 : %PIX-3-713123: Group = 203.0.113.9, IP = 203.0.113.9, IKE lost contact with remote peer, deleting connection (keepalive type: DPD)\n"
        "<166>Mar 10 2024 01:20:00 pix515 : %PIX-6-302013: Built outbound TCP connection 1 for outside:192.0.2.1/80 (192.0.2.1/80) to inside:10.0.0.5/5000 (10.0.0.5/5000)\n",
        encoding="utf-8",
    )
    cap = tmp_path / "pix-isakmp.txt"
    cap.write_text(
        "pix515(config)# show crypto isakmp sa\nTotal      : 1\nEmbryonic  : 1\n"
        "        dst               src        state     pending     created\n"
        "   203.0.113.9      198.51.100.5    MM_NO_STATE   0           0\n",
        encoding="utf-8",
    )
    assert main(["analyze", "--format", "jsonl", str(log), str(cap)]) == 0
    (rec,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (rec["cause"], rec["peer"]) == ("peer_unreachable", "203.0.113.9")
    assert rec["confidence"] == 0.9
    assert "SHOW_ISAKMP_MM_NO_STATE" in rec["kinds"]


def test_two_undated_outputs_in_one_file_give_deltas_without_a_rate() -> None:
    text = ipsec_sa(1000, 990, verify_failed=3) + "\n" + ipsec_sa(1400, 1380, verify_failed=40)
    (rec,) = _records(("both.txt", text, T0))
    assert rec["cause"] == "crypto_engine_fault"
    assert "grew by 37 (3 to 40) between the two captures while 390 packets" in rec["summary"]


def test_one_capture_with_replay_failures_states_them_as_qos_reordering() -> None:
    (rec,) = _records(("a.txt", ipsec_sa(900, 880, replay_failed=12), T0))
    assert rec["cause"] == "qos_reordering" and rec["confidence"] == 0.5
    assert "12 packets from 203.0.113.2 failed the anti-replay check" in rec["summary"]
    assert any("##pkts replay failed (rcv): 12" in line for line in rec["evidence"])


def test_every_capture_evidence_of_the_knowledge_base_is_produced_by_a_capture_or_a_comparison() -> (
    None
):
    from test_captures_compare import ASA, HQ, _compare, _edit

    produced = {
        r["rule"].split(":", 1)[1]
        for r in _records(("a.txt", ipsec_sa(900, 880, verify_failed=9, replay_failed=9), T0))
        + _records(("b.txt", ipsec_sa(900, 0), T0))
        + _records(
            ("t1.txt", ipsec_sa(1000, 990, verify_failed=1, replay_failed=1), T0),
            ("t2.txt", ipsec_sa(2000, 990, verify_failed=9, replay_failed=9), T0 + 60),
        )
        + _records(("c.txt", _golden("show_crypto_isakmp_sa/built_ios_15_mm_no_state"), T0))
        + _records(("d.txt", _golden("show_crypto_isakmp_sa/guide_pix_mm_key_exch"), T0))
        + _records(("e.txt", asa_ipsec_sa(900, 880, pre_frag_failures=9), T0))
        + _records(
            ("t3.txt", asa_ipsec_sa(900, 880, pmtus_rcvd=1), T0),
            ("t4.txt", asa_ipsec_sa(990, 970, pmtus_rcvd=9), T0 + 60),
        )
    }
    broad = (
        "crypto map CMAP 5 ipsec-isakmp\n set peer 192.0.2.50\n set transform-set TS\n"
        " match address BROAD\n!\ncrypto map CMAP 10 ipsec-isakmp"
    )
    hq = _edit(HQ, "crypto map CMAP 10 ipsec-isakmp", broad)
    hq = _edit(
        hq,
        "\nend\n",
        "\nip access-list extended BROAD\n permit ip 10.0.0.0 0.255.255.255 any\nend\n",
    )
    hq = _edit(hq, " deny   ip 10.10.0.0 0.0.0.255 10.20.0.0 0.0.0.255\n", "")
    asa = _edit(ASA, " group 14\n", " group 5\n")
    asa = _edit(asa, "esp-aes-256 esp-sha-hmac", "esp-3des esp-md5-hmac")
    asa = _edit(asa, "crypto map outside_map 10 set pfs group14\n", "")
    asa = _edit(
        asa,
        "10.10.0.0 255.255.255.0\naccess-list NONAT",
        "10.10.0.0 255.255.0.0\naccess-list NONAT",
    )
    asa = _edit(
        asa,
        "tunnel-group 198.51.100.1 ipsec-attributes",
        "tunnel-group 198.51.100.7 ipsec-attributes",
    )
    produced |= {r["rule"].split(":", 1)[1] for r in _compare(hq, asa)}
    produced |= {
        r["rule"].split(":", 1)[1] for r in _compare(_edit(HQ, " crypto map CMAP\n", ""), ASA)
    }
    split = _records(("f.txt", "vpngroup vpn3000 split-tunnel 90\n", T0))
    produced |= {r["rule"].split(":", 1)[1] for r in split}
    assert set(default_kb().capture_evidence) - produced == set()


GROUP_POLICY = """ciscoasa# show running-config group-policy
group-policy RA-USERS internal
group-policy RA-USERS attributes
 dns-server value 10.0.0.53
 vpn-tunnel-protocol ikev1
 split-tunnel-policy tunnelspecified
"""


def test_a_group_policy_that_tunnels_specified_networks_without_a_list_gives_split_tunnel_misconfig() -> (
    None
):
    (rec,) = _records(("gp.txt", GROUP_POLICY, T0))
    assert rec["cause"] == "split_tunnel_misconfig" and rec["device"] == "ciscoasa"
    assert (
        "group-policy RA-USERS has split-tunnel-policy tunnelspecified but no split-tunnel-network-list"
        in rec["summary"]
    )
    assert rec["evidence"] == [
        "ciscoasa: group-policy RA-USERS attributes",
        "ciscoasa: split-tunnel-policy tunnelspecified",
    ]
    ok = (
        GROUP_POLICY
        + " split-tunnel-network-list value SPLIT\naccess-list SPLIT standard permit 10.0.0.0 255.0.0.0\n"
    )
    assert _records(("gp.txt", ok, T0)) == []


def test_the_guides_pix_split_tunnel_needs_its_acl() -> None:
    guide = _golden("show_running_config/guide_pix_vpngroup_split_tunnel")
    assert _records(("pix.cfg", guide, T0)) == []
    (rec,) = _records(("pix.cfg", guide.split("\n")[0] + "\n", T0))
    assert rec["cause"] == "split_tunnel_misconfig"
    assert (
        "group vpn3000 tunnels the networks of ACL 90, which the configuration does not define"
        in rec["summary"]
    )


def test_analyze_of_one_config_reports_a_shadowed_crypto_map_entry() -> None:
    from test_captures_compare import HQ, _edit

    hq = _edit(HQ, "crypto map CMAP 10 ipsec-isakmp", (
        "crypto map CMAP 5 ipsec-isakmp\n set peer 192.0.2.50\n set transform-set TS\n"
        " match address BROAD\n!\ncrypto map CMAP 10 ipsec-isakmp"))  # fmt: skip
    hq = _edit(
        hq,
        "\nend\n",
        "\nip access-list extended BROAD\n permit ip 10.0.0.0 0.255.255.255 any\nend\n",
    )
    (rec,) = _records(("hq.cfg", hq, T0))
    assert rec["rule"] == "capture:compare-map-order" and rec["device"] == "hq-rtr"
    assert _records(("hq.cfg", HQ, T0)) == []
