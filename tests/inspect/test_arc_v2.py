"""ARC_V2 deltas: make_delta against a base and apply_delta reproduce the target bit for bit."""

from __future__ import annotations

import filecmp
import json
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fwemu.emulator.inspect import Kind, inspect_checkpoint
from fwemu.emulator.inspect.examples import hf_tensors, write_hf
from fwemu.emulator.trainer.arc_v2 import apply_delta, make_delta

from .conftest import read_raw_header


def same_tree(a, b) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert (mismatch, errors) == ([], [])


@pytest.mark.parametrize("name", ["arc", "arc_sharded"])
def test_delta_reconstructs_the_target_bit_for_bit(artifacts, tmp_path, name):
    out = tmp_path / "rebuilt"
    apply_delta(artifacts[f"{name}_base"], artifacts[name], out)
    same_tree(out, artifacts[f"{name}_target"])  # every file, headers included, byte for byte
    assert inspect_checkpoint(out).kind is Kind.INFERENCE_BASE


def test_delta_is_xor_of_raw_bf16_bytes_and_marks_every_shard(artifacts):
    base_h, base_data = read_raw_header(artifacts["arc_base"] / "model.safetensors")
    tgt_h, tgt_data = read_raw_header(artifacts["arc_target"] / "model.safetensors")
    delta_h, delta_data = read_raw_header(artifacts["arc"] / "model.safetensors")
    assert {v["dtype"] for k, v in tgt_h.items() if k != "__metadata__"} == {"BF16"}
    assert delta_h["__metadata__"] == {"format": "pt", "delta_format": "xor-v1",
                                       "target_adler32": f"{zlib.adler32(tgt_data):08x}"}
    assert bytes(a ^ b for a, b in zip(base_data, tgt_data)) == delta_data
    assert base_data != tgt_data and any(delta_data)
    manifest = json.loads((artifacts["arc"] / "delta.json").read_text())
    assert manifest == {"format": "arc_v2", "encoding": "xor", "checksum_format": "adler32",
                        "base_identity": "arc-base-step-1"}


def test_delta_of_identical_weights_is_all_zero_and_still_reconstructs(artifacts, tmp_path):
    delta, out = tmp_path / "delta", tmp_path / "out"
    make_delta(artifacts["arc_base"], artifacts["arc_base"], delta, "same")
    _, data = read_raw_header(delta / "model.safetensors")
    assert not any(data)
    apply_delta(artifacts["arc_base"], delta, out)
    same_tree(out, artifacts["arc_base"])


