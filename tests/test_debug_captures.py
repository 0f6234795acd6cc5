"""The guide's debug captures read end to end (issue 9, item 3).

The captures are the examples of the seed guide (Cisco's IPsec troubleshooting guide,
French edition of TAC doc 5409, ``shared/seed``): ``debug crypto isakmp`` on two routers
(``=RouterA=`` / ``=RouterB=``, uptime stamps or none), the PIX ``debug crypto isakmp``
trace where proposal 1 is refused and proposal 2 accepted, and the IOS and ASA lines the
issue names. Each runs through ``tunnelwatch analyze`` or ``parse`` in-process.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.cli.main import main
from streams.core.engine import DeviceState, flush, step
from streams.core.event import Event, Unparsed
from streams.core.framing import iter_records
from streams.core.kb import default_kb
from streams.core.parse import Parser
from streams.shell.replay import timed_records

KB = default_kb()

# The guide, section "Hash Algorithm Offered does not Match Policy": one failed phase-1
# negotiation seen from both routers.
ROUTERS = """\
=RouterA=
3d01h: ISAKMP (0:1): processing SA payload. message ID = 0
3d01h: ISAKMP (0:1): found peer pre-shared key matching 209.165.200.227
ISAKMP (0:1): Checking ISAKMP transform 1 against priority 1 policy
ISAKMP:      encryption 3DES-CBC
ISAKMP:      hash MD5
ISAKMP:      default group 1
ISAKMP:      auth pre-share
ISAKMP:      life type in seconds
ISAKMP:      life duration (VPI) of 0x0 0x1 0x51 0x80
ISAKMP (0:1): Hash algorithm offered does not match policy!
ISAKMP (0:1): atts are not acceptable. Next payload is 0
=RouterB=
ISAKMP (0:1): Checking ISAKMP transform 1 against priority 65535 policy
ISAKMP:      encryption 3DES-CBC
ISAKMP:      hash MD5
ISAKMP:      default group 1
ISAKMP:      auth pre-share
ISAKMP:      life type in seconds
ISAKMP:      life duration (VPI) of 0x0 0x1 0x51 0x80
ISAKMP (0:1): Encryption algorithm offered does not match policy!
ISAKMP (0:1): atts are not acceptable. Next payload is 0
ISAKMP (0:1): no offers accepted!
ISAKMP (0:1): phase 1 SA not acceptable!
"""

# The guide, "Débogages PIX / debug crypto isakmp" (phase 2 part, and the SAs created).
PIX_TRACE = """\
ISAKMP (0): processing SA payload. message ID = 0
ISAKMP (0): Checking ISAKMP transform 1 against priority 1 policy
ISAKMP:      encryption DES-CBC
ISAKMP (0): atts are not acceptable. Next payload is 3
ISAKMP (0): Checking ISAKMP transform 3 against priority 1 policy
ISAKMP:      encryption 3DES-CBC
ISAKMP (0): atts are acceptable. Next payload is 3
ISAKMP (0): processing KE payload. message ID = 0
ISAKMP: Created a peer node for 12.1.1.2
OAK_QM exchange
oakley_process_quick_mode:
OAK_QM_IDLE
ISAKMP (0): processing SA payload. message ID = 818324052
ISAKMP : Checking IPSec proposal 1
ISAKMP: transform 1, ESP_DES
ISAKMP:      attributes in transform:
ISAKMP:      authenticator is HMAC-MD5
ISAKMP:      encaps is 1
IPSEC(validate_proposal): transform proposal
      (prot 3, trans 2, hmac_alg 1) not supported
