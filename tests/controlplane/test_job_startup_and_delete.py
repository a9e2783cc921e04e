"""A new job is RUNNING at once by default (the SDK never sleeps), and a second DELETE is NOT_FOUND."""

from __future__ import annotations

import logging

from fastapi.testclient import TestClient
from fireworks.training.sdk import TrainerJobConfig, TrainerJobManager

from fwemu.emulator.app import create_app
from fwemu.emulator.server_thread import running_server
from fwemu.emulator.settings import Settings
from tests.controlplane.conftest import BASE, KEY_A, create_job
from tests.controlplane.test_jobs_and_auth import envelope

JOBS = "/v1/accounts/acct-a/rlorTrainerJobs"


def default_settings() -> Settings:
    """Settings() as `fwemu serve` builds them, with the start-up delay left at its default."""
    return Settings(api_keys={KEY_A: "acct-a"}, quirks=frozenset(), breaks=frozenset())


def test_default_startup_answers_running_from_the_post_on():
    with TestClient(create_app(default_settings()), raise_server_exceptions=False) as client:
        client.headers["X-Api-Key"] = KEY_A
        assert create_job(client, "fast")["state"] == "JOB_STATE_RUNNING"
        assert client.get(f"{JOBS}/fast").json()["state"] == "JOB_STATE_RUNNING"
        health = client.get("/training/v1/rlorTrainerJobs/acct-a/fast/api/v1/healthz")
        assert health.status_code == 200


def test_nonzero_delay_still_starts_at_creating_and_resume_at_pending():
    settings = default_settings()
    settings.startup_delay_s = 30.0
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.headers["X-Api-Key"] = KEY_A
        assert create_job(client, "slow")["state"] == "JOB_STATE_CREATING"
        assert client.post(f"{JOBS}/slow:resume").json()["state"] == "JOB_STATE_PENDING"


def test_sdk_create_and_wait_polls_the_job_once_with_its_default_interval():
    """Unchanged SDK, default poll_interval_s (5 s): its first GET sees RUNNING, so it never sleeps."""
    app = create_app(default_settings())
    job_gets: list[str] = []

    @app.middleware("http")
    async def count(request, call_next):
        if request.method == "GET" and request.url.path.startswith(f"{JOBS}/"):
            job_gets.append(request.url.path)
        return await call_next(request)

    with running_server(app=app) as srv:
        mgr = TrainerJobManager(api_key=KEY_A, base_url=srv.url)
        endpoint = mgr.create_and_wait(TrainerJobConfig(base_model=BASE, requested_job_id="sdk-fast"))
        assert endpoint.job_id == "sdk-fast"
        assert job_gets == [f"{JOBS}/sdk-fast"]


def test_second_delete_is_not_found_and_changes_nothing(cp):
    create_job(cp, "gone")
    assert cp.delete(f"{JOBS}/gone").json() == {}
    store = cp.app.state.services.store
    first = store.get_job("acct-a", "gone", include_deleted=True)
    cp.app.state.services.clock.offset_us += 5_000_000
    message = envelope(cp.delete(f"{JOBS}/gone"), 404, "NOT_FOUND")
    assert "already deleted" in message
    again = store.get_job("acct-a", "gone", include_deleted=True)
    assert (again.deleted_us, again.update_us, again.generation) == (first.deleted_us, first.update_us,
                                                                      first.generation)
    assert cp.get(f"{JOBS}/gone").json()["state"] == "JOB_STATE_DELETED"
    # a job that never existed gets the plain not-found message
    assert "already deleted" not in envelope(cp.delete(f"{JOBS}/never"), 404, "NOT_FOUND")


def test_sdk_delete_twice_logs_and_does_not_raise(caplog):
    with running_server(default_settings()) as srv:
        mgr = TrainerJobManager(api_key=KEY_A, base_url=srv.url)
        job_id = mgr.create(TrainerJobConfig(base_model=BASE, requested_job_id="sdk-gone")).job_id
        mgr.delete(job_id)
        with caplog.at_level(logging.WARNING):
            mgr.delete(job_id)  # the SDK turns any delete error into a warning
        assert any("already deleted" in r.getMessage() for r in caplog.records)
        assert mgr.get(job_id)["state"] == "JOB_STATE_DELETED"
