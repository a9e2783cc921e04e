"""The trainer gateway: `/training/v1/rlorTrainerJobs/{account}/{job_id}/api/v1/...` (docs/wire.md B.3).

Thin handlers. Each call is checked in one place (`_call`): the caller's key must belong to the
path's account (else the same 404 a missing job gets), the job must exist (404) and be
RUNNING (400 FAILED_PRECONDITION; never a 5xx/408/409/429, which the SDK retries for minutes).
Mutations answer `{"request_id", "model_id"}` at once and queue their work on the model's
worker (`sequencer`); `retrieve_future` long-polls for the result (`futures`).

Only routing fields are checked at POST time (model_id, seq_id): everything else is checked
when the request executes, so a bad request still takes its place in the model's sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse

from fwemu.emulator import jobs
from fwemu.emulator.auth import caller_account, require_same_account
from fwemu.emulator.errors import ApiError, failed_precondition, invalid_argument, not_found
from fwemu.emulator.gateway import operations as ops
from fwemu.emulator.gateway.futures import Owner
from fwemu.emulator.gateway.runtime import GatewayRuntime, JobRuntime, ModelState, runtime_of
from fwemu.emulator.gateway.sequencer import Work
from fwemu.emulator.inspect import Kind
from fwemu.emulator.lazy_routes import LazyAPIRoute
from fwemu.emulator.services import Services, get_services
from fwemu.emulator.store import Job

PREFIX = "/training/v1/rlorTrainerJobs/{account}/{job_id}/api/v1"
router = APIRouter(prefix=PREFIX, tags=["trainer gateway"], route_class=LazyAPIRoute)

CLIENT_CONFIG = {
    "use_pyqwest_transport": False,     # plain httpx: no extra transport needed for tml- keys
    "pjwt_auth_enabled": False,         # no /auth/token round trip
    "parallel_fwdbwd_chunks": True,     # chunks may arrive out of order; the sequencer copes
    "proto_write_fwdbwd": False,
    "proto_compress_fwdbwd": False,
    "fwd_via_fwdbwd": False,
    "sample_no_retries": False,
}


@dataclass
class Call:
    """A checked gateway call: the job, its current incarnation's runtime, and the services."""

    services: Services
    runtime: GatewayRuntime
    job: Job
    jr: JobRuntime

    def owner(self) -> Owner:
        return Owner(self.job.account, self.job.job_id, self.job.generation, self.job.create_us)


def _load_job(services: Services, caller: str, account: str, job_id: str) -> Job:
    require_same_account(caller, account, f"trainer job {job_id}")
    job = services.store.get_job(account, job_id)
    if job is None:
        if services.extensions.get("gateway") is not None:
            runtime_of(services).forget_job(account, job_id, "the trainer job was deleted")
        raise not_found(f"trainer job {job_id} not found in account {account}")
    return job


def _call(account: str, job_id: str, caller: str = Depends(caller_account),
          services: Services = Depends(get_services)) -> Call:
    job = _load_job(services, caller, account, job_id)
    runtime = runtime_of(services)
    jr = runtime.job(job)  # a new generation drops the old trainer's state right away
    state = jobs.state_at(job, services.clock.peek_us())
    if state != jobs.RUNNING:
        raise failed_precondition(
            f"trainer job {job_id} is {state}, not JOB_STATE_RUNNING; wait until it is running "
            "(TrainerJobManager.wait_for_ready / resume_and_wait) before calling the trainer",
            reason="TRAINER_NOT_RUNNING")
    return Call(services, runtime, job, jr)


def _model(call: Call, body: dict) -> ModelState:
    model_id = body.get("model_id")
    if not isinstance(model_id, str) or not model_id:
        raise invalid_argument("model_id is required")
    model = call.jr.models.get(model_id)
    if model is None:
        raise not_found(f"model {model_id} not found in trainer job {call.job.job_id}; models do not survive "
                        "a resume of the job (the trainer restarts): create a new training client")
    return model


def _seq_id(body: dict) -> int:
    seq = body.get("seq_id")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise invalid_argument(f"seq_id must be an integer >= 1 (got {seq!r})")
    return seq


def _idempotency_key(call: Call, request: Request) -> tuple | None:
    """A retried POST (same X-Idempotency-Key, same job incarnation) must not run twice."""
    key = request.headers.get("x-idempotency-key")
    return (call.jr.account, call.jr.job_id, call.jr.generation, key) if key else None


