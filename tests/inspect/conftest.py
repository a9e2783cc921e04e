"""Shared, real checkpoint artifacts for the inspector tests, built once per session, no downloads.

Every artifact is made the way the trainer makes it (emulator.inspect.examples): a tiny
LLaMA-named model, one Adam step and torch.distributed.checkpoint for DCP (one process, and two
gloo ranks), safetensors for Hugging Face (single and sharded) and PEFT (plain, DoRA,
modules_to_save + embedding LoRA), make_delta for ARC_V2. Tests never modify these: they take a
copy with the `clone` fixture.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from fwemu.emulator.inspect import Kind
from fwemu.emulator.inspect.examples import hf_tensors, write_dcp, write_hf, write_peft
from fwemu.emulator.trainer.arc_v2 import make_delta

# name -> the kind it must be classified as
EXPECTED = {
    "dcp": Kind.TRAINING,
    "dcp_lora": Kind.TRAINING_LORA,
    "dcp_2ranks": Kind.TRAINING,
    "hf": Kind.INFERENCE_BASE,
    "hf_sharded": Kind.INFERENCE_BASE,
    "peft": Kind.INFERENCE_LORA,
    "peft_dora": Kind.INFERENCE_LORA,
    "peft_extras": Kind.INFERENCE_LORA,
    "arc": Kind.INFERENCE_ARC_V2,
    "arc_sharded": Kind.INFERENCE_ARC_V2,
}


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    """name -> pristine directory; also the bases/targets of the deltas (`*_base`, `*_target`)."""
    root = tmp_path_factory.mktemp("artifacts")

    def new(name: str) -> Path:
        d = root / name
        d.mkdir()
        return d

    out: dict[str, Path] = {}
    write_dcp(out.setdefault("dcp", new("dcp")))
    write_dcp(out.setdefault("dcp_lora", new("dcp_lora")), lora=True)
    write_dcp(out.setdefault("dcp_2ranks", new("dcp_2ranks")), ranks=2)
    write_hf(out.setdefault("hf", new("hf")))
    write_hf(out.setdefault("hf_sharded", new("hf_sharded")), shards=3)
    write_peft(out.setdefault("peft", new("peft")))
    write_peft(out.setdefault("peft_dora", new("peft_dora")), dora=True)
    write_peft(out.setdefault("peft_extras", new("peft_extras")), modules_to_save=True, embedding=True)

    base = hf_tensors(seed=0)
    target = {k: (v.float() + 0.25).to(v.dtype) for k, v in base.items()}  # bf16, really changed
    for shards, name in ((1, "arc"), (2, "arc_sharded")):
        write_hf(out.setdefault(f"{name}_base", new(f"{name}_base")), shards=shards, tensors=base)
        write_hf(out.setdefault(f"{name}_target", new(f"{name}_target")), shards=shards, tensors=target)
        make_delta(out[f"{name}_base"], out[f"{name}_target"], out.setdefault(name, root / name),
                   base_identity=f"{name}-base-step-1")
    return out


@pytest.fixture
def clone(artifacts, tmp_path):
    """clone(name) -> a private copy of artifact `name` that the test may break."""
    counter = iter(range(1000))

    def _clone(name: str) -> Path:
        dest = tmp_path / f"{name}-{next(counter)}"
        shutil.copytree(artifacts[name], dest, symlinks=True)
        return dest

    return _clone


# --- helpers to write or rewrite safetensors headers by hand -----------------------------------

def read_raw_header(path: Path) -> tuple[dict, bytes]:
    """(header JSON as a dict, the data section bytes) of a safetensors file."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_raw(path: Path, header_bytes: bytes, data: bytes, n: int | None = None) -> None:
    """Write a safetensors file with exactly these header bytes (and declared length `n`)."""
    path.write_bytes(struct.pack("<Q", len(header_bytes) if n is None else n) + header_bytes + data)


def rewrite_header(path: Path, mutate) -> None:
    """Apply `mutate(header_dict)` to a safetensors file's header, keeping its data section."""
    header, data = read_raw_header(path)
    mutate(header)
    write_raw(path, json.dumps(header).encode(), data)


def set_json_field(path, field, value) -> None:
    """Rewrite one top-level field of a JSON file (the bad-config tests change one field at a time)."""
    data = json.loads(path.read_text())
    data[field] = value
    path.write_text(json.dumps(data))
