"""TrainerGatewayClient's futures protocol against a scripted MockTransport (docs/wire.md part B)."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from fwemu.client.errors import FwError, TrainerRequestError
from fwemu.client.retry import RetryPolicy
from fwemu.client.trainer_client import AdamParams, TrainerGatewayClient, validate_checkpoint_ref

GW = "http://gw/training/v1/rlorTrainerJobs/acct/job-1"


class Gateway:
    """A tiny scripted gateway: every op returns a new request id; results are queued per op."""

    def __init__(self):
        self.requests: list[httpx.Request] = []
        self.results: dict[str, list] = {}
        self.pending: dict[str, list] = {}
        self.fail_next_submit: int = 0
        self.omit_request_id = False
        self.n = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        op = request.url.path.rsplit("/", 1)[-1]
        body = json.loads(request.content) if request.content else {}
        if op == "create_session":
            return httpx.Response(200, json={"session_id": "sess-1", "type": "create_session"})
        if op == "retrieve_future":
            queue = self.pending[body["request_id"]]
            return httpx.Response(200, json=queue.pop(0))
        if self.fail_next_submit:
            self.fail_next_submit -= 1
            return httpx.Response(503, json={"error": {"message": "busy"}})
        if self.omit_request_id:
            return httpx.Response(200, json={"model_id": "model-0"})
        self.n += 1
        rid = f"r{self.n}"
        self.pending[rid] = list(self.results.get(op) or [{"type": op}])
        return httpx.Response(200, json={"request_id": rid, "model_id": "model-0"})

    def submitted(self, op: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path.endswith(f"/api/v1/{op}")]


def connect(gw: Gateway):
    client = TrainerGatewayClient(GW, "key", transport=httpx.MockTransport(gw), heartbeat_interval_s=None,
                                  retry=RetryPolicy(base_delay_s=0, jitter=0))
    client.create_session()
    gw.results["create_model"] = [{"model_id": "model-0", "type": "create_model"}]
    return client, client.create_model("accounts/fireworks/models/m", 8, seed=3)


def test_create_model_body_matches_the_sdk():
    gw = Gateway()
    _, model = connect(gw)
    body = json.loads(gw.submitted("create_model")[0].content)
    assert body == {"session_id": "sess-1", "model_seq_id": 0, "base_model": "accounts/fireworks/models/m",
                    "lora_config": {"rank": 8, "alpha": 32, "seed": 3, "train_unembed": True, "train_mlp": True,
                                    "train_attn": True}, "type": "create_model"}
    assert model.model_id == "model-0"


def test_full_parameter_model_sends_rank_zero_without_alpha():
    gw = Gateway()
    client, _ = connect(gw)
    client.create_model("m", 0)
    lora = json.loads(gw.submitted("create_model")[1].content)["lora_config"]
    assert lora["rank"] == 0 and "alpha" not in lora


def test_seq_ids_start_at_one_and_increase_per_model():
    gw = Gateway()
    _, model = connect(gw)
    gw.results["forward_backward"] = [{"loss_fn_output_type": "ArrayRecord", "loss_fn_outputs": [{}],
                                       "metrics": {"loss:sum": 3.0}}]
    gw.results["optim_step"] = [{"metrics": {"grad_norm:mean": 0.5}}]
    gw.results["save_weights"] = [{"path": "step-1", "type": "save_weights"}]
    model.forward_backward([{"model_input": {}, "loss_fn_inputs": {}}])
    model.optim_step(AdamParams(learning_rate=0.01))
    model.save_state("step-1")
    seqs = [json.loads(r.content)["seq_id"] for op in ("forward_backward", "optim_step", "save_weights")
            for r in gw.submitted(op)]
    assert seqs == [1, 2, 3] and model.last_seq_id == 3
    optim = json.loads(gw.submitted("optim_step")[0].content)
    assert optim["adam_params"] == {"learning_rate": 0.01, "beta1": 0.9, "beta2": 0.95, "eps": 1e-12,
                                    "weight_decay": 0.0, "grad_clip_norm": 0.0}
    assert optim["type"] == "optim_step" and optim["model_id"] == "model-0"


def test_try_again_is_repolled_until_the_result():
    gw = Gateway()
    _, model = connect(gw)
    gw.results["optim_step"] = [{"type": "try_again", "request_id": "x", "queue_state": "active"},
                                {"type": "try_again", "request_id": "x", "queue_state": "paused_capacity"},
                                {"metrics": {"lr:mean": 0.1}}]
    assert model.optim_step({"learning_rate": 0.1}) == {"lr:mean": 0.1}
    polls = [r for r in gw.requests if r.url.path.endswith("retrieve_future")]
    assert [r.headers["X-Tinker-Request-Iteration"] for r in polls[-3:]] == ["0", "1", "2"]
    assert all(r.headers["X-Tinker-Request-Type"] == "OptimStep" for r in polls[-3:])


def test_complete_metadata_repolls_for_the_payload():
    gw = Gateway()
    _, model = connect(gw)
    gw.results["save_weights"] = [{"status": "complete_metadata", "response_payload_size": 10}, {"path": "step-2"}]
    assert model.save_state("step-2") == "step-2"
    last = json.loads([r for r in gw.requests if r.url.path.endswith("retrieve_future")][-1].content)
    assert last["allow_metadata_only"] is False


def test_failed_future_raises_with_category():
    gw = Gateway()
    _, model = connect(gw)
    gw.results["load_weights"] = [{"error": "checkpoint step-9 not found", "category": "user"}]
    with pytest.raises(TrainerRequestError) as err:
        model.load_state("step-9")
    assert err.value.category == "user" and "step-9 not found" in str(err.value)
    assert err.value.request_type == "LoadWeights"


def test_idempotency_key_is_reused_when_a_submission_is_retried():
    gw = Gateway()
    _, model = connect(gw)
    gw.fail_next_submit = 2
    gw.results["save_weights"] = [{"path": "step-1"}]
    model.save_state("step-1")
    posts = gw.submitted("save_weights")
    assert len(posts) == 3
    keys = {r.headers["X-Idempotency-Key"] for r in posts}
    assert len(keys) == 1
    assert {json.loads(r.content)["seq_id"] for r in posts} == {1}  # the retry is the same request
    gw.results["save_weights"] = [{"path": "step-2"}]
    model.save_state("step-2")
    assert gw.submitted("save_weights")[-1].headers["X-Idempotency-Key"] not in keys


def test_sampler_save_sends_name_with_session_suffix():
    gw = Gateway()
    _, model = connect(gw)
    gw.results["save_weights_for_sampler"] = [{"path": f"step-4-{model.session_suffix}"}]
    saved = model.save_weights_for_sampler("step-4", checkpoint_type="base")
    body = json.loads(gw.submitted("save_weights_for_sampler")[0].content)
    assert re.fullmatch(r"step-4-[0-9a-f]{8}", body["path"]) and body["checkpoint_type"] == "base"
    assert saved.snapshot_name == body["path"] == saved.path


def test_forward_backward_rejects_malformed_metric_keys():
    gw = Gateway()
    _, model = connect(gw)
    gw.results["forward_backward"] = [{"loss_fn_output_type": "x", "loss_fn_outputs": [], "metrics": {"loss": 1.0}}]
    with pytest.raises(FwError, match="name:reduction"):
        model.forward_backward([])


def test_submission_without_request_id_is_an_error():
    gw = Gateway()
    _, model = connect(gw)
    gw.omit_request_id = True
    with pytest.raises(FwError, match="without a request_id"):
        model.optim_step({"learning_rate": 0.1})


@pytest.mark.parametrize("ref", ["step-4", "cross_job://job-a/step-4"])
def test_checkpoint_refs_accepted(ref):
    assert validate_checkpoint_ref(ref) == ref


@pytest.mark.parametrize("ref", ["gs://b/step-4", "/abs/step-4", "tinker://x", "Step-4", "cross_job://job/a/b", ""])
def test_checkpoint_refs_refused_before_sending(ref):
    gw = Gateway()
    _, model = connect(gw)
    before = len(gw.requests)
    with pytest.raises(ValueError):
        model.load_state(ref)
    assert len(gw.requests) == before


def test_forward_uses_forward_input_and_its_own_seq_id():
    gw = Gateway()
    _, model = connect(gw)
    gw.results["forward"] = [{"loss_fn_output_type": "ArrayRecord", "metrics": {"loss:sum": 2.0},
                              "loss_fn_outputs": [{"logprobs": {"data": [-1.0], "dtype": "float32"}}]}]
    out = model.forward([{"model_input": {}, "loss_fn_inputs": {}}])
    body = json.loads(gw.submitted("forward")[0].content)
    assert body["forward_input"]["loss_fn"] == "cross_entropy" and body["seq_id"] == 1
    assert out.metric("loss") == 2.0 and out.loss_fn_outputs[0]["logprobs"]["data"] == [-1.0]


def test_sampler_save_without_type_leaves_the_choice_to_the_server():
    gw = Gateway()
    _, model = connect(gw)
    gw.results["save_weights_for_sampler"] = [{"path": "x"}]
    model.save_weights_for_sampler("step-1", checkpoint_type=None)
    assert "checkpoint_type" not in json.loads(gw.submitted("save_weights_for_sampler")[0].content)
    with pytest.raises(ValueError):
        model.save_weights_for_sampler("step-1", checkpoint_type="full")
