"""Every error leaves the app in the service's JSON envelope: never an HTML page, never a bare 422.

Client mistakes (bad JSON, wrong types, unknown routes) are 4xx; only a bug in the emulator is a
500, and that too is an envelope, so the SDK's error parser always finds `error.message`.
"""

from __future__ import annotations

import logging
import sqlite3

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fwemu.emulator.errors import ApiError

log = logging.getLogger("fwemu")

_BY_HTTP = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
            409: "ALREADY_EXISTS", 413: "INVALID_ARGUMENT", 415: "INVALID_ARGUMENT"}


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.http_status)


def _describe(errors: list[dict]) -> str:
    parts = []
    for e in errors[:5]:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, exc: ApiError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError):
        return error_response(ApiError("INVALID_ARGUMENT", _describe(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, exc: StarletteHTTPException):
        status = _BY_HTTP.get(exc.status_code, "INVALID_ARGUMENT")
        message = f"no route for {req.method} {req.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return error_response(ApiError(status, message, http_status=exc.status_code))

    @app.exception_handler(sqlite3.ProgrammingError)   # a class handler: answered, not re-raised to uvicorn
    async def _store_closed(req: Request, exc: Exception):
        services = getattr(req.app.state, "services", None)
        if services is not None and getattr(services.store, "closed", False):
            # a request still in flight when the server stopped (a restart): retryable, not a bug
            log.warning("%s %s arrived while the emulator was shutting down: answered 503", req.method, req.url.path)
            return error_response(ApiError("UNAVAILABLE", "the emulator is shutting down; retry once it is back"))
        return await _internal(req, exc)

    @app.exception_handler(Exception)
    async def _internal(req: Request, exc: Exception):
        log.exception("internal error on %s %s", req.method, req.url.path)
        return error_response(ApiError("INTERNAL", f"internal emulator error: {type(exc).__name__}: {exc}"))
