"""A small wire-level driver for the trainer gateway (futures protocol by hand), for the in-process tests.

It speaks exactly what docs/wire.md B lists, through httpx (FastAPI's TestClient), so the tests see
status codes, envelopes and raw payloads that the real SDK would hide behind its retries.
"""

from __future__ import annotations

import itertools
import uuid
from contextlib import contextmanager
from typing import Iterator

import httpx
from fastapi.testclient import TestClient

from fwemu.emulator.app import create_app
from fwemu.emulator.gateway.runtime import runtime_of
from fwemu.emulator.settings import Settings

KEY = "fw-test-key"
OTHER_KEY = "fw-other-key"
ACCOUNT, OTHER_ACCOUNT = "local", "elsewhere"
BASE = "accounts/fireworks/models/qwen3-8b"
TINY = "hidden=32,layers=1,heads=2,kv_heads=1,intermediate=64"
TEXT = list(b"the emulator trains a tiny llama")


def settings(**overrides) -> Settings:
    """Hermetic settings: no quirks or break switches leak in from FWEMU_QUIRKS / FWEMU_BREAK."""
    base = dict(data_dir=None, startup_delay_s=0, future_long_poll_s=0.2, quirks=frozenset(), breaks=frozenset(),
                api_keys={KEY: ACCOUNT, OTHER_KEY: OTHER_ACCOUNT})
    base.update(overrides)
    return Settings(**base)


@contextmanager
def gateway(**overrides) -> Iterator["Gateway"]:
    """A Gateway driver on a fresh in-process app; the app's lifespan (and its workers) end on exit."""
    app = create_app(settings(**overrides))
    with TestClient(app, raise_server_exceptions=False) as http:
        gw = Gateway(http)
        gw.app = app
        gw.runtime = lambda: runtime_of(app.state.services)
        yield gw


def datum(tokens: list[int] = TEXT) -> dict:
    """A wire Datum for next-token cross entropy over `tokens`."""
    n = len(tokens) - 1
    return {
        "model_input": {"chunks": [{"type": "encoded_text", "tokens": tokens[:-1]}]},
        "loss_fn_inputs": {
            "target_tokens": {"data": tokens[1:], "dtype": "int64", "shape": [n]},
            "weights": {"data": [1.0] * n, "dtype": "float32", "shape": [n]},
        },
    }


def fb_body(model_id: str, seq: int, data: list[dict] | None = None, loss_fn: str = "cross_entropy") -> dict:
    return {"forward_backward_input": {"data": data or [datum()], "loss_fn": loss_fn},
            "model_id": model_id, "seq_id": seq}


def optim_body(model_id: str, seq: int, lr: float = 1e-2) -> dict:
    return {"adam_params": {"learning_rate": lr, "beta1": 0.9, "beta2": 0.95, "eps": 1e-12,
                            "weight_decay": 0.0, "grad_clip_norm": 0.0},
            "model_id": model_id, "seq_id": seq, "type": "optim_step"}


