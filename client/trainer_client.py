"""Trainer-gateway client: sessions, models and the futures protocol (docs/wire.md part B).

Every mutating call is `POST /api/v1/<op>` -> `{"request_id"}` followed by `retrieve_future`
polls until a result, `try_again` (re-poll) or `{"error", "category"}` (raise). Each model
numbers its calls with `seq_id` from 1, and each submission carries an `X-Idempotency-Key` that
is reused when the same submission is retried, so a retry never trains a batch twice.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from fwemu.client.errors import FwApiError, FwError, TrainerRequestError
from fwemu.client.http import ApiSession, env_api_key
from fwemu.client.retry import NO_RETRY, RetryPolicy

log = logging.getLogger(__name__)

SDK_VERSION = "0.23.0"  # the Tinker wire version fireworks-ai 1.2.30 announces
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_CROSS_JOB = re.compile(r"^cross_job://([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)/([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)$")


def validate_checkpoint_ref(path: str) -> str:
    """What `load_state` may be given: a DNS label (`step-4`) or `cross_job://<job>/<label>`.

    The SDK refuses anything else before sending (tinker://, gs://, absolute paths), so we do too:
    a path that works here must work against the real service.
    """
    if isinstance(path, str) and (_DNS_LABEL.match(path) or _CROSS_JOB.match(path)):
        return path
    raise ValueError(f"checkpoint reference {path!r} must be a DNS label like 'step-4' "
                     "or 'cross_job://<job_id>/<name>'")


def cross_job_ref(source_job_id: str, name: str) -> str:
    return validate_checkpoint_ref(f"cross_job://{source_job_id}/{name}")


@dataclass(frozen=True)
class AdamParams:
    """The SDK's AdamParams defaults (docs/wire.md B.3)."""

    learning_rate: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-12
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0


@dataclass(frozen=True)
class ForwardBackwardResult:
    loss_fn_output_type: str
    loss_fn_outputs: list[dict]
    metrics: dict[str, float]       # "name:reduction" -> value, as the gateway sent them

    def metric(self, name: str) -> float | None:
        """The value of metric `name` whatever its reduction (e.g. "loss" -> metrics["loss:sum"])."""
        for key, value in self.metrics.items():
            if key.split(":", 1)[0] == name:
                return value
        return None


@dataclass(frozen=True)
class SamplerSave:
    path: str                       # what the gateway stored (authoritative)
    snapshot_name: str              # what we asked for: "<name>-<session suffix>"


class TrainerGatewayClient:
    """Client for one job's gateway, `GW = {gateway_url}/training/v1/rlorTrainerJobs/{account}/{job}`.

    `gateway_url_for_job` is that full GW base (ControlPlaneClient.gateway_url_for_job builds it).
    """

    def __init__(self, gateway_url_for_job: str, api_key: str | None = None, transport: Any = None,
                 retry: RetryPolicy = RetryPolicy(), *, future_timeout_s: float = 1800.0,
                 heartbeat_interval_s: float | None = 10.0):
        self.base_url = gateway_url_for_job.rstrip("/")
        self.http = ApiSession(self.base_url, env_api_key(api_key), transport=transport, retry=retry)
        self.future_timeout_s = future_timeout_s
        self.session_id: str | None = None
        self._model_seq = 0
        self._heartbeat_interval_s = heartbeat_interval_s
        self._stop = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None

    # -- direct calls ---------------------------------------------------------------------
    def healthz(self) -> bool:
        r = self.http.request("GET", "/api/v1/healthz", retry=NO_RETRY, check=False, timeout_s=5)
        return r.status_code == 200

    def create_session(self) -> str:
        """Open a session (and start heartbeats when an interval is set)."""
        body = self.http.post_json("/api/v1/create_session", {
            "tags": [], "user_metadata": {}, "sdk_version": SDK_VERSION, "type": "create_session"})
        session_id = body.get("session_id")
        if not isinstance(session_id, str) or not session_id:
            raise FwError(f"gateway create_session answered without a session_id: {str(body)[:200]}")
        for key in ("warning_message", "error_message"):
            if body.get(key):
                log.warning("gateway: %s", body[key])
        self.session_id = session_id
        self._model_seq = 0
        if self._heartbeat_interval_s:
            self._start_heartbeats(self._heartbeat_interval_s)
        return session_id

    def heartbeat(self) -> None:
        self.http.post_json("/api/v1/session_heartbeat", {"session_id": self._require_session(),
                                                           "type": "session_heartbeat"},
                            retry=NO_RETRY, timeout_s=10)

    def list_checkpoints(self) -> list[str]:
        """DCP names the live trainer knows (not the control plane's authoritative listing)."""
        body = self.http.get_json("/api/v1/list_checkpoints", timeout_s=30)
        names = body.get("checkpoints") or []
        return [str(n) for n in names]

    # -- models ---------------------------------------------------------------------------
    def create_model(self, base_model: str, lora_rank: int = 0, *, lora_alpha: int = 32,
                     seed: int | None = None) -> "TrainingModel":
        """A training client on the trainer: full-parameter when `lora_rank` is 0."""
        lora: dict[str, Any] = {"rank": int(lora_rank)}
        if lora_rank > 0:
            lora["alpha"] = int(lora_alpha)
        if seed is not None:
            lora["seed"] = int(seed)
        lora.update(train_unembed=True, train_mlp=True, train_attn=True)
        body = {"session_id": self._require_session(), "model_seq_id": self._model_seq,
                "base_model": base_model, "lora_config": lora, "type": "create_model"}
        self._model_seq += 1
        result, future_model_id = self._call("create_model", body, "CreateModel")
        model_id = result.get("model_id") or future_model_id
        if not isinstance(model_id, str) or not model_id:
            raise FwError(f"gateway create_model returned no model_id: {str(result)[:200]}")
        return TrainingModel(self, model_id, base_model, int(lora_rank))

    # -- futures --------------------------------------------------------------------------
    def _call(self, op: str, body: Mapping[str, Any], request_type: str) -> tuple[dict, str | None]:
        """Submit `op` and wait for its result. Returns (result, model_id from the submission)."""
        key = f"fwemu-{uuid.uuid4()}"
        submitted = self.http.post_json(f"/api/v1/{op}", dict(body), headers={"X-Idempotency-Key": key})
        request_id = submitted.get("request_id") if isinstance(submitted, dict) else None
        if not isinstance(request_id, str) or not request_id:
            raise FwError(f"gateway {op} answered without a request_id: {str(submitted)[:200]}")
        return self.retrieve_future(request_id, request_type), submitted.get("model_id")

    def retrieve_future(self, request_id: str, request_type: str | None = None) -> dict:
        """Poll until the future is done. `try_again` re-polls at once (the server long-polls)."""
        deadline = time.monotonic() + self.future_timeout_s
        metadata_only = True
        iteration = 0
        while True:
            headers = {"X-Tinker-Request-Iteration": str(iteration)}
            if request_type:
                headers["X-Tinker-Request-Type"] = request_type
            started = time.monotonic()
            try:
                result = self.http.post_json("/api/v1/retrieve_future",
                                             {"request_id": request_id, "allow_metadata_only": metadata_only},
                                             headers=headers, timeout_s=60)
            except FwApiError as exc:
                if exc.status == 410:
                    raise FwError(f"{request_type or 'request'} {request_id}: the gateway expired the result "
                                  f"(HTTP 410: {exc.message})") from exc
                raise
            iteration += 1
            if not isinstance(result, dict):
                raise FwError(f"retrieve_future answered a non-object: {str(result)[:200]}")
            if "error" in result:
                raise TrainerRequestError(str(result.get("error")), result.get("category"),
                                          result.get("error_class"), request_type)
            if result.get("type") == "try_again":
                state = result.get("queue_state")
                if state and state != "active":
                    log.info("training is paused (%s): %s", state, result.get("queue_state_reason", ""))
            elif result.get("status") == "complete_metadata":
                metadata_only = False
            else:
                return result
            if time.monotonic() > deadline:
                raise FwError(f"{request_type or 'request'} {request_id} not done after {self.future_timeout_s:.0f}s")
            if time.monotonic() - started < 0.05:  # a server that does not long-poll: do not spin
                time.sleep(0.02)

    # -- lifecycle ------------------------------------------------------------------------
    def _require_session(self) -> str:
        if not self.session_id:
            raise FwError("no gateway session: call create_session() first")
        return self.session_id

    def _start_heartbeats(self, interval_s: float) -> None:
        if self._heartbeat_thread is not None:
            return

        def beat() -> None:
            failing_since: float | None = None
            while not self._stop.wait(interval_s):
                try:
                    self.heartbeat()
                    failing_since = None
                except Exception as exc:  # a heartbeat must never kill training; say so if it persists
                    failing_since = failing_since or time.monotonic()
                    if time.monotonic() - failing_since > 120:
                        log.warning("session heartbeats failing for 2 min: %s", exc)
                        failing_since = time.monotonic()

        self._heartbeat_thread = threading.Thread(target=beat, name="fwemu-heartbeat", daemon=True)
        self._heartbeat_thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join(timeout=2)
            self._heartbeat_thread = None
        self.http.close()

    def __enter__(self) -> "TrainerGatewayClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TrainingModel:
    """Handle of one model on the trainer. Calls are strictly sequential, numbered from seq_id 1.

    `session_suffix` is this handle's 8-hex tag: sampler saves are sent as `<name>-<suffix>`
    (the SDK's qualify_snapshot_name), so rows of different handles never collide.
    """

    def __init__(self, gateway: TrainerGatewayClient, model_id: str, base_model: str, lora_rank: int):
        self.gateway = gateway
        self.model_id = model_id
        self.base_model = base_model
        self.lora_rank = lora_rank
        self.session_suffix = uuid.uuid4().hex[:8]
        self._seq = 0
        self._lock = threading.Lock()

    @property
    def last_seq_id(self) -> int:
        return self._seq

    def _op(self, op: str, body: dict, request_type: str) -> dict:
        with self._lock:  # seq order == execution order: no overlapping calls on one model
            self._seq += 1
            result, _ = self.gateway._call(op, {**body, "model_id": self.model_id, "seq_id": self._seq},
                                           request_type)
            return result

    def forward_backward(self, data: Sequence[dict], loss_fn: str = "cross_entropy",
                         loss_fn_config: Mapping[str, float] | None = None) -> ForwardBackwardResult:
        """Loss and gradients for `data` (wire Datums); gradients accumulate until optim_step."""
        return self._loss_call("forward_backward", "forward_backward_input", "ForwardBackward",
                               data, loss_fn, loss_fn_config)

    def forward(self, data: Sequence[dict], loss_fn: str = "cross_entropy",
                loss_fn_config: Mapping[str, float] | None = None) -> ForwardBackwardResult:
        """Loss and per-token logprobs without gradients (evaluation, probes)."""
        return self._loss_call("forward", "forward_input", "Forward", data, loss_fn, loss_fn_config)

    def _loss_call(self, op: str, key: str, request_type: str, data: Sequence[dict], loss_fn: str,
                   loss_fn_config: Mapping[str, float] | None) -> ForwardBackwardResult:
        payload: dict[str, Any] = {"data": list(data), "loss_fn": loss_fn}
        if loss_fn_config:
            payload["loss_fn_config"] = dict(loss_fn_config)
        result = self._op(op, {key: payload}, request_type)
        missing = {"loss_fn_output_type", "loss_fn_outputs", "metrics"} - set(result)
        if missing:
            raise FwError(f"{op} result lacks {sorted(missing)}")
        for name in result["metrics"]:
            if name.count(":") != 1:  # the SDK crashes on these; catch a broken server here
                raise FwError(f"gateway metric key {name!r} is not 'name:reduction'")
        return ForwardBackwardResult(result["loss_fn_output_type"], list(result["loss_fn_outputs"]),
                                     {k: float(v) for k, v in result["metrics"].items()})

    def optim_step(self, adam_params: AdamParams | Mapping[str, float]) -> dict[str, float]:
        params = asdict(adam_params) if isinstance(adam_params, AdamParams) else dict(adam_params)
        result = self._op("optim_step", {"adam_params": params, "type": "optim_step"}, "OptimStep")
        return dict(result.get("metrics") or {})

    def save_state(self, name: str) -> str:
        """DCP save (weights + optimizer). Returns the path the trainer reports it stored."""
        validate_checkpoint_ref(name)
        result = self._op("save_weights", {"path": name, "overwrite": False, "type": "save_weights"}, "SaveWeights")
        path = result.get("path")
        if not isinstance(path, str) or not path:
            raise FwError(f"save_weights result has no path: {str(result)[:200]}")
        return path

    def save_weights_for_sampler(self, name: str, checkpoint_type: str | None = "base") -> SamplerSave:
        """Sampler export, sent as `<name>-<session suffix>` exactly like the SDK. `checkpoint_type`
        None sends no type, leaving the choice to the server's weight-sync chain (base, then delta)."""
        if checkpoint_type not in (None, "base", "delta", "merged_base"):
            raise ValueError(f"checkpoint_type must be base, delta, merged_base or None, not {checkpoint_type!r}")
        snapshot = f"{name}-{self.session_suffix}"
        body: dict[str, Any] = {"path": snapshot, "type": "save_weights_for_sampler"}
        if checkpoint_type is not None:
            body["checkpoint_type"] = checkpoint_type
        result = self._op("save_weights_for_sampler", body, "SaveWeightsForSampler")
        path = result.get("path")
        if not isinstance(path, str) or not path:
            raise FwError(f"save_weights_for_sampler result has no path: {str(result)[:200]}")
        return SamplerSave(path=path, snapshot_name=snapshot)

    def load_state(self, path: str, optimizer: bool = True) -> None:
        """Load a DCP checkpoint (with its optimizer state unless `optimizer` is False)."""
        validate_checkpoint_ref(path)
        self._op("load_weights", {"path": path, "optimizer": bool(optimizer), "type": "load_weights"}, "LoadWeights")

    def load_adapter(self, adapter_path: str) -> None:
        """Warm-start a LoRA model from a PEFT adapter (weights only)."""
        if self.lora_rank <= 0:
            raise ValueError("load_adapter needs a LoRA model (lora_rank > 0)")
        self._op("load_adapter", {"adapter_path": adapter_path}, "LoadAdapter")

    def list_checkpoints(self) -> list[str]:
        return self.gateway.list_checkpoints()
