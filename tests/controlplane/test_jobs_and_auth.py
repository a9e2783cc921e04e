"""Accounts, API keys, isolation and the trainer-job lifecycle over the /v1 routes."""

from __future__ import annotations

from tests.controlplane.conftest import BASE, KEY_B, create_job


def envelope(r, status: int, name: str):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["status"] == name and isinstance(err["code"], int) and err["message"]
    return err["message"]


def test_accounts_lists_exactly_the_callers_account(cp):
    assert cp.get("/v1/accounts", params={"pageSize": 2}).json()["accounts"] == [
        {"name": "accounts/acct-a", "displayName": "acct-a", "state": "READY"}]
    assert cp.get("/v1/accounts", headers={"X-Api-Key": KEY_B}).json()["accounts"][0]["name"] == "accounts/acct-b"


def test_missing_or_unknown_key_is_401_envelope(cp):
    envelope(cp.get("/v1/accounts", headers={"X-Api-Key": ""}), 401, "UNAUTHENTICATED")
    envelope(cp.get("/v1/accounts", headers={"X-Api-Key": "nope"}), 401, "UNAUTHENTICATED")
    assert cp.get("/v1/accounts", headers={"X-Api-Key": "", "Authorization": "Bearer key-a"}).status_code == 200


def test_create_get_list_and_duplicate(cp):
    job = create_job(cp, "job-1", lora_rank=8)
    assert job["name"] == "accounts/acct-a/rlorTrainerJobs/job-1"
    assert job["trainingConfig"]["baseModel"] == BASE and job["trainingConfig"]["loraRank"] == 8
    assert job["trainingConfig"]["maxContextLength"] > 0 and job["serviceMode"] is True
    got = cp.get("/v1/accounts/acct-a/rlorTrainerJobs/job-1").json()
    assert got["state"] == "JOB_STATE_RUNNING"
    assert [j["name"] for j in cp.get("/v1/accounts/acct-a/rlorTrainerJobs").json()["rlorTrainerJobs"]] == [job["name"]]
    dup = cp.post("/v1/accounts/acct-a/rlorTrainerJobs", params={"rlorTrainerJobId": "job-1"},
                  json={"trainingConfig": {"baseModel": BASE}})
    envelope(dup, 409, "ALREADY_EXISTS")


def test_bad_bodies_are_400_not_422(cp):
    r = cp.post("/v1/accounts/acct-a/rlorTrainerJobs", json={"trainingConfig": {}})
    assert "baseModel" in envelope(r, 400, "INVALID_ARGUMENT")
    r = cp.post("/v1/accounts/acct-a/rlorTrainerJobs", content=b"{not json", headers={"Content-Type": "application/json"})
    envelope(r, 400, "INVALID_ARGUMENT")
    envelope(cp.post("/v1/accounts/acct-a/rlorTrainerJobs", params={"rlorTrainerJobId": "Bad_Id"},
                     json={"trainingConfig": {"baseModel": BASE}}), 400, "INVALID_ARGUMENT")
    envelope(cp.get("/v1/nothing/here"), 404, "NOT_FOUND")


def test_other_accounts_jobs_are_not_found(cp):
    create_job(cp, "secret")
    other = {"X-Api-Key": KEY_B}
    envelope(cp.get("/v1/accounts/acct-a/rlorTrainerJobs/secret", headers=other), 404, "NOT_FOUND")
    envelope(cp.get("/v1/accounts/acct-a/rlorTrainerJobs/secret/checkpoints", headers=other), 404, "NOT_FOUND")
    envelope(cp.get("/v1/accounts/acct-a/rlorTrainerJobs/missing"), 404, "NOT_FOUND")
    envelope(cp.delete("/v1/accounts/acct-a/rlorTrainerJobs/secret", headers=other), 404, "NOT_FOUND")
    # base models are public
    r = cp.get(f"/v1/{BASE}", headers=other)
    assert r.status_code == 200 and r.json()["baseModelDetails"]["moe"] is False


def test_startup_delay_walks_creating_pending_running():
    from tests.controlplane.conftest import make_client

    with make_client() as client:
        client.app.state.services.settings.startup_delay_s = 100.0
        job = create_job(client, "slow")
        assert job["state"] == "JOB_STATE_CREATING"
        clock = client.app.state.services.clock
        clock.offset_us += 60_000_000
        assert client.get("/v1/accounts/acct-a/rlorTrainerJobs/slow").json()["state"] == "JOB_STATE_PENDING"
        clock.offset_us += 50_000_000
        assert client.get("/v1/accounts/acct-a/rlorTrainerJobs/slow").json()["state"] == "JOB_STATE_RUNNING"


def test_resume_and_delete(cp):
    create_job(cp, "job-r")
    r = cp.post("/v1/accounts/acct-a/rlorTrainerJobs/job-r:resume")
    assert r.status_code == 200 and r.json()["name"].endswith("/job-r")
    assert cp.delete("/v1/accounts/acct-a/rlorTrainerJobs/job-r").status_code == 200
    assert cp.get("/v1/accounts/acct-a/rlorTrainerJobs/job-r").json()["state"] == "JOB_STATE_DELETED"
    envelope(cp.post("/v1/accounts/acct-a/rlorTrainerJobs/job-r:resume"), 400, "FAILED_PRECONDITION")
    assert cp.get("/v1/accounts/acct-a/rlorTrainerJobs").json()["rlorTrainerJobs"] == []


def test_openapi_and_health(cp):
    doc = cp.get("/openapi.json").json()
    assert "/v1/accounts/{account}/checkpoints/{checkpoint}:promote" in doc["paths"]
    assert cp.get("/_emulator/health").json()["status"] == "ok"
