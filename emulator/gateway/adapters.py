"""load_adapter's side of the gateway: which PEFT adapter a path names, and whether it may be read.

The SDK documents `adapter_path` as a Fireworks PEFT model (`accounts/<a>/models/<id>`) or a
`gs://` directory. fwemu reads adapters it holds: a promoted HF_PEFT_ADDON model of the caller's
account, or an INFERENCE_LORA checkpoint row (`<name>` of this job, `cross_job://<job>/<name>`, or
`accounts/<a>/rlorTrainerJobs/<job>/checkpoints/<name>`). A cloud URL cannot be reached offline
and is a user error saying how to bring the files in.

Nothing is trusted: the caller inspects a private snapshot of the directory (headers only, the
inspector must call it INFERENCE_LORA), `adapter_fit` compares the header with the model, and
only then does the trainer read tensor data, with the safetensors library (never pickle).
"""

from __future__ import annotations

import re
from pathlib import Path

from fwemu.emulator.auth import PUBLIC_ACCOUNT
from fwemu.emulator.gateway.checkpoints import CROSS_JOB_PREFIX, DNS_LABEL_RE, job_visible
from fwemu.emulator.gateway.runtime import ModelState
from fwemu.emulator.gateway.sequencer import UserError
from fwemu.emulator.inspect import Kind
from fwemu.emulator.inspect.names import ADAPTER_CONFIG, ADAPTER_WEIGHTS, MAX_JSON
from fwemu.emulator.services import Services

MODEL_RE = re.compile(r"^accounts/([^/]+)/models/([^/]+)$")
ROW_RE = re.compile(r"^accounts/([^/]+)/rlorTrainerJobs/([^/]+)/checkpoints/([^/]+)$")
URL_RE = re.compile(r"^[a-z][a-z0-9+.-]*://")
PEFT_MODEL_KIND = "HF_PEFT_ADDON"


def resolve(services: Services, model: ModelState, path) -> tuple[Path, str]:
    """(stored directory, how to name it in messages) of the adapter `path` names, or a UserError."""
    if not isinstance(path, str) or not path.strip():
        raise UserError("adapter_path must be a PEFT model (accounts/<a>/models/<id>) or an INFERENCE_LORA "
                        "checkpoint (<name>, cross_job://<job>/<name>)")
    path = path.strip()
    if m := MODEL_RE.fullmatch(path):
        return _promoted(services, model, *m.groups())
    if m := ROW_RE.fullmatch(path):
        account, job_id, name = m.groups()
        if account != model.account:
            raise UserError(f"{path!r}: trainer job {job_id} not found in account {model.account}")
        return _row(services, model, job_id, name, path)
    if path.startswith(CROSS_JOB_PREFIX):
        job_id, sep, name = path[len(CROSS_JOB_PREFIX):].partition("/")
        if not sep:
            raise UserError(f"{path!r} is not a valid reference; use cross_job://<job_id>/<checkpoint_name>")
        return _row(services, model, job_id, name, path)
    if URL_RE.match(path) or path.startswith("/"):
        raise UserError(f"{path!r} cannot be read by the emulator (no cloud storage or local paths); bring the "
                        "adapter directory in with `fwemu import` and pass its checkpoint name, or promote it "
                        "and pass accounts/<account>/models/<id>")
    return _row(services, model, model.job_id, path, path)


def _promoted(services: Services, model: ModelState, account: str, model_id: str) -> tuple[Path, str]:
    what = f"model accounts/{account}/models/{model_id}"
    if account == PUBLIC_ACCOUNT:
        raise UserError(f"{what} is a base model, not a PEFT adapter; pass a promoted LoRA model "
                        f"(kind {PEFT_MODEL_KIND}) of account {model.account}")
    record = services.store.get_model(account, model_id) if account == model.account else None
    if record is None:
        raise UserError(f"{what} not found in account {model.account}")
    if record.get("kind") != PEFT_MODEL_KIND:
        raise UserError(f"{what} is a {record.get('kind')} model, not a PEFT adapter ({PEFT_MODEL_KIND}); "
                        "for a full-parameter warm start, create the trainer from that model instead")
    return services.store.model_dir(account, model_id), what


def _row(services: Services, model: ModelState, job_id: str, name: str, path: str) -> tuple[Path, str]:
    if not DNS_LABEL_RE.fullmatch(job_id) or not DNS_LABEL_RE.fullmatch(name):
        raise UserError(f"{path!r} is not an adapter this trainer can read; pass accounts/<a>/models/<id>, a "
                        "checkpoint name of this job, or cross_job://<job_id>/<name>")
    if job_id != model.job_id and not job_visible(services, model.account, job_id):
        raise UserError(f"{path!r}: trainer job {job_id} not found in account {model.account}")
    row = services.store.get_checkpoint(model.account, job_id, name)
    what = f"checkpoint {name!r} of trainer job {job_id}"
    if row is None:
        known = services.store.checkpoint_names(model.account, job_id, {Kind.INFERENCE_LORA})
        hint = f"; its PEFT adapters: {', '.join(known[-5:])}" if known else "; it has no PEFT adapter checkpoints"
        raise UserError(f"{what} not found{hint}")
    if row.kind is not Kind.INFERENCE_LORA:
        kind = row.kind.wire if row.kind else f"rejected by the checkpoint inspector ({row.reason})"
        raise UserError(f"{what} is {kind}, not a PEFT adapter ({Kind.INFERENCE_LORA.wire}); load_adapter "
                        "reads LoRA sampler exports, load_state reads save_state checkpoints")
    return services.store.checkpoint_dir(model.account, job_id, name), what


def header_facts(snapshot: Path) -> tuple[dict, dict[str, tuple[str, tuple[int, ...]]]]:
    """(adapter_config.json, {tensor: (dtype, shape)}) read from headers only, strictly and bounded."""
    from fwemu.emulator.inspect.reader import CheckpointDir
    from fwemu.emulator.inspect.safetensors_header import read_header

    d = CheckpointDir(snapshot)
    config = d.read_json(ADAPTER_CONFIG, MAX_JSON)
    header = read_header(d, ADAPTER_WEIGHTS)
    return config, {n: (t.dtype, t.shape) for n, t in header.tensors.items()}
