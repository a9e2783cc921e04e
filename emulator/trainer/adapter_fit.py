"""Does a PEFT adapter fit a LoRA training model? Decided from headers only (pure: no torch, no I/O).

`load_adapter` reads an adapter's tensor data only after this says yes, so a wrong adapter is
refused with a message naming the first tensor (or setting) that does not fit, before a byte of
tensor data is read. Inputs are the adapter's `adapter_config.json`, its safetensors header as
{name: (dtype, shape)}, and the model's trainable tensors as {PEFT name: shape}.
"""

from __future__ import annotations

from typing import Mapping

PEFT_PREFIX = "base_model.model."              # PEFT writes model tensor names after this prefix
FLOAT_DTYPES = ("F32", "BF16", "F16", "F64")   # cast to the trainer's float32 when loaded
_LORA_SEGMENTS = ("lora_A", "lora_B")


def target_modules(names) -> set[str]:
    """The module names (`q_proj`, ...) that carry a lora_A/lora_B in `names`."""
    out = set()
    for name in names:
        segs = name.split(".")
        for i, seg in enumerate(segs):
            if seg in _LORA_SEGMENTS and i > 0:
                out.add(segs[i - 1])
    return out


def _shape_hint(config: Mapping, rank: int) -> str:
    r = config.get("r")
    if isinstance(r, int) and r != rank:
        return f"the adapter has r={r} and this model lora_rank={rank}; create the training client with lora_rank={r}"
    return "the adapter was made for a different model size"


def mismatch(config: Mapping, tensors: Mapping[str, tuple[str, tuple[int, ...]]],
             expected: Mapping[str, tuple[int, ...]], *, rank: int, base_model: str) -> str | None:
    """None when the adapter can be loaded into the model; else the first reason it cannot."""
    owner = config.get("base_model_name_or_path")
    if isinstance(owner, str) and owner and owner != base_model:
        return (f"the adapter was trained on {owner!r} but this training client serves {base_model!r}; "
                "create the trainer from the adapter's base model")
    if config.get("use_rslora"):
        return "use_rslora adapters (scaling alpha/sqrt(r)) are not supported by the emulator"
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        return "adapters with per-module ranks or alphas (rank_pattern / alpha_pattern) are not supported"
    wanted = config.get("target_modules")
    if isinstance(wanted, list):
        have = target_modules(expected)
        if set(wanted) != have:
            missing, extra = sorted(have - set(wanted)), sorted(set(wanted) - have)
            return (f"the adapter targets {sorted(wanted)} but this model trains LoRA on {sorted(have)} "
                    f"(missing {missing}, unexpected {extra})")
    for name in sorted(expected):
        if name not in tensors:
            return f"the adapter has no tensor {name} ({len(set(expected) - set(tensors))} of {len(expected)} missing)"
    for name in sorted(tensors):
        if name not in expected:
            return f"the adapter has an unexpected tensor {name} (this model has no such LoRA weight)"
    for name in sorted(expected):
        dtype, shape = tensors[name]
        if tuple(shape) != tuple(expected[name]):
            return (f"tensor {name} has shape {list(shape)} but this model needs {list(expected[name])} "
                    f"({_shape_hint(config, rank)})")
        if dtype not in FLOAT_DTYPES:
            return f"tensor {name} is {dtype}; adapter weights must be one of {', '.join(FLOAT_DTYPES)}"
    return None
