"""/_emulator/*: health, reset, state counts, rejected directories, checkpoint import, clock.

Not part of the Fireworks API; every route except health still needs a valid API key, and the
account-scoped ones only touch the caller's account.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio.to_thread
from fastapi import APIRouter, Body, Depends, Query, Request

from fwemu.emulator import __version__, jobs
from fwemu.emulator.admin.local_peer import peer_uid
from fwemu.emulator.admin.path_import import PathImportRefused, check_source, copy_files, preflight
from fwemu.emulator.auth import caller_account, require_same_account
from fwemu.emulator.controlplane.access import JOB_ID_RE, load_job
from fwemu.emulator.controlplane.checkpoint_views import checkpoint_json
from fwemu.emulator.errors import ApiError, already_exists, invalid_argument, not_found
from fwemu.emulator.lazy_routes import LazyAPIRoute
from fwemu.emulator.services import Services, get_services
from fwemu.emulator.store import AlreadyExists, Rejected, rfc3339
from fwemu.emulator.store.tar_stream import TarExtractor, TarRejected

PATH_IMPORT_UNAVAILABLE = "PATH_IMPORT_UNAVAILABLE"

router = APIRouter(prefix="/_emulator", tags=["emulator admin"], route_class=LazyAPIRoute)


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
    for ext in list(services.extensions.values()):  # the gateway's live trainers, the deployments
        if hasattr(ext, "reset"):
            ext.reset()
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
                 "application/x-tar": {"schema": {"type": "string", "format": "binary"}},
                 "application/json": {"schema": {
                     "type": "object", "required": ["sourcePath"], "additionalProperties": False,
                     "properties": {"sourcePath": {"type": "string", "description": (
                         "absolute path of a checkpoint directory on the emulator's host; only for a "
                         "loopback client running as the emulator's user")}}}}}}})
async def import_checkpoint(request: Request, account: str, job_id: str,
                            name: str = Query(..., min_length=1, max_length=128),
                            baseModel: str | None = Query(None, max_length=512),
                            caller: str = Depends(caller_account), services: Services = Depends(get_services)):
    """Put a flat checkpoint directory into the job's blob store: a tar stream, or a local path.

    Body: a tar of the directory (application/x-tar), or `{"sourcePath": "/abs/dir"}`
    (application/json) which the server copies in the kernel, allowed only for a loopback client
    whose socket belongs to the emulator's user (or root). The job is created (JOB_STATE_COMPLETED)
    when it does not exist and baseModel is given, so a checkpoint downloaded from the real
    service can be listed and promoted locally. A directory the inspector rejects is refused with
    its reason, and nothing is stored.
    """
    require_same_account(caller, account, f"trainer job {job_id}")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("application/x-tar", "application/json", ""):
        raise invalid_argument("import body must be a tar stream (Content-Type: application/x-tar) "
                               'or {"sourcePath": ...} (Content-Type: application/json)')
    source = await _source_path(request, services) if content_type == "application/json" else None
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
        if source is not None:
            files = await anyio.to_thread.run_sync(_copy_local, store, account, job_id, name, settings, source)
        else:
            files = await _extract_in_thread(request, store, account, job_id, name, settings)
    except (TarRejected, PathImportRefused) as exc:
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


MAX_JSON_BODY = 64 << 10


async def _source_path(request: Request, services: Services) -> Path:
    """The sourcePath of a JSON import body, once the caller is proven to be local and the server's user."""
    if not services.settings.allow_path_import:
        raise ApiError("PERMISSION_DENIED", "this emulator was started with --no-path-import; stream the "
                       "directory as a tar (Content-Type: application/x-tar)", reason=PATH_IMPORT_UNAVAILABLE)
    # reads /proc/net/tcp{,6}: off the event loop, like every other file read of a request
    uid = await anyio.to_thread.run_sync(peer_uid, request.client and tuple(request.client),
                                         request.scope.get("server"))
    if uid is None or uid not in (os.geteuid(), 0):
        who = "a client that is not on this host (or not over a loopback socket)" if uid is None else f"uid {uid}"
        raise ApiError("PERMISSION_DENIED", f"import by local path is refused for {who}: the server only reads "
                       f"a directory for a loopback client running as its own user (uid {os.geteuid()}); "
                       "stream the directory as a tar (Content-Type: application/x-tar)",
                       reason=PATH_IMPORT_UNAVAILABLE)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BODY:
            raise invalid_argument(f"import JSON body exceeds {MAX_JSON_BODY} bytes")
    try:
        data = json.loads(body)
    except ValueError:
        raise invalid_argument("import JSON body is not valid JSON") from None
    if not isinstance(data, dict) or set(data) != {"sourcePath"}:
        raise invalid_argument('import JSON body must be exactly {"sourcePath": "/absolute/dir"}')
    try:
        return check_source(data["sourcePath"])
    except PathImportRefused as exc:
        raise invalid_argument(str(exc), reason="IMPORT_REJECTED") from None


def _copy_local(store, account, job_id, name, settings, source: Path) -> int:
    """Worker thread: classify the source, then copy it into a staging dir the store publishes."""
    names, _total, verdict = preflight(source, max_bytes=settings.max_import_bytes,
                                       max_files=settings.max_import_files)
    if verdict.kind is None:
        raise Rejected(verdict)
    with store.write_checkpoint(account, job_id, name, require_valid=True) as staging:
        copy_files(source, names, staging)
    return len(names)


IMPORT_BATCH = 1 << 20  # hand the worker thread ~1 MiB of body chunks at a time: few thread hops;
# each chunk is written as it arrived (joining them first cost 2.7x the CPU in a 256 MiB test)


def _feed_all(extractor: TarExtractor, chunks: list[bytes]) -> None:
    for chunk in chunks:
        extractor.feed(chunk)


async def _extract_in_thread(request: Request, store, account, job_id, name, settings) -> int:
    """Stream the body into a staging dir; all file I/O (writes, fsync, inspection, publish) runs in a
    worker thread so a large import never blocks the event loop that serves other requests."""
    run = anyio.to_thread.run_sync
    writer = store.write_checkpoint(account, job_id, name, require_valid=True)
    staging = await run(writer.__enter__)
    try:
        extractor = TarExtractor(staging, max_bytes=settings.max_import_bytes, max_files=settings.max_import_files)
        batch: list[bytes] = []  # the body's own chunks, handed over as they are: no copy to batch them
        size = 0
        async for chunk in request.stream():
            batch.append(chunk)
            size += len(chunk)
            if size >= IMPORT_BATCH:
                await run(_feed_all, extractor, batch)
                batch, size = [], 0
        await run(_feed_all, extractor, batch)
        await run(extractor.finish)
    except BaseException as exc:
        await run(writer.__exit__, type(exc), exc, exc.__traceback__)
        raise
    await run(writer.__exit__, None, None, None)
    return len(extractor.files)
