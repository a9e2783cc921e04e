"""Deployment fixtures: the real SDK against one emulator on a real socket (uvicorn in a thread).

The stand-in model is shrunk (FWEMU_MODEL_SIZE) for these modules only, like the gateway tests.
"""

from __future__ import annotations

import pytest
from fireworks.training.sdk import FiretitanServiceClient, TrainerJobConfig, TrainerJobManager
from fireworks.training.sdk.deployment import DeploymentConfig, DeploymentManager

from fwemu.emulator.app import create_app
from fwemu.emulator.server_thread import running_server
from tests.gateway.helpers import BASE, OTHER_KEY, TINY, settings
from tests.sdk_generation import SHAPELESS

KEY = "fw-deploy-key"


@pytest.fixture(autouse=True, scope="module")
def tiny_model():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FWEMU_MODEL_SIZE", TINY)
        mp.setenv("TINKER_TELEMETRY", "0")
        yield


@pytest.fixture(scope="module")
def server(tiny_model):
    """One emulator for the module; `.seen` records (method, path) of every request."""
    app = create_app(settings(api_keys={KEY: "local", OTHER_KEY: "elsewhere"}, startup_delay_s=0.05,
                              future_long_poll_s=2.0))
    seen: list[tuple[str, str]] = []

    @app.middleware("http")
    async def record(request, call_next):
        seen.append((request.method, request.url.path))
        return await call_next(request)

    with running_server(app=app) as srv:
        srv.seen = seen
        srv.services = app.state.services
        yield srv


@pytest.fixture
def mgr(server) -> DeploymentManager:
    return DeploymentManager(api_key=KEY, base_url=server.url)


class Trainer:
    """A running trainer job with one training client (closed by the fixture)."""

    def __init__(self, server, lora_rank: int):
        self.jobs = TrainerJobManager(api_key=KEY, base_url=server.url)
        self.endpoint = self.jobs.create_and_wait(TrainerJobConfig(base_model=BASE, lora_rank=lora_rank),
                                                  poll_interval_s=0.1)
        self.job_name = f"accounts/local/rlorTrainerJobs/{self.endpoint.job_id}"
        self.service = FiretitanServiceClient(base_url=self.endpoint.base_url, api_key=KEY)
        self.client = self.service.create_training_client(BASE, lora_rank=lora_rank)


@pytest.fixture
def trainer_factory(server):
    made: list[Trainer] = []

    def make(lora_rank: int = 0) -> Trainer:
        made.append(Trainer(server, lora_rank))
        return made[-1]

    yield make
    for t in made:
        t.service.close()


def deploy(mgr: DeploymentManager, deployment_id: str, trainer_job: str | None = None):
    cfg = DeploymentConfig(deployment_id=deployment_id, base_model=BASE, hot_load_trainer_job=trainer_job,
                           **SHAPELESS)
    mgr.create_or_get(cfg)
    return mgr.wait_for_ready(deployment_id, poll_interval_s=0.1)
