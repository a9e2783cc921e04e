"""``TrainerModel``: the torch trainer behind one emulated training client (docs/internals.md).

One instance owns a stand-in LLaMA (full-parameter or LoRA), its Adam optimiser and the
gradients accumulated since the last ``optim_step``. The gateway calls it in request order;
every public method holds an instance lock, so concurrent callers are serialised.

Choices worth knowing:

* Base weights depend on the base model name (and the size) only, never on ``seed``: a base
  model is a fixed "pretrained" thing, so adapters, deltas and merged exports of any job refer
  to the same base weights. ``seed`` initialises the LoRA A matrices (a full run ignores it).
* The optimiser is ``torch.optim.Adam(decoupled_weight_decay=True)``, i.e. AdamW: the SDK
  documents ``weight_decay`` as decoupled; with ``weight_decay=0`` it is plain Adam.
  Hyper-parameters come with every ``optim_step`` and are written into the param group.
* Adam state exists from construction on (zero moments, ``step`` 0 - exactly what Adam's lazy
  init would create), so a DCP save before the first step still holds optimiser state and
  ``get_optimizer_state_dict`` never runs its "step with zero grads" initialisation.
  The trainer's own step counter lives in the param group as ``trainer_step``
  (DCP key ``optim.param_groups.0.trainer_step``).
* Losses are raw token sums; ``optim_step(grad_accumulation_normalization=...)`` divides the
  accumulated gradients by the loss tokens or sequences seen since the previous step.
* Parameters without a gradient at ``optim_step`` get a zero gradient, so every parameter's
  Adam ``step`` equals the trainer step.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import save_file
from torch.distributed.checkpoint import FileSystemWriter
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

from fwemu.client.tokenizer import PAD_ID

from . import dcp_load, dcp_mapping, losses
from .errors import TrainerUserError
from .lora import PEFT_PREFIX, apply_lora, merged_state_dict, peft_adapter_config, read_adapter, set_alpha
from .model_config import ModelSize, generation_config, hf_config, resolve_size, vocab_origin
from .tiny_llama import TinyLlamaForCausalLM, derive_seed

__all__ = ["TrainerModel", "TrainerUserError", "ModelSize"]

ENV_DEVICE = "FWEMU_DEVICE"
CHECKPOINT_TYPES = ("base", "delta", "merged_base")
GRAD_NORMALIZATIONS = ("none", "num_loss_tokens", "num_sequences")
STEP_KEY = "trainer_step"
# Padded tokens per micro-batch: bounds the [B, T, vocab] logits of one forward pass.
MICRO_BATCH_TOKENS = 16384


def pick_device(device: str | torch.device | None) -> torch.device:
    """Explicit argument, else ``FWEMU_DEVICE``, else CUDA when present, else CPU."""
    choice = device if device is not None else (os.environ.get(ENV_DEVICE) or None)
    if choice is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(choice)
    except (RuntimeError, TypeError) as exc:
        raise TrainerUserError(f"unknown device {choice!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainerUserError(f"device {choice!r} requested but CUDA is not available")
    return dev


def _configure_determinism(device: torch.device) -> None:
    # Process-wide by nature. warn_only: an op without a deterministic kernel warns instead of
    # failing a user's request. cuBLAS needs its workspace setting before its first use.
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


def _sdpa_context(device: torch.device):
    """On CUDA use the math attention kernel: flash/efficient backward passes are not deterministic."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([SDPBackend.MATH])


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous()


def _float(params: Mapping, key: str, default: float, lo: float, hi: float | None = None, hi_open: bool = False) -> float:
    value = params.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TrainerUserError(f"adam_params.{key} must be a number, got {value!r}")
    value = float(value)
    ok = value == value and value >= lo and (hi is None or (value < hi if hi_open else value <= hi))
    if not ok:
        bound = f"[{lo}, {hi}{')' if hi_open else ']'}" if hi is not None else f">= {lo}"
        raise TrainerUserError(f"adam_params.{key}={value} is out of range ({bound})")
    return value


