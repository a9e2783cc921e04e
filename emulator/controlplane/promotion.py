"""Promotion of a checkpoint row to a model: the ordered checks, each with its own message.

Order (issue #3): output model id -> job in caller's account -> checkpoint in that job ->
base model matches the job's -> row promotable -> model id free. Nothing is written until every
check has passed; the model id is claimed atomically so two concurrent promotions cannot both win.
"""

from __future__ import annotations

import secrets

from fwemu.emulator import rules
from fwemu.emulator.controlplane.access import load_job
from fwemu.emulator.controlplane.checkpoint_views import listed_kind, listed_promotable
from fwemu.emulator.controlplane.schemas import PromoteBody
from fwemu.emulator.errors import already_exists, failed_precondition, invalid_argument, not_found
from fwemu.emulator.inspect import Kind
from fwemu.emulator.services import Services
from fwemu.emulator.store import AlreadyExists, rfc3339

MODEL_TYPE_URL = "type.googleapis.com/gateway.Model"


def _model_id(output_model: str, account: str) -> str:
    prefix = f"accounts/{account}/models/"
    if output_model.startswith("accounts/") and not output_model.startswith(prefix):
        raise invalid_argument(f"output_model {output_model!r} must be in account {account} ({prefix}<id>)")
    model_id = output_model.removeprefix(prefix)
    if not rules.MODEL_ID_RE.fullmatch(model_id):
        raise invalid_argument(
            f"output model id {model_id!r} is not valid: use 1 to 63 characters of a-z, 0-9 and '-'")
    return model_id


def _job_id(trainer_job_id: str | None, account: str) -> str:
    if not trainer_job_id:
        raise invalid_argument("trainer_job_id is required: accounts/<account>/rlorTrainerJobs/<job>")
    prefix = f"accounts/{account}/rlorTrainerJobs/"
    if trainer_job_id.startswith("accounts/") and not trainer_job_id.startswith(prefix):
        raise not_found(f"trainer job {trainer_job_id} not found")
    return trainer_job_id.removeprefix(prefix)


def promote(services: Services, caller: str, account: str, checkpoint: str, body: PromoteBody) -> dict:
    """Run the checks, create the model, and return `{"model": ...}` or `{"operation": ...}`."""
    settings, store = services.settings, services.store
    model_id = _model_id(body.output_model, account)
    job_id = _job_id(body.trainer_job_id, account)
    job = load_job(services, caller, account, job_id)
    row = store.get_checkpoint(account, job_id, checkpoint)
    if row is None or row.kind is None:
        raise not_found(f"checkpoint {checkpoint} not found in trainer job {job_id}")
    if body.base_model != job.base_model:
        raise invalid_argument(
            f"base_model {body.base_model!r} does not match the trainer job's base model {job.base_model!r}")
    kind = listed_kind(row, settings)
    promotable = listed_promotable(kind, settings) or "promote-any" in settings.breaks
    if not promotable:
        raise failed_precondition(f"checkpoint {checkpoint} is not promotable: {rules.promotion_refusal(kind)}",
                                  reason="CHECKPOINT_NOT_PROMOTABLE")
    model = _model_record(account, model_id, kind, row.details, body.base_model, services,
                          f"accounts/{account}/rlorTrainerJobs/{job_id}/checkpoints/{checkpoint}")
    try:
        store.create_model(account, model_id, model, store.checkpoint_dir(account, job_id, checkpoint))
    except AlreadyExists:
        raise already_exists(f"model accounts/{account}/models/{model_id} already exists") from None
    if not body.async_promotion:
        return {"model": model}
    op_id = f"promote-{secrets.token_hex(6)}"
    op = {"name": f"accounts/{account}/operations/{op_id}",
          "metadata": {"statusMessage": f"promoting {checkpoint} to {model['name']}"},
          "response": {"@type": MODEL_TYPE_URL, **model}}
    polls = settings.quirk_operation_polls if "slow-operations" in settings.quirks else 0
    store.create_operation(account, op_id, op, polls)
    return {"operation": operation_view(op, polls)}


def operation_view(op: dict, polls_left: int) -> dict:
    """An operation as polled: not done (no response yet) while polls remain."""
    if polls_left > 0:
        return {"name": op["name"], "done": False, "metadata": op["metadata"]}
    return {**op, "done": True}


def _model_record(account, model_id, kind: Kind | None, details: dict, base_model: str,
                  services: Services, source: str) -> dict:
    now = rfc3339(services.clock.now_us())
    record = {
        "name": f"accounts/{account}/models/{model_id}",
        "displayName": model_id,
        "state": "READY",
        "kind": rules.model_kind(kind) if kind in (Kind.INFERENCE_BASE, Kind.INFERENCE_LORA) else "HF_BASE_MODEL",
        "createTime": now,
        "updateTime": now,
        "sourceCheckpoint": source,
        "checkpointType": kind.wire if kind else None,
    }
    if kind is Kind.INFERENCE_LORA:
        record["peftDetails"] = {"baseModel": base_model, "r": details.get("r"),
                                 "targetModules": details.get("target_modules") or []}
    else:
        record["baseModelDetails"] = {"modelType": details.get("model_type"), "moe": False}
    return record