class Gateway:
    """One account's view of the emulator: control-plane job setup plus gateway calls."""

    def __init__(self, http: httpx.Client, key: str = KEY, account: str = ACCOUNT):
        self.http, self.key, self.account = http, key, account
        self._seq: dict[tuple[str, str], itertools.count] = {}

    def headers(self, key: str | None = None, idem: str | None = None) -> dict:
        h = {"X-Api-Key": key or self.key}
        if idem:
            h["X-Idempotency-Key"] = idem
        return h

    # ------------------------------------------------------------------ control plane
    def create_job(self, job_id: str, lora_rank: int = 0, base_model: str = BASE) -> str:
        r = self.http.post(f"/v1/accounts/{self.account}/rlorTrainerJobs", params={"rlorTrainerJobId": job_id},
                           headers=self.headers(),
                           json={"serviceMode": True, "trainingConfig": {"baseModel": base_model,
                                                                         "loraRank": lora_rank}})
        assert r.status_code == 200, r.text
        return job_id

    def resume(self, job_id: str) -> None:
        r = self.http.post(f"/v1/accounts/{self.account}/rlorTrainerJobs/{job_id}:resume", headers=self.headers())
        assert r.status_code == 200, r.text

    def rows(self, job_id: str) -> list[dict]:
        r = self.http.get(f"/v1/accounts/{self.account}/rlorTrainerJobs/{job_id}/checkpoints",
                          params={"pageSize": 200}, headers=self.headers())
        assert r.status_code == 200, r.text
        return r.json()["checkpoints"]

    def kinds(self, job_id: str) -> dict[str, tuple[str, bool]]:
        """{short name: (checkpointType, promotable)} of the job's listed rows."""
        return {row["name"].rsplit("/", 1)[-1]: (row["checkpointType"], row["promotable"])
                for row in self.rows(job_id)}

    # ------------------------------------------------------------------ gateway
    def path(self, job_id: str, op: str, account: str | None = None) -> str:
        return f"/training/v1/rlorTrainerJobs/{account or self.account}/{job_id}/api/v1/{op}"

    def post(self, job_id: str, op: str, body: dict, *, key: str | None = None, idem: str | None = None,
             account: str | None = None) -> httpx.Response:
        return self.http.post(self.path(job_id, op, account), json=body, headers=self.headers(key, idem))

    def get(self, job_id: str, op: str, *, key: str | None = None) -> httpx.Response:
        return self.http.get(self.path(job_id, op), headers=self.headers(key))

    def submit(self, job_id: str, op: str, body: dict, idem: str | None = None) -> str:
        r = self.post(job_id, op, body, idem=idem or f"test-{uuid.uuid4()}")
        assert r.status_code == 200, r.text
        assert "request_id" in r.json(), r.json()
        return r.json()["request_id"]

    def poll(self, job_id: str, request_id: str) -> dict:
        r = self.post(job_id, "retrieve_future", {"request_id": request_id, "allow_metadata_only": True})
        assert r.status_code == 200, r.text
        return r.json()

    def result(self, job_id: str, request_id: str, max_polls: int = 200) -> dict:
        """The future's final payload (success or {"error", "category"}), re-polling on try_again."""
        for _ in range(max_polls):
            payload = self.poll(job_id, request_id)
            if payload.get("type") != "try_again":
                return payload
        raise AssertionError(f"{request_id} still pending after {max_polls} polls")

    def ok(self, job_id: str, op: str, body: dict) -> dict:
        payload = self.result(job_id, self.submit(job_id, op, body))
        assert "error" not in payload, payload
        return payload

    def session(self, job_id: str) -> str:
        r = self.post(job_id, "create_session", {"tags": [], "user_metadata": {}, "sdk_version": "0.23.0",
                                                 "type": "create_session"})
        assert r.status_code == 200, r.text
        return r.json()["session_id"]

    def model(self, job_id: str, lora_rank: int = 0, session: str | None = None) -> str:
        """A created model (create_model + its future); also resets this driver's seq counter."""
        lora = {"rank": lora_rank, "train_unembed": True, "train_mlp": True, "train_attn": True}
        if lora_rank:
            lora["alpha"] = 32
        body = {"session_id": session or self.session(job_id), "model_seq_id": 0, "base_model": BASE,
                "lora_config": lora, "type": "create_model"}
        payload = self.ok(job_id, "create_model", body)
        assert payload["type"] == "create_model"
        self._seq[(job_id, payload["model_id"])] = itertools.count(1)
        return payload["model_id"]

    def seq(self, job_id: str, model_id: str) -> int:
        """The next seq_id of this model (model ids repeat across jobs, so both are the key)."""
        return next(self._seq[(job_id, model_id)])

    def step(self, job_id: str, model_id: str, lr: float = 1e-2) -> tuple[dict, dict]:
        fb = self.ok(job_id, "forward_backward", fb_body(model_id, self.seq(job_id, model_id)))
        op = self.ok(job_id, "optim_step", optim_body(model_id, self.seq(job_id, model_id), lr))
        return fb, op

    def save_state(self, job_id: str, model_id: str, name: str) -> dict:
        return self.result(job_id, self.submit(job_id, "save_weights", {
            "model_id": model_id, "path": name, "seq_id": self.seq(job_id, model_id), "overwrite": False,
            "type": "save_weights"}))

    def save_sampler(self, job_id: str, model_id: str, name: str, checkpoint_type: str | None) -> dict:
        body = {"model_id": model_id, "path": name, "seq_id": self.seq(job_id, model_id),
                "type": "save_weights_for_sampler"}
        if checkpoint_type is not None:
            body["checkpoint_type"] = checkpoint_type
        return self.result(job_id, self.submit(job_id, "save_weights_for_sampler", body))

    def load(self, job_id: str, model_id: str, path: str, optimizer: bool) -> dict:
        return self.result(job_id, self.submit(job_id, "load_weights", {
            "model_id": model_id, "path": path, "optimizer": optimizer, "seq_id": self.seq(job_id, model_id),
            "type": "load_weights"}))
