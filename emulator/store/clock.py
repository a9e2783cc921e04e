"""Time for the emulator: unique, increasing microsecond stamps and RFC 3339 text.

Stamps are strictly increasing so "oldest first" is a total order even for saves in the same
microsecond; tests and the admin API can shift the clock to walk through retention windows.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone


class Clock:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0
        self.offset_us = 0

    def now_us(self) -> int:
        """Wall time in microseconds (plus the admin offset), never equal to a previous stamp."""
        with self._lock:
            now = time.time_ns() // 1000 + self.offset_us
            self._last = max(now, self._last + 1)
            return self._last

    def not_before(self, us: int) -> None:
        """Never hand out a stamp at or before `us` (the newest stamp already stored, after a restart)."""
        with self._lock:
            self._last = max(self._last, us)

    def now_us_whole_second(self) -> int:
        """A stamp rounded up to a whole second (the real service prints those without a fraction)."""
        with self._lock:
            now = time.time_ns() // 1000 + self.offset_us
            stamp = -(-max(now, self._last + 1) // 1_000_000) * 1_000_000
            self._last = stamp
            return stamp

    def peek_us(self) -> int:
        """Current time without reserving a stamp (for expiry checks)."""
        return time.time_ns() // 1000 + self.offset_us


def rfc3339(us: int) -> str:
    """RFC 3339 UTC text the way protobuf's JSON mapping prints it: 0, 3 or 6 fraction digits.

    So `...05Z`, `...05.120Z` and `...05.123456Z` all occur, as on the real service; clients
    must compare parsed times, never strings.
    """
    dt = datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc)
    frac = us % 1_000_000
    head = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if frac == 0:
        return head + "Z"
    if frac % 1000 == 0:
        return f"{head}.{frac // 1000:03d}Z"
    return f"{head}.{frac:06d}Z"
