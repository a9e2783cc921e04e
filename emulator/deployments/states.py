"""Deployment rules as pure functions: the create body, the update mask, the wire JSON, and which
snapshot a hot load may apply on top of which.

No HTTP, no storage, no torch. A deployment is READY as soon as it is created or patched: the
emulator has no pods to schedule, and the SDK sleeps 15 s between readiness polls, so any
intermediate state would only make every test slower. Scaling to zero keeps it READY with no
replicas (the real service also keeps a scaled-to-zero deployment READY).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Mapping

from fwemu.emulator.inspect import Kind

DEPLOYMENT_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
TRAINER_JOB_RE = re.compile(r"^accounts/([^/]+)/rlorTrainerJobs/([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)$")
DEPLOYMENT_NAME_RE = re.compile(r"^accounts/([^/]+)/deployments/([^/#]+)$")
MODEL_NAME_RE = re.compile(r"^accounts/[^/]+/models/[^/]+$")
READY, DELETED = "READY", "DELETED"
TRANSITION_TYPES = ("ASYNC", "SYNC")
MAX_REPLICAS = 100
BUCKET_SCHEME = "fwemu://hot-load/"

# camelCase wire name -> snake_case mask path, for the fields a PATCH may change
MUTABLE = {
    "displayName": "display_name",
    "description": "description",
    "minReplicaCount": "min_replica_count",
    "maxReplicaCount": "max_replica_count",
    "hotLoadTrainerJob": "hot_load_trainer_job",
    "hotLoadTransitionType": "hot_load_transition_type",
    "annotations": "annotations",
    "autoscalingPolicy": "autoscaling_policy",
}
IMMUTABLE = {"baseModel": "base_model", "deploymentShape": "deployment_shape", "acceleratorType": "accelerator_type",
             "name": "name", "enableHotLoad": "enable_hot_load", "hotLoadBucketType": "hot_load_bucket_type",
             "placement": "placement", "state": "state", "createTime": "create_time"}
_BY_SNAKE = {snake: camel for camel, snake in {**MUTABLE, **IMMUTABLE}.items()}


class RuleError(ValueError):
    """A request the rules refuse; the routes answer INVALID_ARGUMENT with this message."""


def bucket_url(trainer_job: str | None) -> str | None:
    """Where a deployment attached to a trainer job reads its snapshots from."""
    return f"{BUCKET_SCHEME}{trainer_job}/" if trainer_job else None


def parse_trainer_job(value: Any, account: str) -> tuple[str, str]:
    """`accounts/{a}/rlorTrainerJobs/{job}` of the deployment's own account -> (account, job)."""
    m = TRAINER_JOB_RE.fullmatch(value) if isinstance(value, str) else None
    if not m:
        raise RuleError(f"hotLoadTrainerJob {value!r} must be accounts/<account>/rlorTrainerJobs/<job id>")
    if m.group(1) != account:
        raise RuleError(f"hotLoadTrainerJob {value!r} belongs to another account; a deployment can only read "
                        f"the hot-load bucket of a trainer job in account {account}")
    return m.group(1), m.group(2)


def _replicas(body: Mapping, out: dict) -> None:
    for key in ("minReplicaCount", "maxReplicaCount"):
        if key in body:
            v = body[key]
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_REPLICAS:
                raise RuleError(f"{key} must be an integer in [0, {MAX_REPLICAS}] (got {v!r})")
            out[key] = v
    if out.get("minReplicaCount", 0) > out.get("maxReplicaCount", 1):
        raise RuleError(f"minReplicaCount {out['minReplicaCount']} is larger than maxReplicaCount "
                        f"{out['maxReplicaCount']}")


def _transition(value: Any) -> str | None:
    if value in (None, "", "HOT_LOAD_TRANSITION_TYPE_UNSPECIFIED", "UNSPECIFIED"):
        return None
    if not isinstance(value, str) or value.upper() not in TRANSITION_TYPES:
        raise RuleError(f"hotLoadTransitionType must be one of {list(TRANSITION_TYPES)} (got {value!r})")
    return value.upper()


