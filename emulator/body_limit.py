"""A cap on request bodies, enforced before they are parsed or stored (the import route has its own).

Control-plane bodies are a few hundred bytes; trainer bodies carry token batches (the SDK splits a
forward_backward into chunks of about 5 MB). Anything far beyond that is refused with a 413 error
envelope instead of being read whole into memory and, for a job body, stored in its row.
"""

from __future__ import annotations

from fwemu.emulator.errors import ApiError
from fwemu.emulator.http_errors import error_response


def _too_large(limit: int) -> ApiError:
    return ApiError("INVALID_ARGUMENT", f"request body exceeds the {limit}-byte limit for this route",
                    reason="BODY_TOO_LARGE", http_status=413)


class BodyLimitMiddleware:
    def __init__(self, app, *, control_plane_bytes: int, gateway_bytes: int):
        self.app = app
        self.control_plane_bytes, self.gateway_bytes = control_plane_bytes, gateway_bytes

    def limit_for(self, path: str) -> int | None:
        if path.endswith("/checkpoints:import"):
            return None  # streamed to disk with its own size and file-count caps
        return self.gateway_bytes if path.startswith("/training/") else self.control_plane_bytes

    async def __call__(self, scope, receive, send):
        limit = self.limit_for(scope.get("path", "")) if scope["type"] == "http" else None
        if limit is None:
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await error_response(_too_large(limit))(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _too_large(limit)
            return message

        return await self.app(scope, counted, send)
