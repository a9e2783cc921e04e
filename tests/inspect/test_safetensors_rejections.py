"""Bad safetensors files (single and sharded HF, PEFT): one case each, with the exact reason."""

from __future__ import annotations

import json
import struct

import pytest
from safetensors import deserialize

from fwemu.emulator.inspect import inspect_checkpoint
from fwemu.emulator.inspect.safetensors_header import encode_header

from .conftest import read_raw_header, rewrite_header, set_json_field, write_raw


def rejected(d, reason):
    v = inspect_checkpoint(d)
    assert v.kind is None
    assert v.reason == reason
    assert v.file == reason.split(": ", 1)[0]
    return v


def test_duplicate_keys_in_header_which_the_library_accepts(clone):
    d = clone("hf")
    st = d / "model.safetensors"
    header, data = read_raw_header(st)
    first = next(k for k in header if k != "__metadata__")
    text = json.dumps(header)
    dup = json.dumps({first: header[first]})[1:-1]
    write_raw(st, (text[:-1] + ", " + dup + "}").encode(), data)
    deserialize(st.read_bytes())  # the safetensors library itself does not notice
    rejected(d, f"model.safetensors: duplicate key '{first}' in the safetensors header")


def test_leading_space_which_the_library_accepts(clone):
    d = clone("hf")
    st = d / "model.safetensors"
    header, data = read_raw_header(st)
    write_raw(st, b" " + json.dumps(header).encode(), data)
    rejected(d, "model.safetensors: safetensors header does not start with '{'")


