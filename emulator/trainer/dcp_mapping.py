"""Which checkpoint entry feeds which tensor of the stand-in model: a pure function, no torch.

The inspector's `Layout` says which flat DCP keys are the trained weights and their optimizer
state, whatever the trainer called its sections (docs/checkpoint-layouts.md). This module
matches those to the stand-in's Hugging Face parameter names:

* names as they are (the emulator's own saves, `get_state_dict` output, HF-named flat keys);
* or torchtitan's LLaMA names (`tok_embeddings`, `layers.N.attention.wq`, `feed_forward.w1`,
  `attention_norm`, `output`, ...) renamed module by module, keeping any `.lora_A.weight` tail.

The first difference in names, shapes or dtypes is a `MappingError` naming it, so a load fails
with one clear reason before any data is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from fwemu.emulator.inspect.dcp_layout import Layout

# torchtitan LLaMA module path -> Hugging Face module path (the stand-in's names).
TORCHTITAN_MODULES: tuple[tuple[re.Pattern, str], ...] = tuple((re.compile(p), r) for p, r in (
    (r"tok_embeddings", "model.embed_tokens"),
    (r"layers\.(\d+)\.attention\.w([qkvo])", r"model.layers.\1.self_attn.\2_proj"),
    (r"layers\.(\d+)\.feed_forward\.w1", r"model.layers.\1.mlp.gate_proj"),
    (r"layers\.(\d+)\.feed_forward\.w2", r"model.layers.\1.mlp.down_proj"),
    (r"layers\.(\d+)\.feed_forward\.w3", r"model.layers.\1.mlp.up_proj"),
    (r"layers\.(\d+)\.attention_norm", r"model.layers.\1.input_layernorm"),
    (r"layers\.(\d+)\.ffn_norm", r"model.layers.\1.post_attention_layernorm"),
    (r"norm", "model.norm"),
    (r"output", "lm_head"),
))
ADAM_STATE = ("exp_avg", "exp_avg_sq", "step")
GROUP_FIELDS = ("lr", "betas", "eps", "weight_decay", "trainer_step")


class MappingError(ValueError):
    """The checkpoint does not fit the stand-in model; the message names the first difference."""


@dataclass(frozen=True)
class LoadMap:
    """Flat DCP keys to read, by the stand-in parameter they feed."""

    weights: dict[str, str]                     # parameter -> flat key of its weight
    state: dict[str, dict[str, str]]            # parameter -> {exp_avg|exp_avg_sq|step: flat key}
    group: dict[str, str]                       # param-group field -> flat key (present ones only)
    naming: str                                 # "hf" or "torchtitan"


def torchtitan_to_hf(name: str) -> str | None:
    """The HF name of a torchtitan LLaMA parameter (`layers.0.attention.wq.weight` ->
    `model.layers.0.self_attn.q_proj.weight`), or None when no module rule applies."""
    for pattern, replacement in TORCHTITAN_MODULES:
        m = pattern.match(name)
        if m and name[m.end():m.end() + 1] == ".":
            return m.expand(replacement) + name[m.end():]
    return None


def map_checkpoint(layout: Layout, wanted: Mapping[str, tuple[tuple[int, ...], str]],
                   lora_rank: int, optimizer: bool) -> LoadMap:
    """Match the checkpoint's trained weights to `wanted` (stand-in name -> (shape, dtype name)).

    Raises MappingError for a LoRA/full mismatch, the first missing or unexpected name, the
    first shape or dtype difference, or (with `optimizer`) the first missing Adam state tensor.
    """
    run = f"this trainer is a LoRA run (rank {lora_rank})" if lora_rank else "this trainer is a full-parameter run"
    if layout.lora and not lora_rank:
        raise MappingError(f"holds LoRA adapter weights (TRAINING_LORA) but {run}; load it into a "
                           "LoRA trainer with the same rank")
    if not layout.lora and lora_rank:
        raise MappingError(f"holds full model weights (TRAINING) but {run}; load it into a "
                           "full-parameter trainer (lora_rank=0)")
    naming, by_name = _naming(layout, wanted)
    missing = sorted(set(wanted) - set(by_name))
    extra = sorted(by_name[n] for n in set(by_name) - set(wanted))
    if missing or extra:
        raise MappingError(f"does not match this model: missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                           f"unexpected {extra[:3]}{'...' if len(extra) > 3 else ''} (different model size?)")
    weights = {}
    for n, (shape, dtype) in wanted.items():
        param = by_name[n]
        key = layout.weights[param]
        t = layout.tensors[key]
        shown = n if key == n else f"{n} (stored as {key})"
        if tuple(t.shape) != tuple(shape):
            hint = "a different LoRA rank" if ".lora_" in n else "a different model size"
            raise MappingError(f"tensor {shown} has shape {list(t.shape)} but this model needs "
                               f"{list(shape)} ({hint})")
        if t.dtype != dtype:
            raise MappingError(f"tensor {shown} is torch.{t.dtype}, expected torch.{dtype}")
        weights[n] = key
    state: dict[str, dict[str, str]] = {}
    group: dict[str, str] = {}
    if optimizer:
        absent = [f"{layout.optimizer}.state.{by_name[n]}.{k}" for n in wanted for k in ADAM_STATE
                  if k not in layout.state.get(by_name[n], {})]
        if absent:
            raise MappingError(f"has no optimizer state for {absent[0]}"
                               f"{f' (+{len(absent) - 1} more)' if len(absent) > 1 else ''}; "
                               "load it without the optimizer")
        for n in wanted:
            keys = {k: layout.state[by_name[n]][k] for k in ADAM_STATE}
            step = layout.tensors[keys["step"]]
            if step.shape != ():
                raise MappingError(f"{keys['step']} has shape {list(step.shape)}; Adam's step is a scalar")
            state[n] = keys
        group = {f: layout.group[f] for f in GROUP_FIELDS if f in layout.group}
    return LoadMap(weights, state, group, naming)


def _naming(layout: Layout, wanted) -> tuple[str, dict[str, str]]:
    """("hf" | "torchtitan", stand-in name -> checkpoint parameter name), whichever matches more."""
    as_is = {p: p for p in layout.weights}
    titan = {}
    for p in layout.weights:
        titan[torchtitan_to_hf(p) or p] = p
    hits_as_is = len(set(as_is) & set(wanted))
    hits_titan = len(set(titan) & set(wanted))
    if hits_titan > hits_as_is and len(titan) == len(layout.weights):
        return "torchtitan", titan
    return "hf", as_is
