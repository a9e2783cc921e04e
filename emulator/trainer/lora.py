"""LoRA adapters on the stand-in's attention and MLP projections, laid out like PEFT.

A wrapped projection keeps its frozen base weight under the HF name (``...q_proj.weight``) and
adds ``...q_proj.lora_A.weight`` [r, in] and ``...q_proj.lora_B.weight`` [out, r]. These are
PEFT's names minus the adapter name (``default``), i.e. exactly the names PEFT writes into
``adapter_model.safetensors`` after the ``base_model.model.`` prefix. The output is
``W x + (B A x) * alpha / r``; A starts kaiming-uniform (PEFT's default) from a private
generator, B at zero, so a fresh adapter leaves the base model's outputs unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .adapter_fit import PEFT_PREFIX  # noqa: F401 - re-exported: the prefix PEFT writes before model names

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Module):
    """A bias-free linear layer with a frozen ``weight`` and a trainable low-rank update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        if base.bias is not None:
            raise ValueError("LoRALinear supports bias-free projections only")
        self.weight = base.weight
        self.weight.requires_grad_(False)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        dev = base.weight.device
        # Allocated uninitialised (meta, then empty): torch's default init would consume the
        # global RNG; ``reset_adapter`` fills both from the adapter's own generator.
        self.lora_A = nn.Linear(self.in_features, rank, bias=False, device="meta").to_empty(device=dev)
        self.lora_B = nn.Linear(rank, self.out_features, bias=False, device="meta").to_empty(device=dev)

    @torch.no_grad()
    def reset_adapter(self, gen: torch.Generator) -> None:
        # kaiming_uniform_(a=sqrt(5)) == U(-1/sqrt(in), 1/sqrt(in)), drawn from ``gen`` on the CPU.
        bound = 1.0 / math.sqrt(self.in_features)
        a = torch.empty(self.lora_A.weight.shape, dtype=torch.float32).uniform_(-bound, bound, generator=gen)
        self.lora_A.weight.copy_(a)
        self.lora_B.weight.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight) + self.lora_B(self.lora_A(x)) * self.scaling

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """``W + (B @ A) * scaling``, the order PEFT's ``merge_and_unload`` uses."""
        return self.weight + (self.lora_B.weight @ self.lora_A.weight) * self.scaling


def apply_lora(model: nn.Module, rank: int, alpha: float, seed: int) -> list[str]:
    """Wrap every target projection of ``model`` in place and freeze everything else.

    Returns the wrapped module names in registration order. Adapter A matrices are drawn
    in that order from one generator seeded with ``seed``.
    """
    if rank <= 0:
        raise ValueError("LoRA rank must be positive")
    for p in model.parameters():
        p.requires_grad_(False)
    targets = [(name, mod) for name, mod in model.named_modules()
               if isinstance(mod, nn.Linear) and name.rsplit(".", 1)[-1] in TARGET_MODULES]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for name, mod in targets:
        parent_name, _, child = name.rpartition(".")
        wrapped = LoRALinear(mod, rank, alpha)
        wrapped.reset_adapter(gen)
        setattr(model.get_submodule(parent_name), child, wrapped)
    return [name for name, _ in targets]


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def is_lora_key(name: str) -> bool:
    """True for adapter tensor names (a ``lora_A`` / ``lora_B`` path segment)."""
    return any(seg in ("lora_A", "lora_B") for seg in name.split("."))


@torch.no_grad()
def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full HF-named state dict with every adapter folded into its base weight."""
    out: dict[str, torch.Tensor] = {}
    loras = lora_modules(model)
    for name, t in model.state_dict().items():
        if is_lora_key(name):
            continue
        owner = name[: -len(".weight")] if name.endswith(".weight") else None
        out[name] = loras[owner].merged_weight() if owner in loras else t
    return out


def peft_adapter_config(base_model: str, rank: int, alpha: float) -> dict:
    """``adapter_config.json`` with the fields PEFT needs to load the adapter on a LLaMA."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": sorted(TARGET_MODULES),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_rslora": False,
        "use_dora": False,
    }


def read_adapter(path, names) -> dict[str, torch.Tensor]:
    """The float32 adapter tensors `names` (model names) of a PEFT `adapter_model.safetensors`.

    Safetensors only (no pickle); the caller has already matched the header against the model.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {n: f.get_tensor(PEFT_PREFIX + n).to(torch.float32) for n in names}


def set_alpha(model: nn.Module, alpha: float) -> None:
    """Give every adapter the scaling ``alpha / r`` (a loaded adapter brings its own lora_alpha)."""
    for m in lora_modules(model).values():
        m.alpha, m.scaling = alpha, alpha / m.rank
