"""Write small, real example checkpoints of each kind (for `fwemu inspect --example` and tests).

This is the only module of emulator.inspect that uses torch, and it imports it inside the
functions: importing emulator.inspect (or this module) never loads torch. The examples are made
the way the trainer makes real ones: a tiny LLaMA-named model, one Adam step, then
`torch.distributed.checkpoint.save({"model": ..., "optim": get_optimizer_state_dict(...)})`
for DCP; safetensors + config.json for Hugging Face; adapter_config.json +
adapter_model.safetensors for PEFT; make_delta for ARC_V2.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import warnings
from pathlib import Path

from .kinds import Kind

HIDDEN, VOCAB, LAYERS = 16, 32, 2
CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": HIDDEN,
          "intermediate_size": 2 * HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": 2,
          "vocab_size": VOCAB, "torch_dtype": "bfloat16"}


def write_example(kind: Kind | str, dest: str | os.PathLike) -> Path:
    """Write an example checkpoint of `kind` into `dest` (created; must be missing or empty)."""
    kind = Kind.parse(kind)
    dest = _empty(dest)
    if kind is Kind.TRAINING:
        write_dcp(dest)
    elif kind is Kind.TRAINING_LORA:
        write_dcp(dest, lora=True)
    elif kind is Kind.INFERENCE_BASE:
        write_hf(dest)
    elif kind is Kind.INFERENCE_LORA:
        write_peft(dest)
    else:
        write_arc_v2(dest)
    return dest


def _empty(dest: str | os.PathLike) -> Path:
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ValueError(f"{dest} is not empty")
    return dest


# --- tensors ---------------------------------------------------------------------------------

def hf_tensors(seed: int = 0):
    """LLaMA-named bf16 weights of a tiny model, deterministic in `seed`."""
    import torch

    g = torch.Generator().manual_seed(seed)
    t = {"model.embed_tokens.weight": (VOCAB, HIDDEN), "model.norm.weight": (HIDDEN,),
         "lm_head.weight": (VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            t[p + f"self_attn.{proj}.weight"] = (HIDDEN, HIDDEN)
        t[p + "mlp.up_proj.weight"] = (2 * HIDDEN, HIDDEN)
        t[p + "mlp.down_proj.weight"] = (HIDDEN, 2 * HIDDEN)
        t[p + "input_layernorm.weight"] = (HIDDEN,)
    return {k: torch.randn(shape, generator=g).to(torch.bfloat16) for k, shape in t.items()}


def _tiny_model(lora: bool):
    """An nn.Module whose parameter names are HF's (model.layers.0.self_attn.q_proj.weight ...).

    With `lora`, q_proj and v_proj get lora_A / lora_B sub-layers and everything else is frozen,
    as in a LoRA run; the trainable parameters are then exactly the adapter's.
    """
    import torch
    from torch import nn

    torch.manual_seed(0)

    class Proj(nn.Linear):
        def __init__(self, with_lora: bool):
            super().__init__(HIDDEN, HIDDEN, bias=False)
            if with_lora:
                self.lora_A = nn.Linear(HIDDEN, 4, bias=False)
                self.lora_B = nn.Linear(4, HIDDEN, bias=False)

        def forward(self, x):
            y = super().forward(x)
            return y + self.lora_B(self.lora_A(x)) if hasattr(self, "lora_A") else y

    root = nn.Module()
    root.model = nn.Module()
    root.model.embed_tokens = nn.Embedding(VOCAB, HIDDEN)
    root.model.layers = nn.ModuleList()
    for _ in range(LAYERS):
        layer = nn.Module()
        layer.self_attn = nn.Module()
        layer.self_attn.q_proj = Proj(lora)
        layer.self_attn.v_proj = Proj(lora)
        root.model.layers.append(layer)
    root.lm_head = nn.Linear(HIDDEN, VOCAB, bias=False)
    if lora:
        for name, p in root.named_parameters():
            p.requires_grad_(".lora_" in name)

    def forward(tokens):
        h = root.model.embed_tokens(tokens)
        for layer in root.model.layers:
            h = h + layer.self_attn.v_proj(layer.self_attn.q_proj(h))
        return root.lm_head(h)

    return root, forward


# --- DCP ---------------------------------------------------------------------------------------

def _dcp_save(dest: str, lora: bool) -> None:
    """One Adam step on the tiny model, then a DCP save of trainable weights + optimizer state."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    model, forward = _tiny_model(lora)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.Adam(params, lr=1e-3)
    tokens = torch.arange(8).remainder(VOCAB).unsqueeze(0)
    forward(tokens).float().logsumexp(-1).mean().backward()
    optim.step()
    model_sd = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    state = {"model": model_sd, "optim": get_optimizer_state_dict(model, optim)}
    with warnings.catch_warnings():  # "assuming the intent is to save in a single process"
        warnings.simplefilter("ignore", UserWarning)
        dcp.save(state, storage_writer=dcp.FileSystemWriter(dest))


