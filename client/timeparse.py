"""RFC 3339 timestamps as the control plane writes them, parsed to aware datetimes.

The service mixes precisions in one listing (`...:13Z` next to `...:13.123456Z`, sometimes
nanoseconds). Sorting those strings is wrong: `'Z' (0x5A) > '.' (0x2E)`, so a whole-second stamp
sorts after a later fractional one. Everything that orders rows must compare parsed values.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?$"
)


def parse_rfc3339(value: str) -> datetime:
    """Parse `value` into an aware datetime (UTC when no zone is given).

    Accepts any number of fractional digits (beyond microseconds they are truncated, not rounded,
    so ordering is preserved), `Z`/`z`, `+HH:MM`, `+HHMM`. Raises ValueError on anything else.
    """
    m = _RFC3339.match(value.strip()) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"not an RFC 3339 timestamp: {value!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    frac = m.group(7) or ""
    micro = int((frac + "000000")[:6])
    if m.group(9):
        sign = 1 if m.group(9) == "+" else -1
        tz = timezone(sign * timedelta(hours=int(m.group(10)), minutes=int(m.group(11))))
    else:
        tz = timezone.utc
    leap = second == 60  # RFC 3339 allows a leap second; datetime does not
    dt = datetime(year, month, day, hour, minute, 59 if leap else second, micro, tzinfo=tz)
    return dt + timedelta(seconds=1) if leap else dt


def parse_rfc3339_or_none(value: object) -> datetime | None:
    """Like parse_rfc3339, but None for a missing or malformed value (callers decide how loud to be)."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return parse_rfc3339(value)
    except ValueError:
        return None


def format_rfc3339(dt: datetime) -> str:
    """UTC, microsecond precision, `Z` suffix: the form our own bookkeeping files use."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
