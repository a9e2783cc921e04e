"""Every real artifact gets exactly its kind, with the documented details, from headers only."""

from __future__ import annotations

import pytest

from fwemu.emulator.inspect import Kind, Verdict, inspect_checkpoint

from .conftest import EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_artifact_has_its_kind(artifacts, name):
    v = inspect_checkpoint(artifacts[name])
    assert v.kind is EXPECTED[name], v.reason
    assert v.reason is None and v.file is None
    assert 0 < v.bytes_read < 64 * 1024  # headers and metadata only


def test_dcp_details(artifacts):
    assert inspect_checkpoint(artifacts["dcp"]).details == {"ranks": 1, "tensors": 6, "layout": "model+optim"}
    assert inspect_checkpoint(artifacts["dcp_lora"]).details == {"ranks": 1, "tensors": 8, "layout": "model+optim"}


def test_two_rank_dcp_has_two_data_files_and_two_ranks(artifacts):
    names = sorted(p.name for p in artifacts["dcp_2ranks"].iterdir())
    assert names == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert inspect_checkpoint(artifacts["dcp_2ranks"]).details["ranks"] == 2


def test_hf_details(artifacts):
    for name in ("hf", "hf_sharded"):
        assert inspect_checkpoint(artifacts[name]).details == {"model_type": "llama", "tensors": 17}


def test_peft_details(artifacts):
    d = inspect_checkpoint(artifacts["peft"]).details
    assert d == {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"],
                 "base_model_name_or_path": "accounts/fireworks/models/tiny-llama"}
    assert inspect_checkpoint(artifacts["peft_extras"]).details["target_modules"][-1] == "embed_tokens"


def test_peft_with_regex_target_modules_and_null_base(clone):
    import json

    d = clone("peft")
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg.update(target_modules=r".*\.(q|v)_proj", base_model_name_or_path=None)
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    v = inspect_checkpoint(d)
    assert v.kind is Kind.INFERENCE_LORA
    assert v.details["target_modules"] == r".*\.(q|v)_proj" and v.details["base_model_name_or_path"] is None


def test_arc_v2_details_name_the_base(artifacts):
    v = inspect_checkpoint(artifacts["arc_sharded"])
    assert v.details == {"model_type": "llama", "tensors": 17, "base_identity": "arc_sharded-base-step-1"}


def test_harmless_extras_are_ignored(clone):
    d = clone("hf")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "README.md"):
        (d / name).write_text("{}")
    assert inspect_checkpoint(d).kind is Kind.INFERENCE_BASE


def test_kind_spellings():
    assert Kind.INFERENCE_BASE.wire == "CHECKPOINT_TYPE_INFERENCE_BASE"
    assert Kind.parse("CHECKPOINT_TYPE_TRAINING_LORA") is Kind.TRAINING_LORA
    assert Kind.parse("INFERENCE_ARC_V2") is Kind.INFERENCE_ARC_V2
    assert Kind.parse(Kind.TRAINING) is Kind.TRAINING
    assert Kind.TRAINING == "TRAINING" and f"{Kind.TRAINING}" == "TRAINING"
    for bad in ("CHECKPOINT_TYPE_UNSPECIFIED", "inference_base", "", None):
        with pytest.raises(ValueError):
            Kind.parse(bad)


def test_verdict_is_frozen():
    v = Verdict(kind=None, reason="x: y", file="x")
    assert not v.ok and v.details == {} and v.bytes_read == 0
    with pytest.raises(AttributeError):
        v.kind = Kind.TRAINING  # type: ignore[misc]


def test_dcp_with_flattened_optimizer_state(tmp_path):
    """get_optimizer_state_dict(..., flatten_optimizer_state_dict=True) keys are 'state.<fqn>.<name>'."""
    import warnings

    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    model = torch.nn.Linear(4, 4)
    optim = torch.optim.AdamW(model.parameters())
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optim.step()
    osd = get_optimizer_state_dict(model, optim, options=StateDictOptions(flatten_optimizer_state_dict=True))
    assert "state.weight.exp_avg" in osd
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.save({"model": model.state_dict(), "optim": osd}, storage_writer=dcp.FileSystemWriter(str(tmp_path)))
    v = inspect_checkpoint(tmp_path)
    assert v.kind is Kind.TRAINING and v.details == {"ranks": 1, "tensors": 2, "layout": "model+optim"}
