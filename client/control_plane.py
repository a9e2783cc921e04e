"""Control-plane client: accounts, trainer jobs, checkpoint listing, promotion, models.

Speaks the wire of fireworks-ai 1.2.x (docs/wire.md part A) and returns typed rows, so callers never
sort timestamp strings or compare checkpoint-type spellings themselves.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterator

from fwemu.client.errors import FwApiError, FwError
from fwemu.client.http import ApiSession, env_api_key, env_base_url
from fwemu.client.retry import NO_RETRY, RetryPolicy
from fwemu.client.timeparse import parse_rfc3339_or_none

log = logging.getLogger(__name__)

CHECKPOINT_NAME_RE = re.compile(r"^accounts/([^/]+)/rlorTrainerJobs/([^/]+)/checkpoints/([^/]+)$")
MODEL_ID_RE = re.compile(r"^[a-z0-9-]{1,63}$")
RESUMABLE_KINDS = frozenset({"TRAINING", "TRAINING_LORA"})
PROMOTABLE_KINDS = frozenset({"INFERENCE_BASE", "INFERENCE_LORA"})
_TOMBSTONE_STATES = frozenset({"DELETED", "ARCHIVED"})
_STOPPED_STATES = frozenset({"CANCELLING", "CANCELLED", "COMPLETED", "EARLY_STOPPED", "DELETING"})
_STOP_SETTLE_S = 30.0  # a just-resumed job may still report its old stopped state (SDK: 30 s)


def normalize_kind(value: object) -> str:
    """`CHECKPOINT_TYPE_INFERENCE_LORA` and `INFERENCE_LORA` are the same kind; return the bare name."""
    text = str(value or "").strip().upper()
    return text.removeprefix("CHECKPOINT_TYPE_") or "UNSPECIFIED"


def normalize_state(value: object) -> str:
    """`JOB_STATE_RUNNING` -> `RUNNING` (both spellings are seen)."""
    return str(value or "").strip().upper().removeprefix("JOB_STATE_") or "UNSPECIFIED"


def short_name(resource_name: str) -> str:
    """The last path segment: `accounts/a/rlorTrainerJobs/j/checkpoints/step-4` -> `step-4`."""
    return resource_name.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class TrainerJob:
    """A trainer job as the control plane reports it."""

    name: str
    job_id: str
    account: str
    state: str                      # bare, e.g. "RUNNING"
    base_model: str | None
    lora_rank: int
    max_context_length: int | None
    status_message: str | None
    raw: dict = field(repr=False, compare=False)

    @classmethod
    def from_wire(cls, body: dict) -> "TrainerJob":
        name = body.get("name")
        if not isinstance(name, str) or "/rlorTrainerJobs/" not in name:
            raise FwError(f"control plane returned a trainer job without a resource name: {body!r:.200}")
        cfg = body.get("trainingConfig") or {}
        status = body.get("statusMessage") or body.get("message") or body.get("status")
        if isinstance(status, dict):
            status = status.get("message")
        try:
            mcl = int(cfg["maxContextLength"]) if cfg.get("maxContextLength") is not None else None
        except (TypeError, ValueError):
            mcl = None
        return cls(
            name=name, job_id=short_name(name), account=name.split("/")[1],
            state=normalize_state(body.get("state")),
            base_model=cfg.get("baseModel"), lora_rank=int(cfg.get("loraRank") or 0),
            max_context_length=mcl,
            status_message=status if isinstance(status, str) and status else None,
            raw=body,
        )


@dataclass(frozen=True)
class CheckpointRow:
    """One row of a job's checkpoint listing; `kind` is the bare type name."""

    name: str                       # 4-segment resource name
    short_name: str
    kind: str
    promotable: bool
    create_time: datetime | None    # None when the server sent no parseable createTime
    raw: dict = field(repr=False, compare=False)

    @property
    def resumable(self) -> bool:
        return self.kind in RESUMABLE_KINDS

    @property
    def job_id(self) -> str | None:
        m = CHECKPOINT_NAME_RE.fullmatch(self.name)
        return m.group(2) if m else None

    @classmethod
    def from_wire(cls, body: dict) -> "CheckpointRow":
        name = str(body.get("name") or "")
        if not name:
            raise FwError(f"control plane returned a checkpoint row without a name: {body!r:.200}")
        kind = normalize_kind(body.get("checkpointType", body.get("checkpoint_type")))
        return cls(name=name, short_name=short_name(name), kind=kind,
                   promotable=body.get("promotable") is True,
                   create_time=parse_rfc3339_or_none(body.get("createTime", body.get("create_time"))),
                   raw=body)


