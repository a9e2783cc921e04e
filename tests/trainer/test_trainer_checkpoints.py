"""DCP save/load: exact resume, weights-only loads, key layout, and refusals that leave the model alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint import FileSystemReader

from fwemu.emulator.inspect import Kind, inspect_checkpoint
from fwemu.emulator.trainer.model_config import ModelSize
from fwemu.emulator.trainer.model_session import TrainerModel, TrainerUserError
from tests.trainer.trainer_helpers import ADAM, BASE, SMALL, sft_batch, train

N, K = 6, 3


def adam_state(m: TrainerModel) -> dict[str, dict[str, torch.Tensor]]:
    names = {p: n for n, p in m.model.named_parameters()}
    return {names[p]: {k: v.clone() for k, v in s.items()} for p, s in m.optimizer.state.items()}


@pytest.mark.parametrize("rank", [0, 4])
def test_resume_with_optimizer_is_bit_identical(tmp_path: Path, rank: int):
    batches = [sft_batch(3, offset=i) for i in range(N)]
    straight = TrainerModel(BASE, lora_rank=rank, size=SMALL)
    for b in batches:
        train(straight, b, 1)

    first = TrainerModel(BASE, lora_rank=rank, size=SMALL)
    for b in batches[:K]:
        train(first, b, 1)
    first.save_state(tmp_path / "ckpt")
    assert inspect_checkpoint(tmp_path / "ckpt").kind == (Kind.TRAINING_LORA if rank else Kind.TRAINING)

    resumed = TrainerModel(BASE, lora_rank=rank, size=SMALL)
    resumed.load_state(tmp_path / "ckpt", optimizer=True)
    assert resumed.step == K
    assert resumed.state_digest() == first.state_digest()
    for n, s in adam_state(first).items():
        for k, v in s.items():
            assert torch.equal(adam_state(resumed)[n][k], v), (n, k)
    for b in batches[K:]:
        train(resumed, b, 1)
    assert resumed.step == straight.step == N
    assert resumed.state_digest() == straight.state_digest()


def test_weights_only_load_restarts_the_optimizer(tmp_path: Path):
    src = TrainerModel(BASE, size=SMALL)
    train(src, sft_batch(3), 3)
    src.save_state(tmp_path / "ckpt")
    m = TrainerModel(BASE, size=SMALL)
    train(m, sft_batch(2, offset=3), 1)  # has its own moments, which must go
    m.load_state(tmp_path / "ckpt", optimizer=False)
    assert m.state_digest() == src.state_digest()
    assert m.step == 0
    for s in adam_state(m).values():
        assert float(s["step"]) == 0.0
        assert not s["exp_avg"].any() and not s["exp_avg_sq"].any()
    with_moments = TrainerModel(BASE, size=SMALL)
    with_moments.load_state(tmp_path / "ckpt", optimizer=True)
    train(m, sft_batch(3), 1)
    train(with_moments, sft_batch(3), 1)
    assert m.state_digest() != with_moments.state_digest()


@pytest.mark.parametrize("rank", [0, 2])
def test_step_zero_save_has_optimizer_state_and_resumes_exactly(tmp_path: Path, rank: int):
    fresh = TrainerModel(BASE, lora_rank=rank, size=SMALL)
    fresh.save_state(tmp_path / "s0")
    keys = FileSystemReader(tmp_path / "s0").read_metadata().state_dict_metadata
    trainable = list(fresh.trainable_state_dict())
    for n in trainable:
        assert f"model.{n}" in keys
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert f"optim.state.{n}.{k}" in keys
    assert "optim.param_groups.0.trainer_step" in keys and "optim.param_groups.0.lr" in keys
    assert all(k.startswith(("model.", "optim.")) for k in keys)
    assert sorted(p.name for p in (tmp_path / "s0").iterdir()) == [".metadata", "__0_0.distcp"]

    loaded = TrainerModel(BASE, lora_rank=rank, size=SMALL)
    loaded.load_state(tmp_path / "s0", optimizer=True)
    train(fresh, sft_batch(3), 2)
    train(loaded, sft_batch(3), 2)
    assert loaded.state_digest() == fresh.state_digest()


def test_dcp_model_keys_are_hf_names(tmp_path: Path):
    TrainerModel(BASE, size=SMALL).save_state(tmp_path / "full")
    TrainerModel(BASE, lora_rank=2, size=SMALL).save_state(tmp_path / "lora")
    full = FileSystemReader(tmp_path / "full").read_metadata().state_dict_metadata
    lora = FileSystemReader(tmp_path / "lora").read_metadata().state_dict_metadata
    assert {"model.model.embed_tokens.weight", "model.lm_head.weight", "model.model.norm.weight",
            "model.model.layers.1.mlp.down_proj.weight", "model.model.layers.0.input_layernorm.weight",
            "optim.state.model.layers.0.self_attn.q_proj.weight.exp_avg"} <= set(full)
    lora_model = [k for k in lora if k.startswith("model.")]
    assert lora_model and all(".lora_A." in k or ".lora_B." in k for k in lora_model)
    assert tuple(lora["model.model.layers.0.self_attn.k_proj.lora_A.weight"].size) == (2, SMALL.hidden_size)
    assert tuple(lora["model.model.layers.0.self_attn.k_proj.lora_B.weight"].size) == (SMALL.num_kv_heads * SMALL.head_dim, 2)


@pytest.mark.parametrize("writer,reader,message", [
    (dict(lora_rank=4), dict(lora_rank=0), "LoRA adapter weights .* full-parameter run"),
    (dict(lora_rank=0), dict(lora_rank=4), "full model weights .* LoRA run"),
    (dict(lora_rank=4), dict(lora_rank=8), "shape .* different LoRA rank"),
    (dict(size=ModelSize(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64)),
     dict(), "shape .* different model size"),
    (dict(size=ModelSize(hidden_size=64, num_layers=3, num_heads=4, num_kv_heads=2, intermediate_size=128)),
     dict(), "unexpected .*layers.2"),
])
def test_mismatched_checkpoints_are_refused_untouched(tmp_path: Path, writer, reader, message):
    TrainerModel(BASE, **{"size": SMALL, **writer}).save_state(tmp_path / "ckpt")
    m = TrainerModel(BASE, **{"size": SMALL, **reader})
    train(m, sft_batch(2), 1)
    digest, step = m.state_digest(), m.step
    for optimizer in (False, True):
        with pytest.raises(TrainerUserError, match=message):
            m.load_state(tmp_path / "ckpt", optimizer=optimizer)
    assert (m.state_digest(), m.step) == (digest, step)


def test_missing_or_truncated_checkpoints_are_user_errors(tmp_path: Path):
    m = TrainerModel(BASE, size=SMALL)
    with pytest.raises(TrainerUserError, match="no DCP checkpoint"):
        m.load_state(tmp_path / "nothing", optimizer=False)
    m.save_state(tmp_path / "ckpt")
    data = tmp_path / "ckpt" / "__0_0.distcp"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    train(m, sft_batch(2), 1)
    digest = m.state_digest()
    with pytest.raises(TrainerUserError, match="could not be read"):
        m.load_state(tmp_path / "ckpt", optimizer=True)
    assert m.state_digest() == digest  # loads go through copies: nothing half-applied


def test_step_counter_and_hyperparameters_round_trip(tmp_path: Path):
    m = TrainerModel(BASE, size=SMALL)
    train(m, sft_batch(2), 2, dict(ADAM, learning_rate=1e-3))
    m.save_state(tmp_path / "c")
    r = TrainerModel(BASE, size=SMALL)
    r.load_state(tmp_path / "c", optimizer=True)
    group = r.optimizer.param_groups[0]
    assert (r.step, group["trainer_step"], group["lr"]) == (2, 2, 1e-3)
    assert r.optim_step(ADAM)["metrics"]["step:max"] == 3.0
