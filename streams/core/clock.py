"""Timestamps in Cisco and syslog headers: parsing, timezone labels, year inference.

Pure functions plus :class:`YearTracker`, a small piece of state that the caller
owns (one per input stream) so that year-less stamps get a year that is
monotonic per device across Dec 31 -> Jan 1.
"""

from __future__ import annotations

import calendar
import functools
import re
import time
from dataclasses import dataclass, field

MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}

# Timezone labels seen on Cisco devices (``clock timezone NAME h m``). The label is
# free text chosen by the admin; these are the common ones. Offsets in minutes.
TZ_OFFSETS: dict[str, int] = {
    "utc": 0, "gmt": 0, "z": 0, "ut": 0, "wet": 0, "west": 60, "bst": 60, "ist": 60,
    "cet": 60, "cest": 120, "met": 60, "mest": 120, "mez": 60, "mesz": 120,
    "eet": 120, "eest": 180, "msk": 180, "gst": 240,
    "est": -300, "edt": -240, "cst": -360, "cdt": -300, "mst": -420, "mdt": -360,
    "pst": -480, "pdt": -420, "akst": -540, "akdt": -480, "hst": -600,
    "ast": -240, "adt": -180, "nst": -210, "ndt": -150, "brt": -180,
    "kst": 540, "jst": 540, "hkt": 480, "sgt": 480, "awst": 480, "cct": 480,
    "acst": 570, "acdt": 630, "aest": 600, "aedt": 660, "nzst": 720, "nzdt": 780,
    "pht": 480, "wib": 420, "ict": 420,
}  # fmt: skip

_OFFSET_LABEL = re.compile(r"^(?:utc|gmt)?([+-])(\d{1,2})(?::?(\d{2}))?$", re.IGNORECASE)


@functools.lru_cache(maxsize=1024)
def tz_offset_minutes(label: str | None) -> tuple[int, bool]:
    """Offset of a timezone label in minutes east of UTC and whether it was known.

    Unknown labels (``NewYork``, ``VIENNA``) are read as UTC and flagged.
    """
    if not label:
        return 0, True
    key = label.lower()
    off = TZ_OFFSETS.get(key)
    if off is not None:
        return off, True
    m = _OFFSET_LABEL.match(key)
    if m:
        minutes = int(m.group(2)) * 60 + int(m.group(3) or 0)
        return (-minutes if m.group(1) == "-" else minutes), True
    # Beyond the common labels: an abbreviation of the IANA database (zoneinfo) that
    # stands for one offset only.
    from streams.core.zones import label_offset_minutes

    off = label_offset_minutes(key)
    if off is not None:
        return off, True
    return 0, False


_DAY_CACHE: dict[tuple[int, int, int], int] = {}


def epoch_of(year: int, month: int, day: int, hh: int, mm: int, ss: int) -> float | None:
    """POSIX seconds of a UTC civil time; None when the date does not exist."""
    key = (year, month, day)
    base = _DAY_CACHE.get(key)
    if base is None:
        if not (1 <= month <= 12) or not (1 <= day <= calendar.monthrange(year, month)[1]):
            return None
        base = calendar.timegm((year, month, day, 0, 0, 0, 0, 0, 0))
        if len(_DAY_CACHE) < 100_000:
            _DAY_CACHE[key] = base
    if hh > 23 or mm > 59 or ss > 60:
        return None
    return float(base + hh * 3600 + mm * 60 + ss)


def civil_of(ts: float) -> tuple[int, int, int]:
    """(year, month, day) of POSIX seconds in UTC."""
    st = time.gmtime(ts)
    return st.tm_year, st.tm_mon, st.tm_mday


@dataclass(slots=True)
class YearTracker:
    """Chooses the year of year-less stamps, monotonic per device.

    ``year`` (``--year``) is the year of each device's first year-less stamp.
    Without it, ``reference_ts`` is used. For an archive (the file's modification
    time, after its last line) the first stamp gets the latest year that does not
    put it more than a day after the reference. For a live stream (``nearest``: the
    reference is the time the line was received) it gets the latest year that puts it
    no more than a week after the reference: a device whose clock runs days ahead
    stays in this year, a stamp of Jan 2 received on Dec 31 is next year's, and a
    replayed archive's ``Mar  5`` received in December is this year's March, never
    next year's. After that a
    device's month going backwards by more than six months (Dec -> Jan) moves that
    device to the next year.
    """

    year: int | None = None
    reference_ts: float | None = None
    nearest: bool = False
    last: dict[str, tuple[int, int]] = field(default_factory=dict)  # device -> (year, month)

    def year_for(self, device: str | None, month: int, day: int) -> int:
        key = device or ""
        prev = self.last.get(key)
        if prev is not None:
            pyear, pmonth = prev
            if month < pmonth - 6:
                year = pyear + 1
            elif month > pmonth + 6:
                # An out-of-order line from the end of the previous year.
                return pyear - 1
            else:
                year = pyear
        else:
            year = self._first_year(month, day)
        self.last[key] = (year, month)
        return year

    def _first_year(self, month: int, day: int) -> int:
        if self.year is not None:
            return self.year
        if self.reference_ts is not None:
            ryear, rmonth, rday = civil_of(self.reference_ts)
            if self.nearest:
                return _nearest_year(self.reference_ts, ryear, month, day)
            if (month, day) > (rmonth, rday + 1):
                return ryear - 1
            return ryear
        return 1970


#: How far ahead of its receive time a year-less stamp may be (a device clock a few days
#: fast); further ahead, the stamp is last year's: devices do not log the future.
MAX_AHEAD = 7 * 86400.0


def _nearest_year(reference: float, ryear: int, month: int, day: int) -> int:
    """The latest year (of the reference's and its neighbours) that puts month/day no
    more than :data:`MAX_AHEAD` after ``reference`` (the reference's own year when the
    date exists in none)."""
    for year in (ryear + 1, ryear, ryear - 1):
        at = epoch_of(year, month, day, 0, 0, 0)
        if at is not None and at <= reference + MAX_AHEAD:
            return year
    return ryear
