"""The client under test ("driver") and the harness's own independent view of the server ("observer").

Two drivers implement the same small surface, so one state machine drives either:

* `OurDriver` ("client", default): our `client` package. It covers every rule, including
  TrainingCheckpoints (save / resume / promote_latest / init_from_checkpoint) and wire faults
  (its httpx transport is wrapped by a FaultTransport).
* `SdkDriver` ("sdk"): the real fireworks-ai SDK (`TrainerJobManager`, `FiretitanServiceClient`).
  It covers the server-side rules: jobs, training, save_state, sampler saves with the SDK's own
  weight-sync chain, load_state_with_optimizer, promotion, deletion. TrainingCheckpoints is ours,
  so R3-R7 are not driven through it, and it gets no faults (it retries 5xx for five minutes).

The `Observer` never goes through the driver: it lists, pages and promotes with raw HTTP and no
faults, so what it sees is the server's state, not the client's opinion of it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fwemu.client.checkpoints import TrainingCheckpoints
from fwemu.client.control_plane import ControlPlaneClient
from fwemu.client.http import ApiSession
from fwemu.client.retry import RetryPolicy
from fwemu.client.trainer_client import AdamParams, TrainerGatewayClient
from fwemu.contracts.data import LEARNING_RATE, PROBE, probe_key
from fwemu.contracts.faults import FaultPlan, FaultTransport
from fwemu.contracts.invariants import ListedRow
from fwemu.contracts.targets import SOCKET, Account, Target

log = logging.getLogger(__name__)

# A local emulator never needs a long backoff; keep retries real but fast.
FAST_RETRY = RetryPolicy(max_retries=4, base_delay_s=0.002, max_delay_s=0.02, max_elapsed_s=15.0, jitter=0.0)

from fwemu.contracts.driver_api import CAPS, CHECKPOINTS, CRASH, FAULTS, DriverSpecError, check_driver_class, load_driver_class  # noqa: F401,E501


def _noop_sleep(_s: float) -> None:
    return None


def _short_sleep(s: float) -> None:
    time.sleep(min(s, 0.005))


class Observer:
    """Raw HTTP with the same key, no faults: the harness's view of the server."""

    def __init__(self, target: Target, account: Account):
        self.target = target
        self.key = account.api_key
        self._account = account.account_id
        self.http: ApiSession | None = None
        self.reconnect()

    def reconnect(self) -> None:
        if self.http is not None:
            self.http.close()
        self.http = ApiSession(self.target.base_url, self.key, transport=self.target.transport(), retry=FAST_RETRY)

    @property
    def account(self) -> str:
        if self._account is None:
            body = self.http.get_json("/v1/accounts", params={"pageSize": 2})
            self._account = body["accounts"][0]["name"].removeprefix("accounts/")
        return self._account

    def _jobs(self, job_id: str) -> str:
        return f"/v1/accounts/{self.account}/rlorTrainerJobs/{job_id}"

    def list_page(self, job_id: str, page_size: int, token: str | None) -> tuple[int, list[ListedRow], str, Any]:
        params: dict[str, Any] = {"pageSize": page_size}
        if token:
            params["pageToken"] = token
        r = self.http.request("GET", f"{self._jobs(job_id)}/checkpoints", params=params, check=False)
        try:
            body = r.json()
        except ValueError:
            body = r.text
        if r.status_code != 200 or not isinstance(body, dict):
            return r.status_code, [], "", body
        rows = [ListedRow.from_wire(x) for x in body.get("checkpoints") or []]
        return 200, rows, body.get("nextPageToken") or "", body

    def list_all(self, job_id: str, page_size: int = 200) -> tuple[int, list[list[ListedRow]]]:
        """(status, pages). Stops after a generous page count so a looping token cannot hang the suite."""
        pages: list[list[ListedRow]] = []
        token: str | None = None
        for _ in range(500):
            status, rows, token, _body = self.list_page(job_id, page_size, token)
            if status != 200:
                return status, pages
            pages.append(rows)
            if not token:
                return 200, pages
        return 200, pages

    def promote(self, job_id: str, checkpoint: str, model_id: str, base_model: str) -> tuple[int, Any]:
        """The promote call exactly as the SDK sends it; returns (status, model-or-error body)."""
        body = {"output_model": f"accounts/{self.account}/models/{model_id}",
                "trainer_job_id": f"accounts/{self.account}/rlorTrainerJobs/{job_id}",
                "base_model": base_model, "async_promotion": True}
        r = self.http.request("POST", f"/v1/accounts/{self.account}/checkpoints/{checkpoint}:promote",
                              json=body, check=False)
        try:
            out = r.json()
        except ValueError:
            return r.status_code, r.text
        if r.status_code == 200 and isinstance(out, dict):
            if out.get("operation"):
                op = out["operation"]
                for _ in range(50):
                    if op.get("done"):
                        break
                    op = self.http.get_json(f"/v1/{op['name']}")
                out = {"model": {k: v for k, v in (op.get("response") or {}).items() if k != "@type"},
                       "operation": op}
        return r.status_code, out

    def get_model(self, model_id: str) -> tuple[int, Any]:
        r = self.http.request("GET", f"/v1/accounts/{self.account}/models/{model_id}", check=False)
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, r.text

    def close(self) -> None:
        if self.http is not None:
            self.http.close()


