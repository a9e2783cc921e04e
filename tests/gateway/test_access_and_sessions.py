"""Who may call the gateway and when: account isolation, job state, and what a resume drops."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.gateway.helpers import OTHER_ACCOUNT, OTHER_KEY, fb_body, gateway


def test_other_accounts_key_gets_404_without_leaking(gw):
    """Another account's key sees the same 404 a missing job gets, on every kind of route."""
    job = gw.create_job("isolated")
    model = gw.model(job)
    rid = gw.submit(job, "forward_backward", fb_body(model, 1))
    missing = gw.get("no-such-job", "healthz")
    assert missing.status_code == 404
    for r in (gw.get(job, "healthz", key=OTHER_KEY),
              gw.post(job, "create_session", {}, key=OTHER_KEY),
              gw.post(job, "forward_backward", fb_body(model, 2), key=OTHER_KEY),
              gw.post(job, "retrieve_future", {"request_id": rid}, key=OTHER_KEY),
              gw.post(job, "telemetry", {"events": []}, key=OTHER_KEY)):
        assert r.status_code == 404, r.text
        assert r.json()["error"]["status"] == "NOT_FOUND"
    # the other account naming its own account in the path does not find this job either
    r = gw.post(job, "create_session", {}, key=OTHER_KEY, account=OTHER_ACCOUNT)
    assert r.status_code == 404
    assert "metrics" in gw.result(job, rid)  # the owner still gets its result


def test_missing_key_is_401(gw):
    job = gw.create_job("no-key")
    r = gw.http.get(gw.path(job, "healthz"))
    assert r.status_code == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED"


def test_not_running_job_is_refused_with_400_and_healthz_503():
    """While the job starts, trainer calls get FAILED_PRECONDITION (never a retried 5xx/408/409/429)."""
    with gateway(startup_delay_s=3600) as gw:
        job = gw.create_job("starting")
        health = gw.get(job, "healthz")
        assert health.status_code == 503 and health.json()["error"]["status"] == "UNAVAILABLE"
        for r in (gw.post(job, "create_session", {}), gw.post(job, "client/config", {}),
                  gw.get(job, "list_checkpoints")):
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert err["status"] == "FAILED_PRECONDITION" and "JOB_STATE_RUNNING" in err["message"]


def test_direct_replies(gw):
    job = gw.create_job("direct")
    assert gw.get(job, "healthz").json() == {"status": "ok"}
    cfg = gw.post(job, "client/config", {"sdk_version": "0.23.0"}).json()
    assert cfg["use_pyqwest_transport"] is False and cfg["pjwt_auth_enabled"] is False
    assert cfg["parallel_fwdbwd_chunks"] is True
    assert gw.post(job, "telemetry", {"events": [], "session_id": "x"}).json() == {"status": "accepted"}
    caps = gw.get(job, "get_server_capabilities").json()
    assert caps["supported_models"][0]["model_name"] == "accounts/fireworks/models/qwen3-8b"
    assert caps["supported_models"][0]["max_context_length"] > 0
    session = gw.session(job)
    beat = gw.post(job, "session_heartbeat", {"session_id": session, "type": "session_heartbeat"})
    assert beat.json() == {"type": "session_heartbeat"}
    model = gw.model(job, lora_rank=4, session=session)
    info = gw.post(job, "get_info", {"model_id": model, "type": "get_info"}).json()
    assert info["model_id"] == model and info["is_lora"] is True and info["lora_rank"] == 4


def test_create_model_checks_session_and_base_model(gw):
    job = gw.create_job("create-checks")
    r = gw.post(job, "create_model", {"session_id": "sess-nope", "base_model": "accounts/fireworks/models/qwen3-8b",
                                      "lora_config": {"rank": 0}})
    assert r.status_code == 404 and "create_session" in r.json()["error"]["message"]
    r = gw.post(job, "create_model", {"session_id": gw.session(job),
                                      "base_model": "accounts/fireworks/models/other", "lora_config": {"rank": 0}})
    assert r.status_code == 400 and "does not match" in r.json()["error"]["message"]


def test_lora_rank_falls_back_to_the_jobs(gw):
    """No lora_config.rank in create_model: the job's loraRank decides."""
    job = gw.create_job("rank-fallback", lora_rank=8)
    r = gw.post(job, "create_model", {"session_id": gw.session(job),
                                      "base_model": "accounts/fireworks/models/qwen3-8b", "type": "create_model"})
    model = gw.result(job, r.json()["request_id"])["model_id"]
    assert gw.post(job, "get_info", {"model_id": model}).json()["lora_rank"] == 8


