"""Training shapes: any shape id answers a stand-in version, and the SDK's shape path runs on it."""

from __future__ import annotations

import pytest
from fireworks.training.sdk import FiretitanServiceClient, TrainerJobManager

from fwemu.emulator.controlplane.shape_routes import trainer_mode
from fwemu.emulator.server_thread import running_server
from fwemu.emulator.settings import Settings
from tests.controlplane.conftest import BASE, KEY_A, KEY_B
from tests.controlplane.test_jobs_and_auth import envelope

SHAPE = "accounts/fireworks/trainingShapes/ts-qwen3-8b-lora"


def test_versions_list_and_get(cp):
    listed = cp.get(f"/v1/{SHAPE}/versions", params={"filter": "latest_validated=true", "pageSize": 1}).json()
    (version,) = listed["trainingShapeVersions"]
    assert listed["nextPageToken"] == ""
    assert version["name"].startswith(f"{SHAPE}/versions/") and version["latestValidated"] is True
    snap = version["snapshot"]
    assert (snap["acceleratorCount"], snap["nodeCount"], snap["maxSupportedContextLength"]) == (1, 1, 4096)
    assert snap["trainerMode"] == "LORA_TRAINER"
    assert snap["deploymentShapeVersion"].startswith("accounts/fireworks/deploymentShapes/ts-qwen3-8b-lora/versions/")
    pinned = cp.get(f"/v1/{SHAPE}/versions/abc123").json()
    assert pinned["name"] == f"{SHAPE}/versions/abc123" and pinned["snapshot"] == snap


def test_shape_access_and_ids(cp):
    own = "/v1/accounts/acct-a/trainingShapes/my-shape/versions"
    assert cp.get(own).status_code == 200
    envelope(cp.get(own, headers={"X-Api-Key": KEY_B}), 404, "NOT_FOUND")       # another account's shape
    assert cp.get(f"/v1/{SHAPE}/versions", headers={"X-Api-Key": KEY_B}).status_code == 200  # public
    envelope(cp.get("/v1/accounts/fireworks/trainingShapes/Bad_Shape/versions"), 400, "INVALID_ARGUMENT")
    envelope(cp.get(f"/v1/{SHAPE}/versions/Not.A.Version"), 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize("shape, mode", [("ts-qwen3-8b-policy", "POLICY_TRAINER"),
                                         ("ts-qwen3-8b-forward-only", "FORWARD_ONLY"),
                                         ("ts-qwen3-8b-lora", "LORA_TRAINER"), ("anything", "LORA_TRAINER")])
def test_trainer_mode_from_the_shape_id(shape, mode):
    assert trainer_mode(shape) == mode


def test_sdk_resolves_profiles_and_provisions_on_the_shape_path():
    settings = Settings(api_keys={KEY_A: "acct-a"}, quirks=frozenset(), breaks=frozenset())
    with running_server(settings) as srv:
        mgr = TrainerJobManager(api_key=KEY_A, base_url=srv.url)
        profile = mgr.resolve_training_profile(SHAPE)
        assert profile.training_shape == SHAPE and profile.supports_lora
        assert (profile.accelerator_count, profile.max_supported_context_length) == (1, 4096)
        pinned = mgr.resolve_training_profile(f"{SHAPE}/versions/v7")
        assert pinned.training_shape_version == f"{SHAPE}/versions/v7"

        svc = FiretitanServiceClient.from_firetitan_config(
            api_key=KEY_A, base_url=srv.url, base_model=BASE, lora_rank=4, training_shape_id=SHAPE,
            create_deployment=False)
        try:
            svc.create_training_client(base_model=BASE, lora_rank=4)
            handle = svc._managed_handle
            assert handle.max_context_length == 4096 and handle.training_profile.training_shape == SHAPE
            (job,) = srv.app.state.services.store.list_jobs("acct-a")
            assert job.lora_rank == 4 and job.base_model == BASE
        finally:
            svc.close()
