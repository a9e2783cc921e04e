"""Errors raised by our client, and the parser for the service's error envelope.

The service answers `{"error": {"code": <grpc int>, "status": "<NAME>", "message": "...",
"details": [ErrorInfo...]}}`; the real SDK (errors.parse_api_error) also accepts `{"message": ...}`
and `{"error": "text"}`, and falls back to the first 200 characters of a non-JSON body. We parse the
same shapes so a message the server wrote always reaches the user verbatim.
"""

from __future__ import annotations

from typing import Any

import httpx

_ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"

# gRPC code -> canonical status name, for servers that send only the number (or only the name).
GRPC_STATUS_NAMES = {
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND", 6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION", 10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED",
    13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}
_GRPC_CODES = {name: code for code, name in GRPC_STATUS_NAMES.items()}


class FwError(Exception):
    """Base of every error this client raises on purpose (the CLI prints these without a traceback)."""


class FwApiError(FwError):
    """A non-2xx answer from the control plane or the gateway, after any retries.

    `message` is the server's own `error.message`; `status` the HTTP status; `code` the gRPC code
    (int or None); `status_name` e.g. "FAILED_PRECONDITION"; `reason` the ErrorInfo reason if any.
    """

    def __init__(self, status: int, code: int | None, status_name: str | None, message: str,
                 reason: str | None = None, *, method: str | None = None, url: str | None = None):
        self.status = status
        self.code = code
        self.status_name = status_name
        self.message = message
        self.reason = reason
        self.method = method
        self.url = url
        super().__init__(str(self))

    def __str__(self) -> str:
        name = f" {self.status_name}" if self.status_name else ""
        return f"HTTP {self.status}{name}: {self.message}"

    @classmethod
    def from_response(cls, response: httpx.Response) -> "FwApiError":
        code, status_name, message, reason = parse_error_body(response)
        request = _request_of(response)
        return cls(response.status_code, code, status_name, message, reason,
                   method=request.method if request else None,
                   url=str(request.url) if request else None)


class FwConnectionError(FwError):
    """The server could not be reached (or kept timing out) within the retry budget."""


class TrainerRequestError(FwError):
    """A gateway future that finished with `{"error": ..., "category": ...}`.

    `category` is "user" (bad input: fix the request), "server" or "unknown" (the trainer failed).
    """

    def __init__(self, message: str, category: str | None = None, error_class: str | None = None,
                 request_type: str | None = None):
        self.message = message
        self.category = category
        self.error_class = error_class
        self.request_type = request_type
        where = f"{request_type} " if request_type else ""
        super().__init__(f"{where}request failed ({category or 'unknown'} error): {message}")


def _request_of(response: httpx.Response) -> httpx.Request | None:
    """httpx raises when a hand-built Response has no request; error parsing must not."""
    try:
        return response.request
    except RuntimeError:
        return None


def parse_error_body(response: httpx.Response) -> tuple[int | None, str | None, str, str | None]:
    """(grpc code, status name, message, ErrorInfo reason) from any error body the service sends."""
    try:
        body: Any = response.json()
    except ValueError:
        text = response.text.strip()[:200]
        return None, None, text or response.reason_phrase or f"HTTP {response.status_code}", None
    err = body.get("error", body) if isinstance(body, dict) else body
    if not isinstance(err, dict):
        return None, None, str(err), None
    message = err.get("message")
    if not isinstance(message, str):
        message = str(err)
    raw_code, status_name = err.get("code"), err.get("status")
    code: int | None = None
    if isinstance(raw_code, int) and not isinstance(raw_code, bool):
        code = raw_code
    elif isinstance(raw_code, str) and raw_code in _GRPC_CODES:  # some servers send the name as code
        code, status_name = _GRPC_CODES[raw_code], status_name or raw_code
    if not isinstance(status_name, str):
        status_name = GRPC_STATUS_NAMES.get(code) if code is not None else None
    reason = None
    details = err.get("details")
    if isinstance(details, list):
        for item in details:
            if isinstance(item, dict) and item.get("@type") == _ERROR_INFO_TYPE and item.get("reason"):
                reason = str(item["reason"])
                break
    return code, status_name, message, reason
