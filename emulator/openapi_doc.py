"""The OpenAPI document says what the emulator really answers: errors are the service's envelope
with 400/401/404/409 (and 413/503 where they apply), never FastAPI's default 422 shape."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ENVELOPE = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "status", "message"],
        "properties": {
            "code": {"type": "integer"}, "status": {"type": "string"}, "message": {"type": "string"},
            "details": {"type": "array", "items": {"type": "object"}},
        },
    }},
}
ERRORS = {
    "400": "invalid argument or failed precondition",
    "401": "missing or unknown API key",
    "404": "not found (or another account's resource)",
    "409": "already exists",
    "413": "request body too large",
    "503": "unavailable (a quirk, a fault plan, or a trainer that is not running)",
}


def install_openapi(app: FastAPI) -> None:
    def build() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        doc.setdefault("components", {}).setdefault("schemas", {})["ErrorEnvelope"] = ENVELOPE
        ref = {"$ref": "#/components/schemas/ErrorEnvelope"}
        for item in doc.get("paths", {}).values():
            for op in item.values():
                responses = op.setdefault("responses", {})
                responses.pop("422", None)
                for code, text in ERRORS.items():
                    responses.setdefault(code, {"description": text, "content": {"application/json": {"schema": ref}}})
        for name in ("HTTPValidationError", "ValidationError"):
            doc["components"]["schemas"].pop(name, None)
        app.openapi_schema = doc
        return doc

    app.openapi = build