# ----------------------------------------------------------------------------- our client
class OurHandle:
    """A live training client of our `client` package on one job."""

    def __init__(self, gateway: TrainerGatewayClient, model):
        self.gateway = gateway
        self.model = model

    def train_step(self, datums: list[dict]) -> dict:
        """One forward_backward + optim_step; returns the optimizer step's metrics."""
        self.model.forward_backward(datums, "cross_entropy")
        return self.model.optim_step(AdamParams(learning_rate=LEARNING_RATE))

    def probe(self) -> tuple:
        # TrainingModel has no forward(); the harness sends the wire request through its sequencer.
        result = self.model._op("forward", {"forward_input": {"data": [PROBE], "loss_fn": "cross_entropy"}},
                                "Forward")
        return probe_key(result["loss_fn_outputs"][0]["logprobs"]["data"])

    def save_state(self, name: str) -> str:
        return self.model.save_state(name)

    def save_sampler(self, name: str, checkpoint_type: str | None) -> str:
        """`checkpoint_type=None` sends no type at all, so the server's weight-sync chain decides."""
        if checkpoint_type is not None:
            return self.model.save_weights_for_sampler(name, checkpoint_type).path
        snapshot = f"{name}-{self.model.session_suffix}"
        result = self.model._op("save_weights_for_sampler",
                                {"path": snapshot, "type": "save_weights_for_sampler"}, "SaveWeightsForSampler")
        return result["path"]

    def load_state(self, path: str, optimizer: bool) -> None:
        self.model.load_state(path, optimizer=optimizer)

    def abandon(self) -> None:
        """A crash: drop every reference without closing anything (no goodbye to the server)."""
        self.gateway = None
        self.model = None

    def close(self) -> None:
        if self.gateway is not None:
            self.gateway.close()


