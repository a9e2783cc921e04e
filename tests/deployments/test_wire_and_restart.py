"""The serving wire at the HTTP level (SSE framing, error envelopes, isolation), and a deployment's
hot-loaded snapshot surviving a restart of `fwemu serve`."""

from __future__ import annotations

import json

import httpx
import pytest
from fireworks.training.sdk.deployment import DeploymentManager

from fwemu.emulator.server_process import ServeProcess
from tests.deployments.conftest import KEY, Trainer, deploy
from tests.deployments.test_real_sdk_deployments import PROMPT, sample, status, syncer
from tests.gateway.helpers import BASE, OTHER_KEY, TINY
from tests.gateway.test_real_sdk import train

pytestmark = pytest.mark.real_sdk  # CI runs it under both SDK generations (docs/compat.md)

H = {"authorization": f"Bearer {KEY}"}
MODEL = "accounts/local/deployments/wire-dep"


def complete(server, body: dict, key: str = KEY) -> httpx.Response:
    return httpx.post(f"{server.url}/inference/v1/completions", json={"model": MODEL, **body},
                      headers={"authorization": f"Bearer {key}"}, timeout=60)


def test_completions_wire(server, mgr):
    deploy(mgr, "wire-dep")  # no trainer attached: serves the base model's weights
    plain = complete(server, {"prompt": PROMPT, "max_tokens": 6, "n": 2, "seed": 3, "logprobs": 2,
                              "temperature": 0.8})
    assert plain.status_code == 200, plain.text
    doc = plain.json()
    assert [c["index"] for c in doc["choices"]] == [0, 1]
    for c in doc["choices"]:
        ids = c["raw_output"]["completion_token_ids"]
        assert len(c["logprobs"]["content"]) == len(ids) and c["finish_reason"] in ("stop", "length")
        assert [e["token_id"] for e in c["logprobs"]["content"]] == ids
        assert all(len(e["top_logprobs"]) == 2 and e["sampling_logprob"] <= 0 for e in c["logprobs"]["content"])
    assert doc["usage"]["completion_tokens"] == sum(len(c["raw_output"]["completion_token_ids"])
                                                    for c in doc["choices"])
    assert complete(server, {"prompt": PROMPT, "max_tokens": 6, "n": 2, "seed": 3, "logprobs": 2,
                             "temperature": 0.8}).json()["choices"] == doc["choices"]

    streamed = complete(server, {"prompt": PROMPT, "max_tokens": 6, "seed": 3, "stream": True, "temperature": 0.8})
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = [e for e in streamed.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: "):]) for e in events[:-1]]
    finals = [c for ch in chunks for c in ch["choices"] if c.get("finish_reason")]
    assert finals[0]["raw_output"]["completion_token_ids"] == doc["choices"][0]["raw_output"]["completion_token_ids"]

    extra = complete(server, {"prompt": PROMPT, "routing_matrix_format": "parquet_v1"})
    assert extra.status_code == 400
    assert extra.json()["error"] == {"object": "error", "type": "invalid_request_error", "code": "invalid_request_error",
                                     "message": "Extra inputs are not permitted, field: 'routing_matrix_format'"}
    assert complete(server, {"prompt": PROMPT}, key=OTHER_KEY).status_code == 404
    assert complete(server, {"prompt": PROMPT, "model": "accounts/local/deployments/nope"}).status_code == 404


def test_hot_load_request_errors(server, mgr):
    deploy(mgr, "wire-dep")
    url = f"{server.url}/hot_load/v1/models/hot_load"
    target = {"fireworks-deployment": MODEL, "fireworks-model": BASE}
    no_bucket = httpx.post(url, json={"identity": "x"}, headers={**H, **target})
    assert no_bucket.status_code == 200
    assert no_bucket.json()["replicas"][0]["loading_state"]["reason"] == "NO_HOT_LOAD_BUCKET"
    wrong_model = httpx.get(url, headers={**H, **target, "fireworks-model": "accounts/fireworks/models/other"})
    assert wrong_model.status_code == 400
    other = httpx.get(url, headers={"authorization": f"Bearer {OTHER_KEY}", **target})
    assert other.status_code == 404
    assert httpx.get(url, headers=H).status_code == 400   # no fireworks-deployment header


def test_snapshot_survives_restart(tmp_path, monkeypatch):
    monkeypatch.setenv("FWEMU_MODEL_SIZE", TINY)
    proc = ServeProcess(tmp_path / "state", ["--api-key", f"{KEY}=local"], env={"FWEMU_MODEL_SIZE": TINY})
    proc.start()
    try:
        mgr = DeploymentManager(api_key=KEY, base_url=proc.url)
        t = Trainer(proc, lora_rank=0)
        try:
            deploy(mgr, "restart-dep", t.job_name)
            ws = syncer(t, mgr, "restart-dep")
            ws.save_and_hotload("s0")
            train(t.client, 1)
            current = ws.save_and_hotload("s1")
            before = sample(mgr, "restart-dep", max_tokens=8, temperature=1.0, seed=21, logprobs=True)[0]
        finally:
            t.service.close()
    finally:
        proc.stop()
    proc.start()
    try:
        mgr = DeploymentManager(api_key=KEY, base_url=proc.url)
        assert mgr.get("restart-dep").state == "READY"
        assert status(mgr, "restart-dep")["current_snapshot_identity"] == current
        after = sample(mgr, "restart-dep", max_tokens=8, temperature=1.0, seed=21, logprobs=True)[0]
        assert (after.full_tokens, after.inference_logprobs) == (before.full_tokens, before.inference_logprobs)
    finally:
        proc.stop()


def test_admin_reset_forgets_deployments(server, mgr):
    deploy(mgr, "reset-dep")
    dep_dir = server.services.store.root / "deployments"
    assert httpx.post(f"{server.url}/_emulator/v1/reset", headers=H).status_code == 200
    assert mgr.get("reset-dep") is None and dep_dir.is_dir() and not any(dep_dir.iterdir())
