"""Small real checkpoint directories for tests that need rows (HF, PEFT, DCP) without the trainer.

HF and PEFT directories are written with safetensors' numpy API; DCP with torch.distributed.checkpoint.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

HIDDEN = 8


def hf_dir(path: Path, seed: int = 0) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                                                  "hidden_size": HIDDEN}))
    save_file({"model.embed_tokens.weight": rng.standard_normal((16, HIDDEN)).astype(np.float32),
               "lm_head.weight": rng.standard_normal((16, HIDDEN)).astype(np.float32)},
              str(path / "model.safetensors"))
    return path


def peft_dir(path: Path, r: int = 4, seed: int = 0) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    (path / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": r, "lora_alpha": 16, "target_modules": ["q_proj"],
        "base_model_name_or_path": None, "task_type": "CAUSAL_LM"}))
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file({f"{prefix}.lora_A.weight": rng.standard_normal((r, HIDDEN)).astype(np.float32),
               f"{prefix}.lora_B.weight": np.zeros((HIDDEN, r), np.float32)},
              str(path / "adapter_model.safetensors"))
    return path


def dcp_dir(path: Path, lora: bool = False) -> Path:
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    torch.manual_seed(0)
    model = torch.nn.Module()
    if lora:
        model.lora_A = torch.nn.Linear(HIDDEN, 2, bias=False)
        model.lora_B = torch.nn.Linear(2, HIDDEN, bias=False)
    else:
        model.proj = torch.nn.Linear(HIDDEN, HIDDEN, bias=False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sum(p.sum() for p in model.parameters()).backward()
    opt.step()
    dcp.save({"model": model.state_dict(), "optim": get_optimizer_state_dict(model, opt)},
             storage_writer=dcp.FileSystemWriter(str(path)))
    return path


def tar_bytes(directory: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in sorted(directory.iterdir()):
            tar.add(f, arcname=f.name)
    return buf.getvalue()


# --- DCP layouts other trainers write (docs/checkpoint-layouts.md) ------------------------------
# Every builder below trains a tiny model for one real Adam step and saves with the real
# torch.distributed.checkpoint.save; only the shape of the saved state dict differs.

# Hugging Face module path -> torchtitan's LLaMA module path (stated independently of the
# loader's table in emulator/trainer/dcp_mapping.py, so a test of one checks the other).
HF_TO_TITAN = (
    (r"model\.embed_tokens\.", "tok_embeddings."),
    (r"model\.layers\.(\d+)\.self_attn\.([qkvo])_proj\.", r"layers.\1.attention.w\2."),
    (r"model\.layers\.(\d+)\.mlp\.gate_proj\.", r"layers.\1.feed_forward.w1."),
    (r"model\.layers\.(\d+)\.mlp\.down_proj\.", r"layers.\1.feed_forward.w2."),
    (r"model\.layers\.(\d+)\.mlp\.up_proj\.", r"layers.\1.feed_forward.w3."),
    (r"model\.layers\.(\d+)\.input_layernorm\.", r"layers.\1.attention_norm."),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.", r"layers.\1.ffn_norm."),
    (r"model\.norm\.", "norm."),
    (r"lm_head\.", "output."),
)


def titan_name(hf_name: str) -> str:
    import re

    for pattern, replacement in HF_TO_TITAN:
        m = re.match(pattern, hf_name)
        if m:
            return m.expand(replacement) + hf_name[m.end():]
    raise KeyError(hf_name)


def titan_model(lora: bool = False, seed: int = 0):
    """A tiny module with torchtitan's LLaMA parameter names (tok_embeddings, layers.0.attention.wq,
    ...); with `lora`, wq/wv get lora_A/lora_B and only those are trainable."""
    import torch
    from torch import nn

    torch.manual_seed(seed)

    def linear(i, o, with_lora=False):
        m = nn.Linear(i, o, bias=False)
        if with_lora:
            m.lora_A = nn.Linear(i, 2, bias=False)
            m.lora_B = nn.Linear(2, o, bias=False)
        return m

    root = nn.Module()
    root.tok_embeddings = nn.Embedding(16, HIDDEN)
    layer = nn.Module()
    layer.attention = nn.Module()
    for w in ("wq", "wk", "wv", "wo"):
        setattr(layer.attention, w, linear(HIDDEN, HIDDEN, lora and w in ("wq", "wv")))
    layer.feed_forward = nn.Module()
    layer.feed_forward.w1, layer.feed_forward.w3 = linear(HIDDEN, 2 * HIDDEN), linear(HIDDEN, 2 * HIDDEN)
    layer.feed_forward.w2 = linear(2 * HIDDEN, HIDDEN)
    layer.attention_norm, layer.ffn_norm = nn.RMSNorm(HIDDEN), nn.RMSNorm(HIDDEN)
    root.layers = nn.ModuleList([layer])
    root.norm, root.output = nn.RMSNorm(HIDDEN), linear(HIDDEN, 16)
    if lora:
        for name, p in root.named_parameters():
            p.requires_grad_(".lora_" in name)
    return root


def adam_step(model):
    """One real AdamW step on every trainable parameter (sum of squares of all outputs as the loss)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=1e-3)
    sum((p * p).sum() for p in params).backward()
    optim.step()
    return optim