def test_overlapping_offsets(clone):
    d = clone("hf")

    def mutate(h):
        a, b = sorted((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"])[:2]
        h[b]["data_offsets"] = [x - 2 for x in h[b]["data_offsets"]]

    rewrite_header(d / "model.safetensors", mutate)
    v = inspect_checkpoint(d)
    assert v.kind is None and " overlap in the data section" in v.reason
    assert v.reason.startswith("model.safetensors: tensors ")


def test_gapped_offsets(clone):
    d = clone("hf")

    def mutate(h):
        last = max((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"])
        h[last]["data_offsets"] = [x + 2 for x in h[last]["data_offsets"]]

    rewrite_header(d / "model.safetensors", mutate)
    v = inspect_checkpoint(d)
    assert v.kind is None
    assert v.reason.startswith("model.safetensors: gap in the data section: bytes ")
    assert "belong to no tensor" in v.reason


def test_header_length_beyond_the_file(clone):
    d = clone("hf")
    st = d / "model.safetensors"
    header, data = read_raw_header(st)
    write_raw(st, json.dumps(header).encode(), data, n=1_000_000)
    size = st.stat().st_size
    rejected(d, f"model.safetensors: safetensors header length 1000000 runs past the end of the "
                f"file ({size} bytes)")


def test_absurd_header_length(clone):
    d = clone("hf")
    st = d / "model.safetensors"
    header, data = read_raw_header(st)
    write_raw(st, json.dumps(header).encode(), data, n=2**63)
    v = rejected(d, f"model.safetensors: safetensors header length {2**63} exceeds the "
                    "100000000-byte cap")
    config_size = (d / "config.json").stat().st_size
    assert v.bytes_read == config_size + 8  # the length prefix only; nothing more is read


def test_file_shorter_than_the_length_prefix(clone):
    d = clone("hf")
    (d / "model.safetensors").write_bytes(b"\x01\x02")
    rejected(d, "model.safetensors: truncated: 2 bytes, shorter than the 8-byte safetensors "
                "header length")


def test_truncated_single_file(clone):
    d = clone("hf")
    st = d / "model.safetensors"
    size = st.stat().st_size
    header, data = read_raw_header(st)
    with open(st, "r+b") as f:
        f.truncate(size - 100)
    rejected(d, f"model.safetensors: truncated: the header describes {len(data)} bytes of tensor "
                f"data but the file holds {len(data) - 100} ({size - 100} bytes in all)")


def test_truncated_shard(clone):
    d = clone("hf_sharded")
    shard = d / "model-00002-of-00003.safetensors"
    size = shard.stat().st_size
    with open(shard, "r+b") as f:
        f.truncate(size - 1)
    v = inspect_checkpoint(d)
    assert v.kind is None and v.file == shard.name
    assert v.reason.startswith(f"{shard.name}: truncated: the header describes ")


def test_trailing_bytes(clone):
    d = clone("hf")
    with open(d / "model.safetensors", "ab") as f:
        f.write(b"\0" * 5)
    rejected(d, "model.safetensors: 5 trailing bytes after the last tensor's data")


def test_missing_shard(clone):
    d = clone("hf_sharded")
    (d / "model-00003-of-00003.safetensors").unlink()
    rejected(d, "model-00003-of-00003.safetensors: missing shard: model.safetensors.index.json "
                "maps 5 tensors to it")


def test_shard_with_a_tensor_the_weight_map_puts_elsewhere(clone):
    d = clone("hf_sharded")
    index = json.loads((d / "model.safetensors.index.json").read_text())
    name, shard = next(iter(index["weight_map"].items()))
    other = next(s for s in sorted(set(index["weight_map"].values())) if s != shard)
    index["weight_map"][name] = other
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    v = inspect_checkpoint(d)
    assert v.kind is None
    assert v.reason in (
        f"{shard}: holds tensor {name}, which the weight_map does not assign to this shard",
        f"{other}: lacks tensor {name}, which the weight_map assigns to this shard (1 missing)")


def test_weight_map_pointing_outside_the_directory(clone):
    d = clone("hf_sharded")
    index = json.loads((d / "model.safetensors.index.json").read_text())
    name = next(iter(index["weight_map"]))
    index["weight_map"][name] = "../other/model.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    rejected(d, f"model.safetensors.index.json: weight_map entry {name} points outside the "
                "checkpoint directory ('../other/model.safetensors')")


def test_shard_not_in_the_weight_map(clone):
    d = clone("hf_sharded")
    (d / "model-00009-of-00009.safetensors").write_bytes((d / "model-00001-of-00003.safetensors").read_bytes())
    rejected(d, "model-00009-of-00009.safetensors: not referenced by the weight_map of "
                "model.safetensors.index.json")


def test_single_and_sharded_together(clone):
    d = clone("hf_sharded")
    (d / "model.safetensors").write_bytes((d / "model-00001-of-00003.safetensors").read_bytes())
    rejected(d, "model.safetensors.index.json: both model.safetensors and a shard index are "
                "present; a checkpoint holds single-file or sharded weights, not both")


@pytest.mark.parametrize("mutate,reason", [
    (lambda h: h["lm_head.weight"].update(dtype="F128"),
     "tensor lm_head.weight has unknown dtype 'F128'"),
    (lambda h: h["lm_head.weight"].update(extra=1),
     "tensor lm_head.weight must have exactly dtype, shape, data_offsets (has "
     "['data_offsets', 'dtype', 'extra', 'shape'])"),
    (lambda h: h["lm_head.weight"].update(shape=[32, -16]),
     "tensor lm_head.weight has an invalid shape [32, -16] (non-negative ints expected)"),
    (lambda h: h["lm_head.weight"].update(shape=[32, 8]),
     "tensor lm_head.weight: shape [32, 8] of BF16 is 512 bytes but data_offsets span 1024"),
    (lambda h: h["lm_head.weight"].update(data_offsets=[True, 5]),
     "tensor lm_head.weight has invalid data_offsets [True, 5] (two ints expected)"),
    (lambda h: h.update(__metadata__={"format": 1}),
     "__metadata__ must map strings to strings"),
])
def test_malformed_tensor_entries(clone, mutate, reason):
    d = clone("hf")
    rewrite_header(d / "model.safetensors", mutate)
    rejected(d, f"model.safetensors: {reason}")


def test_header_not_json(clone):
    d = clone("hf")
    _, data = read_raw_header(d / "model.safetensors")
    write_raw(d / "model.safetensors", b"{not json}", data)
    rejected(d, "model.safetensors: safetensors header is not valid JSON (Expecting property name "
                "enclosed in double quotes at line 1 column 2)")


def test_encode_header_matches_the_library_byte_for_byte(artifacts):
    raw = (artifacts["hf"] / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__")
    tensors = {k: (v["dtype"], v["shape"], *v["data_offsets"]) for k, v in header.items()}
    assert encode_header(tensors, meta) == raw[:8 + n]


# --- PEFT ---------------------------------------------------------------------------------------

def test_lora_a_without_lora_b(clone):
    d = clone("peft")
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"

    def mutate(h):
        h["__metadata__"]["x"] = "y"  # keep a realistic header; drop B and close the gap
        removed = h.pop(key)
        span = removed["data_offsets"][1] - removed["data_offsets"][0]
        for v in h.values():
            if isinstance(v, dict) and "data_offsets" in v and v["data_offsets"][0] >= removed["data_offsets"][1]:
                v["data_offsets"] = [x - span for x in v["data_offsets"]]

    header, data = read_raw_header(d / "adapter_model.safetensors")
    b, e = header[key]["data_offsets"]
    mutate(header)
    write_raw(d / "adapter_model.safetensors", json.dumps(header).encode(), data[:b] + data[e:])
    rejected(d, "adapter_model.safetensors: base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight "
                "has no matching lora_B (base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight)")


def test_lora_rank_mismatch(clone):
    d = clone("peft")
    key = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
    # [16, 4] -> [8, 8]: same byte size, different rank
    rewrite_header(d / "adapter_model.safetensors", lambda h: h[key].update(shape=[8, 8]))
    rejected(d, "adapter_model.safetensors: rank mismatch: "
                "base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight is [4, 16] (r=4) "
                f"but {key} is [8, 8] (r=8)")


def test_lora_rank_disagrees_with_config(clone):
    d = clone("peft")
    set_json_field(d / "adapter_config.json", "r", 8)
    rejected(d, "adapter_model.safetensors: base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight "
                "has rank 4 but adapter_config.json says r=8")


@pytest.mark.parametrize("field,value,reason", [
    ("peft_type", "IA3", "peft_type is 'IA3', not 'LORA'"),
    ("r", 0, "r must be a positive integer (is 0)"),
    ("r", True, "r must be a positive integer (is True)"),
    ("lora_alpha", "16", "lora_alpha must be a number (is '16')"),
    ("target_modules", [], "target_modules must be a non-empty list of module names or a regex "
                           "string (is [])"),
    ("base_model_name_or_path", 7, "base_model_name_or_path must be a string or null (is 7)"),
])
def test_bad_adapter_config(clone, field, value, reason):
    d = clone("peft")
    set_json_field(d / "adapter_config.json", field, value)
    rejected(d, f"adapter_config.json: {reason}")


def test_adapter_without_lora_pairs(clone):
    d = clone("peft")
    from fwemu.emulator.inspect.safetensors_header import encode_header as enc

    (d / "adapter_model.safetensors").write_bytes(enc({"base_model.model.lm_head.weight": ("F32", [2], 0, 8)})
                                                  + b"\0" * 8)
    rejected(d, "adapter_model.safetensors: no LoRA weights (no lora_A/lora_B pairs)")


def test_adapter_config_with_duplicate_keys(clone):
    d = clone("peft")
    (d / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4, "r": 64}')
    rejected(d, "adapter_config.json: duplicate key 'r' in the JSON")


# --- HF config ----------------------------------------------------------------------------------

def test_config_without_model_type(clone):
    d = clone("hf")
    (d / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    rejected(d, "config.json: model_type must be a non-empty string (is None)")


def test_config_missing(clone):
    d = clone("hf")
    (d / "config.json").unlink()
    rejected(d, "config.json: missing; Hugging Face weights need a config.json with model_type")


def test_weights_missing(clone):
    d = clone("hf")
    (d / "model.safetensors").unlink()
    rejected(d, "model.safetensors: missing; Hugging Face weights are model.safetensors or "
                "model.safetensors.index.json with its shards")
