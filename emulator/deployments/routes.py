"""/v1/accounts/{a}/deployments (create, get, list, patch, delete) and deployment shape versions.

Thin handlers over `states` (rules) and `store` (rows). Another account's deployment answers the
same 404 as a missing one. Create answers 409 ALREADY_EXISTS for a live id, which the SDK's
`create_or_get` answers with a GET. Deployments are READY at once (see `states`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Query

from fwemu.emulator.auth import PUBLIC_ACCOUNT, caller_account, require_same_account
from fwemu.emulator.deployments import states
from fwemu.emulator.deployments.runtime import DeploymentRuntime, runtime_of
from fwemu.emulator.deployments.store import Deployment
from fwemu.emulator.errors import already_exists, failed_precondition, invalid_argument, not_found
from fwemu.emulator.lazy_routes import LazyAPIRoute
from fwemu.emulator.services import Services, get_services
from fwemu.emulator.store import AlreadyExists, NotFound, rfc3339

router = APIRouter(tags=["control plane: deployments"], route_class=LazyAPIRoute)
RECENT_TRAFFIC_S = 3600  # DELETE without ignoreChecks refuses a deployment served within this window


def deployment_json(dep: Deployment) -> dict:
    state = states.DELETED if dep.deleted_us is not None else states.READY
    return states.wire(dep.record, state=state, create_time=rfc3339(dep.create_us),
                       update_time=rfc3339(dep.update_us))


async def _runtime(services: Services = Depends(get_services)) -> DeploymentRuntime:
    return runtime_of(services)


def load_deployment(rt: DeploymentRuntime, caller: str, account: str, deployment_id: str, *,
                    include_deleted: bool = False) -> Deployment:
    require_same_account(caller, account, f"deployment {deployment_id}")
    dep = rt.store.get(account, deployment_id, include_deleted=include_deleted)
    if dep is None:
        raise not_found(f"deployment accounts/{account}/deployments/{deployment_id} not found")
    return dep


def _check_trainer_job(services: Services, record: dict) -> None:
    job = record.get("hotLoadTrainerJob")
    if job:
        account, job_id = states.parse_trainer_job(job, record["name"].split("/")[1])
        if services.store.get_job(account, job_id) is None:
            raise invalid_argument(f"hotLoadTrainerJob {job!r}: trainer job {job_id} not found in account {account}")


@router.post("/v1/accounts/{account}/deployments")
def create_deployment(account: str, body: dict[str, Any] = Body(...),
                      deploymentId: str | None = Query(None, max_length=63),
                      acceptShapelessRisk: bool = Query(False), skipShapeValidation: bool = Query(False),
                      disableSpeculativeDecoding: bool = Query(False),
                      caller: str = Depends(caller_account), rt: DeploymentRuntime = Depends(_runtime)):
    require_same_account(caller, account, f"account {account}")
    if not deploymentId:
        raise invalid_argument("deploymentId is required (POST .../deployments?deploymentId=<id>)")
    try:
        record = states.new_record(account, deploymentId, body, accept_shapeless_risk=acceptShapelessRisk)
        _check_trainer_job(rt.services, record)
    except states.RuleError as exc:
        raise invalid_argument(str(exc)) from None
    try:
        dep = rt.store.create(account, deploymentId, record)
    except AlreadyExists as exc:
        raise already_exists(str(exc)) from None
    rt.forget(account, deploymentId)
    return deployment_json(dep)


@router.get("/v1/accounts/{account}/deployments")
def list_deployments(account: str, caller: str = Depends(caller_account), rt: DeploymentRuntime = Depends(_runtime)):
    require_same_account(caller, account, f"account {account}")
    deps = rt.store.list(account)
    return {"deployments": [deployment_json(d) for d in deps], "nextPageToken": "", "totalSize": len(deps)}


@router.get("/v1/accounts/{account}/deployments/{deployment_id}")
def get_deployment(account: str, deployment_id: str, caller: str = Depends(caller_account),
                   rt: DeploymentRuntime = Depends(_runtime)):
    return deployment_json(load_deployment(rt, caller, account, deployment_id, include_deleted=True))


@router.patch("/v1/accounts/{account}/deployments/{deployment_id}")
def update_deployment(account: str, deployment_id: str, body: dict[str, Any] = Body(...),
                      updateMask: str | None = Query(None, max_length=1024),
                      caller: str = Depends(caller_account), rt: DeploymentRuntime = Depends(_runtime)):
    """Only the mask's fields change; without a mask, the fields the body sets (AIP-134)."""
    dep = load_deployment(rt, caller, account, deployment_id)
    try:
        fields = states.mask_fields(updateMask, body)
        record = states.apply_update(dep.record, account, body, fields)
        if record.get("hotLoadTrainerJob") != dep.record.get("hotLoadTrainerJob"):
            _check_trainer_job(rt.services, record)  # a newly attached job must exist; scaling a
            # deployment whose job was since deleted (the cookbook's clean-up order) still works
    except states.RuleError as exc:
        raise invalid_argument(str(exc)) from None
    try:
        dep = rt.store.update(account, deployment_id, record=record)
    except NotFound as exc:
        raise not_found(str(exc)) from None
    return deployment_json(dep)