ISAKMP (0): atts not acceptable. Next payload is 0
ISAKMP : Checking IPSec proposal 2
ISAKMP: transform 1, ESP_3DES
ISAKMP:      attributes in transform:
ISAKMP:      authenticator is HMAC-MD5
ISAKMP:      encaps is 1
ISAKMP (0): atts are acceptable.
ISAKMP (0): processing NONCE payload. message ID = 818324052
"""


def _run_file(path: Path, *args: str) -> list[dict[str, Any]]:
    """``tunnelwatch ARGS... PATH`` in-process; the JSON lines it printed."""
    out = io.BytesIO()
    real, wrapper = sys.stdout, io.TextIOWrapper(out, encoding="utf-8")
    sys.stdout = wrapper
    try:
        rc = main([*args, str(path)])
        wrapper.flush()
        data = out.getvalue()
    finally:
        sys.stdout = real
        wrapper.detach()
    assert rc == 0
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


def _run(tmp_path: Path, text: str, *args: str) -> list[dict[str, Any]]:
    path = tmp_path / "capture.log"
    path.write_text(text, encoding="utf-8")
    return _run_file(path, *args)


def analyze(tmp_path: Path, text: str, *args: str) -> list[dict[str, Any]]:
    return _run(tmp_path, text, "analyze", "--format", "jsonl", "--year", "2024", *args)


def parse(tmp_path: Path, text: str, *args: str) -> list[dict[str, Any]]:
    return _run(tmp_path, text, "parse", "--year", "2024", *args)


def stamped(lines: str, host: str, stamp: str) -> str:
    """The lines as a syslog server archives them: its stamp and the host before each
    (continuation lines, which start with blanks, stay as they are)."""
    return "".join(
        line + "\n" if line[:1].isspace() else f"{stamp} {host} : {line}\n"
        for line in lines.splitlines()
    )


# -- one negotiation, one attempt -------------------------------------------------------------


def test_one_failed_phase_1_negotiation_opens_no_incident(tmp_path: Path) -> None:
    assert analyze(tmp_path, ROUTERS) == []


def test_three_failed_negotiations_open_one_incident_counting_three_attempts(
    tmp_path: Path,
) -> None:
    router_a = ROUTERS.split("=RouterB=")[0]
    text = "".join(
        stamped(router_a.replace("=RouterA=\n", ""), "rtr-a", f"Mar  7 16:0{m}:00")
        for m in (1, 3, 5)
    )
    (rec,) = analyze(tmp_path, text)
    assert (rec["device"], rec["peer"], rec["cause"]) == (
        "rtr-a",
        "209.165.200.227",
        "ike_policy_mismatch",
    )
    assert rec["count"] == 3
    assert rec["kind_counts"]["IKE_POLICY_REJECTED"] == 3


def test_a_pix_trace_whose_second_proposal_is_accepted_raises_nothing_even_three_times(
    tmp_path: Path,
) -> None:
    text = "".join(stamped(PIX_TRACE, "pix-1", f"Mar  7 16:0{m}:00") for m in (1, 3, 5))
    assert analyze(tmp_path, text) == []


def test_refused_proposals_with_no_accepted_one_still_raise_a_transform_set_mismatch(
    tmp_path: Path,
) -> None:
    refused = PIX_TRACE.split("ISAKMP : Checking IPSec proposal 2")[0]
    text = "".join(stamped(refused, "pix-1", f"Mar  7 16:0{m}:00") for m in (1, 3, 5))
    (rec,) = analyze(tmp_path, text)
    assert (rec["device"], rec["peer"], rec["cause"]) == (
        "pix-1",
        "12.1.1.2",
        "transform_set_mismatch",
    )
    assert rec["count"] == 3


def test_proxy_identities_then_a_quick_mode_failure_are_one_incident_naming_the_peer(
    tmp_path: Path,
) -> None:
    text = "".join(
        f"Mar  7 16:0{m}:00 rtr-a 10{m}: Mar  7 16:0{m}:00.100 UTC: "
        "IPSec(validate_transform_proposal): proxy identities not supported\n"
        f"Mar  7 16:0{m}:00 rtr-a 20{m}: Mar  7 16:0{m}:00.150 UTC: "
        "%CRYPTO-6-IKMP_MODE_FAILURE: Processing of Quick mode failed with peer at 12.1.1.2\n"
        for m in (1, 3, 5)
    )
    (rec,) = analyze(tmp_path, text)
    assert (rec["device"], rec["peer"], rec["cause"]) == (
        "rtr-a",
        "12.1.1.2",
        "crypto_acl_mismatch",
    )
    assert rec["rule"] == "qm-fsm-proxy-sequence"


def test_an_ios_ike_incident_resolves_when_create_sa_follows(tmp_path: Path) -> None:
    failures = "".join(
        f"Mar  7 16:0{m}:00 rtr-a 10{m}: Mar  7 16:0{m}:00.100 UTC: "
        "%CRYPTO-6-IKMP_MODE_FAILURE: Processing of Main mode failed with peer at 12.1.1.2\n"
        for m in (1, 3, 5)
    )
    up = (
        "Mar  7 16:07:00 rtr-a 300: Mar  7 16:07:00.000 UTC: IPSEC(create_sa): sa created,\n"
        "    (sa) sa_dest= 12.1.1.2, sa_prot= 50,\n"
        "    sa_spi= 0xB9D0109(194838793),\n"
        "    sa_trans= esp-des esp-sha-hmac , sa_conn_id= 5\n"
    )
    (rec,) = analyze(tmp_path, failures + up)
    assert rec["cause"] == "ike_policy_mismatch"
    assert rec["status"] == "resolved"
    assert rec["resolution"].startswith("SA_CREATED seen")
    assert rec["resolved_at"].startswith("2024-03-07T16:07:00")


def test_an_asa_ike_incident_resolves_when_602303_shows_the_sa_created(tmp_path: Path) -> None:
    refused = "".join(
        f"Mar  7 16:0{m}:00 asa-1 : %ASA-3-713902: Group = 192.0.2.61, IP = 192.0.2.61, "
        "All IPSec SA proposals found unacceptable!\n"
        for m in (1, 3, 5)
    )
    up = (
        "Mar  7 16:07:00 asa-1 : %ASA-6-602303: IPSEC: An outbound LAN-to-LAN SA "
        "(SPI= 0x5A5A1111) between 198.51.100.2 and 192.0.2.61 (user= 192.0.2.61) has been "
        "created.\n"
    )
    (rec,) = analyze(tmp_path, refused + up)
    assert (rec["peer"], rec["cause"], rec["status"]) == (
        "192.0.2.61",
        "transform_set_mismatch",
        "resolved",
    )


# -- time and device of a capture -------------------------------------------------------------


def test_a_two_router_capture_names_each_router_from_its_block_marker(tmp_path: Path) -> None:
    events = [e for e in parse(tmp_path, ROUTERS) if not e.get("unparsed")]
    assert {e["device"] for e in events} == {"RouterA", "RouterB"}
    kinds_b = [e["kind"] for e in events if e["device"] == "RouterB"]
    assert kinds_b[-2:] == ["IKE_POLICY_REJECTED", "IKE_POLICY_REJECTED"]


def test_router_prompts_name_the_device_of_the_lines_after_them(tmp_path: Path) -> None:
    text = (
        "hq-rtr#debug ip icmp\n"
        "2w5d: ICMP: dst (172.16.1.56): frag. needed and DF set.\n"
        "branch-rtr(config)#do debug crypto isakmp\n"
        "ISAKMP (0:1): phase 1 SA not acceptable!\n"
    )
    events = [e for e in parse(tmp_path, text) if not e.get("unparsed")]
    assert [(e["device"], e["kind"]) for e in events] == [
        ("hq-rtr", "ICMP_FRAG_NEEDED"),
        ("branch-rtr", "IKE_POLICY_REJECTED"),
    ]


def test_uptime_and_unstamped_lines_take_the_capture_start(tmp_path: Path) -> None:
    events = [
        e
        for e in parse(tmp_path, ROUTERS, "--start", "2024-03-07T17:05:00+01:00")
        if not e.get("unparsed")
    ]
    assert events and {e["timestamp"] for e in events} == {"2024-03-07T16:05:00.000Z"}


def test_without_start_a_capture_takes_its_file_time_never_1970(tmp_path: Path) -> None:
    path = tmp_path / "capture.log"
    path.write_text(ROUTERS, encoding="utf-8")
    os.utime(path, (1_709_827_200, 1_709_827_200))  # 2024-03-07T16:00:00Z
    events = [e for e in _run_file(path, "parse", "--year", "2024") if not e.get("unparsed")]
    assert {e["timestamp"] for e in events} == {"2024-03-07T16:00:00.000Z"}


def test_a_start_without_an_offset_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "capture.log"
    path.write_text(ROUTERS, encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        main(["parse", "--start", "2024-03-07T16:05:00", str(path)])
    assert exc.value.code == 2
    assert "add Z or +hh:mm" in capsys.readouterr().err


# -- the lines the issue names ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "kind", "peer"),
    [
        (
            "ISAKMP (0:1): All IPSec SA proposals found unacceptable!",
            "SA_PROPOSALS_UNACCEPTABLE",
            None,
        ),
        ("2w5d: ICMP: dst (172.16.1.56): frag. needed and DF set.", "ICMP_FRAG_NEEDED", None),
        (
            "Sep 22 11:02:39: %MOTCR-1-PKTENCRET_ERROR: MOTCR PktEng Return Value = 0x20000, "
            "PktEngReturn_MACMiscompare",
            "ENGINE_MAC_MISCOMPARE",
            None,
        ),
        (
            "[IKEv1]: Group = 10.1.1.2, IP = 10.1.1.2, QM FSM error (P2 struct &0x4a3e6b0, "
            "mess id 0x2c2d4e1a)!",
            "QM_FSM_ERROR",
            "10.1.1.2",
        ),
        (
            "Apr 26 18:46:05 [IKEv1 DEBUG]: Group = 10.1.1.2, IP = 10.1.1.2, PHASE 1 COMPLETED",
            "PHASE1_COMPLETED",
            "10.1.1.2",
        ),
    ],
)
def test_a_line_the_issue_names_parses_to_its_kind(
    tmp_path: Path, line: str, kind: str, peer: str | None
) -> None:
    (event,) = parse(tmp_path, line + "\n", "--device", "fw-1")
    assert (event["kind"], event["peer"]) == (kind, peer)
    assert event["device"] == "fw-1", "the device is never read from the debug text"


def test_a_live_feed_never_takes_its_device_from_a_prompt_like_line() -> None:
    # Receiver and worker parse lines of many sources: a line that looks like a prompt
    # must not rename the next sources' lines.
    parser = Parser(year=2024, stream=True)
    first = parser.parse("evil#show run", source="203.0.113.9", received=1_709_827_200.0)
    assert isinstance(first, Unparsed)
    ev = parser.parse(
        "ISAKMP (0:1): phase 1 SA not acceptable!", source="198.51.100.7", received=1.7e9
    )
    assert isinstance(ev, Event) and ev.device == "198.51.100.7"


def test_an_exchange_in_progress_survives_a_round_trip_of_the_device_state() -> None:
    # The worker keeps DeviceState in a changelog: an exchange cut in two by a restart
    # must give what it gives in one piece.
    parser = Parser(year=2024, captures=True, context_ts=1_709_827_200.0)
    text = "".join(stamped(PIX_TRACE, "pix-1", f"Mar  7 16:0{m}:00") for m in (1, 3, 5))
    events = [
        e
        for e in (parser.parse(r) for r in iter_records(text.splitlines()))
        if isinstance(e, Event)
    ]
    refused = [e for e in events if e.kind == "TRANSFORM_REJECTED"]
    assert len(refused) == 3
    cut = events.index(refused[1]) + 1  # after a refusal, before its accepted proposal

    def run(split: bool) -> list[dict[str, Any]]:
        st = DeviceState("pix-1")
        out: list[dict[str, Any]] = []
        for i, e in enumerate(events):
            if split and i == cut:
                st = DeviceState.from_dict(orjson.loads(orjson.dumps(st.to_dict())))
            st, recs = step(st, e, KB)
            out.extend(recs)
        return out

    assert run(split=True) == run(split=False) == []
    # and without the accepted proposals, both give the incident
    events = [e for e in events if e.kind != "ATTS_ACCEPTABLE"]
    cut = events.index(refused[1]) + 1
    whole, split = run(split=False), run(split=True)
    assert whole == split
    assert [r["cause"] for r in whole] == ["transform_set_mismatch"]


def test_replay_paces_a_captures_unstamped_lines_from_the_file_time(tmp_path: Path) -> None:
    path = tmp_path / "capture.log"
    path.write_text(ROUTERS, encoding="utf-8")
    os.utime(path, (1_709_827_200, 1_709_827_200))
    times = {t for _, t in timed_records([str(path)], 2024) if t is not None}
    assert times == {1_709_827_200.0}


def test_an_sa_created_for_another_tunnel_does_not_cancel_a_peer_less_refusal() -> None:
    def ev(t: float, kind: str, peer: str | None = None) -> Event:
        return Event(device="rtr-a", ts=1_709_827_200.0 + t, raw=f"{kind} {t}", message="",
                     kind=kind, peer=peer)  # fmt: skip

    st = DeviceState("rtr-a")
    out: list[dict[str, Any]] = []
    for m in range(3):  # three refusals a minute apart, each with another tunnel up 1 s later
        for e in (ev(60 * m, "PROXY_ID_NOT_SUPPORTED"), ev(60 * m + 1, "SA_CREATED", "192.0.2.9")):
            st, recs = step(st, e, KB)
            out.extend(recs)
    assert [(r["peer"], r["cause"], r["count"]) for r in out] == [(None, "crypto_acl_mismatch", 3)]


# -- properties over random negotiations ------------------------------------------------------

_LINE_KINDS = ("IKE_POLICY_REJECTED", "ATTS_NOT_ACCEPTABLE", "DEBUG_INFO", "IKE_PROPOSAL_CHECK")
PEER = "209.165.200.227"


@st.composite
def _negotiation(draw: st.DrawFn) -> tuple[list[str], int, bool]:
    """The kinds of one failed exchange (at least one refusal), where in it the peer is
    named, and whether its lines carry the conn-id."""
    kinds = draw(st.lists(st.sampled_from(_LINE_KINDS), min_size=0, max_size=6))
    kinds.insert(draw(st.integers(0, len(kinds))), "IKE_POLICY_REJECTED")
    return kinds, draw(st.integers(0, len(kinds))), draw(st.booleans())


def _events(negotiations: list[tuple[list[str], int, bool]], accepted: bool) -> list[Event]:
    out: list[Event] = []
    for i, (kinds, named_at, with_conn) in enumerate(negotiations):
        lines = [(k, None) for k in kinds]
        lines.insert(named_at, ("IKE_PEER_IDENTIFIED", PEER))
        if accepted:
            lines.append(("ATTS_ACCEPTABLE", None))
        for j, (kind, peer) in enumerate(lines):
            out.append(
                Event(device="rtr-a", ts=1_709_827_200.0 + 120 * i + 0.01 * j,
                      raw=f"{i}.{j} {kind}", message="", kind=kind, peer=peer,
                      conn_id="ike-0:1" if with_conn else None)
            )  # fmt: skip
    return out


def _final(events: list[Event]) -> dict[str, dict[str, Any]]:
    st_ = DeviceState("rtr-a")
    last: dict[str, dict[str, Any]] = {}
    for e in events:
        st_, recs = step(st_, e, KB)
        for r in recs:
            last[r["incident_id"]] = r
    for r in flush(st_, KB):  # the final state, as analyze prints it at the end
        last[r["incident_id"]] = r
    return last


@settings(max_examples=80, deadline=None)
@given(st.lists(_negotiation(), min_size=1, max_size=6))
def test_n_failed_negotiations_count_n_attempts_whatever_their_lines(
    negotiations: list[tuple[list[str], int, bool]],
) -> None:
    incidents = list(_final(_events(negotiations, accepted=False)).values())
    if len(negotiations) < 3:
        assert incidents == []
    else:
        (rec,) = incidents
        assert (rec["peer"], rec["cause"]) == (PEER, "ike_policy_mismatch")
        assert rec["count"] == len(negotiations)


@settings(max_examples=60, deadline=None)
@given(st.lists(_negotiation(), min_size=1, max_size=6))
def test_negotiations_whose_last_proposal_is_accepted_raise_nothing(
    negotiations: list[tuple[list[str], int, bool]],
) -> None:
    assert _final(_events(negotiations, accepted=True)) == {}


def test_uptime_stamps_keep_their_distances_from_the_capture_start(tmp_path: Path) -> None:
    text = (
        "RouterB#debug crypto isakmp\n"
        "00:01:00: ISAKMP (0:1): phase 1 SA not acceptable!\n"
        "00:01:40.250: ISAKMP (0:1): phase 1 SA not acceptable!\n"
        "00:02:20: ISAKMP (0:1): phase 1 SA not acceptable!\n"
        "00:00:05: ISAKMP (0:1): phase 1 SA not acceptable!\n"  # the router reloaded
    )
    events = [
        e for e in parse(tmp_path, text, "--start", "2024-03-07T16:00:00Z") if not e.get("unparsed")
    ]
    assert [e["timestamp"] for e in events] == [
        "2024-03-07T16:00:00.000Z",
        "2024-03-07T16:00:40.250Z",
        "2024-03-07T16:01:20.000Z",
        "2024-03-07T16:01:20.000Z",  # after a reload, on from the newest time
    ]
    (rec,) = analyze(tmp_path, text[: text.index("00:00:05")], "--start", "2024-03-07T16:00:00Z")
    assert (rec["device"], rec["cause"], rec["count"]) == ("RouterB", "ike_policy_mismatch", 3)
