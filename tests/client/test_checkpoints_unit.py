"""TrainingCheckpoints decisions against fakes: each known cookbook bug has a regression test here."""

from __future__ import annotations

import json
import logging

import pytest

from fwemu.client.checkpoints import (CheckpointListingError, NoPromotableCheckpointError, TrainingCheckpoints,
                                matches_logical_name)
from fwemu.client.control_plane import CheckpointRow, sort_newest_first
from tests.client.fakes import FakeControlPlane, FakeTrainer, wire_row

JOB = "job-a"


def make(tmp_path, cp=None, **trainer_kw):
    cp = cp or FakeControlPlane()
    trainer = FakeTrainer(cp, JOB, **trainer_kw)
    ckpt = TrainingCheckpoints(trainer, cp, JOB, str(tmp_path), lora_rank=8, appear_timeout_s=0, poll_s=0)
    return ckpt, cp, trainer


def dataloader(tmp_path) -> dict:
    return json.loads((tmp_path / "dataloader.json").read_text())


# -- bug (a): mixed-precision timestamps ----------------------------------------------------------

def test_resume_orders_by_parsed_time_not_string(tmp_path):
    """'...:13Z' sorts after '...:13.5Z' as a string; the parsed order must win."""
    cp = FakeControlPlane()
    cp.rows[JOB] = [wire_row(JOB, "step-2", "TRAINING_LORA", "2025-03-01T12:00:13Z"),
                    wire_row(JOB, "step-4", "TRAINING_LORA", "2025-03-01T12:00:13.500000Z")]
    ckpt, _, trainer = make(tmp_path, cp)
    ckpt.dataloader.record("step-2", 2, 8)
    ckpt.dataloader.record("step-4", 4, 16)
    assert max(r["createTime"] for r in cp.rows[JOB]) == "2025-03-01T12:00:13Z"  # the string-sort trap
    info = ckpt.resume()
    assert (info.checkpoint_name, info.step, info.data_consumed) == ("step-4", 4, 16)
    assert trainer.calls == [("load_state", "step-4", True)]


def test_promote_latest_orders_by_parsed_time(tmp_path):
    cp = FakeControlPlane()
    cp.rows[JOB] = [wire_row(JOB, "step-2-aaaaaaaa", "INFERENCE_LORA", "2025-03-01T12:00:13Z"),
                    wire_row(JOB, "step-4-bbbbbbbb", "INFERENCE_LORA", "2025-03-01T12:00:13.000001Z"),
                    wire_row(JOB, "step-6", "TRAINING_LORA", "2025-03-01T12:00:14Z")]
    ckpt, _, _ = make(tmp_path, cp)
    ckpt.promote_latest("my-model", "accounts/fireworks/models/m")
    assert cp.promoted == [(f"accounts/acct/rlorTrainerJobs/{JOB}/checkpoints/step-4-bbbbbbbb",
                            "my-model", "accounts/fireworks/models/m")]


def test_sort_newest_first_handles_offsets_and_unparseable_times():
    rows = [CheckpointRow.from_wire(wire_row(JOB, n, "TRAINING", t)) for n, t in [
        ("utc-noon", "2025-03-01T12:00:00Z"),
        ("plus-one-1130", "2025-03-01T11:30:00+01:00"),   # = 10:30 UTC: oldest
        ("garbage", "yesterday"),
        ("minus-one-1130", "2025-03-01T11:30:00-01:00"),  # = 12:30 UTC: newest
    ]]
    assert [r.short_name for r in sort_newest_first(rows)] == ["minus-one-1130", "utc-noon", "plus-one-1130", "garbage"]


# -- bug (b): session suffix vs skip-if-exists ----------------------------------------------------

def test_rerun_of_a_final_save_skips_rows_whatever_their_suffix(tmp_path):
    """The cookbook compared 'step-6' with 'step-6-0badcafe' and never skipped; after resuming the final
    checkpoint, both of its rows hold exactly the loaded weights and must be reused."""
    ckpt, cp, trainer = make(tmp_path)
    first = ckpt.save("step-6", resumable=True, promotable=True, data_consumed=24)
    assert first.sampler_name == "step-6-0badcafe" and first.skipped == ()
    trainer.session_suffix = "12345678"  # a new process: another suffix
    rerun = TrainingCheckpoints(trainer, cp, JOB, str(tmp_path), lora_rank=8, appear_timeout_s=0, poll_s=0)
    assert rerun.resume().checkpoint_name == "step-6"
    again = rerun.save("step-6", resumable=True, promotable=True, data_consumed=24)
    assert again.skipped == ("dcp", "sampler") and again.sampler_name == "step-6-0badcafe"
    assert [c[0] for c in trainer.calls] == ["save_state", "save_sampler", "load_state"]  # nothing written twice


def test_same_process_repeat_save_is_skipped(tmp_path):
    ckpt, cp, trainer = make(tmp_path)
    ckpt.save("step-6", resumable=True, promotable=False, data_consumed=24)
    assert ckpt.save("step-6", resumable=True, promotable=True, data_consumed=24).skipped == ("dcp",)
    assert ckpt.save("step-6", resumable=False, promotable=True).skipped == ("sampler",)


