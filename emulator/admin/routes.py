"""/_emulator/*: health, reset, state counts, rejected directories, checkpoint import, clock.

Not part of the Fireworks API; every route except health still needs a valid API key, and the
account-scoped ones only touch the caller's account.
"""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Body, Depends, Query, Request

from emulator import __version__, jobs
from emulator.auth import caller_account, require_same_account
from emulator.controlplane.access import JOB_ID_RE, load_job
from emulator.controlplane.checkpoint_views import checkpoint_json
from emulator.errors import ApiError, already_exists, invalid_argument, not_found
from emulator.services import Services, get_services
from emulator.store import AlreadyExists, Rejected, rfc3339
from emulator.store.tar_stream import TarExtractor, TarRejected

router = APIRouter(prefix="/_emulator", tags=["emulator admin"])


@router.get("/health")
def health(services: Services = Depends(get_services)):
    return {"status": "ok", "version": __version__, "store": "memory" if services.settings.data_dir is None
            else str(services.settings.data_dir)}


@router.get("/v1/state")
def state(_caller: str = Depends(caller_account), services: Services = Depends(get_services)):
    s = services.settings
    return {"counts": services.store.counts(), "quirks": sorted(s.quirks), "breaks": sorted(s.breaks),
            "integrity": services.store.integrity_ok(), "now": rfc3339(services.clock.peek_us())}


@router.post("/v1/reset")
def reset(_caller: str = Depends(caller_account), services: Services = Depends(get_services)):
    """Forget every job, row, model and operation (tests use this between cases)."""
    gateway = services.extensions.get("gateway")
    if gateway is not None and hasattr(gateway, "reset"):
        gateway.reset()
    services.store.reset()
    return {}


@router.post("/v1/clock:advance")
def advance_clock(seconds: float = Body(..., embed=True, ge=0, le=10 * 365 * 86400),
                  _caller: str = Depends(caller_account), services: Services = Depends(get_services)):
    """Move the emulator's clock forward (retention windows, start-up delays) without sleeping."""
    services.advance_clock(seconds)
    return {"now": rfc3339(services.clock.peek_us())}


@router.get("/v1/accounts/{account}/rlorTrainerJobs/{job_id}/rejected")
def rejected(account: str, job_id: str, caller: str = Depends(caller_account),
             services: Services = Depends(get_services)):
    """Directories in the job's blob store that the inspector refused, with its reason."""
    load_job(services, caller, account, job_id)
    return {"rejected": [{"name": r.name, "reason": r.reason, "claimedKind": r.claimed_kind,
                          "createTime": rfc3339(r.create_us)}
                         for r in services.store.rejected_checkpoints(account, job_id)]}


@router.post("/v1/accounts/{account}/rlorTrainerJobs/{job_id}/checkpoints:import",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/x-tar": {"schema": {"type": "string", "format": "binary"}}}}})
async def import_checkpoint(request: Request, account: str, job_id: str,
                            name: str = Query(..., min_length=1, max_length=128),
                            baseModel: str | None = Query(None, max_length=512),
                            caller: str = Depends(caller_account), services: Services = Depends(get_services)):
    """Stream a tar of a flat checkpoint directory into the job's blob store.

    The job is created (JOB_STATE_COMPLETED) when it does not exist and baseModel is given, so a
    checkpoint downloaded from the real service can be listed and promoted locally. A directory
    the inspector rejects is refused with its reason, and nothing is stored.
    """
    require_same_account(caller, account, f"trainer job {job_id}")
    if request.headers.get("content-type", "").split(";")[0].strip() not in ("application/x-tar", ""):
        raise invalid_argument("import body must be a tar stream (Content-Type: application/x-tar)")
    store, settings = services.store, services.settings
    if not JOB_ID_RE.fullmatch(job_id):
        raise invalid_argument(f"trainer job id {job_id!r} must match {JOB_ID_RE.pattern}")
    job = store.get_job(account, job_id, include_deleted=True)
    if job is None:
        if not baseModel:
            raise not_found(f"trainer job {job_id} not found; pass baseModel to create it for the import")
        load_job_args = (account, job_id, {"trainingConfig": {"baseModel": baseModel}, "importedBy": "fwemu"}, 0)
        try:
            store.create_job(*load_job_args)
            store.set_job_state(account, job_id, jobs.COMPLETED)
        except AlreadyExists:
            pass
    load_job(services, caller, account, job_id)
    try:
        files = await _extract_in_thread(request, store, account, job_id, name, settings)
    except TarRejected as exc:
        raise invalid_argument(f"import refused: {exc}", reason="IMPORT_REJECTED") from None
    except Rejected as exc:
        raise invalid_argument(f"import refused by the inspector: {exc.verdict.reason}",
                               reason="CHECKPOINT_REJECTED") from None
    except AlreadyExists as exc:
        raise already_exists(str(exc)) from None
    except ValueError as exc:
        raise invalid_argument(str(exc)) from None
    row = store.get_checkpoint(account, job_id, name)
    if row is None or row.kind is None:
        raise ApiError("INTERNAL", "imported checkpoint vanished")
    return {"checkpoint": checkpoint_json(row, settings), "files": files}


IMPORT_BATCH = 1 << 20  # hand the worker thread ~1 MiB at a time: few thread hops, cache-sized writes


async def _extract_in_thread(request: Request, store, account, job_id, name, settings) -> int:
    """Stream the body into a staging dir; all file I/O (writes, fsync, inspection, publish) runs in a
    worker thread so a large import never blocks the event loop that serves other requests."""
    run = anyio.to_thread.run_sync
    writer = store.write_checkpoint(account, job_id, name, require_valid=True)
    staging = await run(writer.__enter__)
    try:
        extractor = TarExtractor(staging, max_bytes=settings.max_import_bytes, max_files=settings.max_import_files)
        pending = bytearray()
        async for chunk in request.stream():
            pending += chunk
            if len(pending) >= IMPORT_BATCH:
                await run(extractor.feed, bytes(pending))
                pending.clear()
        await run(extractor.feed, bytes(pending))
        await run(extractor.finish)
    except BaseException as exc:
        await run(writer.__exit__, type(exc), exc, exc.__traceback__)
        raise
    await run(writer.__exit__, None, None, None)
    return len(extractor.files)
