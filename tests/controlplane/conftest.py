"""Control-plane fixtures: an in-process app (FastAPI TestClient) with two accounts."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from fwemu.emulator.app import create_app
from fwemu.emulator.settings import Settings

KEY_A, KEY_B = "key-a", "key-b"
BASE = "accounts/fireworks/models/qwen3-8b"


def make_client(**settings_kwargs) -> TestClient:
    settings = Settings(api_keys={KEY_A: "acct-a", KEY_B: "acct-b"}, startup_delay_s=0, **settings_kwargs)
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    client.headers["X-Api-Key"] = KEY_A
    return client


@pytest.fixture
def cp():
    with make_client() as client:
        yield client


def create_job(client: TestClient, job_id: str, base_model: str = BASE, lora_rank: int = 0, account="acct-a"):
    r = client.post(f"/v1/accounts/{account}/rlorTrainerJobs", params={"rlorTrainerJobId": job_id},
                    json={"serviceMode": True, "trainingConfig": {"baseModel": base_model, "loraRank": lora_rank,
                                                                 "learningRate": 1e-5}})
    assert r.status_code == 200, r.text
    return r.json()


def import_dir(client: TestClient, job_id: str, name: str, directory, account="acct-a", **params):
    from tests.builders import tar_bytes

    return client.post(f"/_emulator/v1/accounts/{account}/rlorTrainerJobs/{job_id}/checkpoints:import",
                       params={"name": name, **params}, content=tar_bytes(directory),
                       headers={"Content-Type": "application/x-tar"})


def rows(client: TestClient, job_id: str, account="acct-a", **params):
    r = client.get(f"/v1/accounts/{account}/rlorTrainerJobs/{job_id}/checkpoints", params=params)
    assert r.status_code == 200, r.text
    return r.json()