@dataclass(frozen=True)
class Model:
    """A model resource (what a promotion produces)."""

    name: str
    state: str | None
    kind: str | None
    peft_base_model: str | None
    peft_rank: int | None
    raw: dict = field(repr=False, compare=False)

    @property
    def model_id(self) -> str:
        return short_name(self.name)

    @classmethod
    def from_wire(cls, body: dict) -> "Model":
        body = {k: v for k, v in body.items() if k != "@type"}
        peft = body.get("peftDetails") or {}
        r = peft.get("r")
        return cls(name=str(body.get("name") or ""), state=body.get("state"), kind=body.get("kind"),
                   peft_base_model=peft.get("baseModel"), peft_rank=int(r) if isinstance(r, int) else None,
                   raw=body)


def sort_newest_first(rows: list[CheckpointRow]) -> list[CheckpointRow]:
    """Newest parsed createTime first; ties and unparseable times keep listing order (oldest first).

    The listing is oldest-first, so a later position breaks a tie as "newer". Rows without a
    parseable time sort last: they cannot be proven newer than anything.
    """
    indexed = list(enumerate(rows))
    with_time = [(i, r) for i, r in indexed if r.create_time is not None]
    without = [(i, r) for i, r in indexed if r.create_time is None]
    with_time.sort(key=lambda p: (p[1].create_time, p[0]), reverse=True)
    without.sort(key=lambda p: p[0], reverse=True)
    return [r for _, r in with_time + without]


class PromotionError(FwError):
    """A promotion operation that ended with an error, or without the promoted model."""