def _enqueue(call: Call, request: Request, model: ModelState, request_type: str, run: Callable[[], dict],
             *, seq_id: int | None = None, first: bool = False) -> dict:
    """Create the future and queue its work, once per X-Idempotency-Key."""
    rt, idem = call.runtime, _idempotency_key(call, request)
    with rt.lock:
        if idem is not None and (previous := rt.recall(idem)) is not None:
            return previous
        future = rt.futures.create(call.owner(), model.model_id, request_type)
        work = Work(future, run, seq_id)
        if first:
            model.worker.submit_first(work)
        elif seq_id is None:
            model.worker.submit_barrier(work)
        else:
            model.worker.submit(work)
        response = {"request_id": future.request_id, "model_id": model.model_id}
        if idem is not None:
            rt.remember(idem, response)
    return response


# ---------------------------------------------------------------------- direct replies
@router.get("/healthz")
def healthz(account: str, job_id: str, caller: str = Depends(caller_account),
            services: Services = Depends(get_services)):
    """200 only while the job is RUNNING: the SDK's readiness probe looks at the status code alone."""
    job = _load_job(services, caller, account, job_id)
    state = jobs.state_at(job, services.clock.peek_us())
    if state != jobs.RUNNING:
        soon = " yet" if state in jobs.STARTING else ""
        err = ApiError("UNAVAILABLE", f"trainer job {job_id} is {state}, not running{soon}")
        return JSONResponse(err.body(), status_code=err.http_status)
    return {"status": "ok"}


@router.post("/client/config")
def client_config(call: Call = Depends(_call), body: dict[str, Any] = Body(default_factory=dict)):
    return dict(CLIENT_CONFIG)


@router.post("/create_session")
def create_session(request: Request, call: Call = Depends(_call), body: dict[str, Any] = Body(default_factory=dict)):
    rt, jr = call.runtime, call.jr
    key = request.headers.get("x-idempotency-key")
    idem = (jr.account, jr.job_id, jr.generation, "session", key) if key else None
    with rt.lock:
        if idem is not None and (previous := rt.recall(idem)) is not None:
            return previous
        response = {"session_id": rt.new_session(jr, body), "type": "create_session"}
        if idem is not None:
            rt.remember(idem, response)
    return response


@router.post("/session_heartbeat")
def session_heartbeat(call: Call = Depends(_call), body: dict[str, Any] = Body(default_factory=dict)):
    session_id = body.get("session_id")
    if session_id not in call.jr.sessions:
        raise not_found(f"session {session_id} not found in trainer job {call.job.job_id} (the trainer restarted?)")
    return {"type": "session_heartbeat"}


@router.post("/telemetry")
def telemetry(account: str, job_id: str, caller: str = Depends(caller_account),
              body: dict[str, Any] = Body(default_factory=dict)):
    """Accepted and discarded. No job check on purpose: the SDK retries a refused flush every
    second until close() gives up after 30 s, so a client closing after its job was deleted
    must not stall."""
    require_same_account(caller, account, f"trainer job {job_id}")
    return {"status": "accepted"}


@router.get("/get_server_capabilities")
def get_server_capabilities(call: Call = Depends(_call)):
    cfg = call.job.body.get("trainingConfig") or {}
    return {"supported_models": [{
        "model_name": call.job.base_model or None,
        "max_context_length": int(cfg.get("maxContextLength") or jobs.DEFAULT_MAX_CONTEXT),
    }]}


@router.get("/list_checkpoints")
def list_checkpoints(call: Call = Depends(_call)):
    """The job's resumable (DCP) checkpoint names, oldest first."""
    names = call.services.store.checkpoint_names(call.job.account, call.job.job_id,
                                                 {Kind.TRAINING, Kind.TRAINING_LORA})
    return {"checkpoints": names}


@router.post("/get_info")
def get_info(call: Call = Depends(_call), body: dict[str, Any] = Body(default_factory=dict)):
    return ops.info(_model(call, body))