def _rank_worker(rank: int, world: int, dest: str, port: int, lora: bool) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        _dcp_save(dest, lora)
        dist.barrier()  # no rank tears gloo down while another is still in the save's collectives
    finally:
        dist.destroy_process_group()


def write_dcp(dest: str | os.PathLike, lora: bool = False, ranks: int = 1) -> None:
    """TRAINING (or TRAINING_LORA) checkpoint; `ranks` > 1 saves from that many gloo processes."""
    dest = os.fspath(dest)
    if ranks == 1:
        _dcp_save(dest, lora)
        return
    import torch.multiprocessing as mp

    for attempt in (1, 2):  # the free port found here can be taken by another process before use
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            mp.spawn(_rank_worker, args=(ranks, dest, port, lora), nprocs=ranks, join=True)
            return
        except (mp.ProcessExitedException, mp.ProcessRaisedException):
            if attempt == 2:
                raise
            for p in Path(dest).iterdir():
                p.unlink()


# --- Hugging Face, PEFT, ARC_V2 -------------------------------------------------------------------

def write_hf(dest: str | os.PathLike, shards: int = 1, seed: int = 0, tensors=None) -> None:
    """INFERENCE_BASE: config.json + model.safetensors, or `shards` shards with an index."""
    from safetensors.torch import save_file

    dest = Path(dest)
    tensors = hf_tensors(seed) if tensors is None else tensors
    (dest / "config.json").write_text(json.dumps(CONFIG, indent=2))
    (dest / "generation_config.json").write_text(json.dumps({"max_new_tokens": 16}))
    if shards == 1:
        save_file(tensors, dest / "model.safetensors", metadata={"format": "pt"})
        return
    names = sorted(tensors)
    weight_map = {}
    for i in range(shards):
        shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[i::shards]}
        save_file(part, dest / shard, metadata={"format": "pt"})
        weight_map.update({n: shard for n in part})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (dest / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def write_peft(dest: str | os.PathLike, r: int = 4, dora: bool = False,
               modules_to_save: bool = False, embedding: bool = False) -> None:
    """INFERENCE_LORA: a PEFT adapter (optionally DoRA, modules_to_save, embedding LoRA)."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    targets = ["q_proj", "v_proj"]
    t = {}
    for i in range(LAYERS):
        for proj in targets:
            p = f"base_model.model.model.layers.{i}.self_attn.{proj}."
            t[p + "lora_A.weight"] = torch.randn(r, HIDDEN, generator=g)
            t[p + "lora_B.weight"] = torch.zeros(HIDDEN, r)
            if dora:
                t[p + "lora_magnitude_vector"] = torch.ones(HIDDEN)
    if embedding:
        targets.append("embed_tokens")
        t["base_model.model.model.embed_tokens.lora_embedding_A"] = torch.randn(r, VOCAB, generator=g)
        t["base_model.model.model.embed_tokens.lora_embedding_B"] = torch.zeros(HIDDEN, r)
    if modules_to_save:
        t["base_model.model.lm_head.weight"] = torch.randn(VOCAB, HIDDEN, generator=g)
    cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 2 * r,
           "lora_dropout": 0.0, "target_modules": targets, "bias": "none",
           "base_model_name_or_path": "accounts/fireworks/models/tiny-llama", "use_dora": dora,
           "modules_to_save": ["lm_head"] if modules_to_save else None}
    dest = Path(dest)
    (dest / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    save_file(t, dest / "adapter_model.safetensors", metadata={"format": "pt"})


def write_arc_v2(dest: str | os.PathLike, base_identity: str = "step-0-0a1b2c3d") -> None:
    """INFERENCE_ARC_V2: the delta of a perturbed copy of the example weights against them."""
    from fwemu.emulator.trainer.arc_v2 import make_delta

    with tempfile.TemporaryDirectory() as tmp:
        base, target = Path(tmp, "base"), Path(tmp, "target")
        base.mkdir()
        target.mkdir()
        tensors = hf_tensors(0)
        write_hf(base, tensors=tensors)
        write_hf(target, tensors={k: (v.float() * 1.01).to(v.dtype) for k, v in tensors.items()})
        make_delta(base, target, dest, base_identity)