class OurDriver:
    name = "client"
    caps = frozenset({CHECKPOINTS, FAULTS, CRASH})
    checkpoints_class = TrainingCheckpoints   # swap in a subclass to test other checkpoint logic

    def __init__(self, target: Target, account: Account, *, faults: bool = True):
        self.target = target
        self.account = account
        self.plan = FaultPlan() if faults else None
        self.cp: ControlPlaneClient | None = None
        self.reconnect()

    def _transport(self) -> Any:
        inner = self.target.transport()
        return FaultTransport(inner, self.plan) if self.plan is not None else inner

    def reconnect(self) -> None:
        """New control-plane client (after a restart the target's address or transport changed)."""
        if self.cp is not None:
            self.cp.close()
        self.cp = ControlPlaneClient(self.target.base_url, self.account.api_key, transport=self._transport(),
                                     retry=FAST_RETRY, gateway_url=self.target.base_url, operation_poll_s=0.0,
                                     sleep=_short_sleep)

    def create_job(self, lora_rank: int, job_id: str) -> str:
        job = self.cp.create_job(self.target.base_model, lora_rank, LEARNING_RATE, job_id=job_id)
        self.cp.wait_until_running(job.job_id, poll_interval_s=0.005, timeout_s=60)
        return job.job_id

    def connect(self, job_id: str, lora_rank: int) -> OurHandle:
        gateway = TrainerGatewayClient(self.cp.gateway_url_for_job(job_id), self.account.api_key,
                                       transport=self._transport(), retry=FAST_RETRY, future_timeout_s=120,
                                       heartbeat_interval_s=None)
        gateway.create_session()
        return OurHandle(gateway, gateway.create_model(self.target.base_model, lora_rank))

    def checkpoints(self, handle: OurHandle | None, job_id: str, log_path: str, lora_rank: int) -> TrainingCheckpoints:
        """`handle` may be None for listing and promotion, which never touch the trainer."""
        if self.target.listing_may_lag:  # rows appear late: let the client poll for them as it would in production
            waits = dict(appear_timeout_s=30.0, poll_s=0.05)
        else:
            waits = dict(appear_timeout_s=0.0, poll_s=0.0, sleep=_noop_sleep)
        return self.checkpoints_class(handle.model if handle is not None else None, self.cp, job_id, log_path, lora_rank,
                                   **waits)

    def promote(self, full_name: str, model_id: str) -> dict:
        return dict(self.cp.promote_checkpoint(full_name, model_id, self.target.base_model).raw)

    def delete_job(self, job_id: str) -> None:
        self.cp.delete_job(job_id)

    def close(self) -> None:
        if self.cp is not None:
            self.cp.close()


# ----------------------------------------------------------------------------- the real SDK
def _sdk_types():
    """(Datum, ModelInput, AdamParams): fireworks-ai 1.2.30 re-exports them; 1.2.9 (the cookbook's) has them in tinker."""
    try:
        from fireworks.training.sdk import AdamParams, Datum, ModelInput
    except ImportError:
        from tinker import AdamParams, Datum, ModelInput
    return Datum, ModelInput, AdamParams


def _sdk_datum(d: dict):
    Datum, ModelInput, _ = _sdk_types()

    tokens = d["model_input"]["chunks"][0]["tokens"]
    inputs = d["loss_fn_inputs"]
    return Datum(model_input=ModelInput.from_ints(tokens),
                 loss_fn_inputs={"target_tokens": list(inputs["target_tokens"]["data"]),
                                 "weights": list(inputs["weights"]["data"])})


class SdkHandle:
    """A FiretitanTrainingClient on one job."""

    TIMEOUT_S = 120

    def __init__(self, service, training_client):
        self.service = service
        self.tc = training_client

    def train_step(self, datums: list[dict]) -> dict:
        SdkAdam = _sdk_types()[2]
        fb = self.tc.forward_backward([_sdk_datum(d) for d in datums], "cross_entropy")
        op = self.tc.optim_step(SdkAdam(learning_rate=LEARNING_RATE))
        fb.result(timeout=self.TIMEOUT_S)
        return dict(op.result(timeout=self.TIMEOUT_S).metrics or {})

    def probe(self) -> tuple:
        out = self.tc.forward([_sdk_datum(PROBE)], "cross_entropy").result(timeout=self.TIMEOUT_S)
        return probe_key(out.loss_fn_outputs[0]["logprobs"].data)

    def save_state(self, name: str) -> str:
        return self.tc.save_state(name).result(timeout=self.TIMEOUT_S).path

    def save_sampler(self, name: str, checkpoint_type: str | None) -> str:
        """`None` lets the SDK's own chain rule choose (base first, then delta on full runs)."""
        return self.tc.save_weights_for_sampler_ext(name, checkpoint_type=checkpoint_type).path

    def load_state(self, path: str, optimizer: bool) -> None:
        fut = self.tc.load_state_with_optimizer(path) if optimizer else self.tc.load_state(path)
        fut.result(timeout=self.TIMEOUT_S)

    def abandon(self) -> None:
        self.close()  # the SDK runs an event-loop thread per client; never leak one

    def close(self) -> None:
        if self.service is not None:
            self.service.close()
            self.service = None


