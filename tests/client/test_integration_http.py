"""R1-R7 (docs/invariants.md) through real HTTP: our client against the emulator on a loopback uvicorn.

All tests share one server (distinct jobs, log paths and model ids). The server has the
rename-dcp-saves quirk on, so any trainer-side rename is exercised on the same paths.
"""

from __future__ import annotations

import json
import logging

import pytest

from fwemu.client.checkpoints import NoPromotableCheckpointError, TrainingCheckpoints
from fwemu.client.errors import FwApiError
from fwemu.client.recipes.sft_data import load_examples, to_datum
from fwemu.client.recipes.sft_loop import main
from tests.client.conftest import BASE_MODEL, DATASET, RequestLog
from tests.client.helpers import Stop, batches, check_save_order, interrupt_after_save, trainer_for


def test_r1_r2_r5_interrupted_run_equals_straight_run(http_emulator, tmp_path):
    emu = http_emulator
    straight_log, resumed_log = RequestLog(), RequestLog()
    straight = main(emu.config(tmp_path / "straight", log=straight_log, interval=2, epochs=2,
                               output_model_id="r2-straight"))
    with pytest.raises(Stop):
        main(emu.config(tmp_path / "resumed", log=resumed_log, interval=2, epochs=2, output_model_id="r2-resumed"),
             on_step=interrupt_after_save("step-4"))
    first_part = len(resumed_log.ops("optim_step"))
    resumed = main(emu.config(tmp_path / "resumed", log=resumed_log, interval=2, epochs=2,
                              output_model_id="r2-resumed"))

    # R1: the newest resumable row is restored with its step and data_consumed, on the same job
    assert resumed["resumed_from"] == "step-4"
    assert [body["path"] for _, body in resumed_log.ops("load_weights")] == ["step-4"]
    assert all(body["optimizer"] for _, body in resumed_log.ops("load_weights"))
    # R2: no optimizer step repeated, no batch trained twice or skipped, identical final weights
    assert (first_part, resumed["steps_run"]) == (4, 8)
    assert len(resumed_log.ops("optim_step")) == straight["steps"] == resumed["steps"] == 12
    assert batches(resumed_log) == batches(straight_log)
    assert resumed["data_consumed"] == straight["data_consumed"] == 48
    check_save_order(straight_log)
    check_save_order(resumed_log, loaded_step=4)
    assert emu.model_files(resumed["promoted_model"]) == emu.model_files(straight["promoted_model"])
    assert resumed["final_loss"] == straight["final_loss"]
    # R5: a final resumable + promotable save, promoted
    with emu.control_plane() as cp:
        rows = {r.short_name: r for r in cp.list_checkpoints(resumed["job_id"])}
        assert rows["step-12"].kind == "TRAINING_LORA"
        assert rows[resumed["final_sampler_checkpoint"]].promotable
        model = cp.get_model(resumed["promoted_model"])
    assert (model.state, model.kind, model.peft_rank) == ("READY", "HF_PEFT_ADDON", 4)


def test_r3_save_interval(http_emulator, tmp_path):
    emu = http_emulator
    every3 = main(emu.config(tmp_path / "every3", interval=3, max_steps=6))
    never = main(emu.config(tmp_path / "never", interval=0, max_steps=6))
    with emu.control_plane() as cp:
        def resumable(job):
            return [r.short_name for r in cp.list_checkpoints(job) if r.resumable]
        assert resumable(every3["job_id"]) == ["step-3", "step-6"]      # periodic + final
        assert resumable(never["job_id"]) == ["step-6"]                  # final only

        with pytest.raises(Stop):
            main(emu.config(tmp_path / "no-interval", interval=0, max_steps=6), on_step=interrupt_after_save(step=4))
        rerun = main(emu.config(tmp_path / "no-interval", interval=0, max_steps=6))
        assert rerun["resumed_from"] is None and rerun["steps_run"] == 6   # nothing to resume: from step 0
        assert resumable(rerun["job_id"]) == ["step-6"]


def test_r4_cross_job_init(http_emulator, tmp_path):
    emu = http_emulator
    source_losses, init_losses = {}, {}
    source = main(emu.config(tmp_path / "source", interval=0, epochs=2),
                  on_step=lambda e: source_losses.setdefault(e.step, e.loss))
    spec = f"{source['job_id']}:step-12"
    init = main(emu.config(tmp_path / "init", init_from_checkpoint=spec, max_steps=2),
                on_step=lambda e: init_losses.setdefault(e.step, e.loss))
    assert init["job_id"] != source["job_id"] and init["resumed_from"] is None
    assert init["initialized_from"] == spec
    assert (init["steps_run"], init["steps"], init["data_consumed"]) == (2, 2, 8)   # step 0, data 0
    assert init_losses[1] < source_losses[1]   # same first batch, trained weights: lower loss

    cp, gateway, model = trainer_for(emu, init["job_id"])
    with cp, gateway:
        ckpt = TrainingCheckpoints(model, cp, init["job_id"], str(tmp_path / "init"), lora_rank=4)
        with pytest.raises(ValueError, match="mutually exclusive"):
            ckpt.resume(init_from_checkpoint=spec, warm_start_from_adapter="accounts/test-acct/models/x")
        assert model.last_seq_id == 0  # refused before anything was sent to the trainer


