"""Capture files on disk: tell them from syslog archives, read them, report problems."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from streams.core.captures import Capture, is_capture, read
from streams.core.captures.evidence import findings
from streams.core.captures.model import Finding
from streams.core.engine import evidence_incident
from streams.core.kb import KnowledgeBase
from streams.shell.archive import open_archive

HEAD = 64 * 1024  # bytes looked at to tell a capture from a syslog archive
MAX_CAPTURE = 64 * 1024 * 1024


@dataclass(slots=True)
class Loaded:
    capture: Capture
    device: str
    time: float


def split_files(names: list[str]) -> tuple[list[str], list[tuple[str, str, float]]]:
    """Syslog archives and capture files ``(name, text, mtime)``, in the given order.
    Standard input is always syslog. Raises InputError for an unreadable file."""
    syslog: list[str] = []
    caps: list[tuple[str, str, float]] = []
    for name in names:
        if name == "-":
            syslog.append(name)
            continue
        with open_archive(name) as (stream, mtime):
            head = stream.read(HEAD)
            if not is_capture(head):
                syslog.append(name)
                continue
            text = head + stream.read(MAX_CAPTURE)
        caps.append((name, text, mtime or 0.0))
    return syslog, caps


def load(files: list[tuple[str, str, float]], device: str | None) -> list[Loaded]:
    """Read capture files; a capture's device is its prompt's or hostname's, else
    ``device`` (``--device``), else the file's name without its suffix."""
    out = []
    for name, text, mtime in files:
        cap = read(name, text, mtime)
        out.append(Loaded(cap, cap.device or device or Path(name).stem, mtime))
    return out


def finding_records(kb: KnowledgeBase, found: list[Finding]) -> list[dict[str, Any]]:
    return [
        evidence_incident(
            kb,
            f.evidence,
            f.device,
            f.peer,
            f.first_seen,
            f.last_seen,
            f.values,
            f.lines,
            f.fix,
            f.addresses,
        )
        for f in found
    ]


def capture_records(kb: KnowledgeBase, loaded: list[Loaded]) -> list[dict[str, Any]]:
    """The incident records of the evidence of capture files."""
    return finding_records(kb, findings([(x.capture, x.device, x.time) for x in loaded]))


def report_problems(loaded: list[Loaded], out: TextIO | None = None) -> int:
    """One line per problem (file, line, kind, detail); the number of problems."""
    out = out or sys.stderr
    n = 0
    for x in loaded:
        for p in x.capture.problems:
            n += 1
            print(f"tunnelwatch: {x.capture.name}:{p.line}: {p.kind}: {p.detail}", file=out)
    return n