def test_wrong_base_fails_the_checksum(artifacts, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    write_hf(other, tensors=hf_tensors(seed=7))
    with pytest.raises(ValueError, match=r"model.safetensors: adler32 of the reconstructed data is "
                                         r"[0-9a-f]{8}, the delta says [0-9a-f]{8}; wrong base"):
        apply_delta(other, artifacts["arc"], tmp_path / "out")
    assert not (tmp_path / "out" / "model.safetensors").exists()
    assert not (tmp_path / "out" / "model.safetensors.partial").exists()


def test_corrupted_delta_data_fails_the_checksum(clone, artifacts, tmp_path):
    d = clone("arc")
    with open(d / "model.safetensors", "r+b") as f:
        f.seek(-3, 2)
        byte = f.read(1)
        f.seek(-3, 2)
        f.write(bytes([byte[0] ^ 0x40]))
    assert inspect_checkpoint(d).kind is Kind.INFERENCE_ARC_V2  # data is not read by the inspector
    with pytest.raises(ValueError, match="adler32"):
        apply_delta(artifacts["arc_base"], d, tmp_path / "out")


def test_make_delta_refuses_a_different_model(artifacts, tmp_path):
    import torch

    small = tmp_path / "small"
    small.mkdir()
    tensors = hf_tensors(0)
    tensors["lm_head.weight"] = torch.zeros(8, 16, dtype=torch.bfloat16)
    write_hf(small, tensors=tensors)
    with pytest.raises(ValueError, match=r"tensor 'lm_head.weight' is BF16\[32, 16\] in one checkpoint "
                                         r"and BF16\[8, 16\] in the other"):
        make_delta(artifacts["arc_base"], small, tmp_path / "delta", "b")


def test_make_delta_refuses_a_different_config(artifacts, tmp_path):
    target = tmp_path / "t"
    target.mkdir()
    write_hf(target, tensors=hf_tensors(0))
    cfg = json.loads((target / "config.json").read_text())
    cfg["hidden_size"] = 99
    (target / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="config.json differ"):
        make_delta(artifacts["arc_base"], target, tmp_path / "delta", "b")


def test_make_delta_needs_inference_base_inputs_and_an_empty_out_dir(artifacts, tmp_path):
    with pytest.raises(ValueError, match="is not INFERENCE_BASE"):
        make_delta(artifacts["peft"], artifacts["arc_target"], tmp_path / "d1", "b")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("")
    with pytest.raises(ValueError, match="is not empty"):
        make_delta(artifacts["arc_base"], artifacts["arc_target"], busy, "b")
    with pytest.raises(ValueError, match="base_identity"):
        make_delta(artifacts["arc_base"], artifacts["arc_target"], tmp_path / "d2", "")


def test_apply_delta_needs_a_delta(artifacts, tmp_path):
    with pytest.raises(ValueError, match="is not an ARC_V2 delta"):
        apply_delta(artifacts["arc_base"], artifacts["arc_target"], tmp_path / "out")


def test_many_pieces_with_the_checksum_on_a_worker_thread(artifacts, clone, tmp_path, monkeypatch):
    """Data sections longer than one piece take the path the served models take (checksums summed
    on a worker thread, combined in order): still bit for bit, and a flipped byte in a middle
    piece is still caught."""
    from fwemu.emulator.trainer import arc_v2

    monkeypatch.setattr(arc_v2, "CHUNK", 96)
    _, data = read_raw_header(artifacts["arc"] / "model.safetensors")
    assert len(data) > 10 * 96
    out = tmp_path / "rebuilt"
    apply_delta(artifacts["arc_base"], artifacts["arc"], out)
    same_tree(out, artifacts["arc_target"])
    d = clone("arc")
    with open(d / "model.safetensors", "r+b") as f:
        f.seek(-len(data) // 2, 2)
        byte = f.read(1)
        f.seek(-len(data) // 2, 2)
        f.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(ValueError, match="adler32"):
        apply_delta(artifacts["arc_base"], d, tmp_path / "out2")


@given(prefix=st.binary(max_size=3000), a=st.binary(max_size=3000), b=st.binary(max_size=3000))
@settings(max_examples=200, deadline=None)
def test_the_checksum_is_zlibs_adler32_and_combines(prefix, a, b):
    """arc_v2's adler32 (zlib-ng's when installed) gives zlib's values, from any running value, and
    adler32_combine joins two pieces' sums as the worker-thread path does."""
    from fwemu.emulator.trainer.arc_v2 import adler32, adler32_combine

    start = zlib.adler32(prefix)
    assert adler32(a, start) == zlib.adler32(a, start)
    assert adler32_combine(zlib.adler32(a, start), zlib.adler32(b), len(b)) == zlib.adler32(a + b, start)


def test_reused_piece_buffers_of_another_size_still_reconstruct(artifacts, tmp_path):
    """One-piece sections reuse the last apply's buffers (views when the new one is smaller):
    applies of different sizes, in either order, each give their own target."""
    from fwemu.emulator.trainer import arc_v2

    for i, name in enumerate(["arc_sharded", "arc", "arc_sharded", "arc"]):
        out = tmp_path / f"rebuilt-{i}"
        apply_delta(artifacts[f"{name}_base"], artifacts[name], out)
        same_tree(out, artifacts[f"{name}_target"])
        assert arc_v2._buffers._free is not None
