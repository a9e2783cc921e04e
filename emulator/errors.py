"""The service's error envelope, and the one exception every layer raises to produce it.

`{"error": {"code": <grpc int>, "status": "<NAME>", "message": "...", "details": [ErrorInfo]}}`
with the matching HTTP status. The SDK reads `error.message` (parse_api_error) and
`details[].reason` (TrainingAPIError.reason). Client mistakes are always 4xx with a JSON body:
the real SDK retries 5xx (and some 4xx on the trainer side) for minutes.
"""

from __future__ import annotations

# name -> (grpc code, http status)
STATUSES = {
    "INVALID_ARGUMENT": (3, 400),
    "FAILED_PRECONDITION": (9, 400),
    "OUT_OF_RANGE": (11, 400),
    "UNAUTHENTICATED": (16, 401),
    "PERMISSION_DENIED": (7, 403),
    "NOT_FOUND": (5, 404),
    "ALREADY_EXISTS": (6, 409),
    "RESOURCE_EXHAUSTED": (8, 429),
    "CANCELLED": (1, 499),
    "INTERNAL": (13, 500),
    "UNAVAILABLE": (14, 503),
    "DEADLINE_EXCEEDED": (4, 504),
}


class ApiError(Exception):
    def __init__(self, status: str, message: str, *, reason: str | None = None, http_status: int | None = None):
        super().__init__(message)
        self.status = status
        self.code, default_http = STATUSES[status]
        self.http_status = http_status or default_http
        self.message = message
        self.reason = reason or status

    def body(self) -> dict:
        return {
            "error": {
                "code": self.code,
                "status": self.status,
                "message": self.message,
                "details": [{
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": self.reason,
                    "domain": "training.fireworks.ai",
                    "metadata": {"version": "1", "source": "lifecycle"},
                }],
            }
        }


def invalid_argument(message: str, reason: str | None = None) -> ApiError:
    return ApiError("INVALID_ARGUMENT", message, reason=reason)


def failed_precondition(message: str, reason: str | None = None) -> ApiError:
    return ApiError("FAILED_PRECONDITION", message, reason=reason)


def not_found(message: str) -> ApiError:
    return ApiError("NOT_FOUND", message)


def already_exists(message: str) -> ApiError:
    return ApiError("ALREADY_EXISTS", message)


def unauthenticated(message: str) -> ApiError:
    return ApiError("UNAUTHENTICATED", message)


def unavailable(message: str) -> ApiError:
    return ApiError("UNAVAILABLE", message)
