"""The command line: exit codes, inputs (plain, .gz, stdin, garbage), output contracts."""

from __future__ import annotations

import gzip
import io
import json
import random
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from streams.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = Path(__file__).parent / "scenarios"
MULTI = SCENARIOS / "crypto_engine_fault_multi_peer" / "archive.log"
SHOW_LOGGING = SCENARIOS / "show_logging_wrapped_replay" / "archive.log"
SUMMARY = re.compile(r"lines=(\d+) events=(\d+) classified=(\d+) unparsed=(\d+) incidents=(\d+) ")

Capsys = pytest.CaptureFixture[str]


def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((ROOT / "schemas" / name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _run(capsys: Capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _jsonl(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def _summary(err: str) -> dict[str, int]:
    m = SUMMARY.search(err)
    assert m is not None, err
    keys = ("lines", "events", "classified", "unparsed", "incidents")
    return dict(zip(keys, map(int, m.groups()), strict=True))


def _clean_archives() -> list[Path]:
    """Scenario archives that are syslog through and through (no banner lines)."""
    return sorted(p for p in SCENARIOS.glob("*/archive.log") if p != SHOW_LOGGING)


class _Stdin:
    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)


# -- errors and exit codes --------------------------------------------------------------------


@pytest.mark.parametrize("command", ["analyze", "parse"])
def test_a_missing_file_is_a_one_line_error_with_exit_code_2(
    command: str, capsys: Capsys, tmp_path: Path
) -> None:
    rc, out, err = _run(capsys, command, "--year", "2024", str(tmp_path / "nope.log"))
    assert rc == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("tunnelwatch: error: cannot read ")
    assert "nope.log" in err


def test_a_missing_file_after_a_good_one_still_fails_with_exit_code_2(
    capsys: Capsys, tmp_path: Path
) -> None:
    rc, _, err = _run(capsys, "analyze", "--year", "2024", str(MULTI), str(tmp_path / "gone.gz"))
    assert rc == 2
    assert err.startswith("tunnelwatch: error: cannot read ")
    assert err.count("\n") == 1


def test_a_directory_instead_of_a_file_is_a_one_line_error(capsys: Capsys, tmp_path: Path) -> None:
    rc, _, err = _run(capsys, "analyze", str(tmp_path))
    assert rc == 2
    assert err.startswith("tunnelwatch: error: ")
    assert err.count("\n") == 1


def test_a_truncated_gzip_archive_is_a_one_line_error(capsys: Capsys, tmp_path: Path) -> None:
    whole = gzip.compress(MULTI.read_bytes())
    broken = tmp_path / "cut.log.gz"
    broken.write_bytes(whole[: len(whole) // 2])
    rc, _, err = _run(capsys, "analyze", "--year", "2024", str(broken))
    assert rc == 2
    assert err.startswith("tunnelwatch: error: cannot read ")
    assert err.count("\n") == 1


@pytest.mark.parametrize("command", ["analyze", "parse"])
def test_strict_fails_with_exit_code_2_on_a_line_that_is_not_syslog(
    command: str, capsys: Capsys, tmp_path: Path
) -> None:
    archive = tmp_path / "mixed.log"
    archive.write_text(
        MULTI.read_text(encoding="utf-8") + "this is a note somebody typed into the archive\n",
        encoding="utf-8",
    )
    rc, _, _ = _run(capsys, command, "--year", "2024", str(archive))
    assert rc == 0
    rc, _, err = _run(capsys, command, "--strict", "--year", "2024", str(archive))
    assert rc == 2
    assert "unparsed=1" in err


def test_strict_passes_when_every_line_is_syslog(capsys: Capsys) -> None:
    rc, _, err = _run(capsys, "analyze", "--strict", "--year", "2024", str(MULTI))
    assert rc == 0
    assert _summary(err)["unparsed"] == 0


# -- inputs -----------------------------------------------------------------------------------


def test_a_gzip_archive_gives_the_same_incidents_as_the_plain_one(
    capsys: Capsys, tmp_path: Path
) -> None:
    packed = tmp_path / "archive.log.1.gz"
    packed.write_bytes(gzip.compress(MULTI.read_bytes()))
    rc, plain, _ = _run(capsys, "analyze", "--format", "jsonl", "--year", "2024", str(MULTI))
    assert rc == 0
    rc, unpacked, _ = _run(capsys, "analyze", "--format", "jsonl", "--year", "2024", str(packed))
    assert rc == 0
    assert len(_jsonl(plain)) == 3
    assert _jsonl(unpacked) == _jsonl(plain)


def test_a_dash_reads_the_archive_from_standard_input(
    capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    rc, from_file, _ = _run(capsys, "analyze", "--format", "jsonl", "--year", "2024", str(MULTI))
    monkeypatch.setattr(sys, "stdin", _Stdin(MULTI.read_bytes()))
    rc, from_stdin, err = _run(capsys, "analyze", "--format", "jsonl", "--year", "2024", "-")
    assert rc == 0
    assert _jsonl(from_stdin) == _jsonl(from_file)
    assert _summary(err)["lines"] == 36


def test_parse_reads_standard_input_too(capsys: Capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    line = (
        b"<188>1235: rtr-a: Mar  4 10:00:31.123 UTC: %CRYPTO-4-RECVD_PKT_MAC_ERR: decrypt: mac "
        b"verify failed for connection id=2989 local=172.16.200.18 remote=172.16.204.18 "
        b"spi=999CD43B seqno=00071328\n"
    )
    monkeypatch.setattr(sys, "stdin", _Stdin(line))
    rc, out, _ = _run(capsys, "parse", "--year", "2024", "-")
    assert rc == 0
    (rec,) = _jsonl(out)
    assert (rec["device"], rec["kind"], rec["peer"], rec["conn_id"]) == (
        "rtr-a",
        "HMAC_VERIFY_FAILED",
        "172.16.204.18",
        "2989",
    )


def _garbage(seed: int) -> bytes:
    rng = random.Random(seed)
    good = MULTI.read_bytes().splitlines(keepends=True)
    chunks: list[bytes] = []
    for _ in range(300):
        r = rng.random()
        if r < 0.3:
            chunks.append(rng.randbytes(rng.randrange(1, 200)))
        elif r < 0.5:
            chunks.append(rng.choice(good))
        elif r < 0.6:  # a good line cut in the middle of a UTF-8 sequence, invalid bytes in it
            line = rng.choice(good)
            cut = rng.randrange(len(line))
            chunks.append(line[:cut] + b"\xc3\xff\xfe\xed\xa0\x80" + line[cut:])
        elif r < 0.7:
            chunks.append(b"\x00" * rng.randrange(1, 50) + b"\r\n")
        elif r < 0.75:
            chunks.append(b"%CRYPTO-4-PKT_REPLAY_ERR: " + b"A" * 70_000 + b"\n")
        elif r < 0.85:
            chunks.append(b"<" + str(rng.randrange(999)).encode() + b">" + rng.randbytes(40))
        else:
            chunks.append(b"        connection id=" + rng.randbytes(8) + b"\n")
    return b"".join(chunks)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("command", ["analyze", "parse"])
def test_random_bytes_and_invalid_utf8_do_not_crash(
    command: str, seed: int, capsys: Capsys, tmp_path: Path
) -> None:
    archive = tmp_path / "garbage.log"
    archive.write_bytes(_garbage(seed))
    fmt = ["--format", "jsonl"] if command == "analyze" else []
    rc, out, _ = _run(capsys, command, *fmt, "--year", "2024", str(archive))
    assert rc == 0
    for line in out.splitlines():
        json.loads(line)


# -- output contracts -------------------------------------------------------------------------


def test_jsonl_prints_one_line_per_incident_each_valid_against_the_incident_schema(
    capsys: Capsys,
) -> None:
    validator = _validator("incident.schema.json")
    archives = sorted(str(p) for p in SCENARIOS.glob("*/archive.log"))
    rc, out, err = _run(
        capsys, "analyze", "--format", "jsonl", "--year", "2024", "--device", "br-rtr9", *archives
    )
    assert rc == 0
    records = _jsonl(out)
    assert out.endswith("\n") and out.count("\n") == len(records)
    assert len(records) == _summary(err)["incidents"] >= 30
    assert len({r["incident_id"] for r in records}) == len(records)
    for rec in records:
        errors = [e.message for e in validator.iter_errors(rec)]
        assert errors == [], (rec["incident_id"], errors)


def test_jsonl_prints_nothing_when_there_is_no_incident(capsys: Capsys) -> None:
    archive = SCENARIOS / "decoy_healthy_rekeys" / "archive.log"
    rc, out, err = _run(capsys, "analyze", "--format", "jsonl", "--year", "2024", str(archive))
    assert rc == 0
    assert out == ""
    assert _summary(err)["incidents"] == 0


def test_parse_prints_one_json_object_per_record_each_valid_against_the_event_schema(
    capsys: Capsys,
) -> None:
    validator = _validator("event.schema.json")
    archives = [str(p) for p in _clean_archives()]
    rc, out, err = _run(capsys, "parse", "--year", "2024", *archives)
    assert rc == 0
    records = _jsonl(out)
    m = re.search(r"records=(\d+) events=(\d+) classified=(\d+) unparsed=(\d+)", err)
    assert m is not None, err
    assert len(records) == int(m.group(1)) == int(m.group(2)) > 3000
    assert int(m.group(4)) == 0
    kinds = {r["kind"] for r in records}
    assert {"HMAC_VERIFY_FAILED", "REPLAY_CHECK_FAILED", "PEER_LOST", None} <= kinds
    for rec in records:
        errors = [e.message for e in validator.iter_errors(rec)]
        assert errors == [], (rec["raw"], errors)


def test_parse_only_known_prints_only_catalog_messages(capsys: Capsys) -> None:
    rc, out, _ = _run(capsys, "parse", "--only-known", "--year", "2024", str(MULTI))
    assert rc == 0
    records = _jsonl(out)
    assert len(records) == 22
    assert all(r["kind"] is not None for r in records)


def test_the_stderr_summary_counts_lines_events_unparsed_and_incidents(capsys: Capsys) -> None:
    rc, _, err = _run(
        capsys, "analyze", "--format", "jsonl", "--year", "2024", "--device", "x", str(SHOW_LOGGING)
    )
    assert rc == 0
    assert err.startswith("tunnelwatch: lines=")
    for field in ("lines=", "events=", "unparsed=", "incidents="):
        assert field in err
    s = _summary(err)
    assert s == {"lines": 18, "events": 13, "classified": 8, "unparsed": 5, "incidents": 1}
    assert s["lines"] == s["events"] + s["unparsed"]


def test_the_default_table_names_each_incident(capsys: Capsys) -> None:
    rc, out, _ = _run(capsys, "analyze", "--year", "2024", str(MULTI))
    assert rc == 0
    assert "VPN incidents (3)" in out
    assert "crypto_engine_fault" in out
    assert "203.0.113.10" in out


def test_parse_prints_lines_that_are_not_syslog_as_dead_letters_valid_against_their_schema(
    tmp_path: Path, capsys: Capsys
) -> None:
    events = _validator("event.schema.json")
    letters = _validator("deadletter.schema.json")
    archive = tmp_path / "mixed.log"
    archive.write_text(
        "just some text\n"
        "Mar  5 10:00:00 rtr-1 12: Mar  5 10:00:00.123: %CRYPTO-4-IKMP_NO_SA: IKE message from "
        "198.51.100.1 has no SA and is not an initialization offer\n"
        "\x00\x01 binary junk\n",
        encoding="utf-8",
    )
    rc, out, _ = _run(capsys, "parse", "--year", "2024", str(archive))
    assert rc == 0
    records = _jsonl(out)
    assert [bool(r.get("unparsed")) for r in records] == [True, False, True]
    for rec in records:
        validator = letters if rec.get("unparsed") else events
        errors = [e.message for e in validator.iter_errors(rec)]
        assert errors == [], (rec, errors)
