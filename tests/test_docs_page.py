"""`/docs` works offline: one page rendered from the OpenAPI document, nothing fetched from elsewhere."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from fwemu.emulator.app import create_app
from fwemu.emulator.settings import Settings


def test_docs_page_lists_every_operation_and_loads_nothing_external():
    with TestClient(create_app(Settings(data_dir=None))) as client:
        page = client.get("/docs")
        doc = client.get("/openapi.json").json()
        redoc = client.get("/redoc")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    # no script at all, and every src/href stays on this host
    assert "<script" not in html
    assert re.findall(r'(?:src|href)="([^"]+)"', html) == ["/openapi.json"]
    n_ops = sum(len(item) for item in doc["paths"].values())
    assert html.count("<tr><td class=m>") == n_ops > 10
    assert "<code>/v1/accounts/{account}/rlorTrainerJobs</code>" in html
    assert redoc.status_code == 404 and "error" in redoc.json()