@router.delete("/v1/accounts/{account}/deployments/{deployment_id}")
def delete_deployment(account: str, deployment_id: str, ignoreChecks: bool = Query(False),
                      hard: bool = Query(False), caller: str = Depends(caller_account),
                      rt: DeploymentRuntime = Depends(_runtime)):
    """hard=true forgets it (GET 404); else it stays readable as DELETED. Without ignoreChecks a
    deployment that served requests in the last hour is kept (the real service's traffic check)."""
    load_deployment(rt, caller, account, deployment_id)
    last = rt.last_request_us.get((account, deployment_id))
    if not ignoreChecks and last is not None and rt.services.clock.peek_us() - last < RECENT_TRAFFIC_S * 1_000_000:
        raise failed_precondition(f"deployment {deployment_id} served requests in the last hour; delete it with "
                                  "ignoreChecks=true to delete it anyway", reason="DEPLOYMENT_IN_USE")
    with rt.lock(account, deployment_id):
        try:
            rt.store.delete(account, deployment_id, hard=hard)
        except NotFound as exc:
            raise not_found(str(exc)) from None
        rt.forget(account, deployment_id)
    return {}


# ---------------------------------------------------------------------- deployment shapes
def _shape_version(account: str, shape: str, version: str) -> dict:
    name = f"accounts/{account}/deploymentShapes/{shape}/versions/{version}"
    return {"name": name, "validated": True, "latestValidated": True, "public": account == PUBLIC_ACCOUNT,
            "snapshot": {"name": f"accounts/{account}/deploymentShapes/{shape}",
                         "acceleratorType": "NVIDIA_H200_141GB", "acceleratorCount": 1,
                         "precision": "FP32", "enableHotLoad": True}}


def _shape_access(caller: str, account: str, shape: str) -> None:
    if account != PUBLIC_ACCOUNT:
        require_same_account(caller, account, f"deployment shape {shape}")
    if not states.DEPLOYMENT_ID_RE.fullmatch(shape):
        raise invalid_argument(f"deployment shape id {shape!r} must match {states.DEPLOYMENT_ID_RE.pattern}")


@router.get("/v1/accounts/{account}/deploymentShapes/{shape}/versions/{version}")
def get_shape_version(account: str, shape: str, version: str, caller: str = Depends(caller_account)):
    """Every shape exists in the emulator: one accelerator serving the stand-in model, hot load on."""
    _shape_access(caller, account, shape)
    return _shape_version(account, shape, version)


@router.get("/v1/accounts/{account}/deploymentShapes/{shape}/versions")
def list_shape_versions(account: str, shape: str, caller: str = Depends(caller_account),
                        pageSize: int = Query(50, ge=0, le=1000), filter: str | None = Query(None, max_length=256)):
    _shape_access(caller, account, shape)
    return {"deploymentShapeVersions": [_shape_version(account, shape, "latest")], "nextPageToken": "",
            "totalSize": 1}
