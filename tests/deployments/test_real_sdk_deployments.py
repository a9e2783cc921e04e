"""The real SDK's DeploymentManager, WeightSyncer and DeploymentSampler against the emulator.

Unchanged user code over real HTTP: deployment CRUD, save_and_hotload over a chain of saves
(full: base then ARC_V2 deltas chained on the previous snapshot; LoRA: adapters), refusals the
SDK reads as a failed load, and sampling whose logprobs are the trainer's forward logprobs.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fireworks.training.sdk.deployment import DeploymentConfig, DeploymentSampler
from fireworks.training.sdk.weight_syncer import WeightSyncer

from fwemu.client.tokenizer import encode
from fwemu.emulator.deployments.runtime import runtime_of
from tests.deployments.conftest import KEY, deploy
from tests.gateway.helpers import BASE, OTHER_KEY
from tests.gateway.test_real_sdk import train
from tests.sdk_generation import DEPLOYMENT_INFO_HAS_BASE_MODEL, SHAPELESS, sdk_types

pytestmark = pytest.mark.real_sdk  # CI runs it under both SDK generations (docs/compat.md)

PROMPT = encode("the emulator ", add_bos=True)


def syncer(trainer, mgr, deployment_id: str, lora_rank: int = 0) -> WeightSyncer:
    return WeightSyncer(policy_client=trainer.client, deploy_mgr=mgr, deployment_id=deployment_id,
                        base_model=BASE, hotload_timeout=30, lora_rank=lora_rank, warmup_max_retries=1)


def trainer_logprobs(client, tokens: list[int]) -> list[float]:
    """The trainer's forward logprobs of tokens[1:] given tokens[:-1]."""
    datum = sdk_types.Datum(model_input=sdk_types.ModelInput.from_ints(tokens[:-1]),
                            loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)})
    out = client.forward([datum], "cross_entropy").result().loss_fn_outputs[0]["logprobs"]
    return [float(x) for x in out.data]


def sample(mgr, deployment_id: str, **kwargs):
    sampler = DeploymentSampler(inference_url=mgr.inference_url, model=f"accounts/local/deployments/{deployment_id}",
                                api_key=KEY)
    return asyncio.run(sampler.sample_with_prompt_tokens(PROMPT, **kwargs))


def status(mgr, deployment_id: str) -> dict:
    return mgr.hotload_check_status(deployment_id, BASE)["replicas"][0]


def test_deployment_crud(server, mgr, trainer_factory):
    """create (READY at once, 409 -> GET), get, list, re-attach, scale to zero, delete; per account."""
    first, second = trainer_factory(), trainer_factory()
    before = len(server.seen)
    info = deploy(mgr, "crud-dep", first.job_name)
    assert (info.state, info.hot_load_trainer_job) == ("READY", first.job_name)
    assert info.hot_load_bucket_url == f"fwemu://hot-load/{first.job_name}/"
    gets = [p for m, p in server.seen[before:] if m == "GET" and p.endswith("/deployments/crud-dep")]
    assert len(gets) == 2   # create_or_get's lookup + one wait_for_ready poll: READY on the first look
    base_model = (info.base_model if DEPLOYMENT_INFO_HAS_BASE_MODEL  # not parsed by SDK 1.2.9
                  else mgr._get("/v1/accounts/local/deployments/crud-dep").json()["baseModel"])
    assert base_model == BASE

    again = mgr._create_deployment(DeploymentConfig(deployment_id="crud-dep", base_model=BASE, **SHAPELESS))
    assert again["name"] == "accounts/local/deployments/crud-dep"          # 409, then the SDK's GET
    assert ("POST", "/v1/accounts/local/deployments") in server.seen

    listed = httpx.get(f"{server.url}/v1/accounts/local/deployments", headers={"x-api-key": KEY}).json()
    assert "accounts/local/deployments/crud-dep" in [d["name"] for d in listed["deployments"]]
    other = httpx.get(f"{server.url}/v1/accounts/local/deployments/crud-dep", headers={"x-api-key": OTHER_KEY})
    assert other.status_code == 404 and other.json()["error"]["status"] == "NOT_FOUND"

    moved = mgr.reattach_trainer("crud-dep", base_model=BASE, trainer_job_name=second.job_name, timeout_s=5)
    assert moved.hot_load_trainer_job == second.job_name and moved.state == "READY"
    assert mgr.get("crud-dep").hot_load_transition_type == "ASYNC"
    bad = mgr._patch("/v1/accounts/local/deployments/crud-dep", json={"baseModel": "accounts/fireworks/models/x"},
                     params={"updateMask": "base_model"})
    assert bad.status_code == 400 and "cannot be changed" in bad.json()["error"]["message"]

    second.service.close()
    second.jobs.delete(second.endpoint.job_id)   # clean-up order of the cookbook: trainer first
    mgr.scale_to_zero("crud-dep")
    raw = mgr._get_deployment("crud-dep")
    assert (raw["minReplicaCount"], raw["maxReplicaCount"], raw["hotLoadTrainerJob"]) == (0, 0, second.job_name)
    assert mgr.hotload_check_status("crud-dep", BASE) == {"replicas": []}

    shape = mgr._get("/v1/accounts/fireworks/deploymentShapes/ds-tiny/versions/v1").json()
    assert shape["name"] == "accounts/fireworks/deploymentShapes/ds-tiny/versions/v1"

    mgr.delete("crud-dep")
    assert mgr.get("crud-dep") is None
    assert [p for m, p in server.seen if m == "DELETE"][-1] == "/v1/accounts/local/deployments/crud-dep"


