"""The model a deployment serves, built from the weights it has hot-loaded (torch).

The network is the trainer's own stand-in (`trainer.tiny_llama`, LoRA from `trainer.lora`), so a
deployment's logits are the trainer's logits for the same weights: same modules, same
deterministic settings, same device choice. Three sources:

* nothing hot-loaded yet: the base model's weights, derived from its name as the trainer does;
* a full Hugging Face directory (a base, or a base with deltas applied): its config.json gives
  the shape, model.safetensors the weights (strict: every tensor, exact shapes);
* a PEFT adapter: the base weights plus the adapter on the same LoRA modules the trainer uses.

Weights are read with safetensors (header + raw data, no pickle) from directories the inspector
accepted. A directory that does not fit raises EngineError with a message for the hot-load status.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import torch
from safetensors.torch import load_file

from fwemu.emulator.trainer.lora import PEFT_PREFIX, apply_lora
from fwemu.emulator.trainer.model_config import ModelSize, resolve_size
from fwemu.emulator.trainer.model_session import _configure_determinism, _sdpa_context, pick_device
from fwemu.emulator.trainer.tiny_llama import TinyLlamaForCausalLM, derive_seed

MAX_PARAMETERS = 400_000_000  # a config.json asking for more is refused, not allocated
_CONFIG_FIELDS = {"hidden_size": "hidden_size", "num_hidden_layers": "num_layers",
                  "num_attention_heads": "num_heads", "num_key_value_heads": "num_kv_heads",
                  "intermediate_size": "intermediate_size", "vocab_size": "vocab_size",
                  "rope_theta": "rope_theta", "rms_norm_eps": "rms_norm_eps",
                  "max_position_embeddings": "max_position_embeddings"}


class EngineError(ValueError):
    """The weights cannot be served by the stand-in model."""


class Engine:
    """One loaded model; `logits(ids)` runs under a lock (one request at a time per deployment)."""

    def __init__(self, model: TinyLlamaForCausalLM, device: torch.device):
        self.model, self.device = model, device
        self.size: ModelSize = model.size
        self.lock = threading.Lock()

    @torch.no_grad()
    def logits(self, ids: list[int]) -> torch.Tensor:
        """float32 [len(ids), vocab] logits of one sequence (no padding: batch of one)."""
        x = torch.tensor([ids], dtype=torch.int64, device=self.device)
        with _sdpa_context(self.device):
            return self.model(x)[0].float()

    def decoder(self):
        """A fresh key/value-cached decoder over this model (one per sampled sequence)."""
        from fwemu.emulator.deployments.kv_cache import CachedDecoder

        return CachedDecoder(self.model, self.device)


def _size_from_config(path: Path) -> ModelSize:
    try:
        cfg = json.loads((path / "config.json").read_text())
        size = ModelSize(**{ours: cfg[theirs] for theirs, ours in _CONFIG_FIELDS.items() if theirs in cfg})
    except (OSError, ValueError, TypeError) as exc:
        raise EngineError(f"config.json does not describe the stand-in model: {exc}") from None
    if size.num_parameters() > MAX_PARAMETERS:
        raise EngineError(f"config.json describes {size.num_parameters()} parameters; the emulator serves at "
                          f"most {MAX_PARAMETERS}")
    return size


def _base(base_model: str, size: ModelSize, device: torch.device) -> TinyLlamaForCausalLM:
    _configure_determinism(device)
    return TinyLlamaForCausalLM.create(size, derive_seed("fwemu/base", base_model), device).eval()


def base_engine(base_model: str) -> Engine:
    device = pick_device(None)
    return Engine(_base(base_model, resolve_size(None, base_model), device), device)


def full_engine(path: Path) -> Engine:
    """The model of a full HF directory: built without initial weights (on the meta device) and
    given the file's tensors, so a hot load costs reading them, not drawing and overwriting a
    random initialisation first."""
    device = pick_device(None)
    _configure_determinism(device)
    size = _size_from_config(path)
    try:
        weights = {k: v.float() for k, v in load_file(str(path / "model.safetensors")).items()}
        with torch.device("meta"):
            model = TinyLlamaForCausalLM(size)
        model.load_state_dict(weights, strict=True, assign=True)  # strict: every tensor, exact shapes
    except (OSError, RuntimeError, ValueError) as exc:
        raise EngineError(f"model.safetensors does not fit the stand-in model: {_first_line(exc)}") from None
    return Engine(model.to(device).eval(), device)


def lora_engine(path: Path, base_model: str) -> Engine:
    try:
        cfg = json.loads((path / "adapter_config.json").read_text())
        rank, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
        adapter = load_file(str(path / "adapter_model.safetensors"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EngineError(f"the adapter cannot be read: {exc}") from None
    owner = cfg.get("base_model_name_or_path")
    if owner and owner != base_model:
        raise EngineError(f"the adapter was trained on {owner!r}, but the deployment serves {base_model!r}")
    device = pick_device(None)
    model = _base(base_model, resolve_size(None, base_model), device)
    apply_lora(model, rank, alpha, seed=0)  # A and B are overwritten by the adapter's tensors
    names = {n for n, _ in model.named_parameters() if ".lora_" in n}
    given = {k[len(PEFT_PREFIX):] if k.startswith(PEFT_PREFIX) else k: v for k, v in adapter.items()}
    if set(given) != names:
        missing, extra = sorted(names - set(given)), sorted(set(given) - names)
        raise EngineError(f"the adapter's tensors do not match the model (missing {missing[:2]}, "
                          f"unexpected {extra[:2]}; a different model size?)")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in given.items():
            if tuple(t.shape) != tuple(params[n].shape) or t.dtype != params[n].dtype:
                raise EngineError(f"adapter tensor {n} is {t.dtype}{list(t.shape)}, the model needs "
                                  f"{params[n].dtype}{list(params[n].shape)}")
            params[n].copy_(t)
    return Engine(model.eval(), device)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
