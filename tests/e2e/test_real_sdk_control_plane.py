"""The real fireworks-ai SDK (FireworksClient, TrainerJobManager) against `fwemu serve` over loopback.

This is the referee for docs/wire.md part A: job creation and readiness, listing across pages,
promotion by 4-segment name (success, refusal naming the kind, duplicate id), resume, delete,
account isolation, and persistence across a restart. Checkpoints go in with `fwemu import`.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from tests.builders import dcp_dir, hf_dir, peft_dir
from tests.e2e.conftest import ServeProcess

from fireworks.training.sdk import FireworksClient, TrainerJobConfig, TrainerJobManager

pytestmark = pytest.mark.real_sdk  # CI runs it under both SDK generations (docs/compat.md)

BASE = "accounts/fireworks/models/qwen3-8b"
KEY_A, KEY_B = "fw-e2e-a", "fw-e2e-b"


def fwemu_import(server: ServeProcess, job: str, name: str, directory, key=KEY_A) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fwemu.emulator.cli", "import", "--job", job, "--name", name, str(directory),
         "--base-url", server.url, "--api-key", key],
        capture_output=True, text=True, timeout=120)


def test_real_sdk_drives_jobs_listing_promotion_and_resume(serve, tmp_path):
    mgr = TrainerJobManager(api_key=KEY_A, base_url=serve.url)
    endpoint = mgr.create_and_wait(TrainerJobConfig(base_model=BASE, lora_rank=8), poll_interval_s=0.1)
    job_id = endpoint.job_id
    assert endpoint.base_url == f"{serve.url}/training/v1/rlorTrainerJobs/team-a/{job_id}"
    assert endpoint.max_context_length and endpoint.max_context_length > 0
    assert mgr.get(job_id)["state"] == "JOB_STATE_RUNNING"

    names = {"step-2": dcp_dir(tmp_path / "dcp", lora=True), "step-2-a1b2c3d4": peft_dir(tmp_path / "peft"),
             "full-1": hf_dir(tmp_path / "hf")}
    for name, directory in names.items():
        done = fwemu_import(serve, job_id, name, directory)
        assert done.returncode == 0, done.stdout + done.stderr

    fc = FireworksClient(api_key=KEY_A, base_url=serve.url)
    rows = fc.list_checkpoints(job_id, page_size=2)  # three rows: forces a second page
    assert [r["name"].rsplit("/", 1)[1] for r in rows] == list(names)
    assert [(r["checkpointType"], r["promotable"]) for r in rows] == [
        ("CHECKPOINT_TYPE_TRAINING_LORA", False), ("CHECKPOINT_TYPE_INFERENCE_LORA", True),
        ("CHECKPOINT_TYPE_INFERENCE_BASE", True)]

    model = mgr.promote_checkpoint(name=rows[1]["name"], output_model_id="my-adapter", base_model=BASE)
    assert model["state"] == "READY" and model["kind"] == "HF_PEFT_ADDON"
    assert model["peftDetails"]["r"] == 4

    with pytest.raises(RuntimeError) as refused:
        mgr.promote_checkpoint(name=rows[0]["name"], output_model_id="not-this", base_model=BASE)
    assert "TRAINING_LORA" in str(refused.value) and "not promotable" in str(refused.value)

    with pytest.raises(RuntimeError) as dup:
        mgr.promote_checkpoint(name=rows[2]["name"], output_model_id="my-adapter", base_model=BASE)
    assert "already exists" in str(dup.value)

    resumed = mgr.resume_and_wait(job_id, poll_interval_s=0.1)
    assert resumed.job_id == job_id

    mgr.delete(job_id)
    assert mgr.get(job_id)["state"] == "JOB_STATE_DELETED"
    assert len(fc.list_checkpoints(job_id)) == 3  # retention window: still listed after delete


def test_accounts_are_isolated_and_state_survives_restart(tmp_path):
    server = ServeProcess(tmp_path / "state").start()
    try:
        mgr_a = TrainerJobManager(api_key=KEY_A, base_url=server.url)
        job_id = mgr_a.create_and_wait(TrainerJobConfig(base_model=BASE), poll_interval_s=0.1).job_id
        assert fwemu_import(server, job_id, "final", hf_dir(tmp_path / "hf")).returncode == 0
        assert mgr_a.account_id == "team-a"

        mgr_b = TrainerJobManager(api_key=KEY_B, base_url=server.url)
        assert mgr_b.account_id == "team-b"
        assert mgr_b.try_get(job_id) is None  # 404 in B's account, no existence leak
        r = httpx.get(f"{server.url}/v1/accounts/team-a/rlorTrainerJobs/{job_id}/checkpoints",
                      headers={"X-Api-Key": KEY_B})
        assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND"
        refused = fwemu_import(server, job_id, "sneak", hf_dir(tmp_path / "hf2"), key=KEY_B)
        assert refused.returncode != 0
        before = FireworksClient(api_key=KEY_A, base_url=server.url).list_checkpoints(job_id)
    finally:
        server.stop()

    again = ServeProcess(tmp_path / "state").start()
    try:
        fc = FireworksClient(api_key=KEY_A, base_url=again.url)
        assert fc.list_checkpoints(job_id) == before
        model = TrainerJobManager(api_key=KEY_A, base_url=again.url).promote_checkpoint(
            name=before[0]["name"], output_model_id="after-restart", base_model=BASE)
        assert model["kind"] == "HF_BASE_MODEL"
    finally:
        again.stop()
