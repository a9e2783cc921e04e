"""File-list and family rules (steps 1, 2 and 5 of the decision order), one case each."""

from __future__ import annotations

import os
import shutil

import pytest

from fwemu.emulator.inspect import inspect_checkpoint, names
from fwemu.emulator.inspect.safetensors_header import encode_header

from .conftest import rewrite_header, set_json_field


def rejected(d, reason):
    v = inspect_checkpoint(d)
    assert v.kind is None
    assert v.reason == reason
    assert v.file == reason.split(": ", 1)[0]
    return v


def test_symlink_to_a_weights_file(clone, tmp_path):
    d = clone("hf")
    real = tmp_path / "real.safetensors"
    shutil.move(d / "model.safetensors", real)
    os.symlink(real, d / "model.safetensors")
    rejected(d, "model.safetensors: is a symbolic link; a checkpoint holds regular files only and "
                "links are never followed")


def test_dangling_symlink_extra(clone):
    d = clone("peft")
    os.symlink("/etc/passwd", d / "README.md")
    rejected(d, "README.md: is a symbolic link; a checkpoint holds regular files only and links "
                "are never followed")


def test_checkpoint_path_itself_a_symlink(artifacts, tmp_path):
    link = tmp_path / "link"
    os.symlink(artifacts["hf"], link)
    rejected(link, ".: the checkpoint path is a symbolic link; links are never followed")


def test_subdirectory(clone):
    d = clone("hf")
    (d / "extra").mkdir()
    rejected(d, "extra: is a subdirectory; a checkpoint directory is flat")


def test_fifo_is_not_opened(clone):
    d = clone("hf")
    os.mkfifo(d / "tokenizer.json")
    rejected(d, "tokenizer.json: is not a regular file")


def test_unknown_file(clone):
    d = clone("dcp")
    (d / "notes.txt").write_text("hello")
    rejected(d, "notes.txt: unexpected file; a checkpoint holds DCP, PEFT or Hugging Face files "
                "(plus tokenizer files, generation_config.json, README.md)")


def test_misnamed_dcp_data_file(clone):
    d = clone("dcp")
    (d / "__0_0.distcp").rename(d / "shard0.distcp")
    rejected(d, "shard0.distcp: unexpected DCP data file name (expected __<rank>_<n>.distcp)")


@pytest.mark.parametrize("name", ["adapter_model.bin", "pytorch_model.bin", "model.pt",
                                  "weights.pth", "last.ckpt", "state.pkl"])
def test_pickle_weight_files_are_refused_by_name(clone, name):
    d = clone("peft")
    (d / name).write_bytes(b"\x80\x04N.")
    v = rejected(d, f"{name}: pickle weight file; pickles run code when loaded, so they are never "
                    "accepted")
    assert "safetensors" in v.details["hint"]
    assert v.bytes_read == 0  # refused by name, never opened


def test_adapter_model_bin_instead_of_safetensors(clone):
    d = clone("peft")
    (d / "adapter_model.safetensors").rename(d / "adapter_model.bin")
    rejected(d, "adapter_model.bin: pickle weight file; pickles run code when loaded, so they are "
                "never accepted")


def test_dcp_and_hf_mixed(clone, artifacts):
    d = clone("dcp")
    for f in artifacts["hf"].iterdir():
        shutil.copy(f, d / f.name)
    rejected(d, "config.json: Hugging Face files mixed with DCP files (.metadata); a checkpoint "
                "directory holds exactly one format")


def test_peft_and_hf_mixed(clone, artifacts):
    d = clone("peft")
    shutil.copy(artifacts["hf"] / "model.safetensors", d / "model.safetensors")
    rejected(d, "model.safetensors: Hugging Face files mixed with PEFT files (adapter_config.json); "
                "a checkpoint directory holds exactly one format")


def test_lora_keys_in_full_weights_without_adapter_config(clone, artifacts):
    d = clone("hf")
    (d / "model.safetensors").write_bytes((artifacts["peft"] / "adapter_model.safetensors").read_bytes())
    v = rejected(d, "model.safetensors: tensor base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight "
                    "is a LoRA weight (lora_A) but there is no adapter_config.json; LoRA adapters must "
                    "be saved in PEFT layout")
    assert "adapter_config.json" in v.details["hint"]


