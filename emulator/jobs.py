"""Trainer-job lifecycle rules (pure): what state a job is in at a given time, and its wire JSON.

A job moves CREATING -> PENDING -> RUNNING over `startup_delay_s` after create or :resume. The
state is derived from stored timestamps when read, so no background task is needed and a
restart of the emulator keeps every job's timing.
"""

from __future__ import annotations

from typing import Mapping

from fwemu.emulator.store import Job, rfc3339

CREATING, PENDING, RUNNING = "JOB_STATE_CREATING", "JOB_STATE_PENDING", "JOB_STATE_RUNNING"
DELETED, FAILED, CANCELLED = "JOB_STATE_DELETED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"
COMPLETED, PAUSED = "JOB_STATE_COMPLETED", "JOB_STATE_PAUSED"
STARTING = {CREATING, PENDING}
RESUMABLE_STATES = {FAILED, CANCELLED, PAUSED, COMPLETED, RUNNING, PENDING, CREATING}
DEFAULT_MAX_CONTEXT = 4096


def state_at(job: Job, now_us: int) -> str:
    if job.state not in STARTING:
        return job.state
    if now_us >= job.ready_us:
        return RUNNING
    midpoint = job.update_us + (job.ready_us - job.update_us) // 2
    return CREATING if job.state == CREATING and now_us < midpoint else PENDING


def forward_only(body: Mapping) -> bool:
    """A forward-only trainer (the SDK sends top-level `forwardOnly: true`; `trainingConfig.forwardOnly`
    is read too): it runs forward passes only, never a step or a save (docs/wire.md A.3, B.3)."""
    cfg = body.get("trainingConfig") or {}
    return body.get("forwardOnly") is True or (isinstance(cfg, Mapping) and cfg.get("forwardOnly") is True)


def job_name(job: Job) -> str:
    return f"accounts/{job.account}/rlorTrainerJobs/{job.job_id}"


def job_json(job: Job, now_us: int) -> dict:
    """The job as the SDK reads it: name, state, status, trainingConfig (+ the echoed create body)."""
    body = dict(job.body)
    cfg = dict(body.get("trainingConfig") or {})
    cfg.setdefault("maxContextLength", DEFAULT_MAX_CONTEXT)
    cfg.setdefault("loraRank", 0)
    state = state_at(job, now_us)
    out = {
        **body,
        "name": job_name(job),
        "displayName": body.get("displayName") or job.job_id,
        "state": state,
        "status": {"code": "OK", "message": ""},
        "trainingConfig": cfg,
        "createTime": rfc3339(job.create_us),
        "updateTime": rfc3339(job.update_us),
    }
    if state == FAILED:
        out["status"] = {"code": "INTERNAL", "message": body.get("_failureMessage", "trainer failed")}
    out.pop("_failureMessage", None)
    return out
