"""The serving side: `GET/POST /hot_load/v1/models/hot_load` and `POST /inference/v1/completions`.

Hot load names its deployment in the `fireworks-deployment` header and the base model in
`fireworks-model`, exactly as `DeploymentManager._hotload_headers` sends them; request-shape
mistakes are 4xx, while a snapshot that cannot be applied is reported in the status (see
`hot_load`). Completions take `model=accounts/<a>/deployments/<id>` (also
`<model>#accounts/<a>/deployments/<id>`), are served by the weights currently hot-loaded, and
answer errors in the OpenAI-style envelope the SDK's sampler reads.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from fwemu.emulator.auth import caller_account
from fwemu.emulator.deployments import completions, hot_load, states
from fwemu.emulator.deployments.routes import _runtime, load_deployment
from fwemu.emulator.deployments.routes import router as deployments_router
from fwemu.emulator.deployments.runtime import DeploymentRuntime
from fwemu.emulator.deployments.store import Deployment
from fwemu.emulator.errors import ApiError, failed_precondition, invalid_argument
from fwemu.emulator.lazy_routes import LazyAPIRoute

router = APIRouter(tags=["serving: hot load and completions"], route_class=LazyAPIRoute)
routers = (deployments_router, router)  # what emulator/app.py mounts
SOURCE_URL_HEADER = "x-fireworks-hot-load-source-url"
MAX_IDENTITY = 256


def _hot_load_target(request: Request, caller: str, rt: DeploymentRuntime) -> Deployment:
    name = request.headers.get("fireworks-deployment", "")
    m = states.DEPLOYMENT_NAME_RE.fullmatch(name)
    if not m:
        raise invalid_argument("the fireworks-deployment header must name the deployment: "
                               "accounts/<account>/deployments/<deployment id>")
    dep = load_deployment(rt, caller, m.group(1), m.group(2))
    if not dep.record.get("enableHotLoad"):
        raise failed_precondition(f"deployment {dep.deployment_id} was created without enableHotLoad; "
                                  "create a hot-load deployment to load trainer snapshots", reason="HOT_LOAD_DISABLED")
    model = request.headers.get("fireworks-model")
    if model and model != dep.base_model:
        raise invalid_argument(f"the fireworks-model header says {model!r}, but deployment {dep.deployment_id} "
                               f"serves {dep.base_model!r}")
    return dep


@router.get("/hot_load/v1/models/hot_load")
def hot_load_status(request: Request, caller: str = Depends(caller_account),
                    rt: DeploymentRuntime = Depends(_runtime)):
    return hot_load.status(_hot_load_target(request, caller, rt))


@router.post("/hot_load/v1/models/hot_load")
def hot_load_snapshot(request: Request, body: dict[str, Any] = Body(...), caller: str = Depends(caller_account),
                      rt: DeploymentRuntime = Depends(_runtime)):
    """Apply the snapshot now; its outcome (done, or stage error with a reason) is the next status."""
    dep = _hot_load_target(request, caller, rt)
    identity = body.get("identity")
    if not isinstance(identity, str) or not identity or len(identity) > MAX_IDENTITY:
        raise invalid_argument("identity must name the snapshot to load (the sampler checkpoint name)")
    metadata = body.get("incremental_snapshot_metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise invalid_argument("incremental_snapshot_metadata must be an object")
    if not isinstance(body.get("reset_prompt_cache", True), bool):
        raise invalid_argument("reset_prompt_cache must be true or false")
    if int(dep.record.get("maxReplicaCount", 1)) == 0:
        raise failed_precondition(f"deployment {dep.deployment_id} is scaled to zero; scale it up to hot-load",
                                  reason="SCALED_TO_ZERO")
    with rt.lock(dep.account, dep.deployment_id):
        dep = load_deployment(rt, caller, dep.account, dep.deployment_id)  # current after waiting for the lock
        outcome = hot_load.apply(rt.services, rt.store, dep, identity, metadata or None,
                                 request.headers.get(SOURCE_URL_HEADER))
        dep = rt.store.update(dep.account, dep.deployment_id, hot_load=outcome.hot_load)
        if outcome.engine is not None:
            rt.put_engine(dep, outcome.engine)
            rt.store.drop_versions_except(dep.account, dep.deployment_id, dep.hot_load.get("version"))
    return hot_load.status(dep)


# ---------------------------------------------------------------------- completions
def _error(err: completions.CompletionError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def _serving(rt: DeploymentRuntime, caller: str, model: str) -> Deployment:
    name = model.rsplit("#", 1)[-1]
    m = states.DEPLOYMENT_NAME_RE.fullmatch(name)
    if not m:
        raise completions.CompletionError(f"model {model!r} is not a deployment: use accounts/<account>/deployments/"
                                          "<deployment id> (this emulator serves deployments only)", 404, "not_found")
    try:
        dep = load_deployment(rt, caller, m.group(1), m.group(2))
    except ApiError:
        raise completions.CompletionError(f"model {model!r} not found", 404, "not_found") from None
    if int(dep.record.get("maxReplicaCount", 1)) == 0:
        raise completions.CompletionError(f"deployment {dep.deployment_id} is scaled to zero (maxReplicaCount=0); "
                                          "scale it up to serve requests", 400, "invalid_request_error")
    return dep


INFERENCE_ERROR = {  # OpenAI style, as the serving stack answers; auth and JSON errors keep the service envelope
    "anyOf": [{"$ref": "#/components/schemas/ErrorEnvelope"}, {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "type", "message"], "properties": {
            "object": {"type": "string"}, "code": {"type": "string"}, "type": {"type": "string"},
            "message": {"type": "string"}}}}}]}
_INFERENCE_RESPONSES = {status: {"description": text, "content": {"application/json": {"schema": INFERENCE_ERROR}}}
                        for status, text in ((400, "invalid request"), (404, "no such deployment"))}


@router.post("/inference/v1/completions", responses=_INFERENCE_RESPONSES)
def create_completion(body: Any = Body(...), caller: str = Depends(caller_account),
                      rt: DeploymentRuntime = Depends(_runtime)):
    try:
        req = completions.parse(body)
        dep = _serving(rt, caller, req.model)
    except completions.CompletionError as err:
        return _error(err)
    from fwemu.emulator.deployments import sampler  # torch on first use

    from fwemu.emulator.deployments.detokenize import decoder_for

    started = time.monotonic()
    engine = rt.engine(dep)
    limit = engine.size.max_position_embeddings
    try:
        completions.check_vocab(req, engine.size.vocab_size)
        if len(req.prompt) >= limit:
            raise completions.CompletionError(
                f"the prompt has {len(req.prompt)} tokens; the model's context window is {limit}")
    except completions.CompletionError as err:
        return _error(err)
    decode = decoder_for(dep.base_model)
    done = []
    with engine.lock:
        for i in range(req.n):
            # sampled with the key/value cache; logprobs from one full forward, as the trainer's
            c = sampler.generate(engine.decoder().logits, req.prompt, req.params,
                                 sampler.seeded_generator(req.seed, i), limit, decode)
            sampler.score(engine.logits, req.prompt, c, req.params.top_logprobs, echo=req.echo)
            done.append(c)
    rt.last_request_us[(dep.account, dep.deployment_id)] = rt.services.clock.peek_us()
    response_id = f"cmpl-{secrets.token_hex(12)}"
    elapsed = f"{time.monotonic() - started:.6f}"
    headers = {"fireworks-prompt-tokens": str(len(req.prompt)), "fireworks-server-processing-time": elapsed,
               "fireworks-deployment": dep.record["name"]}
    if req.stream:
        perf = {"prompt-tokens": str(len(req.prompt)), "server-processing-time": elapsed,
                "num-concurrent-requests": "1"}
        return StreamingResponse(completions.sse_events(req, done, response_id, perf, decode),
                                 media_type="text/event-stream", headers=headers)
    return JSONResponse(completions.response(req, done, response_id, decode), headers=headers)