def test_adapter_weights_without_config(clone):
    d = clone("peft")
    (d / "adapter_config.json").unlink()
    rejected(d, "adapter_config.json: missing; a PEFT adapter needs both adapter_config.json and "
                "adapter_model.safetensors (adapter_model.safetensors is here)")


def test_empty_directory(tmp_path):
    rejected(tmp_path, ".: empty directory; no checkpoint files")


def test_only_extras(tmp_path):
    (tmp_path / "README.md").write_text("# hi")
    rejected(tmp_path, ".: no checkpoint files (expected .metadata, adapter_config.json or "
                       "config.json); only extras are present")


def test_not_a_directory_and_missing(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    rejected(f, ".: not a directory; a checkpoint is a directory of files")
    rejected(tmp_path / "nope", ".: does not exist")


def test_too_many_files(clone, monkeypatch):
    d = clone("hf")
    monkeypatch.setattr("fwemu.emulator.inspect.reader.MAX_FILES", 5)
    for i in range(5):
        (d / f"README{i}.md").write_text("")
    rejected(d, ".: more than 5 entries; refusing to inspect")


def test_file_count_cap_is_10000():
    assert names.MAX_FILES == 10_000


# --- ARC_V2 markers -------------------------------------------------------------------------------

def test_manifest_without_marked_shards(clone, artifacts):
    d = clone("hf")
    shutil.copy(artifacts["arc"] / "delta.json", d / "delta.json")
    rejected(d, "model.safetensors: delta.json declares an ARC_V2 delta but this shard is not marked "
                "(no delta_format in __metadata__)")


def test_marked_shards_without_manifest(clone):
    d = clone("arc")
    (d / "delta.json").unlink()
    rejected(d, "model.safetensors: marked as an ARC_V2 delta (delta_format / target_adler32 in "
                "__metadata__) but delta.json is missing; a half-marked delta is neither a delta "
                "nor full weights")


def test_sharded_delta_with_one_shard_unmarked(clone):
    d = clone("arc_sharded")
    shard = "model-00002-of-00002.safetensors"

    def unmark(h):
        del h["__metadata__"]["delta_format"]
        del h["__metadata__"]["target_adler32"]

    rewrite_header(d / shard, unmark)
    rejected(d, f"{shard}: delta.json declares an ARC_V2 delta but this shard is not marked (no "
                "delta_format in __metadata__)")


def test_sharded_base_with_one_shard_marked(clone):
    d = clone("hf_sharded")
    shard = "model-00001-of-00003.safetensors"
    rewrite_header(d / shard, lambda h: h["__metadata__"].update(delta_format="xor-v1"))
    rejected(d, f"{shard}: marked as an ARC_V2 delta (delta_format / target_adler32 in __metadata__) "
                "but delta.json is missing; a half-marked delta is neither a delta nor full weights")


@pytest.mark.parametrize("meta,reason", [
    ({"delta_format": "xor-v2", "target_adler32": "0123abcd"}, "delta_format must be 'xor-v1' (is 'xor-v2')"),
    ({"delta_format": "xor-v1", "target_adler32": "0123ABCD"},
     "target_adler32 must be 8 lower-case hex digits (is '0123ABCD')"),
    ({"delta_format": "xor-v1"}, "target_adler32 must be 8 lower-case hex digits (is None)"),
])
def test_bad_delta_markers(clone, meta, reason):
    d = clone("arc")
    rewrite_header(d / "model.safetensors", lambda h: h.__setitem__("__metadata__", {"format": "pt", **meta}))
    rejected(d, f"model.safetensors: {reason}")


@pytest.mark.parametrize("field,value,reason", [
    ("format", "arc_v1", "format must be 'arc_v2' (is 'arc_v1')"),
    ("encoding", "add", "encoding must be 'xor' (is 'add')"),
    ("checksum_format", "crc32", "checksum_format must be 'adler32' (is 'crc32')"),
    ("base_identity", "", "base_identity must name the base checkpoint (is '')"),
    ("extra", 1, "unexpected field 'extra' in the ARC_V2 manifest"),
])
def test_bad_manifest(clone, field, value, reason):
    d = clone("arc")
    set_json_field(d / "delta.json", field, value)
    rejected(d, f"delta.json: {reason}")


def test_hf_shard_without_tensors(clone):
    d = clone("hf")
    (d / "model.safetensors").write_bytes(encode_header({}, {"format": "pt"}))
    rejected(d, "model.safetensors: holds no tensors")
