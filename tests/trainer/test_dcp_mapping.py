"""The layout rule and the name mapping as pure functions, on hand-built checked metadata (no torch)."""

from __future__ import annotations

import pytest

from fwemu.emulator.inspect.dcp_layout import LayoutError, layout_of
from fwemu.emulator.inspect.dcp_metadata import DTYPES, DcpMetadata, TensorEntry
from fwemu.emulator.trainer.dcp_mapping import MappingError, map_checkpoint, torchtitan_to_hf

F32 = "float32"
STANDIN = {  # a two-tensor stand-in: HF names -> (shape, dtype)
    "model.embed_tokens.weight": ((8, 4), F32),
    "model.layers.0.self_attn.q_proj.weight": ((4, 4), F32),
}


def metadata(tensors: dict[tuple, tuple[int, ...]], others: tuple[tuple, ...] = ()) -> DcpMetadata:
    """DcpMetadata with a float32 tensor (one chunk) at each path of `tensors`, bytes at `others`."""
    items, paths = {}, {}
    for path, shape in tensors.items():
        key = ".".join(map(str, path))
        items[key] = TensorEntry(DTYPES[F32], shape, (((0,) * len(shape), shape),))
        paths[key] = path
    for path in others:
        key = ".".join(map(str, path))
        items[key], paths[key] = None, path
    return DcpMetadata(items, paths, ())


def with_adam(weights: dict[tuple, tuple[int, ...]], section: str, flat_state: bool, prefix_len: int):
    """`weights` plus Adam state under `section` for each (nested or flattened, like torch writes it)."""
    out = dict(weights)
    for path, shape in weights.items():
        param = ".".join(map(str, path[prefix_len:]))
        for name, s in (("exp_avg", shape), ("exp_avg_sq", shape), ("step", ())):
            out[(section, f"state.{param}.{name}") if flat_state else (section, "state", param, name)] = s
    return out


def titan(shape_q=(4, 4)):
    return metadata(with_adam({("tok_embeddings.weight",): (8, 4), ("layers.0.attention.wq.weight",): shape_q},
                              "optimizer", flat_state=True, prefix_len=0),
                    others=(("lr_scheduler", "last_epoch"), ("dataloader", "dp_rank_0")))


def ours():
    weights = {("model", n): shape for n, (shape, _) in STANDIN.items()}
    return metadata(with_adam(weights, "optim", flat_state=False, prefix_len=1),
                    others=(("optim", "param_groups", 0, "trainer_step"), ("optim", "param_groups", 0, "lr")))