# ---------------------------------------------------------------------- futures
@router.post("/create_model")
def create_model(request: Request, call: Call = Depends(_call), body: dict[str, Any] = Body(default_factory=dict)):
    session_id = body.get("session_id")
    if session_id not in call.jr.sessions:
        raise not_found(f"session {session_id} not found in trainer job {call.job.job_id}; call create_session "
                        "first (sessions do not survive a resume of the job)")
    base_model = body.get("base_model")
    if not isinstance(base_model, str) or not base_model:
        raise invalid_argument("base_model is required")
    if call.job.base_model and base_model != call.job.base_model:
        raise invalid_argument(f"base_model {base_model!r} does not match trainer job {call.job.job_id}, "
                               f"which serves {call.job.base_model!r}")
    if body.get("projection_head_dim"):
        raise invalid_argument("projection_head_dim is not supported by the emulator")
    lora = body.get("lora_config")
    if lora is not None and not isinstance(lora, dict):
        raise invalid_argument("lora_config must be an object")
    lora = lora or {}
    rank = lora.get("rank")
    rank = call.job.lora_rank if rank is None else rank
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise invalid_argument(f"lora_config.rank must be an integer >= 0 (got {rank!r})")
    alpha = lora.get("alpha")
    if alpha is None:
        alpha = 2 * rank if rank else 32  # the backend default the SDK documents for alpha=None
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise invalid_argument(f"lora_config.alpha must be a positive number (got {alpha!r})")
    seed = lora.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise invalid_argument(f"lora_config.seed must be an integer (got {seed!r})")

    rt, idem = call.runtime, _idempotency_key(call, request)
    with rt.lock:
        if idem is not None and (previous := rt.recall(idem)) is not None:
            return previous
        model = rt.new_model(call.jr, base_model=base_model, lora_rank=rank, lora_alpha=alpha, seed=seed or 0,
                             base_only=bool(body.get("base_only")), forward_only=jobs.forward_only(call.job.body),
                             ranks=call.services.settings.trainer_ranks,
                             precision=call.services.settings.trainer_precision)
        return _enqueue(call, request, model, "create_model", lambda: ops.create_model(model), first=True)


def _sequenced(request_type: str, run: Callable[[Call, ModelState, dict], dict]):
    """A route handler for a sequenced mutation: route fields now, `run` on the worker later."""

    def handler(request: Request, call: Call = Depends(_call), body: dict[str, Any] = Body(default_factory=dict)):
        model = _model(call, body)
        seq = _seq_id(body)
        return _enqueue(call, request, model, request_type, lambda: run(call, model, body), seq_id=seq)

    handler.__name__ = request_type
    handler.__doc__ = f"Queue {request_type}; the result comes from retrieve_future."
    return handler


for _name, _run in {
    "forward_backward": lambda c, m, b: ops.forward_backward(m, b),
    "forward": lambda c, m, b: ops.forward(m, b),
    "optim_step": lambda c, m, b: ops.optim_step(c.services, c.job.create_us, m, b),
    "save_weights": lambda c, m, b: ops.save_weights(c.services, m, b),
    "save_weights_for_sampler": lambda c, m, b: ops.save_weights_for_sampler(c.services, m, b),
    "load_weights": lambda c, m, b: ops.load_weights(c.services, m, b),
    "load_adapter": lambda c, m, b: ops.load_adapter(c.services, m, b),
}.items():
    router.add_api_route(f"/{_name}", _sequenced(_name, _run), methods=["POST"], name=_name)


@router.post("/unload_model")
def unload_model(request: Request, call: Call = Depends(_call), body: dict[str, Any] = Body(default_factory=dict)):
    """Runs after every request of the model posted before it, then drops the model."""
    model = _model(call, body)
    return _enqueue(call, request, model, "unload_model",
                    lambda: ops.unload_model(call.runtime, call.jr, model))


@router.post("/retrieve_future")
async def retrieve_future(call: Call = Depends(_call), body: dict[str, Any] = Body(default_factory=dict)):
    """The result, or `try_again` after `future_long_poll_s` (the SDK re-polls at once)."""
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise invalid_argument("request_id is required")
    future = call.runtime.futures.get(request_id)
    if future is None or future.owner != call.owner():
        raise not_found(f"future {request_id} not found in trainer job {call.job.job_id} (unknown request id, "
                        "or the trainer restarted since it was created)")
    payload = await future.wait(call.services.settings.future_long_poll_s)
    if payload is None:
        return {"type": "try_again", "request_id": request_id, "queue_state": "active"}
    return payload
