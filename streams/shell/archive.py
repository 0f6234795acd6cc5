"""Reading archives: plain or gzip files, or standard input."""

from __future__ import annotations

import gzip
import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from streams.errors import InputError


@contextmanager
def open_archive(name: str) -> Iterator[tuple[io.TextIOBase, float | None]]:
    """Open ``name`` (``-`` for stdin) as text; yield it with its modification time.

    Invalid UTF-8 is decoded with replacement characters: nothing is dropped.
    """
    if name == "-":
        stream = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
        yield stream, None
        return
    path = Path(name)
    try:
        mtime = os.stat(path).st_mtime
        with open(path, "rb") as probe:
            magic = probe.read(2)
        raw = gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror or exc}") from exc
    with raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline=None)
        try:
            yield text, mtime
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise InputError(f"cannot read {name}: {exc}") from exc
