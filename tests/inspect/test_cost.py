"""Reading cost does not grow with the weights; fingerprint reads no content."""

from __future__ import annotations

import json
import os

from fwemu.emulator.inspect import Kind, fingerprint, inspect_checkpoint
from fwemu.emulator.inspect.examples import CONFIG
from fwemu.emulator.inspect.safetensors_header import encode_header

HEADER_PAD = 4096  # equal-length headers for checkpoints that differ only in tensor sizes


def sparse_hf(d, rows: int) -> int:
    """An HF checkpoint whose model.safetensors data section is a hole of ~rows*4 KiB; returns its size."""
    d.mkdir()
    (d / "config.json").write_text(json.dumps(CONFIG))
    tensors, pos = {}, 0
    for i in range(8):
        n = rows * 2048 * 2  # BF16 [rows, 2048]
        tensors[f"model.layers.{i}.mlp.up_proj.weight"] = ("BF16", [rows, 2048], pos, pos + n)
        pos += n
    header = encode_header(tensors, {"format": "pt"}, pad_to=HEADER_PAD)
    with open(d / "model.safetensors", "wb") as f:
        f.write(header)
        f.truncate(len(header) + pos)  # sparse: no data blocks are written
    return len(header) + pos


def test_bytes_read_is_the_same_for_a_small_and_a_huge_checkpoint(tmp_path):
    small_size = sparse_hf(tmp_path / "small", rows=16)            # 4 MiB
    big_size = sparse_hf(tmp_path / "big", rows=16 * 256 * 64)     # 16 GiB
    assert big_size > 4000 * small_size
    small, big = inspect_checkpoint(tmp_path / "small"), inspect_checkpoint(tmp_path / "big")
    assert small.kind is big.kind is Kind.INFERENCE_BASE
    assert small.bytes_read == big.bytes_read
    assert big.bytes_read == (tmp_path / "big" / "config.json").stat().st_size + 8 + HEADER_PAD


def test_bytes_read_counts_configs_headers_and_metadata_exactly(artifacts):
    d = artifacts["hf_sharded"]
    expected = (d / "config.json").stat().st_size + (d / "model.safetensors.index.json").stat().st_size
    for shard in sorted(d.glob("model-*.safetensors")):
        with open(shard, "rb") as f:
            expected += 8 + int.from_bytes(f.read(8), "little")
    assert inspect_checkpoint(d).bytes_read == expected
    assert inspect_checkpoint(artifacts["dcp"]).bytes_read == (artifacts["dcp"] / ".metadata").stat().st_size


def test_fingerprint_is_stable_and_sees_every_change(clone):
    d = clone("hf")
    fp = fingerprint(d)
    assert fp == fingerprint(d) and len(fp) == 64
    st = (d / "config.json").stat()
    os.utime(d / "config.json", ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    fp2 = fingerprint(d)
    assert fp2 != fp
    (d / "README.md").write_text("x")
    fp3 = fingerprint(d)
    assert fp3 != fp2
    with open(d / "model.safetensors", "ab") as f:
        f.write(b"\0")
    assert fingerprint(d) != fp3


def test_fingerprint_reads_no_content(clone, monkeypatch):
    d = clone("hf")
    (d / "model.safetensors").chmod(0)  # unreadable content; names, sizes and times still listable
    opened = []
    monkeypatch.setattr("builtins.open", lambda *a, **k: opened.append(a) or (_ for _ in ()).throw(OSError))
    monkeypatch.setattr(os, "open", lambda *a, **k: opened.append(a) or (_ for _ in ()).throw(OSError))
    assert len(fingerprint(d)) == 64
    assert opened == []