def check_settings(base_model: str, lora_rank: int, lora_alpha: float) -> None:
    """TrainerUserError for a bad base model name, LoRA rank or alpha (shared with rank_group)."""
    if not isinstance(base_model, str) or not base_model.strip():
        raise TrainerUserError("base_model must be a non-empty model name, e.g. accounts/fireworks/models/qwen3-8b")
    if isinstance(lora_rank, bool) or not isinstance(lora_rank, int) or lora_rank < 0:
        raise TrainerUserError(f"lora_rank must be a non-negative int (0 = full-parameter), got {lora_rank!r}")
    if lora_rank and (isinstance(lora_alpha, bool) or not isinstance(lora_alpha, (int, float)) or lora_alpha <= 0):
        raise TrainerUserError(f"lora_alpha must be positive, got {lora_alpha!r}")


class TrainerModel:
    """See the module docstring and docs/internals.md ("Gateway -> trainer")."""

    def __init__(self, base_model: str, lora_rank: int = 0, lora_alpha: int = 32, seed: int = 0,
                 device: str | None = None, size: ModelSize | None = None) -> None:
        check_settings(base_model, lora_rank, lora_alpha)
        self.base_model = base_model
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha
        self.seed = seed
        self.model_id: str | None = None  # set by the gateway; echoed by info()
        try:
            self.size = resolve_size(size, base_model)
        except ValueError as exc:
            raise TrainerUserError(str(exc)) from None
        self.device = pick_device(device)
        _configure_determinism(self.device)
        self._lock = threading.RLock()
        self.grad_epoch = 0  # +1 each time accumulated gradients are dropped (the dashboard's step metrics)

        self.model = TinyLlamaForCausalLM.create(self.size, derive_seed("fwemu/base", base_model), self.device)
        if lora_rank:
            apply_lora(self.model, lora_rank, float(lora_alpha), derive_seed("fwemu/lora", base_model, seed))
        self._shard()
        self._trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(
            [p for _, p in self._trainable], lr=0.0, betas=(0.9, 0.95), eps=1e-12,
            weight_decay=0.0, decoupled_weight_decay=True)
        self._reset_optimizer()

    # ------------------------------------------------------------------ hooks (sharded.py overrides them)

    no_dist = True  # DCP without a process group: this process holds every tensor

    def _shard(self) -> None:
        """Called once the model is built, before the optimiser: one process keeps it whole."""

    def _total_norm(self, grads: list[torch.Tensor]) -> torch.Tensor:
        return torch.nn.utils.get_total_norm(grads, norm_type=2.0)

    def _entry_like(self, t: torch.Tensor) -> torch.Tensor:
        """A destination tensor for a DCP read of ``t``'s value."""
        return torch.empty_like(t, device="cpu")

    def _export_module(self) -> torch.nn.Module | None:
        """The module whose full weights a sampler export writes (None: this process writes nothing)."""
        return self.model

    # ------------------------------------------------------------------ properties

    @property
    def is_lora(self) -> bool:
        return self.lora_rank > 0

    @property
    def step(self) -> int:
        """Completed ``optim_step`` calls (restored by ``load_state(optimizer=True)``)."""
        return self._step

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """HF-named trainable tensors (all weights, or only the adapters), sharing storage."""
        return {n: p.detach() for n, p in self._trainable}

    # ------------------------------------------------------------------ optimiser state

    def _reset_optimizer(self) -> None:
        """Fresh Adam state, materialised now (see the module docstring)."""
        self.optimizer.state.clear()
        for _, p in self._trainable:
            self.optimizer.state[p] = {
                "step": torch.tensor(0.0, dtype=torch.float32),
                "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
            }
        self._step = 0
        self.optimizer.param_groups[0][STEP_KEY] = 0
        self._clear_grads()

    def _clear_grads(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.grad_epoch += 1
        self._acc_tokens = 0
        self._acc_sequences = 0

    # ------------------------------------------------------------------ forward passes

    def _run(self, data: Sequence[Mapping], loss_fn: str, loss_fn_config: Mapping | None, backward: bool) -> dict:
        prepared = losses.prepare(data, loss_fn, loss_fn_config, self.size.vocab_size,
                                  self.size.max_position_embeddings,
                                  vocab_note=vocab_origin(self.base_model, self.size.vocab_size))
        results = []
        grad = torch.enable_grad() if backward else torch.no_grad()
        with grad, _sdpa_context(self.device):
            for batch in self._micro_batches(prepared):
                result = losses.compute(loss_fn, self._target_logprobs(batch), batch)
                if backward:
                    result.loss.backward()
                results.append(result)
        merged = losses.merge(results)
        if backward:
            self._acc_tokens += merged.loss_tokens
            self._acc_sequences += merged.loss_sequences
        return {"loss_fn_output_type": losses.LOSS_FN_OUTPUT_TYPE,
                "loss_fn_outputs": merged.outputs, "metrics": merged.metrics}

    @staticmethod
    def _micro_batches(prepared: list) -> list[list]:
        """Consecutive datums grouped so that (count x longest) stays under MICRO_BATCH_TOKENS."""
        batches: list[list] = []
        cur: list = []
        longest = 0
        for d in prepared:
            n = len(d.tokens)
            if cur and max(longest, n) * (len(cur) + 1) > MICRO_BATCH_TOKENS:
                batches.append(cur)
                cur, longest = [], 0
            cur.append(d)
            longest = max(longest, n)
        if cur:
            batches.append(cur)
        return batches

    def _target_logprobs(self, batch: list) -> list[torch.Tensor]:
        """Log-probabilities of each datum's targets, shaped like its ``target_tokens``."""
        width = max(len(d.tokens) for d in batch)
        ids = torch.full((len(batch), width), PAD_ID, dtype=torch.int64)
        for i, d in enumerate(batch):
            ids[i, : len(d.tokens)] = torch.tensor(d.tokens, dtype=torch.int64)
        logits = self.model(ids.to(self.device))
        logp = torch.log_softmax(logits.float(), dim=-1)
        out = []
        for i, d in enumerate(batch):
            n = len(d.tokens)
            tgt = d.targets.to(self.device)
            index = tgt[:, None] if tgt.dim() == 1 else tgt
            lp = logp[i, :n].gather(-1, index)
            out.append(lp[:, 0] if tgt.dim() == 1 else lp)
        return out

    def forward_backward(self, data: list[dict], loss_fn: str, loss_fn_config: dict | None = None) -> dict:
        """Wire ForwardBackwardOutput; gradients add to those of earlier calls until ``optim_step``."""
        with self._lock:
            return self._run(data, loss_fn, loss_fn_config, backward=True)

    def forward(self, data: list[dict], loss_fn: str, loss_fn_config: dict | None = None) -> dict:
        """Same output as ``forward_backward`` without touching gradients."""
        with self._lock:
            return self._run(data, loss_fn, loss_fn_config, backward=False)

    # ------------------------------------------------------------------ optimiser step

    def optim_step(self, adam_params: dict, grad_accumulation_normalization: str | None = None) -> dict:
        """One AdamW step on the accumulated gradients; returns ``{"metrics": {name:reduction: value}}``.

        Order: normalise (tokens / sequences) -> global grad norm -> clip (``grad_clip_norm`` > 0)
        -> step -> zero grads. ``grad_norm:mean`` is the norm before clipping.
        """
        if not isinstance(adam_params, Mapping):
            raise TrainerUserError("adam_params must be an object")
        lr = _float(adam_params, "learning_rate", 1e-4, 0.0)
        beta1 = _float(adam_params, "beta1", 0.9, 0.0, 1.0, hi_open=True)
        beta2 = _float(adam_params, "beta2", 0.95, 0.0, 1.0, hi_open=True)
        eps = _float(adam_params, "eps", 1e-12, 0.0)
        weight_decay = _float(adam_params, "weight_decay", 0.0, 0.0)
        clip = _float(adam_params, "grad_clip_norm", 0.0, 0.0)
        norm_mode = "none" if grad_accumulation_normalization is None else str(grad_accumulation_normalization).lower()
        if norm_mode not in GRAD_NORMALIZATIONS:
            raise TrainerUserError(f"grad_accumulation_normalization {grad_accumulation_normalization!r} is not one of "
                                   f"{', '.join(GRAD_NORMALIZATIONS)}")
        with self._lock, torch.no_grad():
            params = [p for _, p in self._trainable]
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            divisor = {"none": 0, "num_loss_tokens": self._acc_tokens, "num_sequences": self._acc_sequences}[norm_mode]
            if divisor > 0:
                for p in params:
                    p.grad.div_(divisor)
            grad_norm = self._total_norm([p.grad for p in params])
            if not torch.isfinite(grad_norm):
                self._clear_grads()
                raise TrainerUserError("gradient norm is not finite; the step was skipped and the gradients "
                                       "dropped (lower the learning rate or check the loss inputs)")
            if clip > 0:
                torch.nn.utils.clip_grads_with_norm_(params, clip, grad_norm)
            group = self.optimizer.param_groups[0]
            group.update(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
            self.optimizer.step()
            tokens = self._acc_tokens
            self._clear_grads()
            self._step += 1
            group[STEP_KEY] = self._step
            return {"metrics": {
                "grad_norm:mean": float(grad_norm),
                "learning_rate:mean": lr,
                "loss_tokens:sum": float(tokens),
                "step:max": float(self._step),
            }}

    # ------------------------------------------------------------------ DCP

    def save_state(self, dest: Path) -> None:
        """Resumable DCP checkpoint: ``{"model": trainable tensors, "optim": FQN-keyed Adam state}``.

        Flattened keys: ``model.<hf name>``, ``optim.state.<hf name>.exp_avg|exp_avg_sq|step``,
        ``optim.param_groups.0.<lr|betas|...|trainer_step|params>``; files ``.metadata`` and
        ``__0_0.distcp``. Single process, no process group (``no_dist``); a sharded trainer
        (sharded.py) writes one ``__<rank>_0.distcp`` per rank through its process group.
        """
        dest = Path(dest)
        with self._lock:
            dest.mkdir(parents=True, exist_ok=True)
            state = {"model": self.trainable_state_dict(),
                     "optim": get_optimizer_state_dict(self.model, self.optimizer)}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dcp.save(state, storage_writer=FileSystemWriter(dest), no_dist=self.no_dist)

    def load_state(self, src: Path, optimizer: bool) -> None:
        """Restore a resumable DCP checkpoint (weights; Adam state and step if ``optimizer``).

        Any layout the inspector accepts loads when names and shapes match (dcp_mapping): the
        emulator's own, ``get_state_dict`` output under other section names, torchtitan's flat
        keys. A save_state checkpoint restores bit for bit. With ``optimizer=False`` the
        optimiser restarts: zero moments, step 0. A LoRA/full, name or shape mismatch is a
        TrainerUserError naming the first difference, and leaves this model untouched.

        Security: torch's DCP reader unpickles ``.metadata`` with plain pickle. Only call this on
        checkpoints the emulator itself wrote, or that ``emulator.inspect`` accepted (its
        restricted unpickler runs first) - the gateway guarantees this. Non-tensor entries are
        read with the weights-only unpickler (dcp_load.SafeBytesPlanner).
        """
        src = Path(src)
        with self._lock:
            if not (src / ".metadata").is_file():
                raise TrainerUserError(f"no DCP checkpoint at {src.name!r} (no .metadata file)")
            mine = self.trainable_state_dict()
            wanted = {n: (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in mine.items()}
            try:
                plan = dcp_mapping.map_checkpoint(dcp_load.read_layout(src), wanted, self.lora_rank, optimizer)
            except dcp_load.LoadFailed as exc:
                raise TrainerUserError(f"checkpoint {src.name!r}: {exc}") from None
            except dcp_mapping.MappingError as exc:
                raise TrainerUserError(f"checkpoint {src.name!r} {exc}" if not str(exc).startswith("tensor")
                                       else f"checkpoint {src.name!r}: {exc}") from None

            # Read into copies; the live model and optimiser change only once everything has been read.
            entries: dict[str, Any] = {key: self._entry_like(mine[n]) for n, key in plan.weights.items()}
            for n, keys in plan.state.items():
                entries[keys["exp_avg"]] = self._entry_like(mine[n])
                entries[keys["exp_avg_sq"]] = self._entry_like(mine[n])
                entries[keys["step"]] = torch.zeros((), dtype=torch.float32)
            entries.update({key: None for key in plan.group.values()})
            try:
                dcp_load.read_entries(src, entries, no_dist=self.no_dist)
            except dcp_load.LoadFailed as exc:
                raise TrainerUserError(f"checkpoint {src.name!r} could not be read: {exc}") from None
            group = {f: entries[key] for f, key in plan.group.items()}

            with torch.no_grad():
                for n, key in plan.weights.items():
                    mine[n].copy_(entries[key])
            if not optimizer:
                self._reset_optimizer()
                return
            params = dict(self._trainable)
            for n, keys in plan.state.items():
                p = params[n]
                self.optimizer.state[p] = {
                    "step": entries[keys["step"]].to(torch.float32),
                    "exp_avg": entries[keys["exp_avg"]].to(p.device),
                    "exp_avg_sq": entries[keys["exp_avg_sq"]].to(p.device),
                }
            pg = self.optimizer.param_groups[0]
            for f in ("lr", "eps", "weight_decay"):
                if isinstance(group.get(f), (int, float)) and not isinstance(group[f], bool):
                    pg[f] = float(group[f])
            betas = group.get("betas")
            if isinstance(betas, (tuple, list)) and len(betas) == 2 and all(isinstance(b, float) for b in betas):
                pg["betas"] = tuple(betas)
            step = group.get(STEP_KEY)
            if not isinstance(step, int) or isinstance(step, bool) or step < 0:
                step = max((int(s["step"]) for s in self.optimizer.state.values()), default=0)
            self._step = step
            pg[STEP_KEY] = step
            self._clear_grads()

    def load_adapter(self, weights: Path, alpha: float) -> None:
        """Weights-only warm start from a PEFT adapter file already matched to this model (adapter_fit):
        its A/B matrices and lora_alpha replace this model's, and the optimiser restarts (step 0)."""
        with self._lock:
            loaded = read_adapter(weights, list(self.trainable_state_dict()))  # copies: live weights untouched
            with torch.no_grad():
                for n, t in self.trainable_state_dict().items():
                    t.copy_(loaded[n])
            set_alpha(self.model, float(alpha))
            self.lora_alpha = alpha
            self._reset_optimizer()

    # ------------------------------------------------------------------ sampler exports

    def save_sampler(self, dest: Path, checkpoint_type: str, base_dir: Path | None = None,
                     base_identity: str | None = None, target_out: Path | None = None) -> None:
        """Sampler export (docs/checkpoints.md): HF weights, a PEFT adapter, or an ARC_V2 delta.

        full + base -> HF dir; full + delta -> ``arc_v2.make_delta`` against ``base_dir``
        (``base_identity`` defaults to the base directory's name); LoRA + base/delta -> PEFT
        adapter; LoRA + merged_base -> HF dir with the adapter folded in; full + merged_base
        -> TrainerUserError. ``checkpoint_type=None`` means "base". For a delta, ``target_out``
        (a missing or empty dir) keeps the full HF weights the delta encodes, so the next delta
        can be computed against this one.
        """
        ct = "base" if checkpoint_type is None else str(checkpoint_type).lower()
        if ct not in CHECKPOINT_TYPES:
            raise TrainerUserError(f"checkpoint_type {checkpoint_type!r} is not one of {', '.join(CHECKPOINT_TYPES)}")
        dest = Path(dest)
        with self._lock:
            if ct == "merged_base" and not self.is_lora:
                raise TrainerUserError("checkpoint_type='merged_base' folds a LoRA adapter into the base weights, "
                                       "but this is a full-parameter run; save with checkpoint_type='base' "
                                       "(full weights) or 'delta'")
            if self.is_lora or ct == "base":
                self._write_simple(dest, ct)
                return
            if base_dir is None:
                raise TrainerUserError("no base sampler checkpoint in this job to delta against; "
                                       "save with checkpoint_type='base' first")
            base_dir = Path(base_dir)
            if not (base_dir / "config.json").is_file():
                raise TrainerUserError(f"base sampler checkpoint {base_dir.name!r} is not a full-weights "
                                       "directory; save with checkpoint_type='base' first")
            from . import arc_v2  # numpy-only module owned by the ARC_V2 format

            source = self._export_module()  # collective in a sharded trainer: after every check above
            if source is None:
                return
            tmp = Path(target_out) if target_out is not None else Path(tempfile.mkdtemp(prefix="fwemu-delta-target-"))
            try:
                self._write_hf(tmp, source.state_dict())
                try:
                    arc_v2.make_delta(base_dir, tmp, dest, base_identity or base_dir.name)
                except ValueError as exc:  # the base does not fit this model (size, tensors, kind)
                    raise TrainerUserError(f"cannot write a delta against {base_dir.name!r}: {exc}") from None
            finally:
                if target_out is None:
                    shutil.rmtree(tmp, ignore_errors=True)

    def _write_simple(self, dest: Path, ct: str) -> None:
        """LoRA adapter / merged export, or full weights (``base``), from ``_export_module``."""
        source = self._export_module()
        if source is None:
            return
        if not self.is_lora:
            self._write_hf(dest, source.state_dict())
        elif ct == "merged_base":
            self._write_hf(dest, merged_state_dict(source))
        else:
            self._write_peft(dest, {n: p.detach() for n, p in source.named_parameters() if p.requires_grad})

    def _write_hf(self, dest: Path, sd: Mapping[str, torch.Tensor]) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "config.json").write_text(json.dumps(hf_config(self.base_model, self.size), indent=2) + "\n")
        (dest / "generation_config.json").write_text(json.dumps(generation_config(), indent=2) + "\n")
        save_file({n: _cpu(t) for n, t in sd.items()}, str(dest / "model.safetensors"), metadata={"format": "pt"})

    def _write_peft(self, dest: Path, adapters: Mapping[str, torch.Tensor]) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        cfg = peft_adapter_config(self.base_model, self.lora_rank, self.lora_alpha)
        (dest / "adapter_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        tensors = {PEFT_PREFIX + n: _cpu(t) for n, t in adapters.items()}
        save_file(tensors, str(dest / "adapter_model.safetensors"), metadata={"format": "pt"})

    # ------------------------------------------------------------------ identity

    def state_digest(self) -> str:
        """sha256 over (name, dtype, shape, raw bytes) of the trainable tensors in sorted name order."""
        h = hashlib.sha256()
        with self._lock:
            source = self._export_module()
            if source is None:  # a sharded trainer's other ranks: rank 0 answers
                return ""
            for n, t in sorted((n, p.detach()) for n, p in source.named_parameters() if p.requires_grad):
                c = _cpu(t)
                h.update(f"{n}|{c.dtype}|{list(c.shape)}\n".encode())
                h.update(c.numpy().tobytes())
        return h.hexdigest()

    def info(self) -> dict:
        """The ``get_info`` payload (``model_id`` only once the gateway has set it)."""
        return info_payload(self)


def info_payload(m) -> dict:
    """``get_info`` of a trainer (one process or a rank group): base model, id, LoRA settings."""
    out: dict[str, Any] = {"model_data": {"arch": "llama", "model_name": m.base_model}}
    if m.model_id is not None:
        out["model_id"] = m.model_id
    out.update(is_lora=m.is_lora, lora_rank=m.lora_rank, model_name=m.base_model)
    return out
