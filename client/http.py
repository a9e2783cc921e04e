"""The one authenticated HTTP session both of our clients share: headers, retries, error parsing.

Kept apart from the control-plane and gateway clients so each of those only says *what* to call.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import httpx

from fwemu.client.retry import RetryPolicy, raise_for_status
from fwemu.client.transport import as_sync_transport

DEFAULT_BASE_URL = "https://api.fireworks.ai"
USER_AGENT = "fwemu-client/0.1"


def env_base_url(explicit: str | None) -> str:
    """`explicit`, else env FIREWORKS_BASE_URL, else the public service; no trailing slash."""
    return (explicit or os.environ.get("FIREWORKS_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def env_api_key(explicit: str | None) -> str:
    """`explicit`, else env FIREWORKS_API_KEY; a missing key is a ValueError with the fix."""
    key = explicit or os.environ.get("FIREWORKS_API_KEY")
    if not key:
        raise ValueError("no API key: pass api_key=... or set FIREWORKS_API_KEY")
    return key


class ApiSession:
    """httpx.Client + RetryPolicy + FwApiError, rooted at `base_url`.

    `transport` may be any httpx transport, sync or async (see client.transport). Requests to an
    absolute URL (e.g. a gateway on another host) go through the same transport and headers.
    """

    def __init__(self, base_url: str, api_key: str, *, transport: Any = None,
                 retry: RetryPolicy | None = None, timeout_s: float = 60.0,
                 headers: Mapping[str, str] | None = None):
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(
            base_url=self.base_url,
            transport=as_sync_transport(transport),
            timeout=httpx.Timeout(timeout_s),
            headers={"X-Api-Key": api_key, "User-Agent": USER_AGENT, **(headers or {})},
        )

    def request(self, method: str, url: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None, content: Any = None,
                timeout_s: float | None = None, retry: RetryPolicy | None = None,
                check: bool = True) -> httpx.Response:
        """Send with retries; raise FwApiError on a final non-2xx unless `check` is False."""
        kwargs: dict[str, Any] = {"params": params, "headers": headers}
        if json is not None:
            kwargs["json"] = json
        elif content is not None:
            kwargs["content"] = content
        if timeout_s is not None:
            kwargs["timeout"] = timeout_s
        policy = retry or self.retry
        response = policy.call(lambda: self._http.request(method, url, **kwargs), what=f"{method} {url}")
        return raise_for_status(response) if check else response

    def get_json(self, url: str, **kwargs: Any) -> Any:
        return self.request("GET", url, **kwargs).json()

    def post_json(self, url: str, body: Any = None, **kwargs: Any) -> Any:
        response = self.request("POST", url, json=body, **kwargs)
        return response.json() if response.content else {}

    def close(self) -> None:
        self._http.close()
