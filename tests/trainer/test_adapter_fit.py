"""adapter_fit.mismatch: the first reason a PEFT adapter does not fit a LoRA model, from headers only."""

from __future__ import annotations

from fwemu.emulator.trainer.adapter_fit import mismatch, target_modules

P = "base_model.model.model.layers.0.self_attn."
EXPECTED = {P + "q_proj.lora_A.weight": (4, 32), P + "q_proj.lora_B.weight": (32, 4),
            P + "v_proj.lora_A.weight": (4, 32), P + "v_proj.lora_B.weight": (16, 4)}
CONFIG = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": "base"}


def header(**changes):
    out = {n: ("F32", s) for n, s in EXPECTED.items()}
    out.update(changes)
    return out


def check(config=CONFIG, tensors=None):
    return mismatch(config, header() if tensors is None else tensors, EXPECTED, rank=4, base_model="base")


def test_a_fitting_adapter_and_its_float_dtypes():
    assert check() is None
    assert check(tensors=header(**{P + "q_proj.lora_A.weight": ("BF16", (4, 32))})) is None
    assert check({**CONFIG, "target_modules": "q_proj|v_proj", "base_model_name_or_path": None}) is None
    assert target_modules(EXPECTED) == {"q_proj", "v_proj"}


def test_the_first_mismatch_is_named():
    wide = {n: ("F32", (8, s[1]) if "lora_A" in n else (s[0], 8)) for n, s in EXPECTED.items()}
    msg = check({**CONFIG, "r": 8}, wide)
    assert msg.startswith(f"tensor {P}q_proj.lora_A.weight has shape [8, 32] but this model needs [4, 32]")
    assert "r=8" in msg and "lora_rank=4" in msg
    assert f"no tensor {P}v_proj.lora_B.weight" in check(tensors={k: v for k, v in header().items()
                                                                   if not k.endswith("v_proj.lora_B.weight")})
    assert "unexpected tensor x.magnitude" in check(tensors=header(**{"x.magnitude": ("F32", (4,))}))
    assert "is I8" in check(tensors=header(**{P + "v_proj.lora_B.weight": ("I8", (16, 4))}))


def test_config_mismatches():
    assert "trained on 'other'" in check({**CONFIG, "base_model_name_or_path": "other"})
    assert "missing ['v_proj']" in check({**CONFIG, "target_modules": ["q_proj"]})
    assert "use_rslora" in check({**CONFIG, "use_rslora": True})
    assert "rank_pattern" in check({**CONFIG, "rank_pattern": {"q_proj": 8}})
