"""When and how long to retry an HTTP call.

Only transient failures are retried: 408, 429, 5xx, connection errors and timeouts. Anything else
is the caller's mistake and retrying would only hide it. Backoff is exponential and bounded both
by a count and by total elapsed time, so a dead server fails in predictable time (the real SDK
retries 5xx for five minutes; our default is shorter because a local emulator never needs it).
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import httpx

from fwemu.client.errors import FwApiError, FwConnectionError

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# timeouts, connect/read/write failures and a connection dropped mid-response; not e.g. a bad URL scheme
RETRYABLE_EXCEPTIONS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def is_retryable_status(status: int) -> bool:
    """408, 429 and every 5xx (a 501 or 505 is as transient from a client's view as a 503)."""
    return status in RETRYABLE_STATUS or 500 <= status <= 599


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: delay n = min(base * 2**n, max_delay) (+ jitter), while under both bounds.

    `max_retries` counts retries after the first attempt; `max_elapsed_s` caps the whole call
    including the next sleep. A `Retry-After` header (seconds or HTTP date) is honoured when it is
    longer than the computed delay, within `max_delay_s`.
    """

    max_retries: int = 6
    base_delay_s: float = 0.25
    max_delay_s: float = 8.0
    max_elapsed_s: float = 60.0
    jitter: float = 0.1
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)

    def delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        """The sleep before retry number `attempt` (0-based)."""
        d = min(self.base_delay_s * (2 ** attempt), self.max_delay_s)
        if self.jitter:
            d *= 1 + random.uniform(0, self.jitter)
        after = _retry_after_s(response) if response is not None else None
        if after is not None:
            d = max(d, min(after, self.max_delay_s))
        return d

    def call(self, send: Callable[[], httpx.Response], *, what: str) -> httpx.Response:
        """Run `send` until it returns a non-retryable response or the budget is spent.

        Returns the last response (2xx or a non-retryable error, or a retryable one once the budget
        is gone: the caller turns that into FwApiError). Raises FwConnectionError when the last
        attempt failed at the transport level.
        """
        start = self.clock()
        attempt = 0
        while True:
            try:
                response = send()
                failure: BaseException | None = None
            except RETRYABLE_EXCEPTIONS as exc:
                response, failure = None, exc
            if response is not None and not is_retryable_status(response.status_code):
                return response
            delay = self.delay(attempt, response)
            spent = self.clock() - start
            if attempt >= self.max_retries or spent + delay > self.max_elapsed_s:
                if response is not None:
                    return response
                raise FwConnectionError(
                    f"{what}: could not reach the server after {attempt + 1} attempt(s) "
                    f"in {spent:.1f}s: {type(failure).__name__}: {failure}"
                ) from failure
            why = f"HTTP {response.status_code}" if response is not None else type(failure).__name__
            if attempt == 0:   # say so once: a person may be waiting on a server that is down
                log.warning("%s: %s; retrying (up to %d times within %.0fs)", what,
                            _describe(response, failure), self.max_retries, self.max_elapsed_s)
            log.debug("%s: %s, retry %d in %.2fs", what, why, attempt + 1, delay)
            self.sleep(delay)
            attempt += 1


NO_RETRY = RetryPolicy(max_retries=0)


def _describe(response: httpx.Response | None, failure: BaseException | None) -> str:
    if response is not None:
        return f"the server answered HTTP {response.status_code}"
    if isinstance(failure, httpx.ConnectError):
        return f"nothing answers ({failure})"
    return f"{type(failure).__name__}: {failure}"


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def raise_for_status(response: httpx.Response) -> httpx.Response:
    """FwApiError carrying the server's message for any non-2xx response."""
    if response.is_success:
        return response
    raise FwApiError.from_response(response)
