"""The public Cisco corpus: real lines from public sources, one source per file.

``tests/data/corpus/*.log`` is a copy of ``shared/corpus/cisco`` (the tests do not
read outside the repository). The first line of each file names its source
(``# source: ...``); every other line is data, framed with ``iter_records``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streams.core.event import Event, Unparsed
from streams.core.framing import iter_records
from streams.core.parse import Parser

CORPUS = Path(__file__).parent / "data" / "corpus"
FILES = sorted(CORPUS.glob("*.log"))
YEAR = 2024

# Records that may come out Unparsed, as (file, start of the record): reason.
# Every corpus line parses today; keep this list explicit if that changes.
UNPARSED_EXCEPTIONS: dict[tuple[str, str], str] = {}

# Records that parse but carry no usable time, so the event time is inferred:
# (file, start of the record) -> reason.
INFERRED_TIME: dict[tuple[str, str], str] = {
    ("asa_logstash_patterns_core_spec.log", "%ASA-4-402117"): "grok fixture: message body only",
    ("asa_logstash_patterns_core_spec.log", "%ASA-4-402119"): "grok fixture: message body only",
    ("asa_logstash_patterns_core_spec.log", "%ASA-6-602303"): "grok fixture: message body only",
    ("asa_logstash_patterns_core_spec.log", "%ASA-6-713172"): "grok fixture: message body only",
    (
        "headers_github_issues__03_github_com_elastic_integrations_issues_2607.log",
        "<165>7433: ASR920: 007439: 2y10w:",
    ): "device logs uptime (2y10w), not a date",
    (
        "headers_github_issues__07_github_com_syslog_ng_syslog_ng_issues_3535.log",
        "<166>10.255.255.1 %ASA",
    ): "ASA with 'logging device-id ipaddress' and no 'logging timestamp'",
    ("ios_c1700_em_esp_sequence_fail.log", "%C1700_EM"): "forum post quotes the message only",
    (
        "ios_ccsp_ciscoarticles_ikmp_auth_fail.log",
        "%CRYPTO-6",
    ): "study guide prints the message only",
    (
        "ios_cisco_tac_116085_mac_err__02_findbugzero_com_operational_defect_database_vendors_cisco_defects_CSCu.log",
        "%CRYPTO-4-RECVD_PKT_MAC_ERR",
    ): "bug text quotes the message only",
    (
        "ios_headers_elastic_integrations_tests.log",
        "<190>3132517: sw01: 3132513: 2y10w:",
    ): "device logs uptime (2y10w), not a date",
    (
        "ios_headers_elastic_integrations_tests.log",
        "<165>7433: ASR920: 007439: 2y10w:",
    ): "device logs uptime (2y10w), not a date",
    ("ios_headers_splunk_sc4s_test_cisco_ios.log", "foo: 00:01:01:"): "device logs uptime",
    (
        "ios_hw_accelerator_errors_public_posts__01_supportforums_cisco_com_t5_other_security_subjects_ipsec_log_entries_a.log",
        "HW_VPN-1-HPRXERR",
    ): "forum post quotes the message only (and drops the '%')",
    (
        "ios_hw_accelerator_errors_public_posts__02_community_cisco_com_t5_security_documents_a_router_with_vpn_accelerato.log",
        "%VPN_HW",
    ): "page title quotes the message only",
    (
        "ios_hw_accelerator_errors_public_posts__03_cisconews_co_uk_2008_01_03_site_to_site_vpn_errors_routers.log",
        "%MOTCR",
    ): "blog quotes the message only",
    (
        "ios_replay_public_posts__01_community_cisco_com_t5_routing_crypto_4_pkt_replay_err_decrypt_replay_.log",
        "UTC: %CRYPTO",
    ): "the poster cut the stamp, leaving only its 'UTC:' label",
    (
        "ios_replay_public_posts__02_supportforums_cisco_com_discussion_10736346_replay_check_failed_messag.log",
        "%CRYPTO-4-PKT_REPLAY_ERR",
    ): "forum post quotes the message only",
    (
        "ios_replay_public_posts__04_blog_junico_uk_2023_08_27_vpn_anti_replay_drops.log",
        "IPSEC-3-REPLAY_ERROR",
    ): "blog quotes the message text only",
}

# Header facts per source, as (file, start of the record, expected fields of the
# record). Each record is parsed alone with year 2024, so year inference does not
# carry from one line to the next.
HEADER_FACTS: list[tuple[str, str, dict[str, Any]]] = [
    # rsyslog #3069: counter + origin-id, and counter alone; free label NewYork.
    (
        "headers_github_issues__01_github_com_rsyslog_rsyslog_issues_3069.log",
        "<188>179767: fakhost:",
        {
            "device": "fakhost",
            "origin": "fakhost",
            "counter": 179767,
            "clock_synced": True,
            "tz": "NewYork",
            "tz_known": False,
            "timestamp": "2024-11-23T22:23:27.833Z",
        },
    ),
    (
        "headers_github_issues__01_github_com_rsyslog_rsyslog_issues_3069.log",
        "<189>7662:",
        {
            "device": None,
            "counter": 7662,
            "tz": "NewYork",
            "tz_known": False,
            "timestamp": "2024-11-23T22:23:27.921Z",
        },
    ),
    # go-syslog PR 22: session SD element between the counter and the seqno.
    (
        "headers_github_issues__02_github_com_leodido_go_syslog_pull_22.log",
        "<187>165:",
        {
            "device": None,
            "counter": 165,
            "clock_synced": False,
            "tz": None,
            "timestamp": "2024-01-02T00:20:41.000Z",
        },
    ),
    (
        "headers_github_issues__02_github_com_leodido_go_syslog_pull_22.log",
        "<189>30:",
        {
            "device": None,
            "counter": 30,
            "clock_synced": False,
            "timestamp": "2024-01-02T00:10:53.000Z",
        },
    ),
    # elastic #2607 (ASR920): counter, origin, zero-padded seqno, uptime or date.
    (
        "headers_github_issues__03_github_com_elastic_integrations_issues_2607.log",
        "<165>7433:",
        {"device": "ASR920", "counter": 7433, "time_source": "inferred"},
    ),
    (
        "headers_github_issues__03_github_com_elastic_integrations_issues_2607.log",
        "<165>2029:",
        {
            "device": "ASR920",
            "counter": 2029,
            "clock_synced": True,
            "timestamp": "2024-08-03T08:11:02.204Z",
        },
    ),
    (
        "headers_github_issues__03_github_com_elastic_integrations_issues_2607.log",
        "<163>81681: CORE:",
        {
            "device": "CORE",
            "counter": 81681,
            "facility": "SNMP-SW1",
            "timestamp": "2024-08-03T08:09:55.769Z",
        },
    ),
    # elastic #11236: ASA 'logging timestamp rfc5424' + device-id.
    (
        "headers_github_issues__04_github_com_elastic_integrations_issues_11236.log",
        "<164>2024-09-17T18:23:15Z",
        {
            "device": "mmc-raasa-fw1",
            "host": "mmc-raasa-fw1",
            "counter": None,
            "tz": "Z",
            "tz_known": True,
            "timestamp": "2024-09-17T18:23:15.000Z",
        },
    ),
    # elastic #7567: ASA stamp with a year and 'device-id :'.
    (
        "headers_github_issues__05_github_com_elastic_integrations_issues_7567.log",
        "<164>Aug 28 2023",
        {
            "device": "fw123-vc456",
            "counter": None,
            "clock_synced": True,
            "timestamp": "2023-08-28T15:39:30.000Z",
        },
    ),
    # beats #13259: the year that strict RFC 3164 parsers reject.
    (
        "headers_github_issues__06_github_com_elastic_beats_issues_13259.log",
        "<166>Aug 16 2019",
        {
            "device": "myASA.firewall.com",
            "timestamp": "2019-08-16T09:09:20.000Z",
            "facility": "ASA",
        },
    ),
    # syslog-ng #3535: ASA device-id IP address and no timestamp at all.
    (
        "headers_github_issues__07_github_com_syslog_ng_syslog_ng_issues_3535.log",
        "<166>10.255.255.1",
        {
            "device": "10.255.255.1",
            "origin": "10.255.255.1",
            "host": None,
            "counter": None,
            "time_source": "inferred",
            "timestamp": "1970-01-01T00:00:00.000Z",
        },
    ),
    # napalm-logs: <PRI>counter: origin: [*]stamp[ TZ]:
    (
        "ios_header_napalm_logs.log",
        "<189>521: router1: *Nov 14",
        {
            "device": "router1",
            "counter": 521,
            "clock_synced": False,
            "tz": None,
            "timestamp": "2024-11-14T08:30:56.699Z",
        },
    ),
    (
        "ios_header_napalm_logs.log",
        "<189>1179: NetAuto_CSRv-03:",
        {
            "device": "NetAuto_CSRv-03",
            "counter": 1179,
            "clock_synced": True,
            "tz": "MEST",
            "tz_known": True,
            "timestamp": "2024-05-31T13:25:53.743Z",
        },
    ),
    (
        "ios_header_napalm_logs.log",
        "<189>24: test-ztp:",
        {"device": "test-ztp", "counter": 24, "timestamp": "2024-05-23T15:49:32.302Z"},
    ),
    # splunk sc4s IOS: counter + origin + seqno, microseconds, uptime, WLC task prefix.
    (
        "ios_headers_splunk_sc4s_test_cisco_ios.log",
        "30: foo: 6340004:",
        {
            "device": "foo",
            "counter": 30,
            "clock_synced": False,
            "timestamp": "2024-03-04T11:45:20.000Z",
        },
    ),
    (
        "ios_headers_splunk_sc4s_test_cisco_ios.log",
        "30: foo: *Apr 29",
        {
            "device": "foo",
            "counter": 30,
            "clock_synced": False,
            "timestamp": "2024-04-29T13:58:46.000Z",
        },
    ),
    (
        "ios_headers_splunk_sc4s_test_cisco_ios.log",
        "foo: 00:01:01:",
        {"device": "foo", "counter": None, "time_source": "inferred"},
    ),
    (
        "ios_headers_splunk_sc4s_test_cisco_ios.log",
        "*Mar  1 18:48:50.483 UTC:",
        {
            "device": None,
            "clock_synced": False,
            "tz": "UTC",
            "timestamp": "2024-03-01T18:48:50.483Z",
        },
    ),
    (
        "ios_headers_splunk_sc4s_test_cisco_ios.log",
        "<132>xxxxx: *spamApTask1:",
        {
            "device": "xxxxx",
            "counter": None,
            "clock_synced": True,
            "timestamp": "2024-05-26T18:52:01.958Z",
        },
    ),
    (
        "ios_headers_splunk_sc4s_test_cisco_ios.log",
        "<187>364241:",
        {"device": None, "counter": 364241, "tz": "GMT", "timestamp": "2024-05-19T16:58:44.814Z"},
    ),
    # splunk sc4s ASA: device-id without PRI, no device-id, rfc5424 stamp.
    (
        "asa_headers_splunk_sc4s_test_cisco_asa.log",
        "Apr 15 2017 00:21:14 192.168.12.1 :",
        {"device": "192.168.12.1", "timestamp": "2017-04-15T00:21:14.000Z"},
    ),
    (
        "asa_headers_splunk_sc4s_test_cisco_asa.log",
        "<164>Jan 31 2020 17:24:03:",
        {
            "device": None,
            "host": None,
            "timestamp": "2020-01-31T17:24:03.000Z",
            "kind": "REPLAY_CHECK_FAILED",
        },
    ),
    (
        "asa_headers_splunk_sc4s_test_cisco_asa.log",
        "<166>2018-06-27T12:17:46Z asa :",
        {"device": "asa", "tz": "Z", "timestamp": "2018-06-27T12:17:46.000Z"},
    ),
    # elastic cisco_ios tests: empty counter slot, relay archive, offsets, labels.
    (
        "ios_headers_elastic_integrations_tests.log",
        "<182>: host-1: 115649616:",
        {"device": "host-1", "counter": None, "tz": "CET", "timestamp": "2024-01-23T13:54:28.511Z"},
    ),
    (
        "ios_headers_elastic_integrations_tests.log",
        "Feb  8 04:00:48 192.168.100.2 585917:",
        {
            "device": "192.168.100.2",
            "host": "192.168.100.2",
            "counter": 585917,
            "time_source": "device",
            "timestamp": "2024-02-08T04:00:47.272Z",
        },
    ),
    (
        "ios_headers_elastic_integrations_tests.log",
        "<189>2024-10-11T10:15:31.208321-05:00",
        {"device": "TestDevice", "tz": "-05:00", "timestamp": "2024-10-11T15:15:31.208Z"},
    ),
    (
        "ios_headers_elastic_integrations_tests.log",
        "<190>2361044: sw01: Jan 16 22:11:43 EDT:",
        {
            "device": "sw01",
            "counter": 2361044,
            "tz": "EDT",
            "timestamp": "2024-01-17T02:11:43.000Z",
        },
    ),
    (
        "ios_headers_elastic_integrations_tests.log",
        "<189>387448: host-01:",
        {"device": "host-01", "tz": "UTC+07:30", "timestamp": "2024-05-06T08:43:09.123Z"},
    ),
    (
        "ios_headers_elastic_integrations_tests.log",
        "<190>3352436: 3352457:",
        {
            "device": None,
            "counter": 3352436,
            "tz": "mdt",
            "timestamp": "2023-08-12T18:14:24.412Z",
            "fields": {"wrapper": "IOSXE-6-PLATFORM"},
        },
    ),
    (
        "ios_headers_elastic_integrations_tests.log",
        "<190>Oct 7 07:19:44 internet-primary-mgmt",
        {"device": "internet-primary-mgmt", "tz": "UTC", "timestamp": "2024-10-07T07:19:43.630Z"},
    ),
]


def _records(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return list(iter_records(line for line in lines if not line.startswith("#")))


def _key_for(name: str, record: str, table: dict[tuple[str, str], str]) -> tuple[str, str] | None:
    for key in table:
        if key[0] == name and record.startswith(key[1]):
            return key
    return None


def test_the_corpus_copy_is_there_and_names_its_sources() -> None:
    assert len(FILES) >= 25
    for path in FILES:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# source: "), path.name
        assert _records(path), f"{path.name} has no data line"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem[:60])
def test_every_corpus_line_parses_to_an_event(path: Path) -> None:
    parser = Parser(year=YEAR)
    for record in _records(path):
        out = parser.parse(record)
        key = _key_for(path.name, record, UNPARSED_EXCEPTIONS)
        if key is not None:
            assert isinstance(out, Unparsed), f"listed as an exception but parsed: {record!r}"
            continue
        assert isinstance(out, Event), f"{record!r}: {out}"
        assert out.raw == record


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem[:60])
def test_only_lines_without_a_stamp_get_an_inferred_time(path: Path) -> None:
    for record in _records(path):
        out = Parser(year=YEAR).parse(record)
        if not isinstance(out, Event):
            continue
        listed = _key_for(path.name, record, INFERRED_TIME) is not None
        assert (out.time_source == "inferred") == listed, (
            f"time_source={out.time_source!r} for {record!r}"
        )


def test_every_documented_exception_still_names_a_corpus_record() -> None:
    names = {p.name: _records(p) for p in FILES}
    for name, start in list(UNPARSED_EXCEPTIONS) + list(INFERRED_TIME):
        assert name in names, name
        assert any(r.startswith(start) for r in names[name]), (name, start)


# VPN messages of the corpus that the catalog leaves unclassified on purpose.
UNCLASSIFIED_VPN = {
    "750002": "IKEv2 'Received a IKE_INIT_SA request': routine, no diagnosis",
    "713172": "NAT-T detection status: informational",
}
VPN_FACILITIES = ("CRYPTO", "IPSEC", "HW_VPN", "VPN_HW", "MOTCR", "C1700_EM")
ASA_VPN_PREFIXES = ("402", "602", "702", "713", "750", "751", "113019")


def test_every_vpn_message_of_the_corpus_is_classified() -> None:
    for path in FILES:
        for record in _records(path):
            out = Parser(year=YEAR).parse(record)
            assert isinstance(out, Event)
            mnemonic = out.mnemonic or ""
            is_vpn = out.facility in VPN_FACILITIES or (
                out.facility == "ASA" and mnemonic.startswith(ASA_VPN_PREFIXES)
            )
            if is_vpn and mnemonic not in UNCLASSIFIED_VPN:
                assert out.entry is not None, f"{path.name}: {record!r} is not classified"


@pytest.mark.parametrize(
    ("name", "start", "facts"),
    HEADER_FACTS,
    ids=[f"{n.split('__')[-1][:40]}:{s[:24]}" for n, s, _ in HEADER_FACTS],
)
def test_a_header_variant_gives_the_device_counter_clock_and_time_it_states(
    name: str, start: str, facts: dict[str, Any]
) -> None:
    matches = [r for r in _records(CORPUS / name) if r.startswith(start)]
    assert len(matches) == 1, f"{start!r} names {len(matches)} records of {name}"
    out = Parser(year=YEAR).parse(matches[0])
    assert isinstance(out, Event)
    record = out.to_record()
    for key, value in facts.items():
        if key == "fields":
            for fkey, fvalue in value.items():
                assert record["fields"].get(fkey) == fvalue, (key, fkey)
        else:
            assert record[key] == value, f"{key} = {record[key]!r}, expected {value!r}"


def test_a_relay_line_split_over_two_lines_is_joined_and_parsed() -> None:
    lines = [
        "Sep 22 11:02:39 131.203.252.166 2435:",
        "Sep 22 11:02:39: %MOTCR-1-ERROR:motcr_crypto_callback() motcr return failure",
    ]
    records = list(iter_records(lines))
    assert len(records) == 1
    out = Parser(year=YEAR).parse(records[0])
    assert isinstance(out, Event)
    assert (out.device, out.counter, out.entry) == ("131.203.252.166", 2435, "motcr-error")
    assert out.timestamp == "2024-09-22T11:02:39.000Z"