def test_r5_rerun_of_a_finished_run_still_promotes(http_emulator, tmp_path, capsys):
    emu = http_emulator
    first = main(emu.config(tmp_path / "run", interval=2, max_steps=4))
    assert first["promoted_model"] is None
    second = main(emu.config(tmp_path / "run", interval=2, max_steps=4, output_model_id="r5-late"))
    assert (second["job_id"], second["steps_run"], second["resumed_from"]) == (first["job_id"], 0, "step-4")
    assert second["promoted_model"] == "accounts/test-acct/models/r5-late"
    with emu.control_plane() as cp:
        assert cp.get_model("r5-late").state == "READY"
        sampler_rows = [r for r in cp.list_checkpoints(first["job_id"]) if r.promotable]
    assert len(sampler_rows) == 1   # the final sampler save was reused, not written twice
    assert "final checkpoint step-4 was already saved (dcp and sampler)" in capsys.readouterr().err
    third = main(emu.config(tmp_path / "run", interval=2, max_steps=4, output_model_id="r5-late"))
    assert third["promoted_model"] == second["promoted_model"]
    assert "already exists" in capsys.readouterr().err   # said out loud, not skipped silently


def test_r6_dataloader_json_follows_renamed_saves(http_emulator, tmp_path):
    """A recipe whose step numbering runs ahead of the trainer's (here: step 42 after 2 optimizer steps)
    gets its DCP save stored under the trainer's name by the rename quirk; dataloader.json must be keyed
    by the listed name, and a new process must resume that row with step 42 and its data_consumed."""
    emu = http_emulator
    job = main(emu.config(tmp_path / "setup", max_steps=1))["job_id"]  # a running job to work on
    datums = [to_datum(e, 64) for e in load_examples(DATASET)][:4]
    cp, gateway, model = trainer_for(emu, job)
    with cp, gateway:
        ckpt = TrainingCheckpoints(model, cp, job, str(tmp_path / "renamed"), lora_rank=4)
        for _ in range(2):
            model.forward_backward(datums[:2])
            model.optim_step({"learning_rate": 1e-3})
        result = ckpt.save("step-42", resumable=True, promotable=False, data_consumed=170)
    assert result.dcp_name != "step-42"
    entries = json.loads((tmp_path / "renamed" / "dataloader.json").read_text())
    assert {k: (v["step"], v["data_consumed"]) for k, v in entries.items()} == {result.dcp_name: (42, 170)}

    cp, gateway, model = trainer_for(emu, job)   # a new process: new session, new model handle
    with cp, gateway:
        assert result.dcp_name in [r.short_name for r in cp.list_checkpoints(job) if r.resumable]
        info = TrainingCheckpoints(model, cp, job, str(tmp_path / "renamed"), lora_rank=4).resume()
    assert (info.checkpoint_name, info.step, info.data_consumed, info.data_consumed_restored) == \
        (result.dcp_name, 42, 170, True)


def test_r6_corrupt_dataloader_json_and_the_cap(http_emulator, tmp_path, caplog):
    emu = http_emulator
    with pytest.raises(Stop):
        main(emu.config(tmp_path / "corrupt", interval=2, max_steps=6), on_step=interrupt_after_save("step-4"))
    (tmp_path / "corrupt" / "dataloader.json").write_text('{"step-4": {"step": "four"')
    with caplog.at_level(logging.WARNING):
        resumed = main(emu.config(tmp_path / "corrupt", interval=2, max_steps=6))
    assert "is corrupt" in caplog.text
    assert (resumed["resumed_from"], resumed["steps_run"], resumed["data_consumed"]) == ("step-4", 2, 24)

    capped = main(emu.config(tmp_path / "capped", interval=1, batch_size=1, max_steps=22))
    entries = json.loads((tmp_path / "capped" / "dataloader.json").read_text())
    assert len(entries) == 20 and list(entries)[0] == "step-3" and list(entries)[-1] == "step-22"
    assert capped["data_consumed"] == entries["step-22"]["data_consumed"] == 22


def test_r7_promote_latest_without_promotable_rows(http_emulator, tmp_path):
    emu = http_emulator
    with pytest.raises(Stop):
        main(emu.config(tmp_path / "dcp-only", interval=2, max_steps=6), on_step=interrupt_after_save("step-4"))
    job_id = json.loads((tmp_path / "dcp-only" / "run.json").read_text())["job_id"]
    cp, gateway, model = trainer_for(emu, job_id)
    with cp, gateway:
        ckpt = TrainingCheckpoints(model, cp, job_id, str(tmp_path / "dcp-only"), lora_rank=4)
        with pytest.raises(NoPromotableCheckpointError, match=rf"{job_id}.*TRAINING_LORA x2"):
            ckpt.promote_latest("r7-never", BASE_MODEL)
        with pytest.raises(FwApiError) as err:
            cp.get_model("r7-never")
        assert err.value.status == 404