def test_full_parameter_chain(server, mgr, trainer_factory):
    """base, then two deltas: each delta is against the previous snapshot, and the deployment ends
    with exactly the trainer's weights; sampling logprobs are the trainer's forward logprobs."""
    t = trainer_factory()
    deploy(mgr, "full-dep", t.job_name)
    ws = syncer(t, mgr, "full-dep")
    names = []
    for step in range(3):
        names.append(ws.save_and_hotload(f"step-{step}"))
        assert status(mgr, "full-dep")["current_snapshot_identity"] == names[-1]
        if step == 0:
            first = sample(mgr, "full-dep", max_tokens=12, temperature=1.0, logprobs=True, seed=5)[0]
            assert first.inference_logprobs == trainer_logprobs(t.client, first.full_tokens)[first.prompt_len - 1:]
        if step < 2:
            train(t.client, 1)
    store = server.services.store
    manifests = [(store.checkpoint_dir("local", t.endpoint.job_id, n) / "delta.json").read_text() for n in names[1:]]
    assert f'"base_identity": "{names[0]}"' in manifests[0]
    assert f'"base_identity": "{names[1]}"' in manifests[1]   # chained on the previous snapshot, not the base

    # the deployment now holds step-2's weights bit for bit: a base export of the same weights
    check = t.client.save_weights_for_sampler_ext("check", checkpoint_type="base").snapshot_name
    train(t.client, 1)  # the trainer moves on; the deployment keeps serving step-2
    dep = runtime_of(server.services).store.get("local", "full-dep")
    served = runtime_of(server.services).store.version_dir("local", "full-dep", dep.hot_load["version"])
    exported = store.checkpoint_dir("local", t.endpoint.job_id, check)
    assert (served / "model.safetensors").read_bytes() == (exported / "model.safetensors").read_bytes()

    # seeded sampling is reproducible, and the logprobs moved with the weights
    again = sample(mgr, "full-dep", max_tokens=12, temperature=1.0, logprobs=True, seed=5)[0]
    assert again.full_tokens == sample(mgr, "full-dep", max_tokens=12, temperature=1.0, seed=5)[0].full_tokens
    assert (again.full_tokens, again.inference_logprobs) != (first.full_tokens, first.inference_logprobs)


