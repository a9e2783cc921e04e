"""Which entries of a DCP checkpoint are weights, optimizer state and extras (names and shapes only).

Real trainers save resumable state under different top-level names: the emulator's own
`{"model": ..., "optim": ...}`, `get_state_dict` output under other names (`optimizer`,
`model_state`), torchtitan's flat model keys beside `optimizer`, `lr_scheduler`, `dataloader`
and `train_state`, and any of these with step counters, RNG tensors or scheduler dicts beside
them. The rule (docs/checkpoint-layouts.md) needs only the `.metadata`, never the data:

1. The optimizer section is the one top-level entry shaped like a torch optimizer state dict:
   per-parameter state `<section>.state.<param>.<name>` (nested, or flattened by
   `flatten_optimizer_state_dict`). None, or only non-tensor / `step` state: not resumable.
2. The trained parameters are those with a tensor moment there (any state tensor but `step`:
   Adam's exp_avg / exp_avg_sq, SGD's momentum_buffer).
3. The weights are the tensors named exactly like the trained parameters, either at the top
   level (flat, torchtitan) or under one other top-level section (`model.<param>`). All trained
   parameters must be found under the same prefix; optimizer state without its weight is refused.
4. Other tensors under that prefix are frozen (kept, never resumed into the optimizer); every
   remaining entry is an extra (scheduler, data loader, step counters, RNG state).

Pure Python on the inspector's checked metadata: no torch, no I/O. Shared by the inspector
(kind) and the trainer's loader (which flat key feeds which parameter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .dcp_metadata import DcpMetadata
from .names import lora_segment, shown

STEP = "step"
ELEMENTWISE_MOMENTS = ("exp_avg", "exp_avg_sq")   # must have the shape of their weight


class LayoutError(ValueError):
    """The metadata is not a resumable training state; `hint_save` says a save_state hint fits."""

    def __init__(self, message: str, hint_save: bool = False):
        super().__init__(message)
        self.hint_save = hint_save


@dataclass(frozen=True)
class Tensor:
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Layout:
    """The roles of a checkpoint's entries; keys are DCP flat keys (`model.lm_head.weight`)."""

    optimizer: str                          # top-level name of the optimizer section
    prefix: str | None                      # top-level section holding the weights; None = flat
    weights: dict[str, str]                 # trained parameter name -> flat key of its weight
    state: dict[str, dict[str, str]]        # parameter name -> {state name: flat key}, tensors only
    frozen: tuple[str, ...]                 # flat keys of untrained tensors beside the weights
    extras: tuple[str, ...]                 # flat keys of everything else outside the optimizer
    group: dict[str, str]                   # first param group's field -> flat key (nested form only)
    tensors: dict[str, Tensor]              # flat key -> shape and dtype, for every tensor entry

    @property
    def style(self) -> str:
        return "flat" if self.prefix is None else f"{self.prefix}+{self.optimizer}"

    @property
    def lora(self) -> bool:
        return any(lora_segment(p) for p in self.weights)

    def weight_key(self, param: str) -> str:
        return param if self.prefix is None else f"{self.prefix}.{param}"


def optimizer_param_state(path: tuple[str | int, ...]) -> tuple[str, str] | None:
    """(parameter name, state name) of a `<section>.state...` path, else None.

    get_optimizer_state_dict nests (section, 'state', param, 'exp_avg'); with
    flatten_optimizer_state_dict the path is (section, 'state.<param>.exp_avg').
    """
    if len(path) == 4 and path[1] == "state":
        return str(path[2]), str(path[3])
    if len(path) == 2 and isinstance(path[1], str) and path[1].startswith("state."):
        param, _, name = path[1][len("state."):].rpartition(".")
        if param and name:
            return param, name
    return None