def new_record(account: str, deployment_id: str, body: Mapping, *, accept_shapeless_risk: bool) -> dict:
    """The stored record of a create request (validated); raises RuleError."""
    if not DEPLOYMENT_ID_RE.fullmatch(deployment_id):
        raise RuleError(f"deploymentId {deployment_id!r} must match {DEPLOYMENT_ID_RE.pattern}")
    base = body.get("baseModel")
    if not isinstance(base, str) or not MODEL_NAME_RE.fullmatch(base):
        raise RuleError(f"baseModel {base!r} must be a model name, e.g. accounts/fireworks/models/qwen3-8b")
    shape = body.get("deploymentShape")
    if shape is not None and (not isinstance(shape, str) or "/deploymentShapes/" not in shape):
        raise RuleError(f"deploymentShape {shape!r} must be accounts/<a>/deploymentShapes/<shape>[/versions/<v>]")
    if shape and accept_shapeless_risk:
        raise RuleError("acceptShapelessRisk cannot be combined with deploymentShape")
    if shape and body.get("acceleratorType"):
        raise RuleError("acceleratorType is set by the deployment shape; do not send it with deploymentShape")
    record: dict[str, Any] = {k: v for k, v in body.items() if k not in IMMUTABLE or k in ("baseModel",)}
    record.update(baseModel=base, minReplicaCount=0, maxReplicaCount=1,
                  enableHotLoad=bool(body.get("enableHotLoad", False)))
    if shape:
        record["deploymentShape"] = shape
    else:
        record["acceleratorType"] = body.get("acceleratorType") or "NVIDIA_H200_141GB"
    if "hotLoadBucketType" in body:
        record["hotLoadBucketType"] = body["hotLoadBucketType"]
    if "placement" in body:
        record["placement"] = body["placement"]
    _replicas(body, record)
    if body.get("hotLoadTrainerJob"):
        parse_trainer_job(body["hotLoadTrainerJob"], account)
    record["hotLoadTransitionType"] = _transition(body.get("hotLoadTransitionType")) or (
        "ASYNC" if record["enableHotLoad"] else None)
    record["name"] = f"accounts/{account}/deployments/{deployment_id}"
    return {k: v for k, v in record.items() if v is not None}


def mask_fields(update_mask: str | None, body: Mapping) -> list[str]:
    """The camelCase fields a PATCH changes. No mask: every field the body populates (AIP-134)."""
    if update_mask is None or not update_mask.strip():
        return [k for k in body if body[k] is not None]
    fields = []
    for path in (p.strip() for p in update_mask.split(",")):
        if not path:
            continue
        camel = _BY_SNAKE.get(path, path if path in MUTABLE or path in IMMUTABLE else None)
        if camel is None:
            raise RuleError(f"updateMask path {path!r} is not a deployment field")
        fields.append(camel)
    return fields


def apply_update(record: Mapping, account: str, body: Mapping, fields: list[str]) -> dict:
    """The record after a PATCH of `fields` from `body`; raises RuleError for immutable fields."""
    out = dict(record)
    for f in fields:
        if f in IMMUTABLE:
            if body.get(f, record.get(f)) == record.get(f):
                continue  # echoing an unchanged immutable field is harmless
            raise RuleError(f"{IMMUTABLE[f]} cannot be changed on an existing deployment")
        if f not in MUTABLE:
            raise RuleError(f"{f!r} is not a deployment field that can be updated")
        value = body.get(f)
        if f == "hotLoadTrainerJob":
            if value:
                parse_trainer_job(value, account)
            else:
                value = None
        elif f == "hotLoadTransitionType":
            value = _transition(value) or ("ASYNC" if out.get("enableHotLoad") else None)
        if value is None:
            out.pop(f, None)
        else:
            out[f] = value
    replicas = {k: out[k] for k in ("minReplicaCount", "maxReplicaCount") if k in out}
    _replicas(replicas, {})
    return out


def wire(record: Mapping, *, state: str, create_time: str, update_time: str) -> dict:
    """The deployment as GET answers it (the SDK's DeploymentInfo reads these keys)."""
    out = dict(record)
    out.update(state=state, createTime=create_time, updateTime=update_time,
               replicaCount=min(1, int(record.get("maxReplicaCount", 1))),
               status={"code": "OK", "message": ""})
    url = bucket_url(record.get("hotLoadTrainerJob"))
    if url:
        out["hotLoadBucketUrl"] = url
    return out


