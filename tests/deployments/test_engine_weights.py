"""A full directory is served from a memory map of its model.safetensors: the float32 weights are
the file's pages (no copy made), other float dtypes are widened, a data section at an address
misaligned for its dtype still loads, and a file that does not fit is an EngineError."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from fwemu.emulator.deployments import engine
from fwemu.emulator.trainer.model_config import hf_config
from tests.gateway.helpers import BASE

IDS = [1, 5, 9, 200, 17, 3, 3, 64]


def export(path, dtype=torch.float32):
    """The base engine's weights as a Hugging Face directory of `dtype`; the base engine."""
    base = engine.base_engine(BASE)
    path.mkdir()
    (path / "config.json").write_text(json.dumps(hf_config(BASE)))
    weights = {k: v.detach().to(dtype).contiguous() for k, v in base.model.state_dict().items()}
    save_file(weights, str(path / "model.safetensors"))
    return base, weights


def test_float32_weights_are_views_of_the_mapped_file(tmp_path, monkeypatch):
    base, weights = export(tmp_path / "full")
    mapped = []
    real = engine.mapped_shard
    monkeypatch.setattr(engine, "mapped_shard", lambda *a: mapped.append(real(*a)) or mapped[-1])
    served = engine.full_engine(tmp_path / "full")
    (shard,) = mapped
    lo, hi = shard.data.ctypes.data, shard.data.ctypes.data + shard.data.size
    params = dict(served.model.named_parameters())
    assert set(params) == set(weights)
    for name, p in params.items():
        assert torch.equal(p, weights[name])
        assert lo <= p.data_ptr() < hi, f"{name} was copied out of the mapped file"
    # same weights, same model; a forward is compared with float32 tolerance (BLAS kernels may
    # pick another path for another alignment on some CPUs), the weights themselves exactly
    torch.testing.assert_close(served.logits(IDS), base.logits(IDS))


def test_bf16_weights_are_widened(tmp_path):
    _, weights = export(tmp_path / "bf16", torch.bfloat16)
    served = engine.full_engine(tmp_path / "bf16")
    for name, p in served.model.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p, weights[name].float())


def test_a_misaligned_data_section_is_copied_to_alignment(tmp_path):
    base, weights = export(tmp_path / "aligned")
    raw = (tmp_path / "aligned" / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    body = raw[8:8 + n].rstrip(b" ")
    body += b" " * ((2 - 8 - len(body)) % 4)      # the data section starts 2 bytes past a 4-byte line
    assert (8 + len(body)) % 4 == 2
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_bytes((tmp_path / "aligned" / "config.json").read_bytes())
    (odd / "model.safetensors").write_bytes(struct.pack("<Q", len(body)) + body + raw[8 + n:])
    served = engine.full_engine(odd)
    for name, p in served.model.named_parameters():
        assert p.data_ptr() % 4 == 0 and torch.equal(p, weights[name])
    torch.testing.assert_close(served.logits(IDS), base.logits(IDS))


def test_weights_that_do_not_fit_are_an_engine_error(tmp_path):
    _, weights = export(tmp_path / "full")
    weights.pop(next(iter(weights)))
    save_file(weights, str(tmp_path / "full" / "model.safetensors"))
    with pytest.raises(engine.EngineError, match="does not fit the stand-in model: Missing key"):
        engine.full_engine(tmp_path / "full")
    (tmp_path / "full" / "model.safetensors").write_bytes(b"\x10\x00")
    with pytest.raises(engine.EngineError, match="does not fit the stand-in model: truncated"):
        engine.full_engine(tmp_path / "full")
