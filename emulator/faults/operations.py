"""Operation names for fault rules, from a request's method and path (pure).

Control plane: list_accounts, get_account, create_job, list_jobs, get_job, delete, resume,
list_checkpoints, promote, get_model, list_models, get_operation; admin: import (the admin
checkpoint import; every other /_emulator route is never faulted, so a plan can always be read
and reset). Trainer gateway: the last path segment after `/api/v1/` (save_weights,
forward_backward, retrieve_future, healthz, config for client/config, ...).
"""

from __future__ import annotations

import re
from typing import NamedTuple


class Call(NamedTuple):
    operation: str | None
    account: str | None
    job: str | None


_SEG = r"([^/]+)"
_ROUTES: list[tuple[str, re.Pattern, str, int | None]] = [
    # (method, path pattern, operation, group of the job id or None); group 1 is always the account
    ("GET", re.compile(rf"^/v1/accounts/{_SEG}/rlorTrainerJobs/{_SEG}/checkpoints$"), "list_checkpoints", 2),
    ("POST", re.compile(rf"^/v1/accounts/{_SEG}/checkpoints/{_SEG}:promote$"), "promote", None),
    ("POST", re.compile(rf"^/v1/accounts/{_SEG}/rlorTrainerJobs/{_SEG}:resume$"), "resume", 2),
    ("POST", re.compile(rf"^/v1/accounts/{_SEG}/rlorTrainerJobs$"), "create_job", None),
    ("GET", re.compile(rf"^/v1/accounts/{_SEG}/rlorTrainerJobs$"), "list_jobs", None),
    ("GET", re.compile(rf"^/v1/accounts/{_SEG}/rlorTrainerJobs/{_SEG}$"), "get_job", 2),
    ("DELETE", re.compile(rf"^/v1/accounts/{_SEG}/rlorTrainerJobs/{_SEG}$"), "delete", 2),
    ("GET", re.compile(rf"^/v1/accounts/{_SEG}/models/{_SEG}$"), "get_model", None),
    ("GET", re.compile(rf"^/v1/accounts/{_SEG}/models$"), "list_models", None),
    ("GET", re.compile(rf"^/v1/accounts/{_SEG}/operations/{_SEG}$"), "get_operation", None),
    ("GET", re.compile(rf"^/v1/accounts/{_SEG}$"), "get_account", None),
    ("POST", re.compile(rf"^/_emulator/v1/accounts/{_SEG}/rlorTrainerJobs/{_SEG}/checkpoints:import$"), "import", 2),
]
_GATEWAY = re.compile(rf"^/training/v1/rlorTrainerJobs/{_SEG}/{_SEG}/api/v1/(.+?)/?$")


def classify(method: str, path: str) -> Call:
    """The operation a request performs, with the account and job its path names (None if unnamed)."""
    m = _GATEWAY.match(path)
    if m:
        return Call(m.group(3).rsplit("/", 1)[-1], m.group(1), m.group(2))
    if method == "GET" and path == "/v1/accounts":
        return Call("list_accounts", None, None)
    if method == "GET" and re.match(rf"^/v1/operations/{_SEG}$", path):
        return Call("get_operation", None, None)
    for want, pattern, operation, job_group in _ROUTES:
        if method != want:
            continue
        m = pattern.match(path)
        if m:
            return Call(operation, m.group(1), m.group(job_group) if job_group else None)
    return Call(None, None, None)


# Where a crash rule for an operation strikes: between the blob write and the metadata commit.
CRASH_POINTS = {"import": "checkpoint", "save_weights": "checkpoint", "save_weights_for_sampler": "checkpoint",
                "promote": "model"}
