"""emulator.rules: the save-to-kind table of docs/checkpoints.md, row by row, and the SDK chain."""

from __future__ import annotations

import pytest

from fwemu.emulator import rules
from fwemu.emulator.inspect import Kind

K = Kind


@pytest.mark.parametrize("kind,resumable,promotable,model_kind", [
    (K.TRAINING, True, False, None),
    (K.TRAINING_LORA, True, False, None),
    (K.INFERENCE_BASE, False, True, "HF_BASE_MODEL"),
    (K.INFERENCE_LORA, False, True, "HF_PEFT_ADDON"),
    (K.INFERENCE_ARC_V2, False, False, None),
])
def test_kind_table(kind, resumable, promotable, model_kind):
    assert rules.is_resumable(kind) is resumable
    assert rules.is_promotable(kind) is promotable
    assert rules.is_promotable(kind.wire) is promotable  # both spellings
    if promotable:
        assert rules.promotion_refusal(kind) is None
        assert rules.model_kind(kind) == model_kind
    else:
        refusal = rules.promotion_refusal(kind)
        assert kind.wire in refusal and 'checkpoint_type="base"' in refusal
        with pytest.raises(ValueError, match=kind.wire):
            rules.model_kind(kind)


def test_refusals_say_what_to_do():
    assert "only holds the difference against an earlier base" in rules.promotion_refusal(K.INFERENCE_ARC_V2)
    assert "save the LoRA adapter with save_weights_for_sampler" in rules.promotion_refusal(K.TRAINING_LORA)
    assert "save the model with save_weights_for_sampler" in rules.promotion_refusal(K.TRAINING)
    assert "rejected by the inspector" in rules.promotion_refusal(None)


# (save, lora, checkpoint_type) -> expected kind; one row per cell of the docs/checkpoints.md table
SAVE_TABLE = [
    ("state", True, None, K.TRAINING_LORA),
    ("state", False, None, K.TRAINING),
    ("sampler", True, "base", K.INFERENCE_LORA),
    ("sampler", False, "base", K.INFERENCE_BASE),
    ("sampler", True, "delta", K.INFERENCE_LORA),       # LoRA always stores the full adapter
    ("sampler", False, "delta", K.INFERENCE_ARC_V2),
    ("sampler", True, "merged_base", K.INFERENCE_BASE),  # adapter folded in
    ("sampler", True, None, K.INFERENCE_LORA),           # no type: base
    ("sampler", False, None, K.INFERENCE_BASE),
    ("sampler", False, "BASE", K.INFERENCE_BASE),        # case-insensitive, as the SDK
]


@pytest.mark.parametrize("save,lora,ctype,kind", SAVE_TABLE)
def test_expected_kind_table(save, lora, ctype, kind):
    assert rules.expected_kind(save=save, lora=lora, checkpoint_type=ctype) is kind


def test_expected_kind_refusals():
    with pytest.raises(ValueError, match="full-parameter run has no adapter to fold"):
        rules.expected_kind(save="sampler", lora=False, checkpoint_type="merged_base")
    with pytest.raises(ValueError, match="checkpoint_type must be one of"):
        rules.expected_kind(save="sampler", lora=True, checkpoint_type="incremental")
    with pytest.raises(ValueError, match="sampler saves only"):
        rules.expected_kind(save="state", lora=False, checkpoint_type="base")
    with pytest.raises(ValueError, match="save must be"):
        rules.expected_kind(save="dcp", lora=False)  # type: ignore[arg-type]


def test_weight_sync_chain_full_parameter():
    """First save of the chain is a promotable base, every later one a non-promotable delta."""
    kinds, base_saved = [], False
    for _ in range(4):
        ctype = rules.next_checkpoint_type(lora_rank=0, base_saved=base_saved)
        kinds.append(rules.expected_kind(save="sampler", lora=False, checkpoint_type=ctype))
        base_saved = True
    assert kinds == [K.INFERENCE_BASE] + [K.INFERENCE_ARC_V2] * 3
    assert [rules.is_promotable(k) for k in kinds] == [True, False, False, False]


def test_weight_sync_chain_lora_is_always_promotable():
    for base_saved in (False, True):
        for explicit in (None, "base", "delta"):
            ctype = rules.next_checkpoint_type(lora_rank=8, base_saved=base_saved, explicit=explicit)
            kind = rules.expected_kind(save="sampler", lora=True, checkpoint_type=ctype)
            assert kind is K.INFERENCE_LORA and rules.is_promotable(kind)


@pytest.mark.parametrize("lora_rank,base_saved,explicit,expected", [
    (0, False, None, "base"),
    (0, True, None, "delta"),
    (16, False, None, "base"),
    (16, True, None, "base"),
    (0, True, "base", "base"),
    (0, False, "DELTA", "delta"),
    (16, True, "merged_base", "merged_base"),
    (-1, True, None, "delta"),
])
def test_next_checkpoint_type(lora_rank, base_saved, explicit, expected):
    assert rules.next_checkpoint_type(lora_rank, base_saved, explicit) == expected


@pytest.mark.real_sdk
def test_next_checkpoint_type_agrees_with_the_installed_sdk():
    from fireworks.training.sdk import _snapshot_chain as sdk  # dev dependency, installed in CI

    for lora_rank in (0, 4):
        for base_saved in (False, True):
            for explicit in (None, "base", "delta", "merged_base", "Delta"):
                ours = rules.next_checkpoint_type(lora_rank, base_saved, explicit)
                theirs = sdk.resolve_next_checkpoint_type(lora_rank=lora_rank, base_saved=base_saved,
                                                          first_checkpoint_type="base", explicit=explicit)
                assert ours == theirs
    with pytest.raises(ValueError):
        rules.next_checkpoint_type(0, False, "full")


@pytest.mark.parametrize("model_id,ok", [
    ("my-model", True), ("a", True), ("x" * 63, True), ("qwen3-8b-ft-2", True),
    ("", False), ("x" * 64, False), ("My-Model", False), ("my_model", False), ("a/b", False),
    ("my-model\n", False),
])
def test_model_id_re(model_id, ok):
    assert bool(rules.MODEL_ID_RE.fullmatch(model_id)) is ok
