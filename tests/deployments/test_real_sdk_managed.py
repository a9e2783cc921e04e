"""The real SDK's managed path and its Tinker-style sampling client against the emulator.

`FiretitanServiceClient.from_firetitan_config(...)` provisions a trainer job and a hot-load
deployment attached to it; `save_weights_for_sampler` then `create_sampling_client(model_path)`
(service or training client), `hotload_sampler_snapshot` and `create_deployment_sampler` hot-load
through the SDK's own sampler backend (base first, then deltas chained on the snapshot served),
and `FiretitanSamplingClient.sample` / `compute_logprobs` (echo) answer with the trainer's numbers.
Unchanged user code over real HTTP.
"""

from __future__ import annotations

import asyncio
import warnings

import pytest
from fireworks.training.sdk import FiretitanServiceClient
from tests.sdk_generation import sdk_types as T
from fireworks.training.sdk.client import FiretitanSamplingClient
from fireworks.training.sdk.sampling import DeploymentSampler

from tests.deployments.conftest import KEY
from tests.deployments.test_real_sdk_deployments import PROMPT, trainer_logprobs
from tests.gateway.helpers import BASE
from tests.gateway.test_real_sdk import train

pytestmark = pytest.mark.real_sdk   # CI also runs it under the cookbook's fireworks-ai 1.2.9 (docs/compat.md)

SHAPE = "accounts/fireworks/deploymentShapes/ds-tiny"


def managed(server, lora_rank: int = 0) -> FiretitanServiceClient:
    return FiretitanServiceClient.from_firetitan_config(
        api_key=KEY, base_url=server.url, base_model=BASE, lora_rank=lora_rank, deployment_shape=SHAPE,
        trainer_timeout_s=60, deployment_timeout_s=60, hotload_timeout_s=30)


def served(mgr, deployment_id: str) -> dict:
    return mgr.hotload_check_status(deployment_id, BASE)["replicas"][0]


def tinker_sample(sc: FiretitanSamplingClient, seed: int, max_tokens: int = 10) -> T.SampleResponse:
    params = T.SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=seed)
    return sc.sample(T.ModelInput.from_ints(PROMPT), 2, params).result(timeout=60)


def test_managed_full_parameter_service(server, mgr):
    svc = managed(server)
    try:
        tc = svc.create_training_client()
        dep_id, job = svc.managed_deployment_id, f"accounts/local/rlorTrainerJobs/{svc.managed_trainer_job_id}"
        info = mgr.get(dep_id)
        assert (info.state, info.hot_load_trainer_job, info.deployment_shape_version) == ("READY", job, SHAPE)

        p0 = tc.save_weights_for_sampler("s0").result().path
        sc = svc.create_sampling_client(model_path=p0)            # hot-loads p0 (a base), Tinker wrapper
        assert isinstance(sc, FiretitanSamplingClient) and served(mgr, dep_id)["current_snapshot_identity"] == p0
        resp = tinker_sample(sc, seed=4)
        assert len(resp.sequences) == 2
        for seq in resp.sequences:
            assert len(seq.tokens) == 10 and seq.stop_reason in ("length", "stop")
            # sampling logprobs at temperature 1 are the model's distribution (cached decoder: ~1e-5)
            assert seq.logprobs == pytest.approx(trainer_logprobs(tc, PROMPT + seq.tokens)[len(PROMPT) - 1:],
                                                 abs=1e-4)
        assert [s.tokens for s in tinker_sample(sc, seed=4).sequences] == [s.tokens for s in resp.sequences]

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # "we don't recommend ... compute logprobs"
            prompt_lps = sc.compute_logprobs(T.ModelInput.from_ints(PROMPT)).result(timeout=60)
        assert prompt_lps == [None] + trainer_logprobs(tc, PROMPT)   # echo: bit for bit

        train(tc, 1)
        p1 = tc.save_weights_for_sampler("s1").result().path      # a delta against p0
        svc.hotload_sampler_snapshot(p1)
        assert served(mgr, dep_id)["current_snapshot_identity"] == p1 and not svc.requires_initial_sampler_sync()
        ds = svc.create_deployment_sampler(model_path=p1)         # hot-loads p1 again: already served
        assert isinstance(ds, DeploymentSampler) and served(mgr, dep_id)["loading_state"]["stage"] == "done"
        got = asyncio.run(ds.sample_with_prompt_tokens(PROMPT, max_tokens=8, temperature=1.0, logprobs=True,
                                                       seed=2))[0]
        assert got.inference_logprobs == trainer_logprobs(tc, got.full_tokens)[got.prompt_len - 1:]

        train(tc, 1)
        p2 = tc.save_weights_for_sampler("s2").result().path
        sc2 = tc.create_sampling_client(p2)                        # the training client's path
        assert served(mgr, dep_id)["current_snapshot_identity"] == p2
        delta_json = (server.services.store.checkpoint_dir("local", svc.managed_trainer_job_id, p2)
                      / "delta.json").read_text()
        assert f'"base_identity": "{p1}"' in delta_json          # chained on the snapshot served
        seq = tinker_sample(sc2, seed=9, max_tokens=6).sequences[0]
        assert seq.logprobs == pytest.approx(trainer_logprobs(tc, PROMPT + seq.tokens)[len(PROMPT) - 1:], abs=1e-4)
    finally:
        svc.close()


def test_managed_lora_service(server, mgr):
    svc = managed(server, lora_rank=4)
    try:
        tc = svc.create_training_client(BASE, lora_rank=4)
        dep_id = svc.managed_deployment_id
        a = tc.save_weights_for_sampler("a").result().path
        sc = svc.create_sampling_client(model_path=a)
        assert served(mgr, dep_id)["loaded_adapters"] == [{"identity": a, "status": "loaded"}]
        train(tc, 1)
        b = tc.save_weights_for_sampler("b").result().path
        sc = svc.create_sampling_client(model_path=b)             # a standalone adapter, no delta metadata
        replica = served(mgr, dep_id)
        assert replica["current_snapshot_identity"] == b and replica["loading_state"]["stage"] == "done"
        seq = tinker_sample(sc, seed=1, max_tokens=6).sequences[0]
        assert seq.logprobs == pytest.approx(trainer_logprobs(tc, PROMPT + seq.tokens)[len(PROMPT) - 1:], abs=1e-4)
    finally:
        svc.close()