class ControlPlaneClient:
    """Sync client for `/v1/...`. See client.transport for in-process (ASGI) use.

    `gateway_url` is where trainer gateways live (default: env FIREWORKS_TRAINER_GATEWAY_URL,
    else `base_url`); it is used for the readiness probe and `gateway_url_for_job`.
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, transport: Any = None,
                 retry: RetryPolicy = RetryPolicy(), *, gateway_url: str | None = None,
                 operation_poll_s: float = 1.0, sleep: Callable[[float], None] = time.sleep):
        self.base_url = env_base_url(base_url)
        self.api_key = env_api_key(api_key)
        self.gateway_url = (gateway_url or os.environ.get("FIREWORKS_TRAINER_GATEWAY_URL") or self.base_url).rstrip("/")
        self.http = ApiSession(self.base_url, self.api_key, transport=transport, retry=retry)
        self.operation_poll_s = operation_poll_s
        self._sleep = sleep
        self._account: str | None = None

    # -- accounts ---------------------------------------------------------------------------
    def account_id(self) -> str:
        """The one account this key belongs to (cached). Several or none is an error, as in the SDK."""
        if self._account is None:
            body = self.http.get_json("/v1/accounts", params={"pageSize": 2})
            names = [a.get("name", "") for a in body.get("accounts") or [] if isinstance(a, dict)]
            if not names:
                raise FwError("this API key is not associated with any account")
            if len(names) > 1:
                raise FwError(f"this API key has access to several accounts: {names}")
            account = names[0].removeprefix("accounts/")
            if not account:
                raise FwError("the control plane returned an empty account name")
            self._account = account
        return self._account

    def _job_path(self, job_id: str) -> str:
        return f"/v1/accounts/{self.account_id()}/rlorTrainerJobs/{job_id}"

    def gateway_url_for_job(self, job_id: str) -> str:
        """`{gateway_url}/training/v1/rlorTrainerJobs/{account}/{job_id}` (docs/wire.md A.4)."""
        return f"{self.gateway_url}/training/v1/rlorTrainerJobs/{self.account_id()}/{job_id}"

    # -- jobs -------------------------------------------------------------------------------
    def create_job(self, base_model: str, lora_rank: int = 0, learning_rate: float = 1e-4,
                   job_id: str | None = None, max_context_length: int | None = None,
                   display_name: str | None = None) -> TrainerJob:
        """Create a trainer job (manual path). The id is chosen here so a retried create is idempotent;
        a 409 means an earlier attempt (or run) created it, and that job is returned."""
        if not base_model:
            raise ValueError("base_model is required")
        if display_name is not None and len(display_name) >= 64:
            raise ValueError("display_name must be under 64 characters")
        job_id = job_id or f"training-api-service-{uuid.uuid4().hex[:8]}"
        training_config: dict[str, Any] = {"baseModel": base_model, "loraRank": int(lora_rank),
                                           "learningRate": float(learning_rate)}
        if max_context_length:
            training_config["maxContextLength"] = int(max_context_length)
        body: dict[str, Any] = {"serviceMode": True, "keepAlive": False, "dataset": "",
                                "trainingConfig": training_config, "useReservation": True, "nodeCount": 1}
        if display_name:
            body["displayName"] = display_name
        try:
            created = self.http.post_json(f"/v1/accounts/{self.account_id()}/rlorTrainerJobs", body,
                                          params={"skipValidations": "true", "rlorTrainerJobId": job_id})
        except FwApiError as exc:
            if exc.status != 409:
                raise
            return self.get_job(job_id)
        return TrainerJob.from_wire(created)

    def get_job(self, job_id: str) -> TrainerJob:
        return TrainerJob.from_wire(self.http.get_json(self._job_path(job_id), timeout_s=30))

    def list_jobs(self, page_size: int = 200) -> list[TrainerJob]:
        """Every trainer job of the caller's account, following nextPageToken until it is empty."""
        path = f"/v1/accounts/{self.account_id()}/rlorTrainerJobs"
        jobs: list[TrainerJob] = []
        token: str | None = None
        seen: set[str] = set()
        while True:
            params: dict[str, Any] = {"pageSize": page_size, **({"pageToken": token} if token else {})}
            body = self.http.get_json(path, params=params, timeout_s=30)
            jobs.extend(TrainerJob.from_wire(j) for j in body.get("rlorTrainerJobs") or [])
            token = body.get("nextPageToken") or None
            if not token:
                return jobs
            if token in seen:
                raise FwError(f"job listing repeated page token {token!r}")
            seen.add(token)

    def resume_job(self, job_id: str) -> TrainerJob | None:
        """POST `:resume` (no body). Returns the job when the server echoes it."""
        body = self.http.post_json(f"{self._job_path(job_id)}:resume")
        return TrainerJob.from_wire(body) if isinstance(body, dict) and body.get("name") else None

    def delete_job(self, job_id: str) -> None:
        self.http.request("DELETE", self._job_path(job_id))

    def healthz(self, job_id: str) -> bool:
        """The gateway readiness probe: one try, short timeout, only 200 counts (like the SDK)."""
        try:
            r = self.http.request("GET", f"{self.gateway_url_for_job(job_id)}/api/v1/healthz",
                                  headers={"Authorization": f"Bearer {self.api_key}"},
                                  timeout_s=5, retry=NO_RETRY, check=False)
        except FwError:
            return False
        return r.status_code == 200

    def wait_until_running(self, job_id: str, poll_interval_s: float = 1.0, timeout_s: float = 900.0) -> TrainerJob:
        """Poll until the job is RUNNING and its gateway answers healthz (docs/wire.md A.4).

        Tombstoned and failed jobs raise at once; stopped states raise only after a 30 s settle
        window, because a job that was just resumed may still report its old state.
        """
        start = time.monotonic()
        while True:
            job = self.get_job(job_id)
            elapsed = time.monotonic() - start
            if job.state in _TOMBSTONE_STATES:
                raise FwError(f"trainer job {job_id} is {job.state} and cannot be used again; start a new job")
            if job.state == "FAILED":
                raise FwError(f"trainer job {job_id} failed: {job.status_message or 'no status message'}")
            if job.state in _STOPPED_STATES and elapsed > _STOP_SETTLE_S:
                raise FwError(f"trainer job {job_id} stopped in {job.state} before it became ready")
            if job.state == "RUNNING" and self.healthz(job_id):
                return job
            if elapsed > timeout_s:
                raise FwError(f"trainer job {job_id} not ready after {timeout_s:.0f}s (state {job.state})")
            self._sleep(poll_interval_s)

    # -- checkpoints ------------------------------------------------------------------------
    def iter_checkpoint_pages(self, job_id: str, page_size: int = 200) -> Iterator[list[CheckpointRow]]:
        """One list of typed rows per page, following nextPageToken until it is empty."""
        path = f"{self._job_path(job_id)}/checkpoints"
        token: str | None = None
        seen_tokens: set[str] = set()
        while True:
            params: dict[str, Any] = {"pageSize": page_size}
            if token:
                params["pageToken"] = token
            body = self.http.get_json(path, params=params, timeout_s=30)
            raw = body.get("checkpoints")
            if raw is None:
                raw = body.get("rlorTrainerJobCheckpoints") or []
            yield [CheckpointRow.from_wire(r) for r in raw]
            token = body.get("nextPageToken") or body.get("next_page_token") or None
            if not token:
                return
            if token in seen_tokens:
                raise FwError(f"checkpoint listing of job {job_id} repeated page token {token!r}")
            seen_tokens.add(token)

    def list_checkpoints(self, job_id: str, page_size: int = 200) -> list[CheckpointRow]:
        """Every checkpoint row of the job, in server order (oldest createTime first)."""
        return [row for page in self.iter_checkpoint_pages(job_id, page_size) for row in page]

    def promote_checkpoint(self, name: str, output_model_id: str, base_model: str,
                           *, operation_timeout_s: float = 7200.0) -> Model:
        """Promote the row `name` (4-segment resource name) to `accounts/{a}/models/{output_model_id}`.

        Body per docs/wire.md A.5 with `async_promotion: true`; a 400 that names async_promotion is
        re-sent without it. Handles `{"model": ...}` and operations (polled until done).
        """
        m = CHECKPOINT_NAME_RE.fullmatch(name or "")
        if not m:
            raise ValueError(f"checkpoint name {name!r} is not accounts/<a>/rlorTrainerJobs/<j>/checkpoints/<c>")
        if not base_model:
            raise ValueError("base_model is required to promote")
        if not MODEL_ID_RE.fullmatch(output_model_id or ""):
            raise ValueError(f"output model id {output_model_id!r} must be 1-63 of a-z, 0-9 and '-'")
        account, job_id, ckpt = m.groups()
        path = f"/v1/accounts/{account}/checkpoints/{ckpt}:promote"
        body = {"output_model": f"accounts/{account}/models/{output_model_id}",
                "trainer_job_id": f"accounts/{account}/rlorTrainerJobs/{job_id}",
                "base_model": base_model}
        response = self.http.request("POST", path, json={**body, "async_promotion": True}, timeout_s=300, check=False)
        if response.status_code == 400:
            text = FwApiError.from_response(response).message.lower()
            if "async_promotion" in text or "asyncpromotion" in text:
                log.info("server does not take async_promotion; promoting synchronously")
                response = self.http.request("POST", path, json=body, timeout_s=300, check=False)
        if not response.is_success:
            raise FwApiError.from_response(response)
        result = response.json()
        operation = result.get("operation")
        if operation:
            done = self._wait_for_operation(operation, operation_timeout_s)
            model = done.get("response") or result.get("model")
            if not model:
                raise PromotionError(f"promotion of {ckpt} finished without a model in the response")
            return Model.from_wire(model)
        model = result.get("model")
        if isinstance(model, dict) and model:
            return Model.from_wire(model)
        raise PromotionError(
            f"promotion of {ckpt} answered {response.status_code} without 'model' or 'operation' "
            f"(the fireworks-ai SDK would silently return {{}} here): {str(result)[:200]}"
        )

    def _wait_for_operation(self, operation: dict, timeout_s: float) -> dict:
        name = operation.get("name")
        deadline = time.monotonic() + timeout_s
        while not operation.get("done"):
            if not name:
                raise PromotionError("promotion returned an unfinished operation without a name")
            if time.monotonic() > deadline:
                raise PromotionError(f"operation {name} not done after {timeout_s:.0f}s")
            self._sleep(self.operation_poll_s)
            operation = self.http.get_json(f"/v1/{name}", timeout_s=30)
        error = operation.get("error")
        if error:
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise PromotionError(f"operation {name or '?'} failed: {message}")
        return operation

    # -- models -----------------------------------------------------------------------------
    def get_model(self, model: str) -> Model:
        """`model` is an id (`my-model`) in this account or a full `accounts/x/models/y` name."""
        name = model if model.startswith("accounts/") else f"accounts/{self.account_id()}/models/{model}"
        return Model.from_wire(self.http.get_json(f"/v1/{name}", timeout_s=30))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "ControlPlaneClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
