"""The real fireworks-ai SDK against the emulator over HTTP: docs/wire.md D flows 1-6, unchanged user code.

Runs with both key types: a Fireworks key (hard-coded client config, pyqwest transport, no
/client/config call) and a `tml-` key (POST /client/config first, then plain httpx). Telemetry
stays on, so `close()` also proves the telemetry route keeps the SDK from stalling.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fireworks.training.sdk import (
    FiretitanServiceClient,
    FireworksClient,
    TrainerJobConfig,
    TrainerJobManager,
)

from fwemu.emulator.app import create_app
from fwemu.emulator.server_thread import running_server
from tests.gateway.helpers import BASE, TEXT, settings
from tests.sdk_generation import DRAINS_TELEMETRY_ON_CLOSE, HAS_UNLOAD_MODEL, sdk_training_client, sdk_types

pytestmark = pytest.mark.real_sdk  # CI runs it under both SDK generations (docs/compat.md)

FW_KEY, TML_KEY = "fw-test-key", "tml-local-test"
SUFFIX_LEN = 8


@pytest.fixture(scope="module")
def server():
    """One emulator on a real socket for the module; it records (method, path, key) of every call."""
    app = create_app(settings(api_keys={FW_KEY: "local", TML_KEY: "local"}, startup_delay_s=0.05,
                              future_long_poll_s=2.0))
    seen: list[tuple[str, str, str | None]] = []

    @app.middleware("http")
    async def record(request, call_next):
        seen.append((request.method, request.url.path, request.headers.get("x-api-key")))
        return await call_next(request)

    with running_server(app=app) as srv:
        srv.seen = seen
        srv.store = app.state.services.store
        yield srv


def batch() -> list:
    n = len(TEXT) - 1
    return [sdk_types.Datum(model_input=sdk_types.ModelInput.from_ints(TEXT[:-1]),
                            loss_fn_inputs={"target_tokens": TEXT[1:], "weights": [1.0] * n})]


def train(tc, steps: int) -> list[float]:
    losses = []
    for _ in range(steps):
        fb = tc.forward_backward(batch(), "cross_entropy")
        step = tc.optim_step(sdk_types.AdamParams(learning_rate=1e-2))  # posted before fb is read, as the SDK does
        losses.append(fb.result().metrics["loss:sum"])
        step.result()
    return losses


def short(row: dict) -> str:
    return row["name"].rsplit("/", 1)[-1]


@pytest.mark.parametrize("key", [FW_KEY, TML_KEY])
@pytest.mark.parametrize("lora_rank", [0, 8])
def test_sdk_flows(server, key, lora_rank, monkeypatch):
    """Create and wait, train, save_state, two sampler saves, list, promote, load into a new client."""
    monkeypatch.delenv("TINKER_TELEMETRY", raising=False)  # this test proves telemetry is accepted
    full = lora_rank == 0
    mgr = TrainerJobManager(api_key=key, base_url=server.url)
    endpoint = mgr.create_and_wait(TrainerJobConfig(base_model=BASE, lora_rank=lora_rank), poll_interval_s=0.1)
    job_id = endpoint.job_id
    assert endpoint.base_url == f"{server.url}/training/v1/rlorTrainerJobs/local/{job_id}"

    svc = FiretitanServiceClient(base_url=endpoint.base_url, api_key=key)
    svc2 = None
    try:
        assert svc.get_server_capabilities().supported_models[0].model_name == BASE
        tc = svc.create_training_client(BASE, lora_rank=lora_rank)
        assert tc.model_id.startswith("model-")
        info = tc.get_info()
        assert (info.model_id, info.is_lora, info.lora_rank) == (tc.model_id, not full, lora_rank)
        losses = train(tc, 3)
        assert losses[2] < losses[1] < losses[0]

        assert tc.save_state("step-3").result().path == "step-3"
        first = tc.save_weights_for_sampler_ext("step-3")
        second = tc.save_weights_for_sampler_ext("step-4")  # full: the SDK chain sends "delta"
        assert first.path == f"step-3-{tc.session_id}" and second.path == f"step-4-{tc.session_id}"
        assert len(tc.session_id) == SUFFIX_LEN
        assert tc.list_checkpoints() == ["step-3"]

        rows = FireworksClient(api_key=key, base_url=server.url).list_checkpoints(job_id)
        listed = {short(r): (r["checkpointType"], r["promotable"]) for r in rows}
        dcp_kind = "TRAINING" if full else "TRAINING_LORA"
        first_kind, second_kind = ("INFERENCE_BASE", "INFERENCE_ARC_V2") if full else ("INFERENCE_LORA",) * 2
        assert listed == {
            "step-3": ("CHECKPOINT_TYPE_" + dcp_kind, False),
            first.path: ("CHECKPOINT_TYPE_" + first_kind, True),
            second.path: ("CHECKPOINT_TYPE_" + second_kind, not full),
        }
        assert [short(r) for r in rows] == ["step-3", first.path, second.path]  # oldest first

        by_name = {short(r): r["name"] for r in rows}
        model = mgr.promote_checkpoint(name=by_name[first.path], output_model_id=f"promoted-{job_id[-8:]}",
                                       base_model=BASE)
        assert model["kind"] == ("HF_BASE_MODEL" if full else "HF_PEFT_ADDON")
        assert model["state"] == "READY"
        refused_name, refused_kind = (second.path, "INFERENCE_ARC_V2") if full else ("step-3", "TRAINING_LORA")
        with pytest.raises(RuntimeError, match=refused_kind):
            mgr.promote_checkpoint(name=by_name[refused_name], output_model_id=f"refused-{job_id[-8:]}",
                                   base_model=BASE)

        # flow 6 without a restart: a new service and training client loads weights + optimizer
        svc2 = FiretitanServiceClient(base_url=endpoint.base_url, api_key=key)
        tc2 = svc2.create_training_client(BASE, lora_rank=lora_rank)
        assert tc2.model_id != tc.model_id
        tc2.load_state_with_optimizer(tc2.resolve_checkpoint_path("step-3")).result()
        assert train(tc2, 1) == train(tc, 1)
        fwd = tc2.forward(batch(), "cross_entropy").result()
        assert len(fwd.loss_fn_outputs) == 1 and fwd.metrics["loss:sum"] > 0
        if HAS_UNLOAD_MODEL:  # tinker 0.23 (SDK 1.2.9) has no unload_model
            assert tc2.unload_model().result().model_id == tc2.model_id
    finally:
        t0 = time.monotonic()
        svc.close()
        if svc2 is not None:
            svc2.close()
        assert time.monotonic() - t0 < 10  # telemetry is accepted, so close() does not stall

    paths = [(m, p) for m, p, _ in server.seen if f"/{job_id}/" in p]
    if DRAINS_TELEMETRY_ON_CLOSE:  # SDK 1.2.9 drops queued telemetry on close (tests/sdk_generation.py)
        assert ("POST", f"/training/v1/rlorTrainerJobs/local/{job_id}/api/v1/telemetry") in paths
    config_calls = [p for m, p in paths if p.endswith("/api/v1/client/config")]
    assert bool(config_calls) == key.startswith("tml-")  # tml- keys fetch the client config


def _export_bytes(server, job_id: str, name: str, lora: bool) -> bytes:
    directory: Path = server.store.checkpoint_dir("local", job_id, name)
    return (directory / ("adapter_model.safetensors" if lora else "model.safetensors")).read_bytes()


@pytest.mark.parametrize("lora_rank", [0, 8])
def test_resume_through_sdk_matches_uninterrupted_training(server, lora_rank):
    """N steps straight == k steps, save_state, :resume (trainer restart), new client, load, N-k steps."""
    n, k = 4, 2
    mgr = TrainerJobManager(api_key=FW_KEY, base_url=server.url)
    cfg = TrainerJobConfig(base_model=BASE, lora_rank=lora_rank)

    straight_ep = mgr.create_and_wait(cfg, poll_interval_s=0.1)
    svc = FiretitanServiceClient(base_url=straight_ep.base_url, api_key=FW_KEY)
    try:
        tc = svc.create_training_client(BASE, lora_rank=lora_rank)
        train(tc, n)
        straight = tc.save_weights_for_sampler_ext("final", checkpoint_type="base").path
    finally:
        svc.close()

    resumed_ep = mgr.create_and_wait(cfg, poll_interval_s=0.1)
    job_id = resumed_ep.job_id
    svc = FiretitanServiceClient(base_url=resumed_ep.base_url, api_key=FW_KEY)
    try:
        tc = svc.create_training_client(BASE, lora_rank=lora_rank)
        train(tc, k)
        assert tc.save_state(f"step-{k}").result().path == f"step-{k}"
    finally:
        svc.close()
    resumed_ep = mgr.resume_and_wait(job_id, poll_interval_s=0.1)
    svc = FiretitanServiceClient(base_url=resumed_ep.base_url, api_key=FW_KEY)
    try:
        tc = svc.create_training_client(BASE, lora_rank=lora_rank)
        assert tc.list_checkpoints() == [f"step-{k}"]
        tc.load_state_with_optimizer(f"step-{k}").result()
        train(tc, n - k)
        resumed = tc.save_weights_for_sampler_ext("final", checkpoint_type="base").path
    finally:
        svc.close()

    lora = lora_rank > 0
    assert _export_bytes(server, straight_ep.job_id, straight, lora) == _export_bytes(server, job_id, resumed, lora)


def test_parallel_chunks_are_applied_as_one_batch(server, monkeypatch):
    """The SDK posts the chunks of one forward_backward concurrently (seq_ids may arrive out of
    order); the trainer must accumulate all of them before the optim_step that follows."""
    mgr = TrainerJobManager(api_key=FW_KEY, base_url=server.url)
    endpoint = mgr.create_and_wait(TrainerJobConfig(base_model=BASE, lora_rank=0), poll_interval_s=0.1)
    data = batch() * 7
    whole_svc = FiretitanServiceClient(base_url=endpoint.base_url, api_key=FW_KEY)
    try:
        whole = whole_svc.create_training_client(BASE)
        expected = whole.forward_backward(data, "cross_entropy").result()
        expected_step = whole.optim_step(sdk_types.AdamParams(learning_rate=1e-2)).result()
    finally:
        whole_svc.close()

    monkeypatch.setattr(sdk_training_client, "MAX_CHUNK_LEN", 2)  # 7 datums -> 4 concurrent chunks
    svc = FiretitanServiceClient(base_url=endpoint.base_url, api_key=FW_KEY)
    try:
        tc = svc.create_training_client(BASE)
        fb = tc.forward_backward(data, "cross_entropy")
        step = tc.optim_step(sdk_types.AdamParams(learning_rate=1e-2))
        out, metrics = fb.result(), step.result().metrics
        assert len(out.loss_fn_outputs) == len(data)
        assert out.metrics["loss:sum"] == pytest.approx(expected.metrics["loss:sum"], rel=1e-6)
        assert metrics["loss_tokens:sum"] == expected_step.metrics["loss_tokens:sum"]
        assert metrics["grad_norm:mean"] == pytest.approx(expected_step.metrics["grad_norm:mean"], rel=1e-5)
    finally:
        svc.close()
    fb_posts = [p for m, p, _ in server.seen if p.endswith(f"/{endpoint.job_id}/api/v1/forward_backward")]
    assert len(fb_posts) == 1 + 4
