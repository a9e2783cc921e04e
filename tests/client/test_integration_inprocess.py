"""The rest of the save/resume/promote behaviour in-process (httpx.ASGITransport, no socket),
including the emulator's quirks that reproduce the real service's awkward habits."""

from __future__ import annotations

import json

import httpx
import pytest

from fwemu.client.checkpoints import CheckpointListingError
from fwemu.client.control_plane import ControlPlaneClient
from fwemu.client.errors import FwError
from fwemu.client.recipes.sft_loop import main
from tests.client.conftest import BASE_MODEL, KEY, RequestLog
from tests.client.helpers import Stop, batches, check_save_order, interrupt_after_save


def test_full_parameter_interrupted_run_equals_straight_run(make_asgi_emulator, tmp_path, capsys):
    emu = make_asgi_emulator()
    straight_log, resumed_log = RequestLog(), RequestLog()
    cfg = dict(lora_rank=0, interval=2, max_steps=6)
    straight = main(emu.config(tmp_path / "a", log=straight_log, output_model_id="full-a", **cfg))
    with pytest.raises(Stop):
        main(emu.config(tmp_path / "b", log=resumed_log, output_model_id="full-b", **cfg),
             on_step=interrupt_after_save("step-2"))
    err = capsys.readouterr().err
    assert "interrupted at step 2" in err and "last resumable checkpoint is step-2" in err
    assert f"Rerun with the same log_path ({tmp_path / 'b'})" in err
    resumed = main(emu.config(tmp_path / "b", log=resumed_log, output_model_id="full-b", **cfg))
    assert resumed["resumed_from"] == "step-2" and resumed["steps_run"] == 4
    assert batches(resumed_log) == batches(straight_log)
    check_save_order(resumed_log, loaded_step=2)
    files = emu.model_files(resumed["promoted_model"])
    assert "model.safetensors" in files and files == emu.model_files(straight["promoted_model"])
    with emu.control_plane() as cp:
        kinds = {r.short_name: r.kind for r in cp.list_checkpoints(resumed["job_id"])}
        assert cp.get_model("full-b").kind == "HF_BASE_MODEL"
    assert kinds["step-6"] == "TRAINING" and kinds[resumed["final_sampler_checkpoint"]] == "INFERENCE_BASE"


def test_mixed_precision_timestamps_resume_the_newest_row(make_asgi_emulator, tmp_path):
    emu = make_asgi_emulator("mixed-precision-timestamps")
    with pytest.raises(Stop):
        main(emu.config(tmp_path / "run", interval=1, max_steps=6), on_step=interrupt_after_save("step-4"))
    with emu.control_plane() as cp:
        stamps = [r.raw["createTime"] for r in cp.list_checkpoints(json.loads(
            (tmp_path / "run" / "run.json").read_text())["job_id"])]
    assert any("." in s for s in stamps) and any("." not in s for s in stamps)  # the quirk is active
    resumed = main(emu.config(tmp_path / "run", interval=1, max_steps=6))
    assert (resumed["resumed_from"], resumed["steps_run"], resumed["data_consumed"]) == ("step-4", 2, 24)


def test_flaky_listing_is_retried_to_success(make_asgi_emulator, tmp_path):
    emu = make_asgi_emulator("list-failures")   # every other listing answers 503
    log = RequestLog()
    with pytest.raises(Stop):
        main(emu.config(tmp_path / "run", log=log, interval=2, max_steps=4), on_step=interrupt_after_save("step-2"))
    resumed = main(emu.config(tmp_path / "run", log=log, interval=2, max_steps=4, output_model_id="flaky"))
    assert resumed["resumed_from"] == "step-2" and resumed["promoted_model"].endswith("/flaky")
    assert len(log.ops("list")) >= 2 * 4   # each listing needed a retry


def test_listing_delay_save_waits_for_its_row(make_asgi_emulator, tmp_path):
    emu = make_asgi_emulator("listing-delay")
    emu.app.state.services.settings.quirk_listing_delay_s = 0.3
    result = main(emu.config(tmp_path / "run", interval=2, max_steps=4))
    entries = json.loads((tmp_path / "run" / "dataloader.json").read_text())
    assert {k: v["step"] for k, v in entries.items()} == {"step-2": 2, "step-4": 4}
    assert result["final_sampler_checkpoint"].startswith("step-4-")


