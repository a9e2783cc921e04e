"""The DCP layouts real trainers write are TRAINING / TRAINING_LORA; the safety refusals still hold.

Every directory is written by torch.distributed.checkpoint.save after one real Adam step
(tests/builders.py); the 2-rank one by two gloo processes saving dim-0-sharded DTensors.
"""

from __future__ import annotations

import shutil
import warnings

import pytest

from fwemu.emulator.inspect import Kind, inspect_checkpoint
from tests.builders import HIDDEN, _save, adam_step, layout_dir, titan_model, titan_ranks_dir, titan_state

from .test_dcp_rejections import edit_metadata, rejected

LAYOUTS = {  # layout -> (details["layout"], extras beside a full run)
    "ours": ("model+optim", 0),
    "get_state_dict": ("model+optimizer", 0),
    "torchtitan": ("flat", 10),
    "torchtitan_data_loader": ("flat", 10),
    "extras": ("model+optim", 10),
}
TRAINED = 12  # every parameter of titan_model; 4 LoRA matrices with lora=True


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    out = {(name, lora): layout_dir(root / f"{name}-{lora}", name, lora)
           for name in LAYOUTS for lora in (False, True)}
    out["2ranks"] = titan_ranks_dir(root / "2ranks")
    return out


@pytest.fixture
def copy(dirs, tmp_path):
    counter = iter(range(100))

    def _copy(key):
        dest = tmp_path / f"copy-{next(counter)}"
        shutil.copytree(dirs[key], dest)
        return dest
    return _copy


@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_is_resumable(dirs, name, lora):
    v = inspect_checkpoint(dirs[(name, lora)])
    assert v.kind is (Kind.TRAINING_LORA if lora else Kind.TRAINING), v.reason
    style, extras = LAYOUTS[name]
    assert v.details["layout"] == style and v.details["ranks"] == 1
    assert v.details["tensors"] == (4 if lora else TRAINED)
    assert v.details.get("extras", 0) == extras
    # get_state_dict / torchtitan save the whole model: the frozen base weights of a LoRA run
    # are kept beside the adapters, and are not trained tensors.
    whole_model = name not in ("ours", "extras")
    assert v.details.get("frozen", 0) == (TRAINED if lora and whole_model else 0)
    assert 0 < v.bytes_read < 128 * 1024  # .metadata only


def test_torchtitan_keys_are_flat_and_extras_are_bytes_or_tensors(dirs):
    """What makes the flat layout: no model. prefix, and extras of both entry types."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, TensorStorageMetadata

    md = dcp.FileSystemReader(str(dirs[("torchtitan", False)])).read_metadata().state_dict_metadata
    assert "layers.0.attention.wq.weight" in md and "optimizer.state.layers.0.attention.wq.weight.exp_avg" in md
    assert isinstance(md["train_state.step"], TensorStorageMetadata)
    assert isinstance(md["dataloader.dp_rank_0"], BytesStorageMetadata)
    assert isinstance(md["lr_scheduler.last_epoch"], BytesStorageMetadata)


def test_two_rank_sharded_save_is_accepted_when_every_file_is_there(dirs, copy):
    import torch.distributed.checkpoint as dcp

    d = dirs["2ranks"]
    assert sorted(p.name for p in d.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    md = dcp.FileSystemReader(str(d)).read_metadata()
    wq = md.state_dict_metadata["layers.0.attention.wq.weight"]
    assert [c.sizes[0] for c in wq.chunks] == [HIDDEN // 2, HIDDEN // 2]  # really sharded
    files = {info.relative_path for i, info in md.storage_data.items() if i.fqn == "layers.0.attention.wq.weight"}
    assert files == {"__0_0.distcp", "__1_0.distcp"}
    v = inspect_checkpoint(d)
    assert v.kind is Kind.TRAINING, v.reason
    assert v.details == {"ranks": 2, "tensors": TRAINED, "layout": "flat", "extras": 10}

    gone = copy("2ranks")
    (gone / "__1_0.distcp").unlink()
    v = inspect_checkpoint(gone)
    assert v.kind is None and v.reason.endswith("refers to missing data file __1_0.distcp")
    stray = copy("2ranks")
    (stray / "__1_0.distcp").unlink()
    shutil.copy(d / "__1_0.distcp", stray / "__2_0.distcp")  # a third rank's file, not referenced
    assert inspect_checkpoint(stray).kind is None


# --- the refusals, in the other layouts ---------------------------------------------------------

def test_torchtitan_model_only_save_is_not_resumable(tmp_path):
    """torchtitan's last_save_model_only: flat weights, no optimizer."""
    model = titan_model()
    _save({n: t.detach() for n, t in model.state_dict().items()}, tmp_path / "m")
    rejected(tmp_path / "m", ".metadata: no optimizer state (no optim.state.<param>.exp_avg / exp_avg_sq "
                             "tensors); weights without optimizer state cannot resume training")


