"""The gateway's live state: sessions, models and futures of each trainer-job incarnation.

A trainer job's `generation` is bumped by `:resume` and by delete. The real service restarts the
trainer process then, so everything the old process held is gone: sessions, models (with their
weights and optimizer state), queued work and unread futures. The runtime notices the new
generation on the next call for that job and drops the old state; an old client then gets a
clear 404 for its session or model instead of silently training a different model.

Held on `services.extensions["gateway"]`; `Services.close()` calls `close()`, which stops every
worker thread. Nothing here imports torch: the trainer is loaded by the first create_model.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from fwemu.emulator.gateway.futures import FutureTable
from fwemu.emulator.gateway.sequencer import ModelWorker
from fwemu.emulator.services import Services
from fwemu.emulator.store import Job

EXTENSION_KEY = "gateway"
MAX_IDEMPOTENCY_KEYS = 8192


@dataclass
class ModelState:
    """One model created by create_model: its settings, its worker, and (once created) its trainer."""

    model_id: str
    account: str
    job_id: str
    generation: int
    base_model: str
    lora_rank: int
    lora_alpha: float
    seed: int
    base_only: bool
    worker: ModelWorker
    forward_only: bool = False     # the job was created with forwardOnly: no step, no save
    trainer: Any = None            # emulator.trainer.model_session.TrainerModel once created
    create_error: str | None = None
    sampler_saved: bool = False    # the SDK chain rule's `base_saved`, for a request without checkpoint_type
    # (identity, full HF dir) of this model's previous full-parameter sampler save: the next delta's base
    sampler_chain: tuple[str, Any] | None = None
    unloaded: bool = False
    ranks: int = 1                 # trainer processes (Settings.trainer_ranks when it was created)
    precision: str = "fp32"
    # forward_backward metrics since the last optim_step, for the per-step metrics log (dashboard):
    # (trainer grad_epoch they belong to, merged metrics, number of calls)
    pending_metrics: tuple[int, dict, int] = (-1, {}, 0)

    @property
    def is_lora(self) -> bool:
        return self.lora_rank > 0


@dataclass
class JobRuntime:
    """What one incarnation (generation) of a trainer job holds."""

    account: str
    job_id: str
    generation: int
    create_us: int                 # with generation: a job re-created under the same id is a new trainer
    sessions: dict[str, dict] = field(default_factory=dict)
    models: dict[str, ModelState] = field(default_factory=dict)


class GatewayRuntime:
    def __init__(self, services: Services):
        self.services = services
        self.futures = FutureTable()
        self.gap_timeout_s = float(services.settings.seq_gap_timeout_s)
        self._lock = threading.RLock()
        self._jobs: dict[tuple[str, str], JobRuntime] = {}
        # Model numbers are never reused within a job, across generations: an old client's
        # "model-0" must not address a new incarnation's model-0.
        self._model_numbers: dict[tuple[str, str], itertools.count] = {}
        self._idempotent: OrderedDict[tuple, dict] = OrderedDict()
        self._closed = False

    # ------------------------------------------------------------------ jobs
    def job(self, job: Job) -> JobRuntime:
        """The runtime of the job's current generation; an older generation's state is dropped."""
        key = (job.account, job.job_id)
        with self._lock:
            current = self._jobs.get(key)
            if current is not None and (current.generation, current.create_us) == (job.generation, job.create_us):
                return current
            if current is not None:
                self._drop(current, "the trainer job was resumed or deleted, which restarts its trainer")
            fresh = JobRuntime(job.account, job.job_id, job.generation, job.create_us)
            self._jobs[key] = fresh
            return fresh

    def forget_job(self, account: str, job_id: str, reason: str) -> None:
        with self._lock:
            current = self._jobs.pop((account, job_id), None)
        if current is not None:
            self._drop(current, reason)

    def _drop(self, jr: JobRuntime, reason: str) -> None:
        for m in list(jr.models.values()):
            m.unloaded = True
            m.worker.close(reason)
            release_trainer(m)
        jr.models.clear()
        jr.sessions.clear()
        self.futures.drop_job(jr.account, jr.job_id, keep_generation=None)
        with self._lock:
            for k in [k for k in self._idempotent if k[:3] == (jr.account, jr.job_id, jr.generation)]:
                del self._idempotent[k]

    # ------------------------------------------------------------------ sessions and models
    def new_session(self, jr: JobRuntime, body: dict) -> str:
        session_id = f"sess-{secrets.token_hex(8)}"
        with self._lock:
            jr.sessions[session_id] = {"tags": body.get("tags") or [], "models": 0}
        return session_id

    def new_model(self, jr: JobRuntime, **settings: Any) -> ModelState:
        with self._lock:
            if self._closed:
                raise RuntimeError("the gateway is shut down")
            n = next(self._model_numbers.setdefault((jr.account, jr.job_id), itertools.count()))
            model_id = f"model-{n}"
            worker = ModelWorker(f"{jr.job_id}/{model_id}", self.gap_timeout_s)
            state = ModelState(model_id=model_id, account=jr.account, job_id=jr.job_id,
                               generation=jr.generation, worker=worker, **settings)
            jr.models[model_id] = state
            return state

    def drop_model(self, jr: JobRuntime, model_id: str) -> None:
        with self._lock:
            state = jr.models.pop(model_id, None)
        if state is not None:
            state.unloaded = True
            state.worker.close("the model was unloaded")
            release_trainer(state)

    # ------------------------------------------------------------------ idempotency
    def recall(self, key: tuple) -> dict | None:
        with self._lock:
            return self._idempotent.get(key)

    def remember(self, key: tuple, response: dict) -> None:
        with self._lock:
            self._idempotent[key] = response
            while len(self._idempotent) > MAX_IDEMPOTENCY_KEYS:
                self._idempotent.popitem(last=False)

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        """Forget every job's sessions, models and futures (admin reset); the runtime stays usable."""
        with self._lock:
            jobs, self._jobs = list(self._jobs.values()), {}
        for jr in jobs:
            self._drop(jr, "the emulator was reset")

    def close(self) -> None:
        """Stop every worker (queued work fails); the running request, if any, finishes on its own."""
        with self._lock:
            self._closed = True
            jobs, self._jobs = list(self._jobs.values()), {}
        workers = [m.worker for jr in jobs for m in jr.models.values()]
        for jr in jobs:
            self._drop(jr, "the emulator is shutting down")
        for w in workers:
            w.join(timeout=5)


def release_trainer(model: ModelState) -> None:
    """Stop a multi-rank trainer's processes (one-process trainers have no close): on a thread,
    since its close waits for a call in flight, which may be this very thread's caller."""
    close = getattr(model.trainer, "close", None)
    if close is not None:
        threading.Thread(target=close, name=f"fwemu-close-{model.model_id}", daemon=True).start()


def runtime_of(services: Services) -> GatewayRuntime:
    """The runtime on `services.extensions`, created on first use."""
    rt = services.extensions.get(EXTENSION_KEY)
    if rt is None:
        with _create_lock:
            rt = services.extensions.get(EXTENSION_KEY)
            if rt is None:
                rt = GatewayRuntime(services)
                services.extensions[EXTENSION_KEY] = rt
    return rt


_create_lock = threading.Lock()
