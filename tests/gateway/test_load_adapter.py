"""load_adapter through the gateway: PEFT adapters from rows and promoted models, and clear refusals."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file

from tests.builders import tar_bytes
from tests.gateway.helpers import ACCOUNT, BASE, Gateway, datum

ADAPTER = "adapter-0badc0de"


def fwd_loss(gw: Gateway, job: str, model: str) -> float:
    out = gw.ok(job, "forward", {"forward_input": {"data": [datum()], "loss_fn": "cross_entropy"},
                                 "model_id": model, "seq_id": gw.seq(job, model)})
    return out["metrics"]["loss:sum"]


def load_adapter(gw: Gateway, job: str, model: str, path: str) -> dict:
    return gw.result(job, gw.submit(job, "load_adapter", {"adapter_path": path, "model_id": model,
                                                          "seq_id": gw.seq(job, model)}))


def refused(payload: dict, *needles: str) -> str:
    assert payload.get("category") == "user", payload
    for needle in needles:
        assert needle in payload["error"], payload["error"]
    return payload["error"]


@pytest.fixture
def trained(gw):
    """Job `src` with a rank-4 model trained two steps and exported as INFERENCE_LORA `ADAPTER`."""
    job = gw.create_job("src", lora_rank=4)
    model = gw.model(job, lora_rank=4)
    gw.step(job, model)
    gw.step(job, model)
    assert gw.save_sampler(job, model, ADAPTER, "base")["path"] == ADAPTER
    gw.source = (job, model, fwd_loss(gw, job, model))
    return gw


def adapter_file(gw: Gateway, job: str, name: str):
    return gw.app.state.services.store.checkpoint_dir(ACCOUNT, job, name) / "adapter_model.safetensors"


def test_cross_job_adapter_reproduces_the_source_model(trained):
    gw = trained
    src_job, _, src_loss = gw.source
    job = gw.create_job("dst", lora_rank=4)
    model = gw.model(job, lora_rank=4)
    fresh = fwd_loss(gw, job, model)
    assert load_adapter(gw, job, model, f"cross_job://{src_job}/{ADAPTER}") == {
        "model_id": model, "adapter_path": f"cross_job://{src_job}/{ADAPTER}", "type": "load_adapter"}
    assert fwd_loss(gw, job, model) == src_loss != fresh
    # the loaded weights are the adapter's, bit for bit, and the optimizer restarted (step 0 -> 1)
    assert gw.save_sampler(job, model, "copy-0badc0de", "base")["path"] == "copy-0badc0de"
    a, b = load_file(adapter_file(gw, src_job, ADAPTER)), load_file(adapter_file(gw, job, "copy-0badc0de"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    _, op = gw.step(job, model)
    assert op["metrics"]["step:max"] == 1.0


def test_same_job_name_and_promoted_model_forms(trained):
    gw = trained
    src_job, _, src_loss = gw.source
    other = gw.model(src_job, lora_rank=4)
    assert load_adapter(gw, src_job, other, ADAPTER)["type"] == "load_adapter"
    assert fwd_loss(gw, src_job, other) == src_loss
    r = gw.http.post(f"/v1/accounts/{ACCOUNT}/checkpoints/{ADAPTER}:promote", headers=gw.headers(),
                     json={"output_model": "my-lora", "base_model": BASE, "trainer_job_id": src_job})
    assert r.status_code == 200, r.text
    job = gw.create_job("from-model", lora_rank=4)
    model = gw.model(job, lora_rank=4)
    assert load_adapter(gw, job, model, f"accounts/{ACCOUNT}/models/my-lora")["type"] == "load_adapter"
    assert fwd_loss(gw, job, model) == src_loss
    for path in ("accounts/fireworks/models/qwen3-8b", "accounts/elsewhere/models/my-lora",
                 f"accounts/{ACCOUNT}/models/missing"):
        refused(load_adapter(gw, job, model, path), "models/")
    # bytes changed behind the store's back: the inspector sees them first, and nothing is loaded
    weights = gw.app.state.services.store.model_dir(ACCOUNT, "my-lora") / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.unlink()                               # a hard link: replace the name, not the shared bytes
    weights.write_bytes(data[:-4])
    refused(load_adapter(gw, job, model, f"accounts/{ACCOUNT}/models/my-lora"), "rejected by the checkpoint inspector",
            "truncated")


def test_rank_mismatch_names_the_first_tensor(trained):
    gw = trained
    job = gw.create_job("rank8", lora_rank=8)
    model = gw.model(job, lora_rank=8)
    before = fwd_loss(gw, job, model)
    msg = refused(load_adapter(gw, job, model, f"cross_job://src/{ADAPTER}"), "r=4", "lora_rank=8", "[4, ")
    assert "tensor base_model.model.model.layers.0." in msg
    assert fwd_loss(gw, job, model) == before      # a refused load leaves the model untouched


def test_refusals_for_other_kinds_and_paths(trained):
    gw = trained
    src_job, src_model, _ = gw.source
    assert gw.save_state(src_job, src_model, "step-2")["path"] == "step-2"
    refused(load_adapter(gw, src_job, src_model, "step-2"), "CHECKPOINT_TYPE_TRAINING_LORA", "load_state")
    refused(load_adapter(gw, src_job, src_model, "nope"), "not found", ADAPTER)
    refused(load_adapter(gw, src_job, src_model, "gs://bucket/adapters/x"), "cannot be read", "fwemu import")
    refused(load_adapter(gw, src_job, src_model, "cross_job://ghost/x"), "ghost not found")
    full_job = gw.create_job("full", lora_rank=0)
    full = gw.model(full_job)
    refused(load_adapter(gw, full_job, full, f"cross_job://src/{ADAPTER}"), "LoRA training client")


def _edited_import(gw: Gateway, tmp_path, edit) -> str:
    """The source adapter with its adapter_config.json edited, imported into job `dst` as `edited`."""
    d = tmp_path / "edited"
    shutil.copytree(adapter_file(gw, "src", ADAPTER).parent, d)
    cfg = json.loads((d / "adapter_config.json").read_text())
    edit(cfg)
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    r = gw.http.post(f"/_emulator/v1/accounts/{ACCOUNT}/rlorTrainerJobs/dst/checkpoints:import",
                     params={"name": "edited"}, content=tar_bytes(d), headers={**gw.headers(),
                                                                              "Content-Type": "application/x-tar"})
    assert r.status_code == 200, r.text
    return "edited"


def test_adapter_brings_its_own_alpha(trained, tmp_path):
    gw = trained
    job = gw.create_job("dst", lora_rank=4)
    model = gw.model(job, lora_rank=4)   # alpha 32
    name = _edited_import(gw, tmp_path, lambda c: c.update(lora_alpha=8))
    assert load_adapter(gw, job, model, name)["type"] == "load_adapter"
    assert fwd_loss(gw, job, model) != gw.source[2]   # same A/B, a quarter of the scaling
    gw.save_sampler(job, model, "again-0badc0de", "base")
    store = gw.app.state.services.store
    saved = json.loads((store.checkpoint_dir(ACCOUNT, job, "again-0badc0de") / "adapter_config.json").read_text())
    assert saved["lora_alpha"] == 8


@pytest.mark.parametrize("edit, needle", [
    (lambda c: c.update(base_model_name_or_path="accounts/fireworks/models/other"), "trained on"),
    (lambda c: c.update(target_modules=["q_proj", "v_proj"]), "targets"),
    (lambda c: c.update(use_rslora=True), "use_rslora")])
def test_config_mismatches(trained, tmp_path, edit, needle):
    gw = trained
    job = gw.create_job("dst", lora_rank=4)
    model = gw.model(job, lora_rank=4)
    refused(load_adapter(gw, job, model, _edited_import(gw, tmp_path, edit)), needle)
