"""Checkpoint rows of a trainer job, and their promotion to models."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from fwemu.emulator.auth import caller_account, require_same_account
from fwemu.emulator.controlplane.access import load_job
from fwemu.emulator.controlplane.checkpoint_views import checkpoint_json
from fwemu.emulator.controlplane.promotion import promote
from fwemu.emulator.controlplane.schemas import PromoteBody
from fwemu.emulator.errors import invalid_argument, unavailable
from fwemu.emulator.lazy_routes import LazyAPIRoute
from fwemu.emulator.services import Services, get_services

router = APIRouter(tags=["control plane: checkpoints"], route_class=LazyAPIRoute)


@router.get("/v1/accounts/{account}/rlorTrainerJobs/{job_id}/checkpoints")
def list_checkpoints(account: str, job_id: str,
                     pageSize: int = Query(50, ge=0, le=1000), pageToken: str = Query("", max_length=512),
                     caller: str = Depends(caller_account), services: Services = Depends(get_services)):
    """Rows derived from the stored bytes, oldest first; works for deleted jobs during retention."""
    settings = services.settings
    load_job(services, caller, account, job_id)
    if "list-failures" in settings.quirks and next(services.list_calls) % 2 == 0:
        raise unavailable("checkpoint listing is temporarily unavailable (quirk list-failures)")
    visible_before = None
    if "listing-delay" in settings.quirks:
        visible_before = services.clock.peek_us() - int(settings.quirk_listing_delay_s * 1_000_000)
    try:
        rows, token = services.store.list_checkpoints(
            account, job_id, pageSize or 50, pageToken or None,
            newest_first="newest-first" in settings.breaks, visible_before_us=visible_before)
    except ValueError as exc:
        raise invalid_argument(str(exc)) from None
    # a plain JSONResponse: the rows are already JSON-safe, so skip FastAPI's encoder (~20% of a page)
    return JSONResponse({"checkpoints": [checkpoint_json(r, settings) for r in rows], "nextPageToken": token})


@router.post("/v1/accounts/{account}/checkpoints/{checkpoint}:promote")
def promote_checkpoint(account: str, checkpoint: str, body: PromoteBody,
                       caller: str = Depends(caller_account), services: Services = Depends(get_services)):
    require_same_account(caller, account, f"checkpoint {checkpoint}")
    return promote(services, caller, account, checkpoint, body)