def _save(state: dict, path: Path) -> Path:
    import warnings

    import torch.distributed.checkpoint as dcp

    path.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # "assuming the intent is to save in a single process"
        warnings.simplefilter("ignore", UserWarning)
        dcp.save(state, storage_writer=dcp.FileSystemWriter(str(path)))
    return path


def titan_state(model, optim, data_loader_key: str = "dataloader") -> dict:
    """torchtitan's save: model keys flat at the top level, `optimizer` (flattened optimizer state
    dict), `lr_scheduler`, the data loader's pickled per-rank state and `train_state`."""
    import pickle

    import torch
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    scheduler = torch.optim.lr_scheduler.LambdaLR(optim, lambda step: 1.0)
    opts = StateDictOptions(flatten_optimizer_state_dict=True)
    sd = {n: t.detach() for n, t in model.state_dict().items()}
    sd["optimizer"] = get_optimizer_state_dict(model, optim, options=opts)
    sd["lr_scheduler"] = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    sd[data_loader_key] = {"dp_rank_0": pickle.dumps({"sample": 3}), "world_size": 1}
    sd["train_state"] = {"step": torch.tensor(1, dtype=torch.int32), "ntokens_seen": torch.tensor(64)}
    return sd


def standin_state(trainer, layout: str, rename=None, whole: bool = False) -> dict:
    """A TrainerModel's trainable weights and Adam state as another trainer would save them:
    `torchtitan` (flat, torchtitan names via titan_name, flattened `optimizer`, lr_scheduler,
    dataloader, train_state) or `get_state_dict` (HF names under `model` / nested `optimizer`).
    `rename` (HF name -> saved name) overrides the naming; `whole` saves every weight of the
    model, the frozen base weights of a LoRA run included, as get_state_dict and torchtitan do."""
    import pickle

    import torch
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    flat = layout == "torchtitan"
    rename = rename or (titan_name if flat else (lambda n: n))
    osd = get_optimizer_state_dict(trainer.model, trainer.optimizer,
                                   options=StateDictOptions(flatten_optimizer_state_dict=flat))
    weights = {rename(n): t.detach() for n, t in
               (trainer.model.state_dict() if whole else trainer.trainable_state_dict()).items()}
    if not flat:
        osd["state"] = {rename(p): s for p, s in osd["state"].items()}
        return {"model": weights, "optimizer": osd}
    optimizer = {}
    for k, v in osd.items():  # state.<param>.<name> / param_groups.<param>.<field>
        section, _, rest = k.partition(".")
        param, _, field = rest.rpartition(".")
        optimizer[f"{section}.{rename(param)}.{field}"] = v
    return {**weights, "optimizer": optimizer, "lr_scheduler": {"last_epoch": trainer.step},
            "dataloader": {"dp_rank_0": pickle.dumps({"offset": 7}), "world_size": 1},
            "train_state": {"step": torch.tensor(trainer.step, dtype=torch.int32)}}


