"""Bad DCP checkpoints: each is its own case, with the exact reason it must get.

The tests may use torch (to build or edit real metadata); the inspector never does.
"""

from __future__ import annotations

import io
import pickle
import shutil
import warnings

import pytest

from fwemu.emulator.inspect import Kind, inspect_checkpoint
from fwemu.emulator.inspect import dcp_metadata

SUFFIX = "; refusing to load it (a crafted .metadata runs code in torch)"


def edit_metadata(d, mutate):
    """Load `.metadata` with real pickle (trusted: we wrote it), mutate, write it back."""
    import torch.distributed.checkpoint  # noqa: F401  (the classes the pickle refers to)

    md = pickle.loads((d / ".metadata").read_bytes())
    mutate(md)
    (d / ".metadata").write_bytes(pickle.dumps(md, protocol=4))


def rejected(d, reason):
    v = inspect_checkpoint(d)
    assert v.kind is None
    assert v.reason == reason
    assert v.file == reason.split(": ", 1)[0]
    return v


class OpenFile:
    """A pickle payload that creates a file when unpickled: proof that code would have run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_code_running_metadata_is_refused_and_does_not_run(clone, tmp_path):
    d = clone("dcp")
    marker = tmp_path / "pwned"
    (d / ".metadata").write_bytes(pickle.dumps(OpenFile(marker), protocol=4))
    rejected(d, ".metadata: refers to io.open, which is not a DCP metadata class" + SUFFIX)
    assert not marker.exists()
    # The payload is live: a plain pickle.load (what torch does) runs it.
    pickle.loads((d / ".metadata").read_bytes()).close()
    assert marker.exists()


def test_payload_hidden_inside_real_metadata_is_refused(clone, tmp_path):
    d = clone("dcp")
    marker = tmp_path / "pwned"
    edit_metadata(d, lambda md: setattr(md.storage_meta, "save_id", OpenFile(marker)))
    rejected(d, ".metadata: refers to io.open, which is not a DCP metadata class" + SUFFIX)
    assert not marker.exists()


def test_persistent_ids_are_refused(clone):
    class WithPid(pickle.Pickler):
        def persistent_id(self, obj):
            return "storage" if obj == "x" else None

    buf = io.BytesIO()
    WithPid(buf, protocol=4).dump(["x"])
    d = clone("dcp")
    (d / ".metadata").write_bytes(buf.getvalue())
    rejected(d, ".metadata: uses a persistent id, which DCP metadata never does" + SUFFIX)


def test_pickle_cannot_modify_shared_stand_ins(clone):
    """BUILD on the allowed dtype global would change it for every later inspection."""
    d = clone("dcp")
    (d / ".metadata").write_bytes(b"\x80\x02ctorch\nfloat32\n}X\x08\x00\x00\x00itemsizeK\x00sb.")
    rejected(d, ".metadata: attempt to set the state of a shared DType" + SUFFIX)
    # BUILD with slot-state on a stand-in class goes through the sealed metaclass or fails.
    (d / ".metadata").write_bytes(
        b"\x80\x02ctorch.distributed.checkpoint.metadata\nMetadata\n"
        b"N}X\x07\x00\x00\x00_fieldsK\x00s\x86b.")
    assert inspect_checkpoint(d).kind is None
    assert dcp_metadata.DTYPES["float32"].itemsize == 4
    assert dcp_metadata.Metadata._fields[0] == "state_dict_metadata"


def test_not_a_pickle(clone):
    d = clone("dcp")
    (d / ".metadata").write_bytes(b'{"json": "instead"}')
    rejected(d, ".metadata: not a pickle of DCP metadata (expected a protocol 2-5 header, "
                "torch writes 80 04)")


def test_truncated_metadata(clone):
    d = clone("dcp")
    raw = (d / ".metadata").read_bytes()
    (d / ".metadata").write_bytes(raw[: len(raw) // 2])
    v = inspect_checkpoint(d)
    assert v.kind is None and v.reason.startswith(".metadata: not a valid DCP metadata pickle (")


def test_wrong_top_level_object(clone):
    d = clone("dcp")
    (d / ".metadata").write_bytes(pickle.dumps({"state_dict_metadata": {}}, protocol=4))
    rejected(d, ".metadata: malformed DCP metadata: top-level object is a dict, not a DCP Metadata")


def test_storage_entry_pointing_outside_the_directory(clone):
    d = clone("dcp")

    def mutate(md):
        info = next(iter(md.storage_data.values()))
        info.relative_path = "../elsewhere/__0_0.distcp"

    edit_metadata(d, mutate)
    rejected(d, ".metadata: storage entry for optim.param_groups.0.lr points outside the "
                "checkpoint directory ('../elsewhere/__0_0.distcp')")


def test_storage_entry_beyond_the_end_of_its_file(clone):
    d = clone("dcp")
    size = (d / "__0_0.distcp").stat().st_size

    def mutate(md):
        info = next(iter(md.storage_data.values()))
        info.offset = size - 10

    edit_metadata(d, mutate)
    v = inspect_checkpoint(d)
    assert v.kind is None and v.file == "__0_0.distcp"
    assert v.reason.startswith(f"__0_0.distcp: truncated or wrong: holds {size} bytes but .metadata "
                               f"stores optim.param_groups.0.lr at bytes {size - 10}..")


def test_truncated_data_file(clone):
    d = clone("dcp")
    data = d / "__0_0.distcp"
    size = data.stat().st_size
    with open(data, "r+b") as f:
        f.truncate(size - 1)
    v = inspect_checkpoint(d)
    assert v.kind is None
    assert v.reason.startswith(f"__0_0.distcp: truncated or wrong: holds {size - 1} bytes but "
                               ".metadata stores ")
    assert v.reason.endswith(f"..{size}")


def test_overlapping_storage_entries(clone):
    d = clone("dcp")

    def mutate(md):
        infos = list(md.storage_data.values())
        infos[1].offset = infos[0].offset

    edit_metadata(d, mutate)
    rejected(d, ".metadata: storage entries for optim.param_groups.0.lr and "
                "optim.param_groups.0.betas overlap in __0_0.distcp")


def test_missing_data_file_of_a_rank(clone):
    d = clone("dcp_2ranks")
    (d / "__1_0.distcp").unlink()
    v = inspect_checkpoint(d)
    assert v.kind is None and v.file == ".metadata"
    assert v.reason.endswith("refers to missing data file __1_0.distcp")


def test_unreferenced_data_file(clone):
    d = clone("dcp")
    shutil.copy(d / "__0_0.distcp", d / "__0_1.distcp")
    rejected(d, "__0_1.distcp: not referenced by .metadata; an unreferenced data file means the "
                "checkpoint is incomplete or mixed with another")


def test_data_files_without_metadata(clone):
    d = clone("dcp_2ranks")
    (d / ".metadata").unlink()
    rejected(d, ".metadata: missing; DCP data files (__0_0.distcp, __1_0.distcp) are unreadable "
                "without it")


def test_weights_without_optimizer_state(tmp_path):
    import torch
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.save({"model": {"model.layers.0.self_attn.q_proj.weight": torch.ones(4, 4)}},
                 storage_writer=dcp.FileSystemWriter(str(tmp_path)))
    v = rejected(tmp_path, ".metadata: no optimizer state (no optim.state.<param>.exp_avg / "
                           "exp_avg_sq tensors); weights without optimizer state cannot resume "
                           "training")
    assert "save_state" in v.details["hint"]


def test_optimizer_state_without_model_tensors(clone):
    d = clone("dcp")

    def mutate(md):
        for key in [k for k in md.state_dict_metadata if k.startswith("model.")]:
            del md.state_dict_metadata[key]
            del md.planner_data[key]
        for index in [i for i in md.storage_data if i.fqn.startswith("model.")]:
            del md.storage_data[index]

    edit_metadata(d, mutate)  # storage stays consistent: the data file is still referenced
    rejected(d, ".metadata: no model tensors (no tensor outside the optimizer state); this is not a "
                "training checkpoint")


def test_lora_and_full_trainable_tensors_mixed(tmp_path):
    import torch
    import torch.distributed.checkpoint as dcp
    from torch import nn
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    model = nn.Module()
    model.q_proj = nn.Linear(4, 4, bias=False)
    model.q_proj.lora_A = nn.Linear(4, 2, bias=False)
    optim = torch.optim.Adam(model.parameters())
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optim.step()
    state = {"model": dict(model.named_parameters()), "optim": get_optimizer_state_dict(model, optim)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.save(state, storage_writer=dcp.FileSystemWriter(str(tmp_path)))
    rejected(tmp_path, ".metadata: mixes LoRA tensors (q_proj.lora_A.weight) with full-weight "
                       "tensors (q_proj.weight) among the trainable tensors; a training "
                       "checkpoint is all LoRA or none")


def test_extras_beside_weights_do_not_make_them_resumable(tmp_path):
    """Step counters and RNG state are extras: without optimizer moments it is still not TRAINING."""
    import torch
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.save({"model": {"w": torch.ones(2)}, "rng": {"seed": torch.ones(1)}, "step": 3},
                 storage_writer=dcp.FileSystemWriter(str(tmp_path)))
    rejected(tmp_path, ".metadata: no optimizer state (no optim.state.<param>.exp_avg / exp_avg_sq "
                       "tensors); weights without optimizer state cannot resume training")


def test_chunk_without_storage_entry(clone):
    d = clone("dcp")

    def mutate(md):
        index = next(i for i in md.storage_data if i.fqn == "model.lm_head.weight")
        del md.storage_data[index]

    edit_metadata(d, mutate)
    rejected(d, ".metadata: model.lm_head.weight has no storage entry; its data is nowhere")


def test_storage_entry_too_short_for_its_tensor(clone):
    d = clone("dcp")

    def mutate(md):
        index = next(i for i in md.storage_data if i.fqn == "model.lm_head.weight")
        md.storage_data[index].length = 10

    edit_metadata(d, mutate)
    rejected(d, ".metadata: storage entry for model.lm_head.weight is 10 bytes, too short for its "
                "2048-byte tensor chunk")


@pytest.mark.parametrize("field,value,message", [
    ("size", (3,), "'model.lm_head.weight' has a chunk outside the tensor's size [3]"),
    ("chunks", "nope", "'model.lm_head.weight' chunks is not a list"),
])
def test_tensor_metadata_bounds(clone, field, value, message):
    d = clone("dcp")

    def mutate(md):
        setattr(md.state_dict_metadata["model.lm_head.weight"], field, value)

    edit_metadata(d, mutate)
    rejected(d, f".metadata: malformed DCP metadata: {message}")


def test_metadata_over_the_size_cap(clone, monkeypatch):
    from fwemu.emulator.inspect import families

    d = clone("dcp")
    monkeypatch.setattr(families, "MAX_DCP_METADATA", 100)
    size = (d / ".metadata").stat().st_size
    rejected(d, f".metadata: {size} bytes, over the 100-byte cap for this file")


def test_lora_dcp_is_training_lora(artifacts):
    assert inspect_checkpoint(artifacts["dcp_lora"]).kind is Kind.TRAINING_LORA
