"""Every route refuses a missing or wrong key, and nothing of one account reaches another.

The route list is read from the app itself, so a route added later is covered without editing
this file. Isolation is proven per resource type: jobs, checkpoints, models, operations and
gateway sessions (with their models and futures); another account's resource answers exactly
like a missing one (404), and the owner's state is unchanged afterwards.
"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from fwemu.emulator.app import create_app
from tests.gateway.helpers import Gateway
from tests.reliability.conftest import (
    ACCT_A, ACCT_B, BASE, KEY_A, KEY_B, create_job, envelope, import_tar, in_process, promote, settings,
)

OPEN = ("/_emulator/health", "/openapi.json", "/docs", "/redoc")   # documentation and liveness only
# the dashboard's HTML pages refuse by sending a browser to the log-in form (the form and its assets are open)
DASHBOARD_OPEN = ("/", "/dashboard/login", "/dashboard/static/dashboard.css", "/dashboard/static/favicon.svg")
PARAMS = {"account": ACCT_A, "job_id": "job-1", "checkpoint": "ckpt-1", "model_id": "model-1", "op_id": "op-1"}


def app_routes(app) -> list[tuple[str, str]]:
    """(method, path template) of every HTTP route, flattening included routers on any FastAPI."""
    try:
        from fastapi.routing import iter_route_contexts
        entries = [(c.path, c.methods) for c in iter_route_contexts(app.routes)]
    except ImportError:
        entries = [(r.path, r.methods) for r in app.routes if hasattr(r, "methods")]
    return sorted((m, p) for p, methods in entries for m in (methods or ()) if m != "HEAD")


def fill(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PARAMS.get(m.group(1), "x"), path)


def test_every_route_refuses_a_missing_or_wrong_key():
    app = create_app(settings())
    routes = [(m, p) for m, p in app_routes(app) if not p.startswith(OPEN) and not is_dashboard(p)]
    assert len(routes) >= 35, routes                   # the whole surface, not a stub of it
    with TestClient(app, raise_server_exceptions=False) as http:
        for method, path in routes:
            url = fill(path)
            for headers in ({}, {"X-Api-Key": "wrong"}, {"X-Api-Key": ""}, {"Authorization": "Bearer wrong"},
                            {"X-Api-Key": KEY_A.upper()}, {"X-Api-Key": f" {KEY_A}x"}):
                r = http.request(method, url, headers=headers, json={})
                assert r.status_code == 401, (method, url, headers, r.status_code, r.text[:200])
                envelope(r, 401, "UNAUTHENTICATED")
        assert app.state.services.store.counts() == {"jobs": 0, "checkpoints": 0, "models": 0, "operations": 0}


def is_dashboard(path: str) -> bool:
    return path == "/" or path == "/dashboard" or path.startswith("/dashboard/")


def test_every_dashboard_page_sends_a_caller_without_a_valid_key_to_the_log_in_form():
    app = create_app(settings())
    pages = [(m, p) for m, p in app_routes(app) if is_dashboard(p) and p not in DASHBOARD_OPEN]
    assert len(pages) >= 4, pages
    with TestClient(app, raise_server_exceptions=False) as http:
        for method, path in pages:
            for headers in ({}, {"X-Api-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"X-Api-Key": KEY_A.upper()},
                            {"Cookie": "fwemu_dashboard=forged"}):
                r = http.request(method, fill(path), headers=headers, follow_redirects=False)
                assert (r.status_code, r.headers.get("location")) == (303, "/dashboard/login"), (method, path, headers)
                assert ACCT_A not in r.text
        assert app.state.services.store.counts() == {"jobs": 0, "checkpoints": 0, "models": 0, "operations": 0}


def test_open_routes_need_no_key():
    with in_process() as cp:
        for path in ("/_emulator/health", "/openapi.json", "/docs"):
            assert cp.get(path, headers={"X-Api-Key": ""}).status_code == 200, path


@pytest.fixture
def two_accounts(sample_tars):
    """Account A owns a job with rows, a model, an operation and a live gateway session."""
    with in_process() as cp:
        create_job(cp, "job-1")
        assert import_tar(cp, "job-1", "ckpt-1", sample_tars["INFERENCE_BASE"]).status_code == 200
        assert import_tar(cp, "job-1", "step-1", sample_tars["TRAINING"]).status_code == 200
        assert promote(cp, "job-1", "ckpt-1", "model-1").status_code == 200
        op = promote(cp, "job-1", "ckpt-1", "model-2", async_promotion=True).json()["operation"]
        gw = Gateway(cp, key=KEY_A, account=ACCT_A)
        session = gw.session("job-1")
        r = cp.post(f"/v1/accounts/{ACCT_B}/rlorTrainerJobs", params={"rlorTrainerJobId": "job-b"},
                    json={"trainingConfig": {"baseModel": BASE}}, headers={"X-Api-Key": KEY_B})
        assert r.status_code == 200, r.text
        yield cp, gw, session, op["name"].rsplit("/", 1)[-1]


def a_state(cp) -> dict:
    store = cp.app.state.services.store
    return {"counts": store.counts(),
            "jobs": [(j.job_id, j.state, j.generation) for j in store.list_jobs(ACCT_A)],
            "rows": [r.name for r in store.list_checkpoints(ACCT_A, "job-1", 100)[0]],
            "models": [m["name"] for m in store.list_models(ACCT_A)]}


def test_jobs_are_invisible_to_another_account(two_accounts):
    cp, _gw, _s, _op = two_accounts
    before, b = a_state(cp), {"X-Api-Key": KEY_B}
    jobs = f"/v1/accounts/{ACCT_A}/rlorTrainerJobs"
    envelope(cp.get(f"{jobs}/job-1", headers=b), 404, "NOT_FOUND")
    envelope(cp.delete(f"{jobs}/job-1", headers=b), 404, "NOT_FOUND")
    envelope(cp.post(f"{jobs}/job-1:resume", headers=b), 404, "NOT_FOUND")
    envelope(cp.get(jobs, headers=b), 404, "NOT_FOUND")
    envelope(cp.post(jobs, params={"rlorTrainerJobId": "planted"}, json={"trainingConfig": {"baseModel": BASE}},
                     headers=b), 404, "NOT_FOUND")
    envelope(cp.get(f"/v1/accounts/{ACCT_A}", headers=b), 404, "NOT_FOUND")
    assert [a["name"] for a in cp.get("/v1/accounts", headers=b).json()["accounts"]] == [f"accounts/{ACCT_B}"]
    own = cp.get(f"/v1/accounts/{ACCT_B}/rlorTrainerJobs", headers=b).json()["rlorTrainerJobs"]
    assert [j["name"] for j in own] == [f"accounts/{ACCT_B}/rlorTrainerJobs/job-b"]
    # the same job id in B's own account is B's own job, never A's
    envelope(cp.get(f"/v1/accounts/{ACCT_B}/rlorTrainerJobs/job-1", headers=b), 404, "NOT_FOUND")
    assert a_state(cp) == before


def test_checkpoints_are_invisible_to_another_account(two_accounts, sample_tars):
    cp, _gw, _s, _op = two_accounts
    before, b = a_state(cp), {"X-Api-Key": KEY_B}
    envelope(cp.get(f"/v1/accounts/{ACCT_A}/rlorTrainerJobs/job-1/checkpoints", headers=b), 404, "NOT_FOUND")
    envelope(cp.get(f"/_emulator/v1/accounts/{ACCT_A}/rlorTrainerJobs/job-1/rejected", headers=b), 404, "NOT_FOUND")
    r = cp.post(f"/_emulator/v1/accounts/{ACCT_A}/rlorTrainerJobs/job-1/checkpoints:import", params={"name": "x"},
                content=sample_tars["INFERENCE_BASE"], headers={**b, "Content-Type": "application/x-tar"})
    envelope(r, 404, "NOT_FOUND")
    # promote A's row through A's path, and through B's own path naming A's job
    envelope(cp.post(f"/v1/accounts/{ACCT_A}/checkpoints/ckpt-1:promote", headers=b, json={
        "output_model": f"accounts/{ACCT_A}/models/stolen", "trainer_job_id": f"accounts/{ACCT_A}/rlorTrainerJobs/job-1",
        "base_model": BASE}), 404, "NOT_FOUND")
    for trainer_job in (f"accounts/{ACCT_A}/rlorTrainerJobs/job-1", "job-1"):
        r = cp.post(f"/v1/accounts/{ACCT_B}/checkpoints/ckpt-1:promote", headers=b, json={
            "output_model": f"accounts/{ACCT_B}/models/stolen", "trainer_job_id": trainer_job, "base_model": BASE})
        envelope(r, 404, "NOT_FOUND")
    assert cp.app.state.services.store.list_models(ACCT_B) == []
    assert a_state(cp) == before


def test_models_and_operations_are_invisible_to_another_account(two_accounts):
    cp, _gw, _s, op_id = two_accounts
    before, b = a_state(cp), {"X-Api-Key": KEY_B}
    envelope(cp.get(f"/v1/accounts/{ACCT_A}/models/model-1", headers=b), 404, "NOT_FOUND")
    envelope(cp.get(f"/v1/accounts/{ACCT_A}/models", headers=b), 404, "NOT_FOUND")
    assert cp.get(f"/v1/accounts/{ACCT_B}/models", headers=b).json()["models"] == []
    envelope(cp.get(f"/v1/accounts/{ACCT_B}/models/model-1", headers=b), 404, "NOT_FOUND")
    envelope(cp.get(f"/v1/accounts/{ACCT_A}/operations/{op_id}", headers=b), 404, "NOT_FOUND")
    envelope(cp.get(f"/v1/operations/{op_id}", headers=b), 404, "NOT_FOUND")
    envelope(cp.get(f"/v1/accounts/{ACCT_B}/operations/{op_id}", headers=b), 404, "NOT_FOUND")
    assert cp.get(f"/v1/operations/{op_id}").json()["done"] is True           # the owner still sees it
    assert cp.get(f"/v1/{BASE}", headers=b).status_code == 200               # public base models stay public
    assert a_state(cp) == before


def test_gateway_sessions_models_and_futures_are_invisible_to_another_account(two_accounts):
    cp, gw, session, _op = two_accounts
    before = a_state(cp)
    model = gw.model("job-1", session=session)
    gw.step("job-1", model)
    request_id = gw.submit("job-1", "save_weights", {"model_id": model, "path": "mine", "seq_id": gw.seq("job-1", model)})
    assert gw.result("job-1", request_id)["path"] == "mine"

    # B on A's gateway path: every operation is 404, like a job that does not exist
    for op, body in [("create_session", {}), ("session_heartbeat", {"session_id": session}),
                     ("create_model", {"session_id": session, "base_model": BASE}),
                     ("retrieve_future", {"request_id": request_id}), ("get_info", {"model_id": model}),
                     ("save_weights", {"model_id": model, "path": "evil", "seq_id": 99}),
                     ("unload_model", {"model_id": model}), ("client/config", {}), ("telemetry", {})]:
        envelope(gw.post("job-1", op, body, key=KEY_B), 404, "NOT_FOUND")
    for op in ("healthz", "list_checkpoints", "get_server_capabilities"):
        envelope(gw.get("job-1", op, key=KEY_B), 404, "NOT_FOUND")

    # B on its own job, holding A's identifiers: still nothing
    other = Gateway(cp, key=KEY_B, account=ACCT_B)
    envelope(other.post("job-b", "session_heartbeat", {"session_id": session}), 404, "NOT_FOUND")
    envelope(other.post("job-b", "create_model", {"session_id": session, "base_model": BASE}), 404, "NOT_FOUND")
    envelope(other.post("job-b", "retrieve_future", {"request_id": request_id}), 404, "NOT_FOUND")
    envelope(other.post("job-b", "get_info", {"model_id": model}), 404, "NOT_FOUND")
    b_model = other.model("job-b")
    other.step("job-b", b_model)
    stolen = other.load("job-b", b_model, "cross_job://job-1/mine", optimizer=True)
    assert stolen.get("category") == "user" and "not found" in stolen["error"], stolen

    # A's session, model and futures are untouched
    assert gw.post("job-1", "session_heartbeat", {"session_id": session}).status_code == 200
    assert gw.result("job-1", request_id)["path"] == "mine"
    after = a_state(cp)
    assert after["rows"] == before["rows"] + ["mine"] and after["models"] == before["models"]
