"""The model a deployment serves, built from the weights it has hot-loaded (torch).

The network is the trainer's own stand-in (`trainer.tiny_llama`, LoRA from `trainer.lora`), so a
deployment's logits are the trainer's logits for the same weights: same modules, same
deterministic settings, same device choice. Three sources:

* nothing hot-loaded yet: the base model's weights, derived from its name as the trainer does;
* a full Hugging Face directory (a base, or a base with deltas applied): its config.json gives
  the shape, model.safetensors the weights (strict: every tensor, exact shapes);
* a PEFT adapter: the base weights plus the adapter on the same LoRA modules the trainer uses.

Weights are read as safetensors (header + raw data, no pickle) from directories the inspector
accepted; a full directory's float32 weights are views of a memory map of its file. A directory
that does not fit raises EngineError with a message for the hot-load status.
"""

from __future__ import annotations

import json
import mmap
import os
import threading
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from safetensors.torch import load_file

from fwemu.emulator.inspect.reader import Rejected
from fwemu.emulator.inspect.safetensors_header import Header, header_of
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
    """The model of a full HF directory, given the file's tensors (strict: every tensor, exact
    shapes): no random initialisation drawn first and overwritten. float32 weights are used in
    place from a memory map of model.safetensors (see `mapped_shard`), so a load copies nothing."""
    device = pick_device(None)
    _configure_determinism(device)
    size = _size_from_config(path)
    try:
        weights = _tensors_of(mapped_shard(path))
        model = _skeleton(size).build({k: v if v.dtype == torch.float32 else v.float() for k, v in weights.items()})
    except (OSError, RuntimeError, ValueError) as exc:
        raise EngineError(f"model.safetensors does not fit the stand-in model: {_first_line(exc)}") from None
    return Engine(model if device.type == "cpu" else model.to(device), device)  # in eval mode: cloned


class Shard(NamedTuple):
    """A safetensors file's validated header and its data section (a uint8 array)."""
    header: Header
    data: np.ndarray


def mapped_shard(path: Path, name: str = "model.safetensors") -> Shard:
    """`path/name`'s header (validated by the inspector's parser) and its data section as a
    private memory map of the file (ACCESS_COPY: pages shared with the page cache, never written
    here), so the served weights are the file's pages and no copy is made.

    The emulator never rewrites or truncates a published file (a version directory is replaced
    whole, and an unlinked file stays readable while it is mapped)."""
    with open(path / name, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if size else b""
    try:
        header = header_of(name, size, lambda offset, length: mm[offset:offset + length])
    except Rejected as r:
        raise ValueError(r.rule) from None   # the caller's message names the file
    return Shard(header, np.frombuffer(mm, np.uint8, size - header.data_start, header.data_start))


_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
_skeletons: dict[ModelSize, "_Skeleton"] = {}


def _tensors_of(shard: Shard) -> dict[str, torch.Tensor]:
    """Views of a safetensors data section (a numpy uint8 buffer, validated header): no copy."""
    raw = torch.from_numpy(shard.data)
    address = shard.data.ctypes.data
    out = {}
    for name, info in shard.header.tensors.items():
        dtype = _DTYPES.get(info.dtype)
        if dtype is None:
            raise ValueError(f"tensor {name} is {info.dtype}; the stand-in model takes float weights")
        piece = raw[info.begin:info.end]
        if info.begin % dtype.itemsize or address % dtype.itemsize:
            piece = piece.clone()  # misaligned for its dtype (offset or address): an aligned copy
        out[name] = piece.view(dtype).reshape(info.shape)
    return out


class _Skeleton:
    """The module tree of one model size, built once on the meta device (nothing allocated) and
    flattened, so a load is a structural copy of it (new modules and tables: every dict a module
    holds is copied, nothing a load or a forward writes to is shared) with the weights as its
    parameters. Building the tree is most of a small model's load; copying it flat is cheap."""

    def __init__(self, size: ModelSize):
        with torch.device("meta"):
            root = TinyLlamaForCausalLM(size).eval()
        named = list(root.named_modules())
        self.modules = [m for _, m in named]
        index = {id(m): i for i, m in enumerate(self.modules)}
        self.dicts = [[k for k, v in m.__dict__.items() if isinstance(v, dict) and k != "_modules"]
                      for m in self.modules]
        self.children = [[(k, None if c is None else index[id(c)]) for k, c in m._modules.items()]
                         for m in self.modules]
        self.slots = [(f"{prefix}.{leaf}" if prefix else leaf, index[id(m)], leaf, p)
                      for prefix, m in named for leaf, p in m._parameters.items() if p is not None]
        self.names = {name for name, *_ in self.slots}

    def build(self, weights: dict[str, torch.Tensor]) -> TinyLlamaForCausalLM:
        """load_state_dict(strict=True, assign=True) for a model without buffers: the same key set,
        each tensor the parameter's exact shape and dtype, and it becomes the parameter."""
        if self.names != set(weights) or len(self.names) != len(self.slots):
            missing, extra = sorted(self.names - set(weights)), sorted(set(weights) - self.names)
            raise ValueError(f"Missing key(s) in state_dict: {missing[:2]}; unexpected key(s): {extra[:2]}")
        new = []
        for m, dict_keys in zip(self.modules, self.dicts):
            copy = object.__new__(type(m))
            state = m.__dict__.copy()
            for k in dict_keys:
                state[k] = state[k].copy()
            copy.__dict__.update(state)
            new.append(copy)
        for copy, kids in zip(new, self.children):
            copy.__dict__["_modules"] = {k: None if i is None else new[i] for k, i in kids}
        for name, i, leaf, p in self.slots:
            t = weights[name]
            if t.shape != p.shape or t.dtype != p.dtype:
                raise ValueError(f"size mismatch for {name}: copying a param with shape {list(t.shape)} "
                                 f"({t.dtype}), the model has {list(p.shape)} ({p.dtype})")
            new[i]._parameters[leaf] = torch.nn.Parameter(t, requires_grad=p.requires_grad)
        return new[0]


def _skeleton(size: ModelSize) -> _Skeleton:
    found = _skeletons.get(size)
    return found if found is not None else _skeletons.setdefault(size, _Skeleton(size))


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
