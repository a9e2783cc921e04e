"""The real SDK on the smaller gaps: load_adapter from a promoted PEFT model, and forward-only trainers."""

from __future__ import annotations

import pytest
from fireworks.training.sdk import FiretitanServiceClient, TrainerJobConfig, TrainerJobManager
from tests.sdk_generation import sdk_types

from fwemu.emulator.app import create_app
from fwemu.emulator.server_thread import running_server
from tests.gateway.helpers import BASE, KEY, TEXT, settings

pytestmark = pytest.mark.real_sdk   # CI also runs it under the cookbook's fireworks-ai 1.2.9 (docs/compat.md)


@pytest.fixture(scope="module")
def server():
    with running_server(app=create_app(settings(future_long_poll_s=2.0))) as srv:
        yield srv


def batch() -> list:
    n = len(TEXT) - 1
    return [sdk_types.Datum(model_input=sdk_types.ModelInput.from_ints(TEXT[:-1]),
                            loss_fn_inputs={"target_tokens": TEXT[1:], "weights": [1.0] * n})]


def loss(tc) -> float:
    return tc.forward(batch(), "cross_entropy").result().metrics["loss:sum"]


def test_load_adapter_from_a_promoted_model(server, monkeypatch):
    """Warm start as the cookbook does it: train, export, promote, then load_adapter in a new trainer."""
    monkeypatch.setenv("TINKER_TELEMETRY", "0")
    mgr = TrainerJobManager(api_key=KEY, base_url=server.url)
    src = mgr.create_and_wait(TrainerJobConfig(base_model=BASE, lora_rank=4))
    svc = FiretitanServiceClient(base_url=src.base_url, api_key=KEY)
    try:
        tc = svc.create_training_client(BASE, lora_rank=4)
        for _ in range(2):
            tc.forward_backward(batch(), "cross_entropy")
            tc.optim_step(sdk_types.AdamParams(learning_rate=1e-2)).result()
        trained = loss(tc)
        saved = tc.save_weights_for_sampler_ext("warm").path
    finally:
        svc.close()
    model = mgr.promote_checkpoint(name=f"{src.job_name}/checkpoints/{saved}", output_model_id="warm-lora",
                                   base_model=BASE)
    assert model["kind"] == "HF_PEFT_ADDON"

    dst = mgr.create_and_wait(TrainerJobConfig(base_model=BASE, lora_rank=4))
    svc = FiretitanServiceClient(base_url=dst.base_url, api_key=KEY)
    try:
        tc = svc.create_training_client(BASE, lora_rank=4)
        fresh = loss(tc)
        out = tc.load_adapter(model["name"]).result()
        assert (out.model_id, out.adapter_path, out.type) == (tc.model_id, model["name"], "load_adapter")
        assert loss(tc) == trained != fresh
        wide = svc.create_training_client(BASE, lora_rank=8)
        with pytest.raises(Exception, match="lora_rank=8"):
            wide.load_adapter(model["name"]).result()
    finally:
        svc.close()


def test_forward_only_trainer_refuses_steps_and_saves(server, monkeypatch):
    monkeypatch.setenv("TINKER_TELEMETRY", "0")
    mgr = TrainerJobManager(api_key=KEY, base_url=server.url)
    endpoint = mgr.create_and_wait(TrainerJobConfig(base_model=BASE, lora_rank=0, forward_only=True))
    assert mgr.get(endpoint.job_id)["forwardOnly"] is True
    svc = FiretitanServiceClient(base_url=endpoint.base_url, api_key=KEY)
    try:
        tc = svc.create_training_client(BASE)
        assert loss(tc) > 0
        with pytest.raises(Exception, match="forward-only"):
            tc.optim_step(sdk_types.AdamParams(learning_rate=1e-2)).result()
        with pytest.raises(Exception, match="forward-only"):
            tc.save_state("step-0").result()
        assert loss(tc) > 0
    finally:
        svc.close()
