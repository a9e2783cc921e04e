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


def install_docs_page(app: FastAPI) -> None:
    """`/docs` as one self-contained page rendered from the OpenAPI document: no CDN, works offline.

    FastAPI's Swagger UI loads its script and CSS from a CDN and shows nothing without internet;
    this page lists every operation (method, path, summary, error codes) and links the JSON.
    """
    from starlette.responses import HTMLResponse

    async def docs_page(_request) -> HTMLResponse:
        return HTMLResponse(render_docs_page(app.openapi()))

    # a plain Starlette route: FastAPI's route analysis (and its imports) stays off the start-up path
    app.add_route("/docs", docs_page, methods=["GET"], include_in_schema=False)


def render_docs_page(doc: dict) -> str:
    from html import escape

    rows = []
    for path, item in sorted(doc.get("paths", {}).items()):
        for method, op in item.items():
            summary = op.get("summary") or op.get("operationId") or ""
            codes = ", ".join(sorted(op.get("responses", {})))
            rows.append(f"<tr><td class=m>{escape(method.upper())}</td><td><code>{escape(path)}</code></td>"
                        f"<td>{escape(summary)}</td><td>{escape(codes)}</td></tr>")
    info = doc.get("info", {})
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<title>{escape(info.get('title', 'API'))} API</title><style>"
            "body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left}td.m{font-weight:600}"
            "</style></head><body>"
            f"<h1>{escape(info.get('title', 'API'))} {escape(str(info.get('version', '')))}</h1>"
            f"<p>{escape(info.get('description', ''))} The machine-readable document is "
            "<a href=\"/openapi.json\">/openapi.json</a>; every error is the service's envelope "
            "<code>{\"error\": {\"code\", \"status\", \"message\"}}</code>.</p>"
            "<table><thead><tr><th>method</th><th>path</th><th>summary</th><th>responses</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></body></html>")
