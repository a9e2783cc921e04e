"""Routes are analysed by FastAPI on first use, and behave exactly as eager routes once they are."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from fastapi import Body, FastAPI
from fastapi.routing import APIRouter
from fastapi.testclient import TestClient

from fwemu.emulator.app import create_app
from fwemu.emulator.lazy_routes import LazyAPIRoute, add_routes
from fwemu.emulator.settings import Settings


FRESH_PROCESS = """
import json
from fastapi.testclient import TestClient
from fwemu.emulator.app import create_app
from fwemu.emulator.lazy_routes import LazyAPIRoute
from fwemu.emulator.settings import Settings

app = create_app(Settings(data_dir=None))
lazy = [r for r in app.routes if isinstance(r, LazyAPIRoute)]
built = lambda: sorted(r.path for r in lazy if r.built)
steps = {"routes": len(lazy), "at_start": built()}
with TestClient(app) as http:
    steps["health"] = [http.get("/_emulator/health").status_code, built()]
    r = http.get("/v1/accounts/local/rlorTrainerJobs", headers={"Authorization": "Bearer fw-local-dev"})
    steps["list"] = [r.status_code, built()]
    doc = http.get("/openapi.json").json()
    steps["openapi"] = [len(built()), sorted(doc["paths"])]
print(json.dumps(steps))
"""


def test_create_app_analyses_no_route_until_a_request_reaches_it():
    """In a fresh interpreter (route objects are module-level, so this process may have built them)."""
    out = subprocess.run([sys.executable, "-c", FRESH_PROCESS], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    steps = json.loads(out.stdout)
    assert steps["routes"] >= 35 and steps["at_start"] == []
    assert steps["health"] == [200, ["/_emulator/health"]]
    status, built = steps["list"]
    assert status == 200 and "/v1/accounts/{account}/rlorTrainerJobs" in built and len(built) < steps["routes"] // 2
    n_built, paths = steps["openapi"]
    assert n_built == steps["routes"]                     # the document needs every route: all built now
    assert "/v1/accounts/{account}/rlorTrainerJobs" in paths


def test_apps_in_one_process_share_route_objects_but_not_state():
    """add_routes reuses the routers' route objects; each app still has its own services and store."""
    first, second = create_app(Settings(data_dir=None)), create_app(Settings(data_dir=None))
    with TestClient(first) as a, TestClient(second) as b:
        headers = {"Authorization": "Bearer fw-local-dev"}
        body = {"serviceMode": True, "trainingConfig": {"baseModel": "accounts/fireworks/models/qwen3-8b"}}
        assert a.post("/v1/accounts/local/rlorTrainerJobs", params={"rlorTrainerJobId": "only-in-a"},
                      json=body, headers=headers).status_code == 200
        assert a.get("/v1/accounts/local/rlorTrainerJobs/only-in-a", headers=headers).status_code == 200
        assert b.get("/v1/accounts/local/rlorTrainerJobs/only-in-a", headers=headers).status_code == 404


def test_a_lazy_route_validates_and_documents_like_an_eager_one():
    def make(route_class):
        router = APIRouter(prefix="/p/{item}", tags=["t"], route_class=route_class)

        @router.post("/echo")
        def echo(item: int, body: dict = Body(...)):
            return {"item": item, "body": body}

        app = FastAPI()
        add_routes(app, router)
        return app

    from fastapi.routing import APIRoute

    answers = []
    for route_class in (APIRoute, LazyAPIRoute):
        app = make(route_class)
        with TestClient(app) as http:
            answers.append([
                (r.status_code, r.json()) for r in (
                    http.post("/p/7/echo", json={"a": 1}),
                    http.post("/p/x/echo", json={"a": 1}),      # path param fails int validation
                    http.post("/p/7/echo", content=b"[1]", headers={"Content-Type": "application/json"}),
                    http.get("/p/7/echo"),                       # wrong method
                    http.get("/nowhere"))])
            answers.append(http.get("/openapi.json").json()["paths"])
    assert answers[0] == answers[2] and answers[1] == answers[3]
    assert answers[0][0] == (200, {"item": 7, "body": {"a": 1}}) and answers[0][3][0] == 405


def test_fwemu_serve_imports_leave_pydantic_v1_and_route_analysis_for_later():
    code = ("import sys; from fwemu.emulator.app import create_app; from fwemu.emulator.settings import Settings; "
            "create_app(Settings(data_dir=None)); print('pydantic.v1' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False", out.stderr


def test_serve_builds_the_app_with_the_collector_off_then_freezes_it(monkeypatch):
    """`fwemu serve` hands uvicorn an app built without collections, all of it frozen, collector back on."""
    import argparse
    import gc

    import uvicorn

    from fwemu.emulator import serve

    seen = {}

    def fake_run(server, sockets=None):
        seen.update(enabled=gc.isenabled(), frozen=gc.get_freeze_count(), app=server.config.app,
                    port=sockets[0].getsockname()[1])
        sockets[0].close()

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    parser = argparse.ArgumentParser()
    serve.configure(parser)
    try:
        assert serve.run(parser.parse_args(["--in-memory", "--port", str(port)])) == 0
    finally:
        gc.unfreeze()                                   # give this test process its collector back as it was
    assert seen["enabled"] is True and seen["frozen"] > 10_000 and seen["port"] == port
    assert any(getattr(r, "path", None) == "/_emulator/health" for r in seen["app"].routes)