def test_slow_promotion_operation_is_polled(make_asgi_emulator, tmp_path):
    emu = make_asgi_emulator("slow-operations")
    run = main(emu.config(tmp_path / "run", max_steps=2))
    log = RequestLog()
    with ControlPlaneClient(emu.base_url, KEY, emu.transport(log), operation_poll_s=0.01) as cp:
        row = next(r for r in cp.list_checkpoints(run["job_id"]) if r.promotable)
        model = cp.promote_checkpoint(row.name, "slow-op", BASE_MODEL)
    assert model.state == "READY" and model.name.endswith("/slow-op")
    assert len([c for c in log.calls if "/operations/" in c[1]]) == 3


def test_listing_failure_on_resume_stops_instead_of_restarting(make_asgi_emulator, tmp_path):
    emu = make_asgi_emulator()
    with pytest.raises(Stop):
        main(emu.config(tmp_path / "run", interval=2, max_steps=4), on_step=interrupt_after_save("step-2"))

    def deny_listing(request: httpx.Request):
        if request.method == "GET" and request.url.path.endswith("/checkpoints"):
            return httpx.Response(403, json={"error": {"code": 7, "status": "PERMISSION_DENIED",
                                                       "message": "bucket access revoked"}})
        return None

    log = RequestLog()
    with pytest.raises(CheckpointListingError, match="could not list the checkpoints.*bucket access revoked"):
        main(emu.config(tmp_path / "run", log=log, fail=deny_listing, interval=2, max_steps=4))
    assert log.ops("forward_backward", "load_weights", "save_weights") == []


def test_output_model_taken_by_another_job_is_an_error(make_asgi_emulator, tmp_path):
    emu = make_asgi_emulator()
    main(emu.config(tmp_path / "a", max_steps=1, output_model_id="taken"))
    with pytest.raises(FwError, match="already exists and was promoted from .*not from this run"):
        main(emu.config(tmp_path / "b", max_steps=1, output_model_id="taken"))


def test_explicit_job_must_match_the_log_paths_job(make_asgi_emulator, tmp_path):
    emu = make_asgi_emulator()
    first = main(emu.config(tmp_path / "a", max_steps=1))
    other = main(emu.config(tmp_path / "b", max_steps=1))
    with pytest.raises(FwError, match=f"belongs to trainer job {first['job_id']}"):
        main(emu.config(tmp_path / "a", max_steps=1, trainer_job_id=other["job_id"]))
    reattached = main(emu.config(tmp_path / "a", max_steps=1, trainer_job_id=first["job_id"]))
    assert (reattached["job_id"], reattached["steps_run"]) == (first["job_id"], 0)


def test_promotable_save_of_one_name_twice_from_one_client_gets_a_free_name(make_asgi_emulator, tmp_path):
    """Regression (found by the contract suite): the same training client saving `step-N` promotable
    twice, with training in between, must not resend the same `step-N-<suffix>` and be refused."""
    from fwemu.client.checkpoints import TrainingCheckpoints
    from fwemu.client.trainer_client import TrainerGatewayClient
    from fwemu.client.tokenizer import chat_datum

    emu = make_asgi_emulator()
    with emu.control_plane() as cp:
        job = cp.create_job(BASE_MODEL, lora_rank=4)
        cp.wait_until_running(job.job_id, poll_interval_s=0.02, timeout_s=10)
        with TrainerGatewayClient(cp.gateway_url_for_job(job.job_id), KEY, emu.transport()) as gw:
            gw.create_session()
            model = gw.create_model(BASE_MODEL, lora_rank=4)
            ckpt = TrainingCheckpoints(model, cp, job.job_id, tmp_path / "log", lora_rank=4)
            datum = chat_datum({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
            first = ckpt.save("step-1", resumable=False, promotable=True)
            model.forward_backward([datum])
            model.optim_step({"learning_rate": 1e-2})
            second = ckpt.save("step-1", resumable=False, promotable=True)
        names = [r.short_name for r in cp.list_checkpoints(job.job_id)]
    suffix = model.session_suffix
    assert first.sampler_name == f"step-1-{suffix}" and second.sampler_name == f"step-1-1-{suffix}"
    assert names == [first.sampler_name, second.sampler_name]
    assert emu.checkpoint_files(job.job_id, first.sampler_name) != emu.checkpoint_files(job.job_id, second.sampler_name)
