"""Training shapes: every shape id answers one stand-in version, so `training_shape_id` configs run.

The SDK's `FireworksClient.resolve_training_profile` GETs `…/trainingShapes/{s}/versions?filter=
latest_validated=true&pageSize=1` (or `…/versions/{v}` for a pinned version) and reads only the
version's `name` and `snapshot` (docs/wire.md A.10). fwemu trains one tiny stand-in whatever the
shape, so the profile describes that: one accelerator, one node, no pipeline parallelism, and the
same context length a job gets when its create body names none (which is the case on the shape
path: the SDK then leaves `maxContextLength` out).
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Depends, Query

from fwemu.emulator import jobs
from fwemu.emulator.auth import PUBLIC_ACCOUNT, caller_account, require_same_account
from fwemu.emulator.errors import invalid_argument
from fwemu.emulator.lazy_routes import LazyAPIRoute

router = APIRouter(tags=["control plane: training shapes"], route_class=LazyAPIRoute)

SHAPE_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
STANDIN_VERSION = "fwemu-standin"


def trainer_mode(shape: str) -> str:
    """The shape's trainer mode, read off its id as the real catalogue names them; LoRA by default.

    `...-forward-only...` -> FORWARD_ONLY, `...-policy` / `...-full...` -> POLICY_TRAINER, anything
    else LORA_TRAINER (the mode the SDK accepts for both policies and references).
    """
    words = set(shape.split("-"))
    if "forward" in words and "only" in words:
        return "FORWARD_ONLY"
    if words & {"policy", "full"}:
        return "POLICY_TRAINER"
    return "LORA_TRAINER"


def shape_version(account: str, shape: str, version: str) -> dict:
    """The stand-in `TrainingShapeVersion` (the fields `_profile_from_version` reads, plus state)."""
    return {
        "name": f"accounts/{account}/trainingShapes/{shape}/versions/{version}",
        "validated": True,
        "latestValidated": True,
        "public": account == PUBLIC_ACCOUNT,
        "snapshot": {
            "trainerImageTag": "fwemu-standin",
            "maxSupportedContextLength": jobs.DEFAULT_MAX_CONTEXT,
            "nodeCount": 1,
            "acceleratorType": "NVIDIA_H200_141GB",
            "acceleratorCount": 1,
            "baseModelWeightPrecision": "FP32",
            "trainerShardingScheme": {"pipelineParallelism": 1},
            "trainerMode": trainer_mode(shape),
            "deploymentShapeVersion": f"accounts/{account}/deploymentShapes/{shape}/versions/{STANDIN_VERSION}",
            "deploymentImageTag": "fwemu-standin",
        },
    }


def _access(caller: str, account: str, shape: str) -> None:
    """Public shapes (accounts/fireworks) for every key, else only the caller's own account's."""
    if account != PUBLIC_ACCOUNT:
        require_same_account(caller, account, f"training shape {shape}")
    if not SHAPE_ID_RE.fullmatch(shape):
        raise invalid_argument(f"training shape id {shape!r} must match {SHAPE_ID_RE.pattern}")


@router.get("/v1/accounts/{account}/trainingShapes/{shape}/versions")
def list_shape_versions(account: str, shape: str, caller: str = Depends(caller_account),
                        pageSize: int = Query(50, ge=0, le=1000), filter: str | None = Query(None, max_length=1024),
                        orderBy: str | None = Query(None, max_length=256)):
    """One version, validated and latest, whatever the filter (the SDK asks for latest_validated=true)."""
    _access(caller, account, shape)
    return {"trainingShapeVersions": [shape_version(account, shape, STANDIN_VERSION)],
            "nextPageToken": "", "totalSize": 1}


@router.get("/v1/accounts/{account}/trainingShapes/{shape}/versions/{version}")
def get_shape_version(account: str, shape: str, version: str, caller: str = Depends(caller_account)):
    """Any version id exists and is the stand-in, under the name it was asked by."""
    _access(caller, account, shape)
    if not SHAPE_ID_RE.fullmatch(version):
        raise invalid_argument(f"training shape version {version!r} must match {SHAPE_ID_RE.pattern}")
    return shape_version(account, shape, version)
