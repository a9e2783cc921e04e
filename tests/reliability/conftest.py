"""Reliability fixtures: two accounts, the app in-process and on a real loopback socket, sample tars.

Real HTTP (ServerThread) is used wherever the behaviour under test lives in the transport:
dropped connections, concurrency, streaming uploads.
"""

from __future__ import annotations

import io
import tarfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from fwemu.emulator.app import create_app
from fwemu.emulator.server_thread import ServerThread
from fwemu.emulator.settings import Settings

KEY_A, KEY_B = "rel-key-a", "rel-key-b"
ACCT_A, ACCT_B = "acct-a", "acct-b"
BASE = "accounts/fireworks/models/qwen3-8b"
TINY = "hidden=32,layers=1,heads=2,kv_heads=1,intermediate=64"


@pytest.fixture(autouse=True, scope="package")
def tiny_model():
    """The trainer's stand-in model shrunk for the whole package (gateway saves stay fast)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FWEMU_MODEL_SIZE", TINY)
        mp.setenv("TINKER_TELEMETRY", "0")
        mp.delenv("FWEMU_FAULT_PLAN", raising=False)
        mp.delenv("FWEMU_QUIRKS", raising=False)
        yield


def settings(**overrides) -> Settings:
    base = dict(data_dir=None, startup_delay_s=0, future_long_poll_s=0.2, api_keys={KEY_A: ACCT_A, KEY_B: ACCT_B})
    base.update(overrides)
    return Settings(**base)


@contextmanager
def in_process(**overrides) -> Iterator[TestClient]:
    """TestClient on a fresh app (account A's key by default); the lifespan ends on exit."""
    with TestClient(create_app(settings(**overrides)), raise_server_exceptions=False) as client:
        client.headers["X-Api-Key"] = KEY_A
        yield client


@contextmanager
def served(**overrides) -> Iterator[ServerThread]:
    """A fresh app behind uvicorn on a loopback port."""
    server = ServerThread(create_app(settings(**overrides))).start()
    try:
        yield server
    finally:
        server.stop()


def http_client(url: str, key: str = KEY_A, **kwargs) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"X-Api-Key": key}, timeout=60, **kwargs)


def create_job(http, job_id: str, account: str = ACCT_A, lora_rank: int = 0, base_model: str = BASE) -> dict:
    r = http.post(f"/v1/accounts/{account}/rlorTrainerJobs", params={"rlorTrainerJobId": job_id},
                  json={"serviceMode": True, "trainingConfig": {"baseModel": base_model, "loraRank": lora_rank}})
    assert r.status_code == 200, r.text
    return r.json()


def import_tar(http, job_id: str, name: str, body, account: str = ACCT_A, **params) -> httpx.Response:
    return http.post(f"/_emulator/v1/accounts/{account}/rlorTrainerJobs/{job_id}/checkpoints:import",
                     params={"name": name, **params}, content=body, headers={"Content-Type": "application/x-tar"})


def promote(http, job_id: str, ckpt: str, model_id: str, account: str = ACCT_A, **extra) -> httpx.Response:
    return http.post(f"/v1/accounts/{account}/checkpoints/{ckpt}:promote", json={
        "output_model": f"accounts/{account}/models/{model_id}",
        "trainer_job_id": f"accounts/{account}/rlorTrainerJobs/{job_id}", "base_model": BASE, **extra})


def listed(http, job_id: str, account: str = ACCT_A) -> list[dict]:
    """Every row of the job, following page tokens (small pages, to exercise the cursor too)."""
    rows, token = [], ""
    while True:
        r = http.get(f"/v1/accounts/{account}/rlorTrainerJobs/{job_id}/checkpoints",
                     params={"pageSize": 7, "pageToken": token})
        assert r.status_code == 200, r.text
        rows += r.json()["checkpoints"]
        token = r.json()["nextPageToken"]
        if not token:
            return rows


def short(row: dict) -> str:
    return row["name"].rsplit("/", 1)[-1]


def envelope(r: httpx.Response, status: int, name: str | None = None) -> str:
    """Assert the service's error envelope with this HTTP status (and gRPC name); return the message."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    err = r.json()["error"]
    assert isinstance(err["code"], int) and isinstance(err["message"], str) and err["message"]
    if name:
        assert err["status"] == name, err
    return err["message"]


def tar_of(directory: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in sorted(directory.iterdir()):
            tar.add(f, arcname=f.name)
    return buf.getvalue()


@pytest.fixture(scope="session")
def sample_dirs(tmp_path_factory) -> dict[str, Path]:
    """One real checkpoint directory of each kind (written like the trainer writes them)."""
    from fwemu.emulator.inspect.examples import write_example

    root = tmp_path_factory.mktemp("samples")
    return {kind: write_example(kind, root / kind) for kind in
            ("TRAINING", "TRAINING_LORA", "INFERENCE_BASE", "INFERENCE_LORA", "INFERENCE_ARC_V2")}


@pytest.fixture(scope="session")
def sample_tars(sample_dirs) -> dict[str, bytes]:
    return {kind: tar_of(d) for kind, d in sample_dirs.items()}


def store_of(client_or_server):
    app = client_or_server.app
    return app.state.services.store


def nothing_written(store) -> None:
    """No row, model or operation, and no file in the blob, model or staging directories."""
    counts = store.counts()
    assert counts["checkpoints"] == 0 and counts["models"] == 0 and counts["operations"] == 0, counts
    for d in (store.blobs, store.models_dir, store.staging):
        files = [p for p in d.rglob("*") if not p.is_dir()]
        assert files == [], files[:5]
