"""Checkpoint rules, as pure functions: what a kind allows, and what kind a save must produce.

This encodes the save-to-kind table of docs/checkpoints.md (every row is a contract):

    how it was saved                      LoRA run                   full-parameter run
    resumable only (DCP)                  TRAINING_LORA              TRAINING
    sampler, checkpoint_type="base"       INFERENCE_LORA             INFERENCE_BASE
    sampler, checkpoint_type="delta"      INFERENCE_LORA (*)         INFERENCE_ARC_V2
    sampler, first of a weight-sync chain INFERENCE_LORA             INFERENCE_BASE (a base)
    sampler, later in the chain           INFERENCE_LORA             INFERENCE_ARC_V2 (deltas)
    sampler, checkpoint_type="merged_base" INFERENCE_BASE (folded)   refused

    (*) a LoRA sampler save always stores the full adapter, so "delta" changes nothing.

Only INFERENCE_BASE and INFERENCE_LORA are promotable; only TRAINING and TRAINING_LORA are
resumable. The control plane decides a row's kind with the inspector (never the writer's
label); these rules say what that kind allows, and what the trainer was expected to write.
No torch, no I/O: the control plane, the client and the contract suite all import this.
"""

from __future__ import annotations

import re
from typing import Literal

from fwemu.emulator.inspect.kinds import Kind

MODEL_ID_RE = re.compile(r"^[a-z0-9-]{1,63}$")
"""Valid output model ids. Match with `MODEL_ID_RE.fullmatch(s)`: `$` also matches before a
trailing newline, so `.match("my-model\\n")` would wrongly succeed."""

_CHECKPOINT_TYPES = ("base", "delta", "merged_base")
_RESUMABLE = frozenset({Kind.TRAINING, Kind.TRAINING_LORA})
_PROMOTABLE = frozenset({Kind.INFERENCE_BASE, Kind.INFERENCE_LORA})
_MODEL_KINDS = {Kind.INFERENCE_BASE: "HF_BASE_MODEL", Kind.INFERENCE_LORA: "HF_PEFT_ADDON"}


def is_resumable(kind: Kind) -> bool:
    """True for TRAINING and TRAINING_LORA: DCP weights with optimizer state."""
    return Kind.parse(kind) in _RESUMABLE


def is_promotable(kind: Kind) -> bool:
    """True exactly for INFERENCE_BASE and INFERENCE_LORA (invariant K2)."""
    return Kind.parse(kind) in _PROMOTABLE


def promotion_refusal(kind: Kind | None) -> str | None:
    """None when `kind` is promotable; else a message naming the kind and what to do instead."""
    if kind is None:
        return ("the checkpoint was rejected by the inspector and has no kind, so it cannot be "
                "promoted; save it again with save_weights_for_sampler")
    kind = Kind.parse(kind)
    if kind in _PROMOTABLE:
        return None
    if kind is Kind.INFERENCE_ARC_V2:
        return (f"checkpoint type {kind.wire} cannot be promoted: an ARC_V2 delta only holds the "
                "difference against an earlier base; save the weights with "
                'checkpoint_type="base" and promote that checkpoint')
    what = "LoRA adapter" if kind is Kind.TRAINING_LORA else "model"
    return (f"checkpoint type {kind.wire} cannot be promoted: it is a resumable training state "
            f"(DCP weights + optimizer state); save the {what} with save_weights_for_sampler "
            '(checkpoint_type="base") and promote that checkpoint')


def _normalize_checkpoint_type(checkpoint_type: str | None) -> str | None:
    """Lower-case and validate a sampler checkpoint type (as the SDK does); None stays None."""
    if checkpoint_type is None:
        return None
    if not isinstance(checkpoint_type, str) or checkpoint_type.lower() not in _CHECKPOINT_TYPES:
        raise ValueError(f"checkpoint_type must be one of {_CHECKPOINT_TYPES} (got {checkpoint_type!r})")
    return checkpoint_type.lower()


def expected_kind(*, save: Literal["state", "sampler"], lora: bool,
                  checkpoint_type: str | None = None) -> Kind:
    """The kind a save must produce, per the table in the module docstring.

    `save="state"` is a resumable DCP save (it takes no checkpoint_type); `save="sampler"` is
    save_weights_for_sampler, whose checkpoint_type defaults to "base". Raises ValueError for
    merged_base on a full-parameter run, an unknown checkpoint_type, or an unknown `save`.
    """
    if save == "state":
        if checkpoint_type is not None:
            raise ValueError("checkpoint_type applies to sampler saves only, not to a state save")
        return Kind.TRAINING_LORA if lora else Kind.TRAINING
    if save != "sampler":
        raise ValueError(f"save must be 'state' or 'sampler' (got {save!r})")
    ctype = _normalize_checkpoint_type(checkpoint_type) or "base"
    if lora:
        return Kind.INFERENCE_BASE if ctype == "merged_base" else Kind.INFERENCE_LORA
    if ctype == "merged_base":
        raise ValueError('checkpoint_type="merged_base" folds a LoRA adapter into the base; '
                         "a full-parameter run has no adapter to fold")
    return Kind.INFERENCE_ARC_V2 if ctype == "delta" else Kind.INFERENCE_BASE


def next_checkpoint_type(lora_rank: int, base_saved: bool, explicit: str | None = None) -> str:
    """The checkpoint_type of the next sampler save in a weight-sync chain, as the SDK decides.

    Mirrors fireworks.training.sdk._snapshot_chain.resolve_next_checkpoint_type with the
    default first type "base": an explicit type wins (validated, lower-cased); a LoRA run
    (lora_rank > 0) always saves "base" (adapters are standalone); a full-parameter run saves
    "base" until a base exists, then "delta".
    """
    override = _normalize_checkpoint_type(explicit)
    if override is not None:
        return override
    if lora_rank > 0:
        return "base"
    return "delta" if base_saved else "base"


def model_kind(kind: Kind) -> str:
    """The model kind a promotion creates: HF_BASE_MODEL or HF_PEFT_ADDON; ValueError otherwise."""
    kind = Kind.parse(kind)
    try:
        return _MODEL_KINDS[kind]
    except KeyError:
        raise ValueError(promotion_refusal(kind)) from None