def layout_dir(path: Path, layout: str, lora: bool = False) -> Path:
    """A resumable DCP directory in `layout`:

    ours            {"model": trainable weights, "optim": get_optimizer_state_dict}
    get_state_dict  {"model", "optimizer"} = get_state_dict(model, optim)
    torchtitan      titan_state (dataloader); torchtitan_data_loader: the same with `data_loader`
    extras          ours + a step counter, the CPU RNG state and a scheduler dict
    """
    import torch
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, get_state_dict

    model = titan_model(lora)
    optim = adam_step(model)
    trainable = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    if layout == "ours":
        return _save({"model": trainable, "optim": get_optimizer_state_dict(model, optim)}, path)
    if layout == "get_state_dict":
        msd, osd = get_state_dict(model, optim)
        return _save({"model": msd, "optimizer": osd}, path)
    if layout in ("torchtitan", "torchtitan_data_loader"):
        key = "data_loader" if layout.endswith("data_loader") else "dataloader"
        return _save(titan_state(model, optim, key), path)
    if layout == "extras":
        scheduler = torch.optim.lr_scheduler.StepLR(optim, step_size=10)
        return _save({"model": trainable, "optim": get_optimizer_state_dict(model, optim), "step": 1,
                      "rng": torch.get_rng_state(), "scheduler": scheduler.state_dict()}, path)
    raise ValueError(layout)


# --- several ranks: gloo processes on CPU ------------------------------------------------------

def _sharded(obj, mesh):
    """Every tensor of at least one dimension as a DTensor sharded on dim 0 over `mesh`; the rest as is."""
    import torch
    from torch.distributed.tensor import Shard, distribute_tensor

    if isinstance(obj, dict):
        return {k: _sharded(v, mesh) for k, v in obj.items()}
    if isinstance(obj, torch.Tensor) and obj.dim():
        return distribute_tensor(obj, mesh, [Shard(0)])
    return obj


def _ranks(worker, ranks: int, *args) -> None:
    """Run worker(rank, ranks, port, *args) in `ranks` gloo processes on CPU."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(ranks, port, *args), nprocs=ranks, join=True)


def _group(rank: int, world: int, port: int):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    return init_device_mesh("cpu", (world,))


def _save_rank(rank: int, world: int, port: int, dest: str, state_file: str) -> None:
    """One rank of a sharded save: the parent's state (its own file), dim-0 shards of every tensor."""
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    mesh = _group(rank, world, port)
    try:
        state = torch.load(state_file, weights_only=False)  # written by the parent test process
        dcp.save(_sharded(state, mesh), storage_writer=dcp.FileSystemWriter(dest))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def sharded_dir(path: Path, state: dict, ranks: int = 2) -> Path:
    """`state` saved by `ranks` gloo processes, each writing its dim-0 shard (__<rank>_0.distcp)."""
    import torch

    path.mkdir(parents=True, exist_ok=True)
    state_file = path.parent / f"{path.name}.state.pt"
    torch.save(state, state_file)
    try:
        _ranks(_save_rank, ranks, str(path), str(state_file))
    finally:
        state_file.unlink()
    return path


def titan_ranks_dir(path: Path, ranks: int = 2) -> Path:
    """titan_state of titan_model after one Adam step, saved sharded by `ranks` processes."""
    model = titan_model()
    return sharded_dir(path, titan_state(model, adam_step(model)), ranks)


def _load_rank(rank: int, world: int, port: int, src: str, ref_file: str, out: str) -> None:
    """One rank of a sharded load: read `src` into dim-0-sharded DTensors, compare with the reference
    slice, and write {"mismatched": [...], "rows": {key: local rows}} to out/<rank>.json."""
    import json

    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    mesh = _group(rank, world, port)
    try:
        ref = torch.load(ref_file, weights_only=True)  # flat key -> full tensor
        dest = _sharded({k: torch.zeros_like(v) for k, v in ref.items()}, mesh)
        dcp.load(dest, storage_reader=dcp.FileSystemReader(src))
        want = _sharded(ref, mesh)

        def local(t):
            return t.to_local() if hasattr(t, "to_local") else t

        bad = [k for k in ref if not torch.equal(local(dest[k]), local(want[k]))]
        rows = {k: (list(local(dest[k]).shape) or [0])[0] for k in ref}
        Path(out, f"{rank}.json").write_text(json.dumps({"mismatched": bad, "rows": rows}))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def load_sharded(src: Path, ref: dict, out: Path, ranks: int = 2) -> list[dict]:
    """Load DCP `src` in `ranks` gloo processes into dim-0 shards; each rank's report (see _load_rank)."""
    import json

    import torch

    out.mkdir(parents=True, exist_ok=True)
    ref_file = out / "ref.pt"
    torch.save(ref, ref_file)
    _ranks(_load_rank, ranks, str(src), str(ref_file), str(out))
    return [json.loads((out / f"{r}.json").read_text()) for r in range(ranks)]
