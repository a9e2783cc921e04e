"""ControlPlaneClient against a scripted MockTransport: wire shapes per docs/wire.md part A."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import httpx
import pytest

from fwemu.client.control_plane import ControlPlaneClient, PromotionError, normalize_kind
from fwemu.client.errors import FwApiError, FwError
from fwemu.client.retry import RetryPolicy

CKPT = "accounts/acct/rlorTrainerJobs/job-1/checkpoints/step-4-abcdef01"
MODEL = {"name": "accounts/acct/models/my-model", "state": "READY", "kind": "HF_PEFT_ADDON",
         "peftDetails": {"baseModel": "accounts/fireworks/models/m", "r": 8, "targetModules": ["q_proj"]}}


class Server:
    """Route table of (method, path) -> list of responses, consumed in order; records requests."""

    def __init__(self, routes: dict):
        self.routes = {k: list(v) if isinstance(v, list) else [v] for k, v in routes.items()}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        key = (request.method, request.url.path)
        if key == ("GET", "/v1/accounts") and key not in self.routes:
            return httpx.Response(200, json={"accounts": [{"name": "accounts/acct"}]})
        answers = self.routes.get(key)
        if not answers:
            return httpx.Response(404, json={"error": {"code": 5, "message": f"no route {key}"}})
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        return answer if isinstance(answer, httpx.Response) else httpx.Response(200, json=answer)

    def bodies(self, method: str, path: str) -> list[dict]:
        return [json.loads(r.content) for r in self.requests if (r.method, r.url.path) == (method, path)]


def client(server: Server, **kw) -> ControlPlaneClient:
    return ControlPlaneClient("http://cp", "key", transport=httpx.MockTransport(server),
                              retry=RetryPolicy(max_retries=2, base_delay_s=0, jitter=0), sleep=lambda s: None, **kw)


def test_account_id_is_resolved_once():
    server = Server({})
    cp = client(server)
    assert cp.account_id() == "acct" and cp.account_id() == "acct"
    assert len(server.requests) == 1 and server.requests[0].url.params["pageSize"] == "2"


@pytest.mark.parametrize("accounts, message", [([], "not associated"), ([{"name": "accounts/a"}, {"name": "accounts/b"}], "several")])
def test_account_id_needs_exactly_one_account(accounts, message):
    with pytest.raises(FwError, match=message):
        client(Server({("GET", "/v1/accounts"): {"accounts": accounts}})).account_id()


def test_list_checkpoints_paginates_and_types_rows():
    path = "/v1/accounts/acct/rlorTrainerJobs/job-1/checkpoints"
    page1 = {"checkpoints": [{"name": "accounts/acct/rlorTrainerJobs/job-1/checkpoints/step-2",
                              "checkpointType": "CHECKPOINT_TYPE_TRAINING_LORA", "promotable": False,
                              "createTime": "2025-03-01T12:00:13Z"}], "nextPageToken": "t1"}
    page2 = {"rlorTrainerJobCheckpoints": [{"name": CKPT, "checkpointType": "INFERENCE_LORA", "promotable": True,
                                            "createTime": "2025-03-01T12:00:13.123456Z"}], "next_page_token": ""}
    server = Server({("GET", path): [page1, page2]})
    rows = client(server).list_checkpoints("job-1")
    assert [(r.short_name, r.kind, r.promotable, r.resumable) for r in rows] == [
        ("step-2", "TRAINING_LORA", False, True), ("step-4-abcdef01", "INFERENCE_LORA", True, False)]
    assert rows[1].create_time == datetime(2025, 3, 1, 12, 0, 13, 123456, tzinfo=timezone.utc)
    assert rows[1].job_id == "job-1"
    listing = [r for r in server.requests if r.url.path == path]
    assert [r.url.params.get("pageToken") for r in listing] == [None, "t1"]
    assert all(r.url.params["pageSize"] == "200" for r in listing)


def test_list_checkpoints_refuses_a_looping_page_token():
    path = "/v1/accounts/acct/rlorTrainerJobs/job-1/checkpoints"
    server = Server({("GET", path): {"checkpoints": [], "nextPageToken": "same"}})
    with pytest.raises(FwError, match="repeated page token"):
        client(server).list_checkpoints("job-1")


def test_kind_spellings_are_normalised():
    assert normalize_kind("CHECKPOINT_TYPE_INFERENCE_BASE") == normalize_kind("INFERENCE_BASE") == "INFERENCE_BASE"
    assert normalize_kind(None) == "UNSPECIFIED"


def test_promote_body_is_snake_case_with_async_opt_in():
    path = "/v1/accounts/acct/checkpoints/step-4-abcdef01:promote"
    server = Server({("POST", path): {"model": MODEL}})
    model = client(server).promote_checkpoint(CKPT, "my-model", "accounts/fireworks/models/m")
    assert (model.name, model.state, model.kind, model.peft_rank) == (MODEL["name"], "READY", "HF_PEFT_ADDON", 8)
    assert server.bodies("POST", path) == [{"output_model": "accounts/acct/models/my-model",
                                            "trainer_job_id": "accounts/acct/rlorTrainerJobs/job-1",
                                            "base_model": "accounts/fireworks/models/m", "async_promotion": True}]
    assert not any(r.url.path == "/v1/accounts" for r in server.requests)  # the account comes from the name


def test_promote_falls_back_when_async_promotion_is_unknown():
    path = "/v1/accounts/acct/checkpoints/step-4-abcdef01:promote"
    refuse = httpx.Response(400, json={"error": {"code": 3, "message": "unknown field asyncPromotion"}})
    server = Server({("POST", path): [refuse, {"model": MODEL}]})
    client(server).promote_checkpoint(CKPT, "my-model", "b")
    bodies = server.bodies("POST", path)
    assert "async_promotion" in bodies[0] and "async_promotion" not in bodies[1]


def test_promote_polls_an_unfinished_operation():
    path = "/v1/accounts/acct/checkpoints/step-4-abcdef01:promote"
    op = "accounts/acct/operations/op-1"
    server = Server({("POST", path): {"operation": {"name": op, "done": False}},
                     ("GET", f"/v1/{op}"): [{"name": op, "done": False},
                                             {"name": op, "done": True, "response": {"@type": "x", **MODEL}}]})
    model = client(server).promote_checkpoint(CKPT, "my-model", "b")
    assert model.name == MODEL["name"] and "@type" not in model.raw
    assert len([r for r in server.requests if r.url.path == f"/v1/{op}"]) == 2


def test_promote_operation_error_is_raised_with_its_message():
    path = "/v1/accounts/acct/checkpoints/step-4-abcdef01:promote"
    server = Server({("POST", path): {"operation": {"name": "operations/op-2", "done": True,
                                                    "error": {"code": 13, "message": "copy failed"}}}})
    with pytest.raises(PromotionError, match="copy failed"):
        client(server).promote_checkpoint(CKPT, "my-model", "b")


def test_promote_bare_model_response_is_an_error_not_an_empty_success():
    path = "/v1/accounts/acct/checkpoints/step-4-abcdef01:promote"
    with pytest.raises(PromotionError, match="without 'model' or 'operation'"):
        client(Server({("POST", path): {}})).promote_checkpoint(CKPT, "my-model", "b")


def test_promote_refusal_carries_the_server_message():
    path = "/v1/accounts/acct/checkpoints/step-4-abcdef01:promote"
    refuse = httpx.Response(400, json={"error": {"code": 9, "status": "FAILED_PRECONDITION",
                                                 "message": "checkpoint step-4 is not promotable: TRAINING_LORA"}})
    with pytest.raises(FwApiError, match="not promotable: TRAINING_LORA"):
        client(Server({("POST", path): refuse})).promote_checkpoint(CKPT, "my-model", "b")


@pytest.mark.parametrize("name, model_id", [("step-4", "ok"), (CKPT, "Bad_Id"), (CKPT, "x" * 64)])
def test_promote_validates_before_sending(name, model_id):
    server = Server({})
    with pytest.raises(ValueError):
        client(server).promote_checkpoint(name, model_id, "b")
    assert server.requests == []


def test_create_job_sends_the_sdk_payload_and_adopts_an_existing_job():
    path = "/v1/accounts/acct/rlorTrainerJobs"
    job = {"name": "accounts/acct/rlorTrainerJobs/j-1", "state": "JOB_STATE_CREATING",
           "trainingConfig": {"baseModel": "m", "loraRank": 8, "maxContextLength": 4096}}
    server = Server({("POST", path): httpx.Response(409, json={"error": {"code": 6, "message": "exists"}}),
                     ("GET", f"{path}/j-1"): {**job, "state": "JOB_STATE_RUNNING"}})
    got = client(server).create_job("m", 8, 1e-4, job_id="j-1")
    assert (got.job_id, got.state, got.lora_rank, got.max_context_length) == ("j-1", "RUNNING", 8, 4096)
    post = [r for r in server.requests if r.method == "POST"][0]
    assert post.url.params["rlorTrainerJobId"] == "j-1" and post.url.params["skipValidations"] == "true"
    assert json.loads(post.content)["trainingConfig"] == {"baseModel": "m", "loraRank": 8, "learningRate": 1e-4}


def test_wait_until_running_needs_state_and_healthz():
    job_path = "/v1/accounts/acct/rlorTrainerJobs/j-1"
    job = {"name": "accounts/acct/rlorTrainerJobs/j-1"}
    health = "/training/v1/rlorTrainerJobs/acct/j-1/api/v1/healthz"
    server = Server({("GET", job_path): [{**job, "state": "JOB_STATE_PENDING"}, {**job, "state": "JOB_STATE_RUNNING"},
                                         {**job, "state": "JOB_STATE_RUNNING"}],
                     ("GET", health): [httpx.Response(503), httpx.Response(200, json={"status": "ok"})]})
    assert client(server).wait_until_running("j-1", poll_interval_s=0).state == "RUNNING"
    assert [r.url.path for r in server.requests].count(health) == 2


@pytest.mark.parametrize("state, message", [("JOB_STATE_FAILED", "failed: out of memory"), ("JOB_STATE_DELETED", "cannot be used again")])
def test_wait_until_running_fails_fast_on_dead_jobs(state, message):
    job_path = "/v1/accounts/acct/rlorTrainerJobs/j-1"
    server = Server({("GET", job_path): {"name": "accounts/acct/rlorTrainerJobs/j-1", "state": state,
                                         "statusMessage": "out of memory"}})
    with pytest.raises(FwError, match=message):
        client(server).wait_until_running("j-1", poll_interval_s=0)


def test_gateway_url_defaults_to_base_url_and_honours_env(monkeypatch):
    monkeypatch.delenv("FIREWORKS_TRAINER_GATEWAY_URL", raising=False)
    assert client(Server({})).gateway_url_for_job("j") == "http://cp/training/v1/rlorTrainerJobs/acct/j"
    monkeypatch.setenv("FIREWORKS_TRAINER_GATEWAY_URL", "http://gw/")
    assert client(Server({})).gateway_url_for_job("j") == "http://gw/training/v1/rlorTrainerJobs/acct/j"


def test_base_url_and_key_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("FIREWORKS_BASE_URL", "http://from-env/")
    monkeypatch.setenv("FIREWORKS_API_KEY", "env-key")
    cp = ControlPlaneClient(transport=httpx.MockTransport(Server({})))
    assert (cp.base_url, cp.api_key) == ("http://from-env", "env-key")
    monkeypatch.delenv("FIREWORKS_API_KEY")
    with pytest.raises(ValueError, match="FIREWORKS_API_KEY"):
        ControlPlaneClient()