def test_rows_of_an_earlier_attempt_are_not_reused_for_other_weights(tmp_path, caplog):
    """Rolled back to step-2 and trained again: the old step-4 rows may hold other weights. Skipping them
    would key this run's progress to stale weights; the save goes under a free name instead."""
    ckpt, cp, trainer = make(tmp_path)
    ckpt.save("step-2", resumable=True, promotable=False, data_consumed=8)
    ckpt.save("step-4", resumable=True, promotable=True, data_consumed=16)
    ckpt.resume(init_from_checkpoint=f"{JOB}:step-2")
    trainer.train_step()
    trainer.train_step()
    trainer.session_suffix = "feedf00d"
    with caplog.at_level(logging.WARNING):
        result = ckpt.save("step-4", resumable=True, promotable=True, data_consumed=16)
    assert result.skipped == () and result.dcp_name == "step-4-1" and result.sampler_name == "step-4-feedf00d"
    assert "already exists from an earlier attempt" in caplog.text
    assert ckpt.resume().checkpoint_name == "step-4-1"


def test_logical_name_match_is_exact_about_the_suffix():
    assert matches_logical_name("step-5-45dda197", "step-5")
    assert matches_logical_name("step-5", "step-5")
    assert not matches_logical_name("step-50-45dda197", "step-5")
    assert not matches_logical_name("step-5-45dda19", "step-5")       # 7 hex: not a session suffix
    assert not matches_logical_name("step-5-45DDA197", "step-5")      # the SDK's suffix is lowercase


# -- bug (c): renamed DCP saves -------------------------------------------------------------------

@pytest.mark.parametrize("reports_path", [True, False])
def test_renamed_dcp_save_keys_dataloader_by_listed_name(tmp_path, reports_path):
    """The trainer stores step-4 as step-0 (reporting it or not): dataloader.json must follow the row."""
    ckpt, cp, trainer = make(tmp_path, rename={"step-4": "step-0"}, report_renamed_path=reports_path)
    result = ckpt.save("step-4", resumable=True, promotable=False, data_consumed=16)
    assert result.dcp_name == "step-0"
    assert dataloader(tmp_path) == {"step-0": {"step": 4, "data_consumed": 16,
                                               "saved_at": dataloader(tmp_path)["step-0"]["saved_at"]}}
    info = ckpt.resume()
    assert (info.checkpoint_name, info.step, info.data_consumed) == ("step-0", 4, 16)
    assert info.data_consumed_restored


def test_renamed_dcp_save_is_recognised_on_a_rerun(tmp_path):
    """A rerun saving step-4 again right after resuming it must find the renamed row, not save twice."""
    ckpt, cp, trainer = make(tmp_path, rename={"step-4": "step-0"})
    ckpt.save("step-4", resumable=True, promotable=False, data_consumed=16)
    assert ckpt.resume().checkpoint_name == "step-0"
    again = ckpt.save("step-4", resumable=True, promotable=False, data_consumed=16)
    assert again.skipped == ("dcp",) and again.dcp_name == "step-0"
    assert [c for c in trainer.calls if c[0] == "save_state"] == [("save_state", "step-4")]


# -- listing failures -----------------------------------------------------------------------------

def test_listing_failure_during_resume_raises_instead_of_starting_fresh(tmp_path):
    ckpt, cp, trainer = make(tmp_path)
    ckpt.save("step-2", resumable=True, promotable=False, data_consumed=8)
    cp.fail_listing = True
    with pytest.raises(CheckpointListingError, match="could not list the checkpoints of trainer job job-a"):
        ckpt.resume()
    assert not [c for c in trainer.calls if c[0] == "load_state"]


def test_listing_failure_during_save_raises_before_writing(tmp_path):
    ckpt, cp, trainer = make(tmp_path)
    cp.fail_listing = True
    with pytest.raises(CheckpointListingError):
        ckpt.save("step-2", resumable=True, promotable=False, data_consumed=8)
    assert trainer.calls == []


# -- resume selection -----------------------------------------------------------------------------

def test_fresh_job_resumes_nothing(tmp_path):
    ckpt, _, trainer = make(tmp_path)
    assert ckpt.resume() is None
    assert trainer.calls == []


def test_sampler_rows_are_never_resumed(tmp_path):
    cp = FakeControlPlane()
    cp.add(JOB, "step-2-0badcafe", "INFERENCE_LORA")
    ckpt, _, trainer = make(tmp_path, cp)
    assert ckpt.resume() is None


def test_newest_row_without_bookkeeping_falls_back_to_newest_committed(tmp_path, caplog):
    """A crash between the DCP save and dataloader.json: resume the newest checkpoint we know the data position of."""
    ckpt, cp, trainer = make(tmp_path)
    ckpt.save("step-2", resumable=True, promotable=False, data_consumed=8)
    trainer.save_state("step-4")  # the process died before its bookkeeping
    with caplog.at_level(logging.WARNING):
        info = ckpt.resume()
    assert (info.checkpoint_name, info.step, info.data_consumed) == ("step-2", 2, 8)
    assert "step-4 have no dataloader.json entry" in caplog.text


