"""Forward-only trainer jobs (`forwardOnly: true`): forward runs, optim_step and every save are refused."""

from __future__ import annotations

import pytest

from fwemu.emulator import jobs
from tests.gateway.helpers import BASE, Gateway, datum, optim_body


def create_forward_only(gw: Gateway, job_id: str, body_extra: dict, lora_rank: int = 0) -> str:
    body = {"serviceMode": True, "trainingConfig": {"baseModel": BASE, "loraRank": lora_rank}}
    for key, value in body_extra.items():
        if key == "trainingConfig":
            body["trainingConfig"].update(value)
        else:
            body[key] = value
    r = gw.http.post(f"/v1/accounts/{gw.account}/rlorTrainerJobs", params={"rlorTrainerJobId": job_id},
                     headers=gw.headers(), json=body)
    assert r.status_code == 200, r.text
    return job_id


@pytest.mark.parametrize("where", [{"forwardOnly": True}, {"trainingConfig": {"forwardOnly": True}}])
def test_forward_runs_and_steps_and_saves_are_refused(gw, where):
    job = create_forward_only(gw, "fwd-only", where, lora_rank=4)
    model = gw.model(job, lora_rank=4)
    out = gw.ok(job, "forward", {"forward_input": {"data": [datum()], "loss_fn": "cross_entropy"},
                                 "model_id": model, "seq_id": gw.seq(job, model)})
    assert out["metrics"]["loss:sum"] > 0
    refused = [
        gw.result(job, gw.submit(job, "optim_step", optim_body(model, gw.seq(job, model)))),
        gw.save_state(job, model, "step-0"),
        gw.save_sampler(job, model, "step-0-0badc0de", "base"),
    ]
    for payload, what in zip(refused, ("optim_step", "save_weights", "save_weights_for_sampler")):
        assert payload["category"] == "user", payload
        assert payload["error"].startswith(what) and "forward-only" in payload["error"]
    assert gw.rows(job) == []
    # the refusals took their places in the sequence: the model still answers in order
    again = gw.ok(job, "forward", {"forward_input": {"data": [datum()], "loss_fn": "cross_entropy"},
                                   "model_id": model, "seq_id": gw.seq(job, model)})
    assert again["metrics"]["loss:sum"] == out["metrics"]["loss:sum"]


def test_a_normal_job_is_not_forward_only(gw):
    job = create_forward_only(gw, "fwd-false", {"forwardOnly": False})
    model = gw.model(job)
    gw.step(job, model)
    assert gw.save_state(job, model, "step-1")["path"] == "step-1"


def test_forward_only_must_be_a_boolean(gw):
    r = gw.http.post(f"/v1/accounts/{gw.account}/rlorTrainerJobs", params={"rlorTrainerJobId": "fwd-bad"},
                     headers=gw.headers(), json={"trainingConfig": {"baseModel": BASE}, "forwardOnly": "yes"})
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize("body, expected", [
    ({"forwardOnly": True}, True), ({"trainingConfig": {"forwardOnly": True}}, True),
    ({"forwardOnly": False, "trainingConfig": {}}, False), ({}, False), ({"trainingConfig": None}, False)])
def test_forward_only_rule(body, expected):
    assert jobs.forward_only(body) is expected