def test_logprobs_equal_trainer_forward_and_change_on_hot_load(server, mgr, trainer_factory):
    t = trainer_factory()
    deploy(mgr, "lp-dep", t.job_name)
    ws = syncer(t, mgr, "lp-dep")
    ws.save_and_hotload("w1")
    s1 = sample(mgr, "lp-dep", max_tokens=10, temperature=1.0, logprobs=True, seed=11)[0]
    lp1 = trainer_logprobs(t.client, s1.full_tokens)[s1.prompt_len - 1:]
    assert s1.inference_logprobs == lp1
    assert s1.sampling_logprobs == pytest.approx(lp1, abs=1e-5)   # temperature 1: the raw distribution

    train(t.client, 2)
    assert trainer_logprobs(t.client, s1.full_tokens)[s1.prompt_len - 1:] != lp1   # the weights moved
    ws.save_and_hotload("w2")
    s2 = sample(mgr, "lp-dep", max_tokens=10, temperature=1.0, logprobs=True, seed=11)[0]
    assert s2.inference_logprobs == trainer_logprobs(t.client, s2.full_tokens)[s2.prompt_len - 1:]
    assert s2.inference_logprobs != lp1 or s2.full_tokens != s1.full_tokens


def test_lora_chain_and_refusals(server, mgr, trainer_factory):
    """LoRA adapters hot-load standalone; incremental metadata on one, a chain mismatch, and a
    resumable checkpoint are each a failed load the SDK reports at once (stage error, reason)."""
    t = trainer_factory(lora_rank=4)
    deploy(mgr, "lora-dep", t.job_name)
    ws = syncer(t, mgr, "lora-dep", lora_rank=4)
    a = ws.save_and_hotload("a")
    train(t.client, 1)
    b = ws.save_and_hotload("b")
    replica = status(mgr, "lora-dep")
    assert replica["current_snapshot_identity"] == b
    assert replica["loaded_adapters"] == [{"identity": b, "status": "loaded"}]
    s = sample(mgr, "lora-dep", max_tokens=8, temperature=1.0, logprobs=True, seed=3)[0]
    assert s.inference_logprobs == trainer_logprobs(t.client, s.full_tokens)[s.prompt_len - 1:]

    meta = {"previous_snapshot_identity": b, "compression_format": "arc_v2", "checksum_format": "alder32"}
    assert not mgr.hotload_and_wait("lora-dep", BASE, a, incremental_snapshot_metadata=meta, timeout_seconds=10)
    assert "Hotload failed" in mgr.last_hotload_error_message
    assert status(mgr, "lora-dep")["loading_state"]["reason"] == "INCREMENTAL_ON_LORA"
    t.client.save_state("dcp-1").result()
    assert not mgr.hotload_and_wait("lora-dep", BASE, "dcp-1", timeout_seconds=10)
    assert status(mgr, "lora-dep")["loading_state"]["reason"] == "NOT_A_SAMPLER_SNAPSHOT"
    assert status(mgr, "lora-dep")["current_snapshot_identity"] == b   # still serving b


def test_delta_chain_mismatch_is_a_failed_load(server, mgr, trainer_factory):
    t = trainer_factory()
    deploy(mgr, "chain-dep", t.job_name)
    base = t.client.save_weights_for_sampler_ext("base", checkpoint_type="base").snapshot_name
    train(t.client, 1)
    d1 = t.client.save_weights_for_sampler_ext("d1", checkpoint_type="delta").snapshot_name
    train(t.client, 1)
    d2 = t.client.save_weights_for_sampler_ext("d2", checkpoint_type="delta").snapshot_name  # against d1
    meta = {"compression_format": "arc_v2", "checksum_format": "alder32"}
    assert mgr.hotload_and_wait("chain-dep", BASE, base, timeout_seconds=10)
    skip = mgr.hotload_and_wait("chain-dep", BASE, d2, timeout_seconds=10,
                                incremental_snapshot_metadata={**meta, "previous_snapshot_identity": base})
    assert not skip and status(mgr, "chain-dep")["loading_state"]["reason"] == "CHAIN_MISMATCH"
    assert mgr.hotload_and_wait("chain-dep", BASE, d1, timeout_seconds=10,
                                incremental_snapshot_metadata={**meta, "previous_snapshot_identity": base})
    assert mgr.hotload_and_wait("chain-dep", BASE, d2, timeout_seconds=10,
                                incremental_snapshot_metadata={**meta, "previous_snapshot_identity": d1,
                                                               "checksum_format": "adler32"})
    assert status(mgr, "chain-dep")["current_snapshot_identity"] == d2