@pytest.mark.parametrize("titan_name, hf", [
    ("tok_embeddings.weight", "model.embed_tokens.weight"),
    ("layers.3.attention.wk.weight", "model.layers.3.self_attn.k_proj.weight"),
    ("layers.0.attention.wq.lora_A.weight", "model.layers.0.self_attn.q_proj.lora_A.weight"),
    ("layers.1.feed_forward.w1.weight", "model.layers.1.mlp.gate_proj.weight"),
    ("layers.1.feed_forward.w2.weight", "model.layers.1.mlp.down_proj.weight"),
    ("layers.1.feed_forward.w3.weight", "model.layers.1.mlp.up_proj.weight"),
    ("layers.0.attention_norm.weight", "model.layers.0.input_layernorm.weight"),
    ("layers.0.ffn_norm.weight", "model.layers.0.post_attention_layernorm.weight"),
    ("norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
    ("model.norm.weight", None), ("normal.weight", None), ("layers.0.attention.wz.weight", None),
])
def test_torchtitan_names(titan_name, hf):
    assert torchtitan_to_hf(titan_name) == hf


def test_layout_roles_of_the_flat_layout():
    layout = layout_of(titan())
    assert layout.prefix is None and layout.optimizer == "optimizer" and layout.style == "flat"
    assert layout.weights == {"tok_embeddings.weight": "tok_embeddings.weight",
                              "layers.0.attention.wq.weight": "layers.0.attention.wq.weight"}
    assert layout.state["tok_embeddings.weight"]["exp_avg"] == "optimizer.state.tok_embeddings.weight.exp_avg"
    assert set(layout.extras) == {"lr_scheduler.last_epoch", "dataloader.dp_rank_0"}
    assert layout.group == {} and not layout.lora


def test_layout_roles_of_our_layout():
    layout = layout_of(ours())
    assert (layout.prefix, layout.optimizer, layout.style) == ("model", "optim", "model+optim")
    assert layout.group == {"trainer_step": "optim.param_groups.0.trainer_step", "lr": "optim.param_groups.0.lr"}
    assert layout.extras == () and layout.frozen == ()


def test_layout_step_only_state_is_no_optimizer_state():
    md = metadata({("w",): (2,), ("optimizer", "state", "w", "step"): ()})
    with pytest.raises(LayoutError, match="no optimizer state") as e:
        layout_of(md)
    assert e.value.hint_save


def test_mapping_of_our_layout_is_the_identity():
    plan = map_checkpoint(layout_of(ours()), STANDIN, lora_rank=0, optimizer=True)
    assert plan.naming == "hf"
    assert plan.weights == {n: f"model.{n}" for n in STANDIN}
    assert plan.state["model.embed_tokens.weight"] == {
        k: f"optim.state.model.embed_tokens.weight.{k}" for k in ("exp_avg", "exp_avg_sq", "step")}
    assert plan.group == {"lr": "optim.param_groups.0.lr", "trainer_step": "optim.param_groups.0.trainer_step"}


def test_mapping_of_torchtitan_renames_weights_and_optimizer_state():
    plan = map_checkpoint(layout_of(titan()), STANDIN, lora_rank=0, optimizer=True)
    assert plan.naming == "torchtitan"
    assert plan.weights == {"model.embed_tokens.weight": "tok_embeddings.weight",
                            "model.layers.0.self_attn.q_proj.weight": "layers.0.attention.wq.weight"}
    assert plan.state["model.layers.0.self_attn.q_proj.weight"]["exp_avg_sq"] == \
        "optimizer.state.layers.0.attention.wq.weight.exp_avg_sq"
    assert plan.group == {}


def test_mapping_names_the_first_shape_mismatch():
    with pytest.raises(MappingError) as e:
        map_checkpoint(layout_of(titan(shape_q=(2, 4))), STANDIN, lora_rank=0, optimizer=False)
    assert str(e.value) == ("tensor model.layers.0.self_attn.q_proj.weight (stored as layers.0.attention.wq.weight) "
                            "has shape [2, 4] but this model needs [4, 4] (a different model size)")


def test_mapping_names_missing_and_unexpected_tensors():
    wanted = {**STANDIN, "lm_head.weight": ((8, 4), F32)}
    with pytest.raises(MappingError) as e:
        map_checkpoint(layout_of(titan()), wanted, lora_rank=0, optimizer=False)
    assert str(e.value) == "does not match this model: missing ['lm_head.weight'], unexpected [] (different model size?)"
    fewer = {"model.embed_tokens.weight": STANDIN["model.embed_tokens.weight"]}
    with pytest.raises(MappingError, match=r"missing \[\], unexpected \['layers.0.attention.wq.weight'\]"):
        map_checkpoint(layout_of(titan()), fewer, lora_rank=0, optimizer=False)


def test_mapping_refuses_dtype_lora_and_missing_adam_state():
    with pytest.raises(MappingError, match=r"is torch.float32, expected torch.bfloat16"):
        map_checkpoint(layout_of(ours()), {n: (s, "bfloat16") for n, (s, _) in STANDIN.items()}, 0, False)
    with pytest.raises(MappingError, match=r"holds full model weights \(TRAINING\) but this trainer is a LoRA run \(rank 4\)"):
        map_checkpoint(layout_of(ours()), STANDIN, lora_rank=4, optimizer=False)
    weights = {("model", n): shape for n, (shape, _) in STANDIN.items()}
    no_step = {k: v for k, v in with_adam(weights, "optim", False, 1).items() if k[-1] != "step"}
    layout = layout_of(metadata(no_step))
    assert map_checkpoint(layout, STANDIN, 0, optimizer=False).state == {}
    with pytest.raises(MappingError) as e:
        map_checkpoint(layout, STANDIN, 0, optimizer=True)
    assert str(e.value) == ("has no optimizer state for optim.state.model.embed_tokens.weight.step (+1 more); "
                            "load it without the optimizer")
