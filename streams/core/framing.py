"""Framing: the text of an archive into records (one syslog message each).

Framing is separate from parsing. ``show logging`` captures and documents wrap
long messages onto continuation lines; those are joined to the record they
continue:

- a line that starts with white space continues the previous record;
- a line that starts with a known tail of a wrapped message
  (``connection id=``, ``PktEngReturn_``) does too;
- a relay line that carries only its header (``Sep 22 11:02:39 10.1.1.1 2435:``)
  is joined with the next line, which holds the message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

_TAIL_STARTS = re.compile(r"^(?:connection id=|PktEngReturn_|sequence number=)")
_HEADER_ONLY = re.compile(
    r"^(?:<\d{1,3}>)?(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s+\d{1,2}"
    r"(?:\s+\d{4})?\s+\d{1,2}:\d{2}:\d{2}(?:\.\d+)?\s+\S+(?:\s+\d+:)?\s*$"
)
MAX_RECORD = 65536


def iter_records(lines: Iterable[str]) -> Iterator[str]:
    """Join wrapped lines; yield one record per message (without the newline)."""
    pending: str | None = None
    pending_header_only = False
    for line in lines:
        line = line.rstrip("\r\n")
        if pending is not None:
            if pending_header_only and line.strip():
                pending = pending + " " + line.lstrip()
                pending_header_only = False
                continue
            first = line[:1]
            if (first in (" ", "\t") and not line.isspace()) or (
                first in ("c", "P", "s") and _TAIL_STARTS.match(line) is not None
            ):
                if len(pending) < MAX_RECORD:
                    pending = pending + "\n" + line
                continue
            yield pending
            pending = None
        if not line or line.isspace():
            continue
        pending = line
        # A relay header standing alone is short and carries no message tag.
        pending_header_only = (
            len(line) < 120 and "%" not in line and _HEADER_ONLY.match(line) is not None
        )
    if pending is not None:
        yield pending