# ---------------------------------------------------------------------- hot-load decisions
CHECKSUM_FORMATS = ("alder32", "adler32")  # the SDK's constant is spelled "alder32"
COMPRESSION_FORMATS = ("arc_v2",)


@dataclass(frozen=True)
class Refusal:
    """Why a hot load is not applied: `reason` is a stable code, `message` says what to do."""

    reason: str
    message: str


def plan_hot_load(kind: Kind | None, identity: str, current: str | None, current_is_full: bool,
                  metadata: Mapping | None, delta_base: str | None) -> str | Refusal:
    """'full' | 'delta' | 'lora' | 'current', or the Refusal; `delta_base` is the base the delta's
    bytes name. 'current': the snapshot is the one already served, so there is nothing to do
    (the SDK's managed sampler hot-loads the snapshot it last loaded again when a sampling client
    is created for it, with delta metadata naming itself)."""
    if kind is None:
        return Refusal("SNAPSHOT_REJECTED", f"snapshot {identity!r} was rejected by the checkpoint inspector")
    if kind in (Kind.TRAINING, Kind.TRAINING_LORA):
        return Refusal("NOT_A_SAMPLER_SNAPSHOT",
                       f"snapshot {identity!r} is {kind.wire}, a resumable training state; hot-load a "
                       "save_weights_for_sampler export instead")
    if current is not None and identity == current:
        return "current"
    if kind is Kind.INFERENCE_LORA:
        if metadata:
            return Refusal("INCREMENTAL_ON_LORA",
                           f"snapshot {identity!r} is a LoRA adapter (standalone); it must be hot-loaded "
                           "without incremental_snapshot_metadata")
        return "lora"
    if kind is Kind.INFERENCE_BASE:
        if metadata:
            return Refusal("INCREMENTAL_ON_BASE",
                           f"snapshot {identity!r} holds full weights, not a delta; hot-load it without "
                           "incremental_snapshot_metadata")
        return "full"
    # INFERENCE_ARC_V2
    if not metadata:
        return Refusal("DELTA_WITHOUT_METADATA",
                       f"snapshot {identity!r} is an ARC_V2 delta; it needs incremental_snapshot_metadata "
                       "naming the snapshot it applies to")
    previous = metadata.get("previous_snapshot_identity")
    if metadata.get("compression_format") not in COMPRESSION_FORMATS:
        return Refusal("UNKNOWN_COMPRESSION", f"compression_format {metadata.get('compression_format')!r} is not "
                                              f"one of {list(COMPRESSION_FORMATS)}")
    if metadata.get("checksum_format") not in CHECKSUM_FORMATS:
        return Refusal("UNKNOWN_CHECKSUM", f"checksum_format {metadata.get('checksum_format')!r} is not one of "
                                           f"{list(CHECKSUM_FORMATS)}")
    if not current or not current_is_full:
        what = "no snapshot" if not current else f"LoRA adapter {current!r}"
        return Refusal("CHAIN_MISMATCH", f"delta {identity!r} needs full weights to apply to, but the deployment "
                                         f"has {what} loaded; hot-load a base snapshot first")
    if previous != current:
        return Refusal("CHAIN_MISMATCH", f"delta {identity!r} names previous snapshot {previous!r}, but the "
                                         f"deployment's current snapshot is {current!r}; hot-load a base snapshot "
                                         "to restart the chain")
    if delta_base != current:
        return Refusal("CHAIN_MISMATCH", f"delta {identity!r} was computed against {delta_base!r} (its delta.json), "
                                         f"not against the deployment's current snapshot {current!r}")
    return "delta"


def pod_identity(record: Mapping) -> str:
    """The serving replica's pod name in hot-load status (`replicas[0].identity`).

    A deployment's pod is replaced when what it is attached to changes (the trainer job's bucket,
    the transition type), so the name is derived from exactly those fields: SDK 1.2.9's
    `reattach_trainer` waits for this name to change after its PATCH ("a fresh pod").
    """
    attached = f"{record.get('hotLoadTrainerJob') or ''}|{record.get('hotLoadTransitionType') or ''}"
    return f"{record['name'].rsplit('/', 1)[-1]}-{hashlib.sha256(attached.encode()).hexdigest()[:8]}"
