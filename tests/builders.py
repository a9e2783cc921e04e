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
