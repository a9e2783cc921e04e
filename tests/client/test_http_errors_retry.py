"""Error-envelope parsing and the retry policy, over httpx.MockTransport (no server)."""

from __future__ import annotations

import httpx
import pytest

from fwemu.client.errors import FwApiError, FwConnectionError, parse_error_body
from fwemu.client.http import ApiSession
from fwemu.client.retry import RetryPolicy, is_retryable_status


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s

    def __call__(self) -> float:
        return self.now


def policy(clock: FakeClock, **kw) -> RetryPolicy:
    return RetryPolicy(sleep=clock.sleep, clock=clock, jitter=0, **kw)


def session(handler, retry: RetryPolicy) -> ApiSession:
    return ApiSession("http://cp", "key", transport=httpx.MockTransport(handler), retry=retry)


ENVELOPE = {"error": {"code": 9, "status": "FAILED_PRECONDITION", "message": "checkpoint x is not promotable",
                      "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                   "reason": "CHECKPOINT_NOT_PROMOTABLE", "domain": "training.fireworks.ai"}]}}


@pytest.mark.parametrize("body, expected", [
    (ENVELOPE, (9, "FAILED_PRECONDITION", "checkpoint x is not promotable", "CHECKPOINT_NOT_PROMOTABLE")),
    ({"error": {"code": 5, "message": "gone"}}, (5, "NOT_FOUND", "gone", None)),
    ({"code": "NOT_FOUND", "message": "flat"}, (5, "NOT_FOUND", "flat", None)),
    ({"message": "only a message"}, (None, None, "only a message", None)),
    ({"error": "plain string"}, (None, None, "plain string", None)),
])
def test_parse_error_body_shapes(body, expected):
    assert parse_error_body(httpx.Response(400, json=body)) == expected


def test_parse_error_body_non_json_keeps_200_chars():
    code, name, message, reason = parse_error_body(httpx.Response(502, text="<html>" + "x" * 500))
    assert message.startswith("<html>") and len(message) == 200 and code is None


def test_api_error_carries_the_server_message():
    s = session(lambda r: httpx.Response(400, json=ENVELOPE), policy(FakeClock()))
    with pytest.raises(FwApiError) as err:
        s.request("POST", "/v1/x")
    e = err.value
    assert (e.status, e.code, e.status_name, e.reason) == (400, 9, "FAILED_PRECONDITION", "CHECKPOINT_NOT_PROMOTABLE")
    assert e.message == "checkpoint x is not promotable"
    assert str(e) == "HTTP 400 FAILED_PRECONDITION: checkpoint x is not promotable"
    assert e.method == "POST" and e.url == "http://cp/v1/x"


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried_then_succeed(status):
    answers = [httpx.Response(status, json={"error": {"message": "busy"}})] * 2 + [httpx.Response(200, json={"ok": 1})]
    seen = []

    def handler(request):
        seen.append(request)
        return answers[len(seen) - 1]

    clock = FakeClock()
    assert session(handler, policy(clock, base_delay_s=0.5)).get_json("/v1/x") == {"ok": 1}
    assert len(seen) == 3 and clock.sleeps == [0.5, 1.0]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 422])
def test_client_errors_are_not_retried(status):
    seen = []

    def handler(request):
        seen.append(request)
        return httpx.Response(status, json={"error": {"message": f"nope {status}"}})

    with pytest.raises(FwApiError, match=f"nope {status}"):
        session(handler, policy(FakeClock())).get_json("/v1/x")
    assert len(seen) == 1


def test_gives_up_after_max_retries_with_the_last_server_message():
    seen = []

    def handler(request):
        seen.append(1)
        return httpx.Response(503, json={"error": {"code": 14, "message": "down for maintenance"}})

    clock = FakeClock()
    with pytest.raises(FwApiError) as err:
        session(handler, policy(clock, max_retries=3, base_delay_s=1, max_delay_s=2)).get_json("/v1/x")
    assert err.value.status == 503 and err.value.message == "down for maintenance"
    assert len(seen) == 4 and clock.sleeps == [1, 2, 2]


def test_total_time_bound_stops_retrying_early():
    clock = FakeClock()
    seen = []

    def handler(request):
        seen.append(1)
        return httpx.Response(500, json={})

    with pytest.raises(FwApiError):
        session(handler, policy(clock, max_retries=100, base_delay_s=1, max_delay_s=4, max_elapsed_s=10)).get_json("/x")
    assert sum(clock.sleeps) <= 10 and len(seen) == len(clock.sleeps) + 1


def test_connection_errors_are_retried_then_reported():
    seen = []

    def handler(request):
        seen.append(1)
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(FwConnectionError, match="could not reach the server after 3 attempt"):
        session(handler, policy(FakeClock(), max_retries=2)).get_json("/v1/x")
    assert len(seen) == 3


def test_the_first_retry_is_announced_once(caplog):
    """A person waiting on a server that is down is told the client is retrying, once per call."""
    def handler(request):
        raise httpx.ConnectError("connection refused", request=request)

    with caplog.at_level("WARNING", logger="fwemu.client.retry"), pytest.raises(FwConnectionError):
        session(handler, policy(FakeClock(), max_retries=3, max_elapsed_s=20)).get_json("/v1/x")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert "nothing answers (connection refused); retrying (up to 3 times within 20s)" in warnings[0]


def test_timeouts_are_retried():
    calls = []

    def handler(request):
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(200, json={"ok": True})

    assert session(handler, policy(FakeClock())).get_json("/v1/x") == {"ok": True}


def test_retry_after_header_is_honoured_within_the_cap():
    answers = iter([httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(200, json={})])
    clock = FakeClock()
    session(lambda r: next(answers), policy(clock, base_delay_s=0.1, max_delay_s=5)).get_json("/x")
    assert clock.sleeps == [3.0]


def test_retryable_status_classification():
    assert all(is_retryable_status(s) for s in (408, 429, 500, 501, 503, 599))
    assert not any(is_retryable_status(s) for s in (200, 400, 404, 409, 410))


def test_api_key_header_is_sent():
    got = {}

    def handler(request):
        got.update(request.headers)
        return httpx.Response(200, json={})

    session(handler, policy(FakeClock())).get_json("/x")
    assert got["x-api-key"] == "key"
