"""The work each future runs on its model's worker thread, and the success payload it answers.

Each function takes the model and the request body, does the trainer call, and returns the
exact payload docs/wire.md B.3 lists; a caller mistake raises `UserError` (or the trainer's
`TrainerUserError`), which the worker turns into `{"error", "category": "user"}`.
Request fields other than the routing ones (model_id, seq_id) are checked here, at execution
time, not at POST time: a sequenced request must always take its place in the sequence, or
every later request of that client would wait for the hole.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from fwemu.emulator.gateway import adapters, checkpoints
from fwemu.emulator.gateway.runtime import GatewayRuntime, JobRuntime, ModelState
from fwemu.emulator.gateway.sequencer import UserError
from fwemu.emulator.inspect import Kind
from fwemu.emulator.inspect.names import ADAPTER_WEIGHTS
from fwemu.emulator.services import Services
from fwemu.emulator.store import metrics_log
from fwemu.emulator.trainer import adapter_fit
from fwemu.emulator.trainer.adapter_fit import PEFT_PREFIX

log = logging.getLogger("fwemu.gateway")


def trainer_of(model: ModelState):
    if model.trainer is None:
        why = model.create_error or "create_model has not finished"
        raise UserError(f"{model.model_id} has no trainer: {why}")
    return model.trainer


def _trainable(model: ModelState):
    trainer = trainer_of(model)
    if model.base_only:
        raise UserError(f"{model.model_id} is a frozen base-only reference model; it can run forward only")
    return trainer


def _refuse_forward_only(model: ModelState, what: str) -> None:
    """A forward-only job (created with forwardOnly: true) has no gradients, no optimizer and no saves."""
    if model.forward_only:
        raise UserError(f"{what} is refused: trainer job {model.job_id} is forward-only (created with "
                        "forwardOnly: true), so it runs forward passes only and holds no optimizer state; "
                        "create the trainer without forward_only to train or save checkpoints")


def _training(model: ModelState, what: str):
    """The trainer for an optimizer step or a DCP save."""
    _refuse_forward_only(model, what)
    return _trainable(model)


def create_model(model: ModelState) -> dict:
    # torch is imported here, on the worker, the first time any model is created.
    from fwemu.emulator.trainer.model_session import TrainerModel

    try:
        if model.ranks > 1:  # docs/multirank.md: the same surface over N FSDP2 rank processes
            from fwemu.emulator.trainer.rank_group import MultiRankTrainer

            trainer = MultiRankTrainer(model.base_model, lora_rank=model.lora_rank, lora_alpha=model.lora_alpha,
                                       seed=model.seed, ranks=model.ranks, precision=model.precision)
        else:
            trainer = TrainerModel(model.base_model, lora_rank=model.lora_rank,
                                   lora_alpha=model.lora_alpha, seed=model.seed)
    except Exception as exc:
        model.create_error = f"create_model failed: {exc}"
        raise
    trainer.model_id = model.model_id
    model.trainer = trainer
    return {"model_id": model.model_id, "type": "create_model"}


def _loss_input(body: Mapping, key: str) -> tuple[list, str, dict | None]:
    spec = body.get(key)
    if not isinstance(spec, Mapping):
        raise UserError(f"{key} must be an object with data and loss_fn")
    data, loss_fn, cfg = spec.get("data"), spec.get("loss_fn"), spec.get("loss_fn_config")
    if not isinstance(data, list) or not data:
        raise UserError(f"{key}.data must be a non-empty list of Datum objects")
    if not isinstance(loss_fn, str) or not loss_fn:
        raise UserError(f"{key}.loss_fn must be a loss function name, e.g. cross_entropy")
    if cfg is not None and not isinstance(cfg, Mapping):
        raise UserError(f"{key}.loss_fn_config must be an object")
    return data, loss_fn, dict(cfg) if cfg is not None else None


def forward_backward(model: ModelState, body: Mapping) -> dict:
    data, loss_fn, cfg = _loss_input(body, "forward_backward_input")
    trainer = _trainable(model)  # allowed on a forward-only job: the SDK sends some reference losses this way
    out = trainer.forward_backward(data, loss_fn, cfg)
    epoch, acc, calls = model.pending_metrics
    if epoch != trainer.grad_epoch:  # the gradients these metrics went with were dropped meanwhile
        acc, calls = {}, 0
    model.pending_metrics = (trainer.grad_epoch, metrics_log.merge_metrics(acc, out.get("metrics") or {}, calls),
                             calls + 1)
    return out


def forward(model: ModelState, body: Mapping) -> dict:
    data, loss_fn, cfg = _loss_input(body, "forward_input")
    return trainer_of(model).forward(data, loss_fn, cfg)


def optim_step(services: Services, job_create_us: int, model: ModelState, body: Mapping) -> dict:
    adam = body.get("adam_params")
    if not isinstance(adam, Mapping):
        raise UserError("adam_params must be an object, e.g. {\"learning_rate\": 1e-4}")
    trainer = _training(model, "optim_step")
    epoch_before = trainer.grad_epoch
    out = trainer.optim_step(dict(adam), body.get("grad_accumulation_normalization"))
    metrics = out.get("metrics") or {}
    _log_step(services, job_create_us, model, epoch_before, metrics)
    model.pending_metrics = (trainer.grad_epoch, {}, 0)
    return {"metrics": metrics}


def _log_step(services: Services, job_create_us: int, model: ModelState, epoch: int, metrics: Mapping) -> None:
    """Append the step's metrics to the job's log; best effort: the step itself already happened, and
    failing it would make the client retry a step that was taken."""
    pending_epoch, fb, calls = model.pending_metrics
    if pending_epoch != epoch:
        fb, calls = {}, 0
    record = metrics_log.step_record(t_us=services.clock.peek_us(), generation=model.generation,
                                     model_id=model.model_id, fb_metrics=fb, fb_calls=calls, step_metrics=metrics)
    try:
        services.store.step_log.append(model.account, model.job_id, job_create_us, record)
    except (OSError, ValueError) as exc:
        log.warning("step metrics of %s/%s not recorded: %s", model.job_id, model.model_id, exc)


def save_weights(services: Services, model: ModelState, body: Mapping) -> dict:
    _training(model, "save_weights (save_state)")
    path = checkpoints.save_state(services, model, body.get("path"))
    return {"path": path, "type": "save_weights"}


def save_weights_for_sampler(services: Services, model: ModelState, body: Mapping) -> dict:
    _refuse_forward_only(model, "save_weights_for_sampler")
    trainer_of(model)
    name = body.get("path")
    if not isinstance(name, str) or not name:
        raise UserError("path must be the sampler checkpoint name, e.g. step-4-1a2b3c4d")
    ctype = checkpoints.resolve_checkpoint_type(model, body.get("checkpoint_type"))
    # export_precision (merged_base only) is accepted and ignored: the stand-in model is float32.
    path = checkpoints.save_sampler(services, model, name, ctype)
    model.sampler_saved = True
    return {"path": path, "type": "save_weights_for_sampler"}


def load_weights(services: Services, model: ModelState, body: Mapping) -> dict:
    trainer = _trainable(model)
    optimizer = body.get("optimizer", False)
    if not isinstance(optimizer, bool):
        raise UserError(f"optimizer must be true or false, got {optimizer!r}")
    path = body.get("path")
    src = checkpoints.resolve_loadable(services, model, path)
    with services.store.snapshot_dir(src) as snapshot:   # a replace of that name meanwhile cannot mix saves
        trainer.load_state(snapshot, optimizer)
    return {"path": path, "type": "load_weights"}


def load_adapter(services: Services, model: ModelState, body: Mapping) -> dict:
    """Weights-only warm start from a PEFT adapter (docs/wire.md B.3): inspect, match headers, then read."""
    from fwemu.emulator.inspect import inspect_checkpoint

    trainer = _trainable(model)
    if not model.is_lora:
        raise UserError(f"load_adapter needs a LoRA training client, but {model.model_id} is full-parameter; "
                        "for a full-parameter warm start, create the trainer from the promoted model instead")
    path = body.get("adapter_path")
    src, what = adapters.resolve(services, model, path)
    with services.store.snapshot_dir(src) as snapshot:   # the bytes inspected are the bytes loaded
        verdict = inspect_checkpoint(snapshot)
        if verdict.kind is not Kind.INFERENCE_LORA:
            found = verdict.kind.wire if verdict.kind else f"rejected by the checkpoint inspector ({verdict.reason})"
            raise UserError(f"{what} is {found}, not a PEFT adapter ({Kind.INFERENCE_LORA.wire})")
        config, tensors = adapters.header_facts(snapshot)
        expected = {PEFT_PREFIX + n: tuple(t.shape) for n, t in trainer.trainable_state_dict().items()}
        problem = adapter_fit.mismatch(config, tensors, expected, rank=model.lora_rank, base_model=model.base_model)
        if problem:
            raise UserError(f"{what} does not fit {model.model_id}: {problem}")
        trainer.load_adapter(snapshot / ADAPTER_WEIGHTS, config["lora_alpha"])
    model.lora_alpha = config["lora_alpha"]
    return {"model_id": model.model_id, "adapter_path": path, "type": "load_adapter"}


def unload_model(runtime: GatewayRuntime, jr: JobRuntime, model: ModelState) -> dict:
    runtime.drop_model(jr, model.model_id)
    model.trainer = None
    return {"model_id": model.model_id, "type": "unload_model"}


def info(model: ModelState) -> dict:
    """get_info: answered directly from the model's settings (the trainer may still be loading)."""
    out: dict[str, Any] = {
        "type": "get_info",
        "model_data": {"arch": "llama", "model_name": model.base_model, "tokenizer_id": "fwemu/byte-level"},
        "model_id": model.model_id,
        "is_lora": model.is_lora,
        "lora_rank": model.lora_rank,
        "model_name": model.base_model,
    }
    return out