def layout_of(md: DcpMetadata) -> Layout:
    """The roles of every entry of checked DCP metadata, or LayoutError naming the first problem."""
    tensors = {k: Tensor(e.size, e.dtype.name) for k, e in md.items.items() if e is not None}
    optimizer = _optimizer_section(md.paths)
    state: dict[str, dict[str, str]] = {}
    for key, path in md.paths.items():
        if path[0] == optimizer and key in tensors:
            ps = optimizer_param_state(path)
            if ps:
                state.setdefault(ps[0], {})[ps[1]] = key
    trained = sorted(p for p, s in state.items() if any(name != STEP for name in s))
    outside = [k for k, path in md.paths.items() if path[0] != optimizer]
    if not any(k in tensors for k in outside):
        raise LayoutError("no model tensors (no tensor outside the optimizer state); this is not "
                          "a training checkpoint", hint_save=True)
    if not trained:
        raise LayoutError(f"no optimizer state (no {optimizer or 'optim'}.state.<param>.exp_avg / "
                          "exp_avg_sq tensors); weights without optimizer state cannot resume "
                          "training", hint_save=True)
    prefix = _weights_prefix(md.paths, tensors, optimizer, trained)
    weights = {p: (p if prefix is None else f"{prefix}.{p}") for p in trained}
    for p in trained:
        w = tensors[weights[p]]
        for name in ELEMENTWISE_MOMENTS:
            m = tensors.get(state[p].get(name, ""))
            if m is not None and m.shape != w.shape:
                raise LayoutError(f"{shown(state[p][name])} has shape {list(m.shape)} but its weight "
                                  f"{shown(weights[p])} is {list(w.shape)}")
    lora = [p for p in trained if lora_segment(p)]
    full = [p for p in trained if not lora_segment(p)]
    if lora and full:
        raise LayoutError(f"mixes LoRA tensors ({shown(lora[0])}) with full-weight tensors "
                          f"({shown(full[0])}) among the trainable tensors; a training checkpoint "
                          "is all LoRA or none")
    used = set(weights.values())
    beside = [k for k in outside if k in tensors and k not in used
              and (len(md.paths[k]) == 1 if prefix is None else md.paths[k][0] == prefix)]
    used.update(beside)
    extras = [k for k in outside if k not in used]
    group = {str(path[3]): key for key, path in md.paths.items()
             if path[0] == optimizer and len(path) == 4 and path[1] == "param_groups" and path[2] == 0}
    return Layout(optimizer, prefix, weights, {p: state[p] for p in trained}, tuple(beside),
                  tuple(extras), group, tensors)


def _optimizer_section(paths: Mapping[str, tuple[str | int, ...]]) -> str | None:
    """The one top-level entry holding per-parameter optimizer state; None when there is none."""
    sections = sorted({str(path[0]) for path in paths.values() if optimizer_param_state(path)})
    if len(sections) > 1:
        raise LayoutError(f"two optimizer state dicts ({sections[0]}.state and {sections[1]}.state); "
                          "a training checkpoint holds the state of one optimizer")
    return sections[0] if sections else None


def _weights_prefix(paths, tensors, optimizer: str, trained: list[str]) -> str | None:
    """The top-level section (or None: flat) under which every trained parameter has its weight."""
    found: dict[str | None, set[str]] = {}
    for key, path in paths.items():
        if path[0] == optimizer or key not in tensors:
            continue
        prefix, name = (None, key) if len(path) == 1 else (str(path[0]), key[len(str(path[0])) + 1:])
        found.setdefault(prefix, set()).add(name)
    wanted = set(trained)
    best = max(found, key=lambda p: (len(wanted & found[p]), p is None, p or ""))
    missing = sorted(wanted - found[best])
    if missing:
        where = "at the top level" if best is None else f"as {best}.{missing[0]}"
        if missing[0].isdigit():
            raise LayoutError(f"optimizer state is keyed by parameter index ({optimizer}.state."
                              f"{missing[0]}), not by parameter name; save it with "
                              "get_optimizer_state_dict or get_state_dict so that it names its weights")
        raise LayoutError(f"optimizer state for {shown(missing[0])} ({optimizer}.state) but no weight "
                          f"tensor of that name {where}; the weights of every trained parameter must "
                          "sit under one prefix (model.<param>) or at the top level, named as in the "
                          "optimizer state")
    return best
