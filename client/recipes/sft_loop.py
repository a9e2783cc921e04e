"""Supervised fine-tuning loop with automatic save, resume and promotion.

    from fwemu.client.recipes.sft_loop import Config, WeightSyncConfig, main
    main(Config(log_path="./run", base_model="accounts/fireworks/models/qwen3-8b",
                dataset="data.jsonl", tokenizer_model="Qwen/Qwen3-8B",
                output_model_id="my-model", weight_sync=WeightSyncConfig(dcp_save_interval=10)))
    # interrupted? run the same config again: it reattaches to the job and resumes.

Step N means N optimizer steps done. Step N's resumable checkpoint is saved after step N's
optim_step returned and before batch N+1 is sent, with data_consumed = examples used by steps
1..N, so a resumed run neither repeats an optimizer step nor skips or re-trains a batch.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fwemu.client.checkpoints import ResumeInfo, TrainingCheckpoints
from fwemu.client.control_plane import ControlPlaneClient, TrainerJob
from fwemu.client.errors import FwApiError, FwError
from fwemu.client.progress import ProgressLine
from fwemu.client.recipes.sft_data import data_order, load_examples, to_datum, weight_sum
from fwemu.client.run_record import RunRecord
from fwemu.client.trainer_client import AdamParams, TrainerGatewayClient

log = logging.getLogger(__name__)

_RESUME_STATES = frozenset({"FAILED", "CANCELLED", "PAUSED", "COMPLETED", "EARLY_STOPPED", "IDLE", "EXPIRED"})


@dataclass
class WeightSyncConfig:
    dcp_save_interval: int = 0          # a resumable checkpoint every N steps; 0 = only the final one


@dataclass
class Config:
    log_path: str
    base_model: str
    dataset: str
    tokenizer_model: str | None = None  # accepted for cookbook parity; the byte tokenizer is used offline
    output_model_id: str | None = None
    lora_rank: int = 0
    learning_rate: float = 1e-3
    epochs: int = 1
    batch_size: int = 4
    max_seq_len: int = 128
    weight_sync: WeightSyncConfig = field(default_factory=WeightSyncConfig)
    init_from_checkpoint: str | None = None
    trainer_job_id: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    transport: Any = None
    max_steps: int | None = None
    seed: int = 0
    ready_timeout_s: float = 900.0
    ready_poll_s: float = 0.5
    progress: bool = True

    def validate(self) -> None:
        if not self.log_path:
            raise ValueError("log_path is required")
        if not self.base_model:
            raise ValueError("base_model is required")
        if not Path(self.dataset).is_file():
            raise ValueError(f"dataset {self.dataset!r} is not a file")
        for name, value, low in (("lora_rank", self.lora_rank, 0), ("epochs", self.epochs, 1),
                                 ("batch_size", self.batch_size, 1), ("max_seq_len", self.max_seq_len, 2),
                                 ("weight_sync.dcp_save_interval", self.weight_sync.dcp_save_interval, 0)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise ValueError(f"max_steps must be a positive integer, got {self.max_steps!r}")
        if not self.learning_rate > 0:
            raise ValueError("learning_rate must be > 0")


@dataclass(frozen=True)
class StepEvent:
    """Passed to `on_step` after each step (and its periodic save, if any) completed."""

    step: int
    total_steps: int
    data_consumed: int
    loss: float | None
    saved: str | None                   # listed name of the resumable checkpoint saved at this step


def _attach_job(cp: ControlPlaneClient, cfg: Config) -> TrainerJob:
    """Reattach to the job this log_path (or cfg.trainer_job_id) names, resuming it if stopped; else create one."""
    record = RunRecord.load(cfg.log_path)
    if record and cfg.trainer_job_id and record.job_id != cfg.trainer_job_id:
        raise FwError(f"log_path {cfg.log_path} belongs to trainer job {record.job_id}, not {cfg.trainer_job_id}; "
                      "use another log_path (its dataloader.json describes the other job's checkpoints)")
    job_id = cfg.trainer_job_id or (record.job_id if record else None)
    if job_id is None:
        job = cp.create_job(cfg.base_model, cfg.lora_rank, cfg.learning_rate,
                            display_name=f"sft {Path(cfg.log_path).resolve().name}"[:63])
        RunRecord.create(cfg.log_path, job.job_id, cfg.base_model, cfg.lora_rank)
        log.info("created trainer job %s", job.job_id)
        return job
    try:
        job = cp.get_job(job_id)
    except FwApiError as exc:
        if exc.status == 404:
            source = "trainer_job_id" if cfg.trainer_job_id else f"{Path(cfg.log_path) / 'run.json'}"
            raise FwError(f"trainer job {job_id} (from {source}) does not exist; use a new log_path "
                          "to start a new job") from exc
        raise
    if job.base_model and job.base_model != cfg.base_model:
        raise FwError(f"trainer job {job_id} trains {job.base_model}, but the config says {cfg.base_model}")
    if job.lora_rank != cfg.lora_rank:
        raise FwError(f"trainer job {job_id} has lora_rank {job.lora_rank}, but the config says {cfg.lora_rank}")
    if record is None:
        RunRecord.create(cfg.log_path, job_id, cfg.base_model, cfg.lora_rank)
    if job.state in _RESUME_STATES:
        log.info("trainer job %s is %s; resuming it", job_id, job.state)
        cp.resume_job(job_id)
    return job


def main(cfg: Config, *, on_step: Callable[[StepEvent], None] | None = None) -> dict:
    """Train, save, resume and promote as configured. Returns a summary dict:
    steps, job_id, final_loss, promoted_model, resumed_from, data_consumed (and more)."""
    cfg.validate()
    Path(cfg.log_path).mkdir(parents=True, exist_ok=True)
    if cfg.tokenizer_model:
        log.info("tokenizer_model %s noted; the emulator's byte tokenizer is used (offline)", cfg.tokenizer_model)
    examples = load_examples(cfg.dataset)
    datums = [to_datum(e, cfg.max_seq_len) for e in examples]
    order = data_order(len(datums), cfg.epochs, cfg.seed)
    total_steps = math.ceil(len(order) / cfg.batch_size)
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    interval = cfg.weight_sync.dcp_save_interval

    cp = ControlPlaneClient(cfg.base_url, cfg.api_key, cfg.transport)
    gateway: TrainerGatewayClient | None = None
    try:
        job = _attach_job(cp, cfg)
        cp.wait_until_running(job.job_id, poll_interval_s=cfg.ready_poll_s, timeout_s=cfg.ready_timeout_s)
        gateway = TrainerGatewayClient(cp.gateway_url_for_job(job.job_id), cp.api_key, cfg.transport)
        gateway.create_session()
        model = gateway.create_model(cfg.base_model, cfg.lora_rank, seed=cfg.seed)
        ckpt = TrainingCheckpoints(model, cp, job.job_id, cfg.log_path, cfg.lora_rank)
        info = ckpt.resume(init_from_checkpoint=cfg.init_from_checkpoint)
        return _train(cfg, cp, job, ckpt, info, datums, order, total_steps, interval, on_step)
    finally:
        if gateway is not None:
            gateway.close()
        cp.close()


def _train(cfg: Config, cp: ControlPlaneClient, job: TrainerJob, ckpt: TrainingCheckpoints,
           info: ResumeInfo | None, datums: list[dict], order: list[int], total_steps: int, interval: int,
           on_step: Callable[[StepEvent], None] | None) -> dict:
    step, consumed = (info.step, info.data_consumed) if info else (0, 0)
    if info and not info.data_consumed_restored and step > 0:
        consumed = min(step * cfg.batch_size, len(order))
        log.warning("!! data_consumed of %s derived from its step: %d", info.checkpoint_name, consumed)
    if consumed > len(order):
        raise FwError(f"checkpoint {info.checkpoint_name if info else '?'} says {consumed} examples were used, "
                      f"but this config's run has only {len(order)}; the dataset or epochs changed")
    own = info is not None and info.source_job_id == job.job_id
    if info is not None:
        origin = "resumed from" if own else "initialised from"
        print(f"{origin} {info.source_job_id}:{info.checkpoint_name}: step {step}, data_consumed {consumed}",
              file=sys.stderr)
    adam = AdamParams(learning_rate=cfg.learning_rate)
    progress = ProgressLine(total_steps, enabled=cfg.progress)
    last_saved = info.checkpoint_name if own else None
    final_loss: float | None = None
    steps_run = 0
    saved: list[str] = []
    promoted = None
    try:
        while step < total_steps and consumed < len(order):
            batch = [datums[i] for i in order[consumed:consumed + cfg.batch_size]]
            result = ckpt.trainer.forward_backward(batch, "cross_entropy")
            ckpt.trainer.optim_step(adam)
            step += 1
            steps_run += 1
            consumed += len(batch)
            loss_sum, tokens = result.metric("loss"), weight_sum(batch)
            final_loss = loss_sum / tokens if loss_sum is not None and tokens else None
            saved_now = None
            if interval and step % interval == 0 and step < total_steps:  # the last step gets the final save
                saved_now = last_saved = ckpt.save(f"step-{step}", resumable=True, promotable=False,
                                                   data_consumed=consumed).dcp_name
                saved.append(saved_now)
            progress.update(step, final_loss, note=f"saved {saved_now}" if saved_now else "")
            if on_step is not None:
                on_step(StepEvent(step, total_steps, consumed, final_loss, saved_now))
        progress.close()
        final = ckpt.save(f"step-{step}", resumable=True, promotable=True, data_consumed=consumed)
        last_saved = final.dcp_name
        saved.append(final.dcp_name)
        if final.skipped:
            print(f"final checkpoint step-{step} was already saved ({' and '.join(final.skipped)}); reusing it",
                  file=sys.stderr)
        if cfg.output_model_id:
            promoted = _promote(cfg, cp, ckpt)
    except KeyboardInterrupt:
        progress.close()
        where = (f"the last resumable checkpoint is {last_saved}" if last_saved
                 else "no resumable checkpoint was saved yet (set weight_sync.dcp_save_interval), so it restarts at step 0")
        print(f"\ninterrupted at step {step} of job {job.job_id}; {where}. Rerun with the same "
              f"log_path ({cfg.log_path}) to resume.", file=sys.stderr)
        raise
    return {
        "steps": step, "steps_run": steps_run, "total_steps": total_steps, "job_id": job.job_id,
        "final_loss": final_loss, "promoted_model": promoted, "resumed_from": info.checkpoint_name if own else None,
        "initialized_from": f"{info.source_job_id}:{info.checkpoint_name}" if info and not own else None,
        "data_consumed": consumed, "saved": saved, "final_checkpoint": final.dcp_name,
        "final_sampler_checkpoint": final.sampler_name, "log_path": str(cfg.log_path),
    }


def _promote(cfg: Config, cp: ControlPlaneClient, ckpt: TrainingCheckpoints) -> str:
    """Promote the newest promotable row. If the model already exists because an earlier run of this
    job promoted it, say so loudly and return it; a model from anywhere else is an error."""
    assert cfg.output_model_id
    try:
        model = ckpt.promote_latest(cfg.output_model_id, cfg.base_model)
    except FwApiError as exc:
        if exc.status != 409:
            raise
        existing = cp.get_model(cfg.output_model_id)
        source = existing.raw.get("sourceCheckpoint")  # the emulator records it; the real service may not
        if isinstance(source, str) and f"/rlorTrainerJobs/{ckpt.trainer_id}/" not in source:
            raise FwError(f"output model {existing.name} already exists and was promoted from {source}, "
                          "not from this run; choose another output_model_id") from exc
        print(f"model {existing.name} already exists (state {existing.state}, from "
              f"{source or 'an earlier promotion'}); not promoted again. Server said: {exc.message}", file=sys.stderr)
        return existing.name
    print(f"promoted to {model.name} ({model.kind}, {model.state})", file=sys.stderr)
    return model.name