def test_torchtitan_lora_and_full_trained_together_is_refused(tmp_path):
    model = titan_model(lora=True)
    model.output.weight.requires_grad_(True)
    _save(titan_state(model, adam_step(model)), tmp_path / "m")
    rejected(tmp_path / "m", ".metadata: mixes LoRA tensors (layers.0.attention.wq.lora_A.weight) with "
                             "full-weight tensors (output.weight) among the trainable tensors; a training "
                             "checkpoint is all LoRA or none")


def test_optimizer_state_without_its_weight_is_refused(copy):
    d = copy(("torchtitan", False))

    def drop_weight(md):
        key = "output.weight"
        del md.state_dict_metadata[key], md.planner_data[key]
        for index in [i for i in md.storage_data if i.fqn == key]:
            del md.storage_data[index]

    edit_metadata(d, drop_weight)
    rejected(d, ".metadata: optimizer state for output.weight (optimizer.state) but no weight tensor of "
                "that name at the top level; the weights of every trained parameter must sit under one "
                "prefix (model.<param>) or at the top level, named as in the optimizer state")


def test_index_keyed_optimizer_state_is_refused(tmp_path):
    """optimizer.state_dict() keys state by parameter index: nothing ties it to a weight."""
    model = titan_model()
    optim = adam_step(model)
    _save({"model": dict(model.state_dict()), "optimizer": optim.state_dict()}, tmp_path / "m")
    rejected(tmp_path / "m", ".metadata: optimizer state is keyed by parameter index (optimizer.state.0), "
                             "not by parameter name; save it with get_optimizer_state_dict or "
                             "get_state_dict so that it names its weights")


def test_two_optimizer_sections_are_refused(tmp_path):
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    model = titan_model()
    osd = get_optimizer_state_dict(model, adam_step(model))
    _save({"model": dict(model.state_dict()), "optim": osd, "optimizer": osd}, tmp_path / "m")
    rejected(tmp_path / "m", ".metadata: two optimizer state dicts (optim.state and optimizer.state); a "
                             "training checkpoint holds the state of one optimizer")


def test_moment_with_another_shape_than_its_weight_is_refused(copy):
    d = copy(("get_state_dict", False))
    key = "optimizer.state.output.weight.exp_avg"

    def reshape(md):  # same bytes, flattened to 1-D: only the shape disagrees with the weight
        import torch
        from torch.distributed.checkpoint.metadata import MetadataIndex

        entry = md.state_dict_metadata[key]
        entry.size = torch.Size([16 * HIDDEN])
        entry.chunks[0].sizes, entry.chunks[0].offsets = torch.Size([16 * HIDDEN]), torch.Size([0])
        for index in [i for i in md.storage_data if i.fqn == key]:
            md.storage_data[MetadataIndex(key, torch.Size([0]), index.index)] = md.storage_data.pop(index)

    edit_metadata(d, reshape)
    rejected(d, f".metadata: {key} has shape [{16 * HIDDEN}] but its weight model.output.weight is "
                f"[16, {HIDDEN}]")


def test_unsafe_pickle_is_refused_in_the_torchtitan_layout_too(copy, tmp_path):
    from .test_dcp_rejections import OpenFile

    d = copy(("torchtitan", True))
    marker = tmp_path / "pwned"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        edit_metadata(d, lambda md: setattr(md.storage_meta, "save_id", OpenFile(marker)))
    v = inspect_checkpoint(d)
    assert v.kind is None and "io.open, which is not a DCP metadata class" in v.reason
    assert not marker.exists()
