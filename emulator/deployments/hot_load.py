"""Hot load: find the snapshot a request names, decide whether it may be applied, and apply it.

The request is answered only after the work is done, so the next status GET is already current
(the SDK polls every 5 s; an emulator that made it wait would only slow tests down). A snapshot
that cannot be applied is not an HTTP error: like the real serving stack, the request is
accepted and the replica's `loading_state` turns to `stage: "error"` for that target, with a
`reason` code and a message. That is what the SDK's `wait_for_hotload` reads to fail at once
instead of retrying; the deployment keeps serving its current snapshot.

Where snapshots come from: the trainer job the deployment is attached to
(`hotLoadTrainerJob`), or the job named by an `x-fireworks-hot-load-source-url` of the form
`fwemu://hot-load/accounts/<a>/rlorTrainerJobs/<job>/` (the `hotLoadBucketUrl` the deployment
reports). Snapshots are checkpoint rows of that job; the inspector's kind decides what they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from fwemu.emulator.deployments import states
from fwemu.emulator.deployments.store import Deployment, DeploymentStore
from fwemu.emulator.services import Services
from fwemu.emulator.store.atomic import link_or_copy_tree

PUBLIC_ACCOUNT = "fireworks"


@dataclass(frozen=True)
class Outcome:
    hot_load: dict         # the deployment's new hot-load state (persisted)
    engine: Any = None     # the loaded Engine when a snapshot was applied


def _refused(previous: Mapping, identity: str, refusal: states.Refusal) -> Outcome:
    state = {k: v for k, v in previous.items() if k in ("version", "seq", "current", "kind")}
    state.update(stage="error", target=identity, reason=refusal.reason, message=refusal.message)
    return Outcome(state)


def _source_job(dep: Deployment, source_url: str | None) -> tuple[str, str] | states.Refusal:
    if source_url:
        url = source_url.rstrip("/") + "/"
        if not url.startswith(states.BUCKET_SCHEME):
            return states.Refusal("SOURCE_UNREACHABLE", f"source URL {source_url!r} cannot be read by the emulator; "
                                                        f"use the deployment's hotLoadBucketUrl ({states.BUCKET_SCHEME}"
                                                        "accounts/<a>/rlorTrainerJobs/<job>/) or omit it")
        try:
            return states.parse_trainer_job(url[len(states.BUCKET_SCHEME):-1], dep.account)
        except states.RuleError as exc:
            return states.Refusal("SOURCE_UNREACHABLE", str(exc))
    job = dep.record.get("hotLoadTrainerJob")
    if not job:
        return states.Refusal("NO_HOT_LOAD_BUCKET", "the deployment is not attached to a trainer job "
                                                    "(hotLoadTrainerJob), so it has no snapshots to load; attach it "
                                                    "with an update of hot_load_trainer_job")
    return states.parse_trainer_job(job, dep.account)


def _base_model_refusal(dep: Deployment, details: Mapping, config_owner: str | None) -> states.Refusal | None:
    """A snapshot of another base model cannot be served (checked for public base models only)."""
    if not dep.base_model.startswith(f"accounts/{PUBLIC_ACCOUNT}/") or not config_owner:
        return None
    if config_owner != dep.base_model:
        return states.Refusal("BASE_MODEL_MISMATCH", f"the snapshot was trained from {config_owner!r}, but the "
                                                     f"deployment serves {dep.base_model!r}")
    return None


def _owner(path) -> str | None:
    """The base model a snapshot says it belongs to (config.json or adapter_config.json)."""
    for name, key in (("config.json", "_name_or_path"), ("adapter_config.json", "base_model_name_or_path")):
        try:
            value = json.loads((path / name).read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, str):
            return value
    return None


def apply(services: Services, dstore: DeploymentStore, dep: Deployment, identity: str,
          metadata: Mapping | None, source_url: str | None) -> Outcome:
    """Decide and (when allowed) apply one hot load; the caller persists `Outcome.hot_load`."""
    from fwemu.emulator.deployments import engine as engines  # torch, on the first hot load only
    from fwemu.emulator.trainer import arc_v2

    previous = dep.hot_load
    src = _source_job(dep, source_url)
    if isinstance(src, states.Refusal):
        return _refused(previous, identity, src)
    account, job_id = src
    row = services.store.get_checkpoint(account, job_id, identity)
    if row is None:
        return _refused(previous, identity, states.Refusal(
            "SNAPSHOT_NOT_FOUND", f"snapshot {identity!r} is not in the hot-load bucket of trainer job {job_id}"))
    snap_dir = services.store.checkpoint_dir(account, job_id, identity)
    plan = states.plan_hot_load(row.kind, identity, previous.get("current"), previous.get("kind") == "full",
                                metadata, row.details.get("base_identity"))
    if isinstance(plan, states.Refusal):
        return _refused(previous, identity, plan)
    mismatch = _base_model_refusal(dep, row.details, _owner(snap_dir))
    if mismatch:
        return _refused(previous, identity, mismatch)
    if plan == "current":
        kept = {k: v for k, v in previous.items() if k not in ("reason", "message")}
        return Outcome({**kept, "stage": "done", "target": identity, "applied": "current"})

    seq = int(previous.get("seq", 0)) + 1
    version = f"v{seq}"
    try:
        with dstore.staged_version(dep.account, dep.deployment_id, version) as out:
            if plan == "delta":
                current_dir = dstore.version_dir(dep.account, dep.deployment_id, previous["version"])
                arc_v2.apply_delta(current_dir, snap_dir, out)
            else:
                link_or_copy_tree(snap_dir, out)
            engine = engines.lora_engine(out, dep.base_model) if plan == "lora" else engines.full_engine(out)
    except engines.EngineError as exc:
        return _refused(previous, identity, states.Refusal("WEIGHTS_DO_NOT_FIT", str(exc)))
    except ValueError as exc:  # apply_delta: wrong base, corrupted delta, changed files
        return _refused(previous, identity, states.Refusal("DELTA_APPLY_FAILED", str(exc)))
    state = {"version": version, "seq": seq, "current": identity, "kind": "lora" if plan == "lora" else "full",
             "stage": "done", "target": identity, "applied": plan, "source_job": f"{account}/{job_id}",
             "loaded_us": services.clock.now_us()}
    return Outcome(state, engine)


def status(dep: Deployment) -> dict:
    """The GET answer the SDK's hot-load waiter reads (`replicas[0]`)."""
    if int(dep.record.get("maxReplicaCount", 1)) == 0:
        return {"replicas": []}
    h = dep.hot_load
    loading: dict[str, Any] = {"stage": h.get("stage", "idle")}
    if h.get("target"):
        loading["target_snapshot_identity"] = h["target"]
    if h.get("stage") == "error":
        loading.update(reason=h.get("reason"), error=h.get("message"))
    replica: dict[str, Any] = {
        "name": f"{dep.record['name']}/replicas/0",
        "identity": states.pod_identity(dep.record),
        "current_snapshot_identity": h.get("current"),
        "readiness": True,
        "loading_state": loading,
        "loaded_adapters": [{"identity": h["current"], "status": "loaded"}] if h.get("kind") == "lora" else [],
    }
    return {"replicas": [replica]}
