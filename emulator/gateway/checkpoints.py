"""Trainer-side checkpoint work: where a save goes, what a load may read, and the two test bends.

Saves always go through `Store.write_checkpoint`, which classifies the staged bytes with the
inspector before anything becomes visible; the writer's own belief is recorded only as
`claimed_kind`. Loads only ever open a directory the inspector accepted as TRAINING or
TRAINING_LORA: torch's DCP reader unpickles `.metadata`, so a rejected or foreign directory is
never handed to it.

Two settings bend saves on purpose:
* quirk `rename-dcp-saves` (LoRA models): the real service-mode trainer may store a DCP save
  under its internal step counter instead of the caller's name ("caller passes step-42,
  service stores as step-0", fw-ai/cookbook training/utils/checkpoints.py). The DCP goes to
  `step-<trainer step>` (`step-<k>-<n>` when that name is taken) and that name is the `path`
  the save answers with.
* break `drop-optimizer-state`: the DCP holds fresh optimizer state (zero moments, step 0)
  instead of the real one. The row still lists as TRAINING(_LORA) and loads without error;
  only a resumed run's numbers differ, which is exactly what the contract suite must catch.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import weakref
from pathlib import Path

from fwemu.emulator import rules
from fwemu.emulator.controlplane.access import retention_over
from fwemu.emulator.gateway.runtime import ModelState
from fwemu.emulator.gateway.sequencer import UserError
from fwemu.emulator.inspect import Kind
from fwemu.emulator.services import Services
from fwemu.emulator.store import CheckpointRow, Rejected

DNS_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
CROSS_JOB_PREFIX = "cross_job://"
RESUMABLE = {Kind.TRAINING, Kind.TRAINING_LORA}


# ---------------------------------------------------------------------- save_weights (DCP)
def save_state(services: Services, model: ModelState, name: str) -> str:
    """Write a resumable DCP checkpoint; return the name it is stored (and listed) under."""
    if not isinstance(name, str) or not DNS_LABEL_RE.fullmatch(name):
        raise UserError(f"checkpoint name {name!r} must be a DNS label (lowercase letters, digits and '-', "
                        "at most 63 characters, e.g. step-4) so that load_state can use it")
    store, settings = services.store, services.settings
    stored_name = name
    if "rename-dcp-saves" in settings.quirks and model.is_lora:
        stored_name = _step_name(services, model)
    claimed = rules.expected_kind(save="state", lora=model.is_lora)
    try:  # a name the job already has is replaced, as the real trainer does (the SDK logs "overwriting")
        with store.write_checkpoint(model.account, model.job_id, stored_name, require_valid=True,
                                    claimed_kind=claimed.value, replace=True) as staging:
            if "drop-optimizer-state" in settings.breaks:
                _save_state_with_fresh_optimizer(model.trainer, staging)
            else:
                model.trainer.save_state(staging)
    except Rejected as exc:
        raise RuntimeError(f"the trainer wrote a DCP checkpoint the inspector rejects: {exc}") from exc
    return stored_name


def _step_name(services: Services, model: ModelState) -> str:
    """`step-<trainer step>`, or the first free `step-<k>-<n>` (the quirk never lands on a taken name)."""
    base = f"step-{model.trainer.step}"
    candidate, n = base, 0
    while services.store.get_checkpoint(model.account, model.job_id, candidate) is not None:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _save_state_with_fresh_optimizer(trainer, dest: Path) -> None:
    """The trainer's DCP layout with its optimizer state replaced by a fresh one (break switch only).

    TrainerModel.save_state has no "without optimizer" flag, so this writes the same two
    top-level entries itself; the trainer step in the param group is kept, Adam's moments and
    per-parameter step are zeroed, which is what a freshly constructed TrainerModel holds.
    """
    if getattr(trainer, "ranks", 1) > 1:  # MultiRankTrainer: its ranks write the same layout
        trainer.save_state(dest, fresh_optimizer=True)
        return
    import warnings

    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemWriter
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    osd = get_optimizer_state_dict(trainer.model, trainer.optimizer)
    osd = {
        "state": {fqn: {k: torch.zeros_like(v) if isinstance(v, torch.Tensor) else v for k, v in s.items()}
                  for fqn, s in osd["state"].items()},
        "param_groups": osd["param_groups"],
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"model": trainer.trainable_state_dict(), "optim": osd},
                 storage_writer=FileSystemWriter(dest), no_dist=True)


# ---------------------------------------------------------------------- save_weights_for_sampler
def resolve_checkpoint_type(model: ModelState, requested) -> str:
    """The request's checkpoint_type, or the SDK's chain rule (base first, then delta on full runs)."""
    if requested is not None and not isinstance(requested, str):
        raise UserError(f"checkpoint_type must be a string, got {requested!r}")
    try:
        return rules.next_checkpoint_type(model.lora_rank, model.sampler_saved, requested)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def save_sampler(services: Services, model: ModelState, name: str, checkpoint_type: str) -> str:
    """Write a sampler export under exactly the name received (`<name>-<session8hex>`); a taken name is replaced.

    A full-parameter delta is XORed against this model's previous sampler save (base or delta),
    which is the snapshot the SDK's WeightSyncer names as `previous_snapshot_identity` when it
    hot-loads the delta; a model with no earlier save falls back to the job's newest base.
    """
    try:
        claimed = rules.expected_kind(save="sampler", lora=model.is_lora, checkpoint_type=checkpoint_type)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    store = services.store
    base_dir = base_identity = target_out = None
    full_delta = not model.is_lora and checkpoint_type == "delta"
    if full_delta:
        base_identity, base_dir = _delta_base(services, model)
        target_out = Path(tempfile.mkdtemp(prefix="sampler-chain-", dir=store.staging))  # swept at restart
    try:
        with store.write_checkpoint(model.account, model.job_id, name, require_valid=True,
                                    claimed_kind=claimed.value, replace=True) as staging:
            written = checkpoint_type
            if "lora-delta-merged" in services.settings.breaks and model.is_lora and checkpoint_type == "delta":
                written = "merged_base"  # test-only break switch: the LoRA chain stops being INFERENCE_LORA
            if base_dir is None or base_dir.parent == store.staging:   # no base, or the chain's private copy
                model.trainer.save_sampler(staging, written, base_dir, base_identity, target_out=target_out)
            else:                       # a stored row: read a snapshot, a replace of that name cannot mix saves
                with store.snapshot_dir(base_dir) as base_snapshot:
                    model.trainer.save_sampler(staging, written, base_snapshot, base_identity,
                                               target_out=target_out)
    except ValueError as exc:  # the store's name rule
        _forget_dir(target_out)
        raise UserError(str(exc)) from None
    except Rejected as exc:
        _forget_dir(target_out)
        raise RuntimeError(f"the trainer wrote a sampler checkpoint the inspector rejects: {exc}") from exc
    except BaseException:
        _forget_dir(target_out)
        raise
    if not model.is_lora:
        full_dir = target_out if full_delta else store.checkpoint_dir(model.account, model.job_id, name)
        _set_chain(model, name, full_dir, store.staging)
    return name


def _delta_base(services: Services, model: ModelState) -> tuple[str, Path]:
    """(identity, full weights dir) the next delta of `model` is computed against."""
    prev = model.sampler_chain
    if prev is not None and (prev[1] / "config.json").is_file():
        return prev
    base = services.store.newest_checkpoint(model.account, model.job_id, {Kind.INFERENCE_BASE})
    if base is None:
        raise UserError(f"a delta sampler checkpoint needs an earlier base in trainer job {model.job_id}, "
                        "and there is none; save with checkpoint_type='base' first")
    return base.name, services.store.checkpoint_dir(model.account, model.job_id, base.name)


def _set_chain(model: ModelState, name: str, full_dir: Path, cache_root: Path) -> None:
    """Remember the newest save; a kept delta target is removed once superseded or with the model."""
    old = model.sampler_chain
    model.sampler_chain = (name, full_dir)
    if full_dir.parent == cache_root:
        weakref.finalize(model, _forget_dir, full_dir)
    if old is not None and old[1].parent == cache_root and old[1] != full_dir:
        _forget_dir(old[1])


def _forget_dir(path: Path | None) -> None:
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------- load_weights
def resolve_loadable(services: Services, model: ModelState, path) -> Path:
    """The directory of a resumable checkpoint named by `path`, or a UserError saying why not.

    `path` is a checkpoint name of this job (`step-4`) or `cross_job://<job>/<name>` for another
    job of the same account (the account never comes from the reference, so another account's
    job is simply not found).
    """
    if not isinstance(path, str) or not path:
        raise UserError("path must be a checkpoint name (e.g. step-4) or cross_job://<job_id>/<name>")
    if path.startswith(CROSS_JOB_PREFIX):
        src_job, sep, name = path[len(CROSS_JOB_PREFIX):].partition("/")
        if not sep or not DNS_LABEL_RE.fullmatch(src_job) or not DNS_LABEL_RE.fullmatch(name):
            raise UserError(f"{path!r} is not a valid reference; use cross_job://<job_id>/<checkpoint_name>")
        if not job_visible(services, model.account, src_job):
            raise UserError(f"{path!r}: trainer job {src_job} not found in account {model.account}")
    else:
        if not DNS_LABEL_RE.fullmatch(path):
            raise UserError(f"{path!r} is not a checkpoint name of this job; pass the path save_state returned "
                            "(e.g. step-4) or cross_job://<job_id>/<name>")
        src_job, name = model.job_id, path
    row = services.store.get_checkpoint(model.account, src_job, name)
    if row is None:
        known = services.store.checkpoint_names(model.account, src_job, RESUMABLE)
        hint = (f"; resumable checkpoints there: {', '.join(known[-5:])}" if known
                else "; it has no resumable checkpoints")
        raise UserError(f"checkpoint {name!r} not found in trainer job {src_job}{hint}")
    _require_resumable(row, model)
    return services.store.checkpoint_dir(model.account, src_job, name)


def _require_resumable(row: CheckpointRow, model: ModelState) -> None:
    if row.kind is None:
        raise UserError(f"checkpoint {row.name!r} in trainer job {row.job_id} was rejected by the checkpoint "
                        f"inspector ({row.reason}); it is never loaded")
    if row.kind not in RESUMABLE:
        raise UserError(f"checkpoint {row.name!r} is {row.kind.wire}, a sampler export; only save_state "
                        "checkpoints (CHECKPOINT_TYPE_TRAINING / CHECKPOINT_TYPE_TRAINING_LORA) can be loaded")
    if (row.kind is Kind.TRAINING_LORA) != model.is_lora:
        have = f"a LoRA model (rank {model.lora_rank})" if model.is_lora else "a full-parameter model"
        raise UserError(f"checkpoint {row.name!r} is {row.kind.wire} but {model.model_id} is {have}; "
                        "load it into a training client of the same kind")


def job_visible(services: Services, account: str, job_id: str) -> bool:
    """A job of the account whose checkpoints are still kept (deleted jobs: during retention)."""
    job = services.store.get_job(account, job_id, include_deleted=True)
    return job is not None and not retention_over(services, job)
