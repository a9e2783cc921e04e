"""RFC 3339 parsing: every precision and zone form the service writes, compared as instants."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from fwemu.client.timeparse import format_rfc3339, parse_rfc3339, parse_rfc3339_or_none

UTC = timezone.utc


@pytest.mark.parametrize("text, expected", [
    ("2025-03-01T12:00:13Z", datetime(2025, 3, 1, 12, 0, 13, tzinfo=UTC)),
    ("2025-03-01T12:00:13.5Z", datetime(2025, 3, 1, 12, 0, 13, 500000, tzinfo=UTC)),
    ("2025-03-01T12:00:13.123456Z", datetime(2025, 3, 1, 12, 0, 13, 123456, tzinfo=UTC)),
    ("2025-03-01T12:00:13.123456789Z", datetime(2025, 3, 1, 12, 0, 13, 123456, tzinfo=UTC)),
    ("2025-03-01t12:00:13z", datetime(2025, 3, 1, 12, 0, 13, tzinfo=UTC)),
    ("2025-03-01T12:00:13+02:00", datetime(2025, 3, 1, 10, 0, 13, tzinfo=UTC)),
    ("2025-03-01T12:00:13.25-0130", datetime(2025, 3, 1, 13, 30, 13, 250000, tzinfo=UTC)),
    ("2025-03-01 12:00:13", datetime(2025, 3, 1, 12, 0, 13, tzinfo=UTC)),
    ("2016-12-31T23:59:60Z", datetime(2017, 1, 1, 0, 0, 0, tzinfo=UTC)),
])
def test_parses_to_the_right_instant(text, expected):
    parsed = parse_rfc3339(text)
    assert parsed.tzinfo is not None
    assert parsed == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2025-03-01", "2025-03-01T12:00Z", "2025-13-01T00:00:00Z",
                                  "2025-03-01T12:00:13.Z", "2025-03-01T12:00:13+2"])
def test_rejects_malformed(text):
    with pytest.raises(ValueError):
        parse_rfc3339(text)
    assert parse_rfc3339_or_none(text) is None


def test_mixed_precisions_order_by_instant_not_by_string():
    whole, later = "2025-03-01T12:00:13Z", "2025-03-01T12:00:13.000001Z"
    assert whole > later                      # string order: wrong
    assert parse_rfc3339(whole) < parse_rfc3339(later)


def test_nanoseconds_truncate_without_reordering():
    a, b = parse_rfc3339("2025-03-01T12:00:13.999999999Z"), parse_rfc3339("2025-03-01T12:00:14Z")
    assert a < b and b - a == timedelta(microseconds=1)


def test_format_round_trips():
    dt = datetime(2025, 3, 1, 12, 0, 13, 42, tzinfo=timezone(timedelta(hours=5)))
    assert format_rfc3339(dt) == "2025-03-01T07:00:13.000042Z"
    assert parse_rfc3339(format_rfc3339(dt)) == dt
    assert parse_rfc3339_or_none(None) is None
