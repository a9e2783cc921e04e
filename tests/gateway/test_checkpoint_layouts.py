"""Other trainers' DCP layouts through the real HTTP path: import the tar, list it, load_weights.

The source is a TrainerModel of the gateway's own (tiny) size, trained two steps in the test,
whose state is re-saved with real dcp.save in another trainer's layout: torchtitan's (flat
model keys renamed to torchtitan's LLaMA names, `optimizer`, `lr_scheduler`, `dataloader`,
`train_state`) or get_state_dict's under `model` / `optimizer`. After load_weights the
emulated model must compute what the source computes, before and after one more step.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

from fwemu.emulator.trainer.model_session import TrainerModel
from tests.builders import standin_state, tar_bytes, titan_name
from tests.gateway.helpers import BASE, Gateway, datum, optim_body

T = "CHECKPOINT_TYPE_"


def source_model(steps: int = 2, lora_rank: int = 0, **size) -> TrainerModel:
    from fwemu.emulator.trainer.model_config import ModelSize

    m = TrainerModel(BASE, lora_rank=lora_rank, seed=7, size=ModelSize.from_env() if not size else ModelSize(**size))
    for _ in range(steps):
        m.forward_backward([datum()], "cross_entropy")
        m.optim_step(optim_body("x", 0)["adam_params"])
    return m


def save_layout(m: TrainerModel, dest: Path, layout: str, rename=None, whole: bool = False) -> Path:
    """Save `m`'s weights and Adam state with real dcp.save in `layout`."""
    dest.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(standin_state(m, layout, rename, whole), storage_writer=dcp.FileSystemWriter(dest), no_dist=True)
    return dest


def import_dir(gw: Gateway, job: str, name: str, directory: Path) -> dict:
    r = gw.http.post(f"/_emulator/v1/accounts/{gw.account}/rlorTrainerJobs/{job}/checkpoints:import",
                     params={"name": name}, content=tar_bytes(directory),
                     headers={**gw.headers(), "Content-Type": "application/x-tar"})
    assert r.status_code == 200, r.text
    return r.json()


def loss_of(gw: Gateway, job: str, model: str) -> float:
    out = gw.ok(job, "forward", {"forward_input": {"data": [datum()], "loss_fn": "cross_entropy"},
                                 "model_id": model, "seq_id": gw.seq(job, model)})
    return out["metrics"]["loss:sum"]


def source_loss(m: TrainerModel) -> float:
    return m.forward([datum()], "cross_entropy")["metrics"]["loss:sum"]


@pytest.mark.parametrize("layout, lora_rank", [("torchtitan", 0), ("get_state_dict", 0),
                                               ("torchtitan", 4), ("get_state_dict", 4)])
def test_foreign_layout_resumes_exactly(gw, tmp_path, layout, lora_rank):
    """A LoRA run's whole-model save keeps the frozen base weights beside the adapters."""
    src = source_model(lora_rank=lora_rank)
    job = gw.create_job(f"layout-{layout.replace('_', '-')}-{lora_rank}", lora_rank=lora_rank)
    model = gw.model(job, lora_rank=lora_rank)
    assert loss_of(gw, job, model) != source_loss(src)
    import_dir(gw, job, "foreign", save_layout(src, tmp_path / "ckpt", layout, whole=bool(lora_rank)))
    assert gw.kinds(job)["foreign"] == (T + ("TRAINING_LORA" if lora_rank else "TRAINING"), False)

    assert gw.load(job, model, "foreign", optimizer=True) == {"path": "foreign", "type": "load_weights"}
    assert loss_of(gw, job, model) == source_loss(src)
    _, step = gw.step(job, model)
    src.forward_backward([datum()], "cross_entropy")
    assert src.optim_step(optim_body("x", 0)["adam_params"])["metrics"] == step["metrics"]  # moments and step too
    assert loss_of(gw, job, model) == source_loss(src)


def test_foreign_layout_that_does_not_fit_fails_the_future_naming_the_mismatch(gw, tmp_path):
    job = gw.create_job("layout-mismatch")
    model = gw.model(job)
    before = loss_of(gw, job, model)

    renamed = save_layout(source_model(steps=1), tmp_path / "renamed", "torchtitan",
                          rename=lambda n: "lm_out.weight" if n == "lm_head.weight" else titan_name(n))
    import_dir(gw, job, "renamed", renamed)
    bad = gw.load(job, model, "renamed", optimizer=False)
    assert bad["category"] == "user"
    assert "missing ['lm_head.weight'], unexpected ['lm_out.weight']" in bad["error"], bad

    from fwemu.emulator.trainer.model_config import ModelSize
    smaller = source_model(steps=1, **{**ModelSize.from_env().__dict__, "intermediate_size": 16})
    import_dir(gw, job, "narrow", save_layout(smaller, tmp_path / "narrow", "torchtitan"))
    bad = gw.load(job, model, "narrow", optimizer=True)
    assert bad["category"] == "user"
    assert "tensor model.layers.0.mlp.gate_proj.weight (stored as layers.0.feed_forward.w1.weight) has shape " \
           "[16, 32] but this model needs [64, 32] (a different model size)" in bad["error"], bad
    assert loss_of(gw, job, model) == before  # a refused load changes nothing


class _Touch:
    """Unpickling this creates `path`: proof that a load ran plain pickle on a data file."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_non_tensor_entries_of_an_upload_are_never_plain_unpickled(gw, tmp_path):
    """DCP's default planner reads non-tensor values with torch.load(weights_only=False); the loader must not."""
    src = source_model(steps=1)
    marker = tmp_path / "ran"
    osd = get_optimizer_state_dict(src.model, src.optimizer)
    osd["param_groups"][0]["lr"] = _Touch(str(marker))
    poisoned = tmp_path / "poisoned"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"model": src.trainable_state_dict(), "optim": osd},
                 storage_writer=dcp.FileSystemWriter(poisoned), no_dist=True)
    job = gw.create_job("layout-poisoned")
    model = gw.model(job)
    import_dir(gw, job, "poisoned", poisoned)  # the inspector reads .metadata only: it is accepted

    refused = gw.load(job, model, "poisoned", optimizer=True)
    assert refused["category"] == "user", refused
    assert refused["error"] == ("checkpoint 'poisoned' could not be read: entry optim.param_groups.0.lr is a "
                                "pickle of more than plain values (numbers, strings, lists); it is never "
                                "unpickled, since that would run its code")
    assert not marker.exists()
    # the payload is live: torch's default load planner runs it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load({"optim.param_groups.0.lr": None}, storage_reader=dcp.FileSystemReader(poisoned),
                 planner=dcp.DefaultLoadPlanner(flatten_state_dict=False), no_dist=True)
    assert marker.exists()
