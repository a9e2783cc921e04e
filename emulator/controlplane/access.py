"""Resolving a path's account and job for a caller: one place for isolation and retention."""

from __future__ import annotations

import re

from fwemu.emulator.auth import require_same_account
from fwemu.emulator.errors import invalid_argument, not_found
from fwemu.emulator.services import Services
from fwemu.emulator.store import Job

JOB_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def retention_over(services: Services, job: Job) -> bool:
    if job.deleted_us is None:
        return False
    window_us = int(services.settings.retention_days * 86400 * 1_000_000)
    return services.clock.peek_us() >= job.deleted_us + window_us


def load_job(services: Services, caller: str, account: str, job_id: str, *, include_deleted: bool = True) -> Job:
    """The caller's job, or 404. A deleted job is returned during its retention window, then forgotten."""
    require_same_account(caller, account, f"trainer job {job_id}")
    if not JOB_ID_RE.fullmatch(job_id):
        raise invalid_argument(f"trainer job id {job_id!r} must match {JOB_ID_RE.pattern}")
    job = services.store.get_job(account, job_id, include_deleted=True)
    if job is not None and retention_over(services, job):
        services.store.purge_job(account, job_id)
        job = None
    if job is None or (job.deleted_us is not None and not include_deleted):
        raise not_found(f"trainer job {job_id} not found in account {account}")
    return job