class SdkDriver:
    name = "sdk"
    caps = frozenset()

    def __init__(self, target: Target, account: Account):
        if not target.has(SOCKET):
            raise ValueError("the fireworks-ai SDK opens its own connections: use a socket target "
                             "(InProcessTarget(transport='socket') or a URL)")
        from fireworks.training.sdk import TrainerJobManager  # telemetry is accepted by fwemu: nothing to turn off

        self.target = target
        self.account = account
        self._mgr_cls = TrainerJobManager
        self.mgr = None
        self.reconnect()

    def reconnect(self) -> None:
        self.mgr = self._mgr_cls(api_key=self.account.api_key, base_url=self.target.base_url)

    def create_job(self, lora_rank: int, job_id: str) -> str:
        from fireworks.training.sdk import TrainerJobConfig

        cfg = TrainerJobConfig(base_model=self.target.base_model, lora_rank=lora_rank,
                               learning_rate=LEARNING_RATE, requested_job_id=job_id)
        return self.mgr.create_and_wait(cfg, poll_interval_s=0.02, timeout_s=60).job_id

    def connect(self, job_id: str, lora_rank: int) -> SdkHandle:
        from fireworks.training.sdk import FiretitanServiceClient

        gw = f"{self.target.base_url}/training/v1/rlorTrainerJobs/{self.mgr.account_id}/{job_id}"
        service = FiretitanServiceClient(base_url=gw, api_key=self.account.api_key)
        try:
            tc = service.create_training_client(self.target.base_model, lora_rank=lora_rank)
        except BaseException:
            service.close()
            raise
        return SdkHandle(service, tc)

    def promote(self, full_name: str, model_id: str) -> dict:
        return dict(self.mgr.promote_checkpoint(name=full_name, output_model_id=model_id,
                                                base_model=self.target.base_model))

    def delete_job(self, job_id: str) -> None:
        self.mgr.delete(job_id)

    def close(self) -> None:
        self.mgr = None


BUILTIN = ("client", "sdk", "cookbook")
_CLASSES: dict[str, type] = {}


def driver_class(spec: str | type) -> type:
    """`client` | `sdk` | `cookbook` | `cookbook=PATH` | `module:Class` (or a class) -> the driver class.
    Raises DriverSpecError (one line) for anything else."""
    if isinstance(spec, type):
        return check_driver_class(spec, spec.__name__)
    if spec in ("client", "ours", "our"):
        return OurDriver
    if spec == "sdk":
        return SdkDriver
    if spec not in _CLASSES:
        if spec == "cookbook" or spec.startswith("cookbook="):
            from fwemu.contracts.cookbook_driver import cookbook_driver_class

            _CLASSES[spec] = cookbook_driver_class(spec.partition("=")[2] or None)
        else:
            cls = load_driver_class(spec)
            _CLASSES[spec] = cls.bind() if callable(getattr(cls, "bind", None)) else cls   # e.g. a CookbookDriver
    return _CLASSES[spec]


def driver_caps(spec: str | type) -> frozenset[str]:
    return frozenset(driver_class(spec).caps)


def make_driver(spec: str | type, target: Target, account: Account):
    return driver_class(spec)(target, account)
