"""Sampler exports: HF weights that transformers loads, PEFT adapters, merged bases, ARC_V2 deltas."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file

from fwemu.emulator.inspect import Kind, inspect_checkpoint
from fwemu.emulator.trainer.arc_v2 import apply_delta
from fwemu.emulator.trainer.lora import TARGET_MODULES
from fwemu.emulator.trainer.model_config import ModelSize
from fwemu.emulator.trainer.model_session import TrainerModel, TrainerUserError
from tests.trainer.trainer_helpers import BASE, SMALL, sft_batch, train

IDS = torch.randint(0, 259, (3, 40), generator=torch.Generator().manual_seed(7))


def hf_logits(path: Path) -> torch.Tensor:
    model = transformers.LlamaForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        return model(IDS).logits


def own_logits(m: TrainerModel) -> torch.Tensor:
    with torch.no_grad():
        return m.model(IDS.to(m.device)).cpu()


def test_full_base_export_loads_in_transformers_with_matching_logits(tmp_path: Path):
    m = TrainerModel(BASE, size=ModelSize())  # the default stand-in
    train(m, sft_batch(3), 2)
    m.save_sampler(tmp_path / "base", "base")
    assert inspect_checkpoint(tmp_path / "base").kind is Kind.INFERENCE_BASE
    cfg = json.loads((tmp_path / "base" / "config.json").read_text())
    assert (cfg["model_type"], cfg["architectures"], cfg["tie_word_embeddings"]) == ("llama", ["LlamaForCausalLM"], False)
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (256, 257, 258)
    diff = (hf_logits(tmp_path / "base") - own_logits(m)).abs().max().item()
    assert diff < 1e-4, diff
    tensors = load_file(str(tmp_path / "base" / "model.safetensors"))
    assert set(tensors) == set(m.model.state_dict())
    assert all(t.dtype == np.float32 for t in tensors.values())


def test_lora_adapter_is_peft_shaped_and_merges_to_merged_base(tmp_path: Path):
    r, alpha = 4, 16
    m = TrainerModel(BASE, lora_rank=r, lora_alpha=alpha, size=SMALL)
    train(m, sft_batch(3), 3)
    for ct in ("base", "delta"):  # LoRA always stores the whole adapter
        m.save_sampler(tmp_path / ct, ct)
        assert inspect_checkpoint(tmp_path / ct).kind is Kind.INFERENCE_LORA
    assert (tmp_path / "base" / "adapter_model.safetensors").read_bytes() == \
        (tmp_path / "delta" / "adapter_model.safetensors").read_bytes()
    cfg = json.loads((tmp_path / "base" / "adapter_config.json").read_text())
    assert (cfg["peft_type"], cfg["r"], cfg["lora_alpha"], cfg["task_type"]) == ("LORA", r, alpha, "CAUSAL_LM")
    assert cfg["base_model_name_or_path"] == BASE and set(cfg["target_modules"]) == set(TARGET_MODULES)

    adapter = load_file(str(tmp_path / "base" / "adapter_model.safetensors"))
    assert len(adapter) == 2 * len(TARGET_MODULES) * SMALL.num_layers
    h, kv = SMALL.hidden_size, SMALL.num_kv_heads * SMALL.head_dim
    a = adapter["base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"]
    b = adapter["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"]
    assert (a.shape, b.shape) == ((r, h), (kv, r))
    assert adapter["base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"].shape == (r, SMALL.intermediate_size)
    assert np.abs(b).max() > 0  # training moved B off its zero init

    m.save_sampler(tmp_path / "merged", "merged_base")
    assert inspect_checkpoint(tmp_path / "merged").kind is Kind.INFERENCE_BASE
    merged = load_file(str(tmp_path / "merged" / "model.safetensors"))
    base = TrainerModel(BASE, size=SMALL).model.state_dict()  # base weights: a function of the name
    assert set(merged) == set(base)
    for name, w in merged.items():
        module = name[: -len(".weight")]
        key = f"base_model.model.{module}.lora_A.weight"
        expected = base[name].numpy()
        if key in adapter:
            expected = expected + (adapter[key.replace("lora_A", "lora_B")] @ adapter[key]) * (alpha / r)
        np.testing.assert_allclose(w, expected, rtol=0, atol=1e-6, err_msg=name)
    # The merged model is the adapted model: same logits through transformers.
    assert (hf_logits(tmp_path / "merged") - own_logits(m)).abs().max().item() < 1e-4


def test_full_delta_reconstructs_the_target_bit_for_bit(tmp_path: Path):
    m = TrainerModel(BASE, size=SMALL)
    m.save_sampler(tmp_path / "step-0-base", "base")
    train(m, sft_batch(3), 2)
    m.save_sampler(tmp_path / "target", "base")
    m.save_sampler(tmp_path / "delta", "delta", base_dir=tmp_path / "step-0-base", base_identity="step-0-base-1a2b3c4d")
    verdict = inspect_checkpoint(tmp_path / "delta")
    assert verdict.kind is Kind.INFERENCE_ARC_V2 and verdict.details["base_identity"] == "step-0-base-1a2b3c4d"
    apply_delta(tmp_path / "step-0-base", tmp_path / "delta", tmp_path / "rebuilt")
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "rebuilt" / name).read_bytes() == (tmp_path / "target" / name).read_bytes()
    # The identity defaults to the base directory's name (the checkpoint name in the blob store).
    m.save_sampler(tmp_path / "delta2", "delta", base_dir=tmp_path / "step-0-base")
    assert inspect_checkpoint(tmp_path / "delta2").details["base_identity"] == "step-0-base"


def test_refused_sampler_saves(tmp_path: Path):
    full = TrainerModel(BASE, size=SMALL)
    with pytest.raises(TrainerUserError, match="merged_base.* full-parameter run"):
        full.save_sampler(tmp_path / "m", "merged_base")
    with pytest.raises(TrainerUserError, match="checkpoint_type='base' first"):
        full.save_sampler(tmp_path / "d", "delta")
    with pytest.raises(TrainerUserError, match="not one of base, delta, merged_base"):
        full.save_sampler(tmp_path / "x", "fp8")
    TrainerModel(BASE, lora_rank=2, size=SMALL).save_sampler(tmp_path / "adapter", "base")
    with pytest.raises(TrainerUserError, match="not a full-weights directory"):
        full.save_sampler(tmp_path / "d2", "delta", base_dir=tmp_path / "adapter")
    other = ModelSize(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64)
    TrainerModel(BASE, size=other).save_sampler(tmp_path / "other-base", "base")
    with pytest.raises(TrainerUserError, match="cannot write a delta against 'other-base'"):
        full.save_sampler(tmp_path / "d3", "delta", base_dir=tmp_path / "other-base")
    assert not (tmp_path / "m").exists() and not (tmp_path / "x").exists()