def test_no_bookkeeping_at_all_restores_step_and_says_data_is_unknown(tmp_path, caplog):
    ckpt, cp, trainer = make(tmp_path)
    trainer.save_state("step-6")
    with caplog.at_level(logging.WARNING):
        info = ckpt.resume()
    assert (info.step, info.data_consumed, info.data_consumed_restored) == (6, 0, False)
    assert "data_consumed is unknown" in caplog.text


def test_corrupt_dataloader_json_starts_bookkeeping_fresh_loudly(tmp_path, caplog):
    ckpt, cp, trainer = make(tmp_path)
    ckpt.save("step-2", resumable=True, promotable=False, data_consumed=8)
    (tmp_path / "dataloader.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        info = ckpt.resume()
    assert "is corrupt" in caplog.text
    assert (info.step, info.data_consumed_restored) == (2, False)
    assert list(tmp_path.glob("dataloader.json.corrupt-*"))


# -- init_from_checkpoint -------------------------------------------------------------------------

def test_init_from_same_job_restores_step_and_data(tmp_path):
    ckpt, cp, trainer = make(tmp_path)
    ckpt.save("step-2", resumable=True, promotable=False, data_consumed=8)
    ckpt.save("step-4", resumable=True, promotable=False, data_consumed=16)
    info = ckpt.resume(init_from_checkpoint=f"{JOB}:step-2")
    assert (info.step, info.data_consumed, info.source_job_id) == (2, 8, JOB)
    assert trainer.calls[-1] == ("load_state", "step-2", True)


def test_init_from_same_job_unknown_name_is_a_clear_error(tmp_path):
    ckpt, cp, trainer = make(tmp_path)
    ckpt.save("step-2", resumable=True, promotable=False, data_consumed=8)
    with pytest.raises(Exception, match="no resumable checkpoint named 'step-9'.*step-2"):
        ckpt.resume(init_from_checkpoint=f"{JOB}:step-9")


def test_init_from_other_job_loads_cross_job_weights_at_step_zero(tmp_path):
    ckpt, cp, trainer = make(tmp_path)
    info = ckpt.resume(init_from_checkpoint="other-job:step-4")
    assert (info.step, info.data_consumed, info.source_job_id) == (0, 0, "other-job")
    assert trainer.calls == [("load_state", "cross_job://other-job/step-4", False)]


def test_init_from_other_job_yields_to_the_runs_own_progress(tmp_path):
    """After an interruption the rerun must continue its own checkpoint, not start over from the source."""
    ckpt, cp, trainer = make(tmp_path)
    ckpt.save("step-2", resumable=True, promotable=False, data_consumed=8)
    info = ckpt.resume(init_from_checkpoint="other-job:step-4")
    assert (info.checkpoint_name, info.step, info.data_consumed) == ("step-2", 2, 8)


@pytest.mark.parametrize("spec", ["step-4", "job:", ":step-4", "job:gs://bucket/x", "Job:step-4"])
def test_init_from_checkpoint_must_be_job_colon_name(tmp_path, spec):
    ckpt, _, _ = make(tmp_path)
    with pytest.raises(ValueError):
        ckpt.resume(init_from_checkpoint=spec)


def test_init_and_adapter_warm_start_are_refused_together(tmp_path):
    ckpt, _, trainer = make(tmp_path)
    with pytest.raises(ValueError, match="mutually exclusive"):
        ckpt.resume(init_from_checkpoint="other-job:step-4", warm_start_from_adapter="adapter")
    assert trainer.calls == []


def test_adapter_warm_start_applies_only_to_a_fresh_run(tmp_path):
    ckpt, _, trainer = make(tmp_path)
    assert ckpt.resume(warm_start_from_adapter="accounts/acct/models/adapter").step == 0
    assert trainer.calls == [("load_adapter", "accounts/acct/models/adapter")]


# -- promote_latest -------------------------------------------------------------------------------

def test_promote_latest_without_promotable_rows_names_job_and_kinds(tmp_path):
    cp = FakeControlPlane()
    cp.add(JOB, "step-2", "TRAINING_LORA")
    cp.add(JOB, "step-4", "TRAINING_LORA")
    cp.add(JOB, "step-4-0badcafe", "INFERENCE_ARC_V2")
    ckpt, _, _ = make(tmp_path, cp)
    with pytest.raises(NoPromotableCheckpointError) as err:
        ckpt.promote_latest("my-model", "accounts/fireworks/models/m")
    assert "job-a" in str(err.value) and "TRAINING_LORA x2" in str(err.value) and "INFERENCE_ARC_V2 x1" in str(err.value)
    assert cp.promoted == []


def test_save_requires_a_capability_and_a_step(tmp_path):
    ckpt, _, _ = make(tmp_path)
    with pytest.raises(ValueError):
        ckpt.save("step-1", resumable=False, promotable=False)
    with pytest.raises(ValueError, match="step="):
        ckpt.save("final", resumable=True, promotable=False, data_consumed=3)
    assert ckpt.save("final", resumable=True, promotable=False, data_consumed=3, step=7).dcp_name == "final"
