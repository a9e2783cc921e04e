"""/v1/accounts and /v1/accounts/{a}/rlorTrainerJobs: create, get, list, delete, :resume."""

from __future__ import annotations

import json
import secrets

from fastapi import APIRouter, Depends, Query

from fwemu.emulator import jobs
from fwemu.emulator.auth import caller_account, require_same_account
from fwemu.emulator.controlplane.access import JOB_ID_RE, load_job
from fwemu.emulator.controlplane.schemas import CreateJobBody
from fwemu.emulator.errors import already_exists, failed_precondition, invalid_argument, not_found
from fwemu.emulator.lazy_routes import LazyAPIRoute
from fwemu.emulator.services import Services, get_services
from fwemu.emulator.store import AlreadyExists

router = APIRouter(tags=["control plane: accounts and trainer jobs"], route_class=LazyAPIRoute)


@router.get("/v1/accounts")
def list_accounts(pageSize: int = Query(50, ge=0, le=1000), caller: str = Depends(caller_account)):
    """Exactly the caller's account: the SDK derives its account id from this single row."""
    return {"accounts": [{"name": f"accounts/{caller}", "displayName": caller, "state": "READY"}],
            "nextPageToken": "", "totalSize": 1}


@router.get("/v1/accounts/{account}")
def get_account(account: str, caller: str = Depends(caller_account)):
    require_same_account(caller, account, f"account {account}")
    return {"name": f"accounts/{account}", "displayName": account, "state": "READY"}


@router.post("/v1/accounts/{account}/rlorTrainerJobs")
def create_job(account: str, body: CreateJobBody,
               rlorTrainerJobId: str | None = Query(None, max_length=63),
               caller: str = Depends(caller_account), services: Services = Depends(get_services)):
    require_same_account(caller, account, f"account {account}")
    job_id = rlorTrainerJobId or f"fwemu-{secrets.token_hex(6)}"
    if not JOB_ID_RE.fullmatch(job_id):
        raise invalid_argument(f"rlorTrainerJobId {job_id!r} must match {JOB_ID_RE.pattern}")
    stored = body.model_dump(exclude_none=True)
    try:  # NaN / Infinity parse as JSON numbers in Python but can never be answered back: refuse them
        json.dumps(stored, allow_nan=False)
    except ValueError:
        raise invalid_argument("the request body contains a non-finite number (NaN or Infinity)") from None
    delay_us = int(services.settings.startup_delay_s * 1_000_000)
    try:
        job = services.store.create_job(account, job_id, stored, delay_us)
    except AlreadyExists:
        raise already_exists(f"trainer job accounts/{account}/rlorTrainerJobs/{job_id} already exists") from None
    return jobs.job_json(job, services.clock.peek_us())


@router.get("/v1/accounts/{account}/rlorTrainerJobs")
def list_jobs(account: str, caller: str = Depends(caller_account), services: Services = Depends(get_services)):
    require_same_account(caller, account, f"account {account}")
    now = services.clock.peek_us()
    return {"rlorTrainerJobs": [jobs.job_json(j, now) for j in services.store.list_jobs(account)],
            "nextPageToken": ""}


@router.get("/v1/accounts/{account}/rlorTrainerJobs/{job_id}")
def get_job(account: str, job_id: str, caller: str = Depends(caller_account),
            services: Services = Depends(get_services)):
    job = load_job(services, caller, account, job_id)
    return jobs.job_json(job, services.clock.peek_us())


@router.delete("/v1/accounts/{account}/rlorTrainerJobs/{job_id}")
def delete_job(account: str, job_id: str, caller: str = Depends(caller_account),
               services: Services = Depends(get_services)):
    """The job becomes JOB_STATE_DELETED; its checkpoints stay listable for the retention window.

    Deleting it again is 404 NOT_FOUND (AIP-135/164: a soft-deleted resource is not deleted twice) and
    changes nothing, so the retention window never restarts (docs/wire.md A.4)."""
    job = load_job(services, caller, account, job_id)
    if job.deleted_us is not None:
        raise not_found(f"trainer job {job_id} in account {account} was already deleted; "
                        "its checkpoints stay listable until the retention window ends")
    services.store.set_job_state(account, job_id, jobs.DELETED, bump_generation=True, deleted=True)
    _drop_trainer(services, account, job_id, "the trainer job was deleted")
    return {}


def _drop_trainer(services: Services, account: str, job_id: str, reason: str) -> None:
    """Free the job's live trainer (sessions, models, worker threads) now, not at its next call."""
    gateway = services.extensions.get("gateway")
    if gateway is not None:
        gateway.forget_job(account, job_id, reason)


@router.post("/v1/accounts/{account}/rlorTrainerJobs/{job_id}:resume")
def resume_job(account: str, job_id: str, caller: str = Depends(caller_account),
               services: Services = Depends(get_services)):
    """Restart the trainer: PENDING now, RUNNING after the start-up delay; live sessions are dropped."""
    job = load_job(services, caller, account, job_id)
    if job.deleted_us is not None:
        raise failed_precondition(f"trainer job {job_id} was deleted and cannot be resumed")
    ready_us = services.clock.peek_us() + int(services.settings.startup_delay_s * 1_000_000)
    job = services.store.set_job_state(account, job_id, jobs.PENDING, ready_us=ready_us, bump_generation=True)
    _drop_trainer(services, account, job_id, "the trainer job was resumed (a new trainer process)")
    return jobs.job_json(job, services.clock.peek_us())
