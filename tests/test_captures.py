"""Reading capture files: layouts, several commands per file, bad input."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.captures import is_capture, read
from streams.core.captures.model import (
    IPSEC_SA,
    ISAKMP_POLICY,
    ISAKMP_SA,
    OTHER_VENDOR,
    RUNNING_CONFIG,
    TRUNCATED,
    UNKNOWN_COMMAND,
)
from streams.core.captures.sections import canonical_command, section_time

DATA = Path(__file__).parent / "data" / "captures"


def _text(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def test_abbreviated_commands_are_recognized() -> None:
    assert canonical_command("sh cry isa sa") == ISAKMP_SA
    assert canonical_command("show crypto ikev1 sa detail") == ISAKMP_SA
    assert canonical_command("sh cry ipsec sa peer 10.0.0.2") == IPSEC_SA
    assert canonical_command("show ipsec sa") == IPSEC_SA
    assert canonical_command("sh run | section crypto") == RUNNING_CONFIG
    assert canonical_command("show crypto isakmp policy") == ISAKMP_POLICY
    assert canonical_command("show version") is None
    assert canonical_command("s crypto isakmp sa") is None


def test_an_exec_prompt_timestamp_dates_the_output() -> None:
    ts = section_time("Time source is NTP, 10:15:03.123 UTC Fri Dec 4 2026")
    assert ts is not None and abs(ts - 1796379303.123) < 1e-6
    assert section_time("Time source is NTP, 10:15:03.123 UTC Fri Foo 4 2026") is None


def test_a_netmiko_style_file_holds_several_commands_and_an_unread_one() -> None:
    cap = read("netmiko_multi.txt", _text("netmiko_multi.txt"))
    assert [s.command for s in cap.sections] == [ISAKMP_SA, IPSEC_SA, None]
    assert [sa.state for sa in cap.isakmp_sas] == ["MM_KEY_EXCH"]
    (blocks,) = [b for _, b in cap.ipsec_snapshots]
    assert blocks[0].peer == "203.0.113.2"
    assert blocks[0].counters["encaps"] == 120 and blocks[0].counters["decaps"] == 118
    assert [(p.kind, p.line) for p in cap.problems] == [(UNKNOWN_COMMAND, 29)]


def test_an_ansible_result_gives_the_host_and_each_command_output() -> None:
    cap = read("ansible.txt", _text("ansible_ios_command.txt"))
    assert cap.device == "branch-rtr1"
    assert [s.command for s in cap.sections] == [ISAKMP_SA, ISAKMP_POLICY]
    assert cap.isakmp_sas[0].state == "QM_IDLE"
    (pol,) = cap.config.policies
    assert pol.proposal() == ("aes-128", "sha", "pre-share", 5)
    assert cap.problems == []


def test_an_oxidized_config_reads_its_crypto_and_nat_parts() -> None:
    cap = read("oxidized.txt", _text("oxidized_ios.txt"))
    assert cap.device == "hq-rtr"
    cfg = cap.config
    assert [p.proposal() for p in cfg.policies] == [("aes-256", "sha", "pre-share", 14)]
    assert [k.address for k in cfg.keys] == ["203.0.113.2"]
    (entry,) = cfg.crypto_maps
    assert (entry.map, entry.seq, entry.peers, entry.acl) == ("CMAP", 10, ["203.0.113.2"], "VPN")
    assert [str(e.src) + ">" + str(e.dst) for e in entry.acl_entries] == [
        "10.10.0.0/24>10.20.0.0/24"
    ]
    assert entry.interfaces == ["GigabitEthernet0/0"]
    assert cfg.interfaces["GigabitEthernet0/0"].address == "198.51.100.1"
    assert cfg.transform_sets[0].transforms == ("esp-aes 256", "esp-sha-hmac")


def test_a_syslog_archive_and_a_show_logging_capture_are_not_captures() -> None:
    syslog = "Sep 22 11:02:39 10.1.1.1 2435: Sep 22 11:02:39: %CRYPTO-4-RECVD_PKT_MAC_ERR: x\n"
    assert not is_capture(syslog)
    logging = "router#show logging\n*Mar  1 00:01:02: %CRYPTO-6-IKMP_MODE_FAILURE: x\n"
    assert not is_capture(logging)
    assert is_capture(_text("netmiko_multi.txt"))


def test_a_truncated_paste_is_reported_not_raised() -> None:
    text = _text("netmiko_multi.txt").split("==================== show crypto ipsec sa")[0]
    cut = text.replace("1004 ACTIVE", "10")[:-1] + "\n203.0.113.9     198.51.1\n"
    cap = read("cut.txt", cut)
    assert [p.kind for p in cap.problems] == [TRUNCATED]
    assert cap.problems[0].line == 2


def test_an_ipsec_block_cut_before_its_counters_is_reported() -> None:
    text = _text("netmiko_multi.txt")
    head = text.split("==================== show version")[0]
    cut = head + (
        "interface: GigabitEthernet0/1\n"
        "    Crypto map tag: CMAP, local addr 198.51.100.1\n"
        "   local  ident (addr/mask/prot/port): (10.30.0.0/255.255.255.0/0/0)\n"
        "   remote ident (addr/mask/prot/port): (10.40.0.0/255.255.255.0/0/0)\n"
    )
    cap = read("cut.txt", cut)
    assert [p.kind for p in cap.problems] == [TRUNCATED]
    assert "without counters" in cap.problems[0].detail


def test_another_vendors_config_is_reported_as_such() -> None:
    junos = (
        "set security ike proposal P1 authentication-method pre-shared-keys\n"
        "set security ike policy IKE-POL proposals P1\n"
        "set security ipsec vpn VPN1 ike gateway GW1\n"
    )
    cap = read("srx.conf", junos)
    assert [p.kind for p in cap.problems] == [OTHER_VENDOR]
    assert cap.records == 0


_LINES = st.sampled_from(
    [
        "R1#show crypto isakmp sa",
        "R1#show crypto ipsec sa",
        "R1#sh run",
        "PIX(config)#show crypto isakmp sa",
        "dst             src             state          conn-id status",
        "10.0.0.2        10.0.0.1        QM_IDLE           1001 ACTIVE",
        "interface: GigabitEthernet0/0",
        "   local  ident (addr/mask/prot/port): (10.10.0.0/255.255.255.0/0/0)",
        "    #pkts encaps: 120, #pkts encrypt: 120, #pkts digest: 120",
        'Crypto Map "test" 10 ipsec-isakmp',
        "        Peer = 12.1.1.2",
        "Transform set TS: { esp-aes 256 esp-sha-hmac  }",
        "Protection suite of priority 10",
        "crypto map CMAP 10 ipsec-isakmp",
        " set peer",
        "access-list 101 permit ip 10.1.1.0 0.0.0.255",
        "access-list 101 permit ip host",
        "ip access-list extended X",
        " permit ip any",
        "nat (inside) 0 access-list",
        "crypto isakmp key k address",
        "tunnel-group 1.2.3.4 ipsec-attributes",
        "set security ike policy P",
        "==== show crypto map ====",
        'ok: [h] => {"stdout": ["x"]',
        "",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_LINES, st.text(max_size=40)), max_size=25))
def test_any_text_reads_without_raising_and_problems_name_real_lines(lines: list[str]) -> None:
    text = "\n".join(lines)
    cap = read("fuzz.txt", text)
    is_capture(text)
    n = len(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    assert all(1 <= p.line <= n + 1 for p in cap.problems)


def test_a_running_config_cut_before_its_end_line_is_reported() -> None:
    whole = (DATA / "compare" / "hq-rtr.cfg").read_text(encoding="utf-8")
    assert read("hq.cfg", whole).problems == []
    cut = whole.split("ip access-list extended VPN")[0]
    cap = read("hq.cfg", cut)
    assert [(p.kind, p.line) for p in cap.problems] == [(TRUNCATED, 1)]
    assert "before its 'end' line" in cap.problems[0].detail
    assert cap.config.crypto_maps[0].acl == "VPN" and cap.config.crypto_maps[0].acl_entries == []


def test_an_ipsec_block_cut_between_its_encaps_and_decaps_lines_is_reported() -> None:
    text = _text("netmiko_multi.txt").split("==================== show version")[0]
    cut = text.split("    #pkts decaps:")[0]
    cap = read("cut.txt", cut)
    assert [p.kind for p in cap.problems] == [TRUNCATED]
    assert "lacks its encaps or decaps counters" in cap.problems[0].detail