def test_resume_drops_sessions_models_and_futures(gw):
    """A resumed job is a restarted trainer: old ids answer 404, new ones never reuse them."""
    job = gw.create_job("resumed")
    session = gw.session(job)
    model = gw.model(job, session=session)
    rid = gw.submit(job, "forward_backward", fb_body(model, 1))
    gw.result(job, rid)
    gw.resume(job)  # startup_delay_s=0: RUNNING again at once, with a new generation
    assert gw.post(job, "session_heartbeat", {"session_id": session}).status_code == 404
    gone = gw.post(job, "forward_backward", fb_body(model, 2))
    assert gone.status_code == 404 and "resume" in gone.json()["error"]["message"]
    assert gw.post(job, "retrieve_future", {"request_id": rid}).status_code == 404
    assert gw.post(job, "create_model", {"session_id": session, "base_model": "accounts/fireworks/models/qwen3-8b",
                                         "lora_config": {"rank": 0}}).status_code == 404
    fresh = gw.model(job)
    assert fresh != model
    gw.ok(job, "forward_backward", fb_body(fresh, 1))  # seq_id restarts at 1 for the new client


def test_deleted_job_is_404_and_frees_its_models(gw):
    job = gw.create_job("deleted")
    model = gw.model(job)
    worker = gw.runtime().job(gw.app.state.services.store.get_job("local", job)).models[model].worker
    r = gw.http.delete(f"/v1/accounts/local/rlorTrainerJobs/{job}", headers=gw.headers())
    assert r.status_code == 200
    assert gw.post(job, "forward_backward", fb_body(model, 1)).status_code == 404
    worker.join(timeout=5)
    assert not worker.is_alive()
    # telemetry from a client closing after the delete is still accepted (no 30 s close stall)
    assert gw.post(job, "telemetry", {"events": []}).json() == {"status": "accepted"}


def test_admin_reset_forgets_the_trainers(gw):
    """After /_emulator/v1/reset a job re-created under the same id is a new trainer."""
    job = gw.create_job("reset-me")
    model = gw.model(job)
    rid = gw.submit(job, "forward_backward", fb_body(model, 1))
    gw.result(job, rid)
    assert gw.http.post("/_emulator/v1/reset", headers=gw.headers()).status_code == 200
    gw.create_job("reset-me")
    assert gw.post(job, "forward_backward", fb_body(model, 2)).status_code == 404
    assert gw.post(job, "retrieve_future", {"request_id": rid}).status_code == 404
    assert gw.model(job) != model


def test_unload_model_runs_after_earlier_requests(gw):
    job = gw.create_job("unload")
    model = gw.model(job)
    fb = gw.submit(job, "forward_backward", fb_body(model, 1))
    unload = gw.submit(job, "unload_model", {"model_id": model, "type": "unload_model"})
    assert "metrics" in gw.result(job, fb)
    assert gw.result(job, unload) == {"model_id": model, "type": "unload_model"}
    assert gw.post(job, "forward_backward", fb_body(model, 2)).status_code == 404


def test_torch_is_imported_only_when_a_model_is_created():
    """The control plane and the gateway's direct routes never import torch (fast `fwemu serve`);
    the first create_model does. Run in a fresh interpreter, where nothing else loaded it."""
    code = textwrap.dedent("""
        import sys
        from fastapi.testclient import TestClient
        from fwemu.emulator.app import create_app
        from fwemu.emulator.settings import Settings
        app = create_app(Settings(data_dir=None, startup_delay_s=0, api_keys={"k": "local"}))
        h = {"X-Api-Key": "k"}
        gw = "/training/v1/rlorTrainerJobs/local/j/api/v1/"
        base = "accounts/fireworks/models/qwen3-8b"
        with TestClient(app) as c:
            c.post("/v1/accounts/local/rlorTrainerJobs?rlorTrainerJobId=j", headers=h,
                   json={"trainingConfig": {"baseModel": base}})
            assert c.get(gw + "healthz", headers=h).status_code == 200
            sid = c.post(gw + "create_session", headers=h, json={}).json()["session_id"]
            assert c.get(gw + "list_checkpoints", headers=h).status_code == 200
            assert "torch" not in sys.modules, "torch imported before any model exists"
            rid = c.post(gw + "create_model", headers=h,
                         json={"session_id": sid, "base_model": base, "lora_config": {"rank": 0}}).json()["request_id"]
            while c.post(gw + "retrieve_future", headers=h, json={"request_id": rid}).json().get("type") == "try_again":
                pass
            assert "torch" in sys.modules
    """)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
