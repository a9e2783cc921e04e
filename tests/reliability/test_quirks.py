"""Each quirk of settings.QUIRKS: the emulator really behaves that way, and our client still gets
the right answer under it (docs/quirks.md says how to switch each one on).

Saves go through the real trainer gateway (tiny stand-in model) and our own clients over real
HTTP, so what is checked is what a user's run would do.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

from fwemu.client.checkpoints import CheckpointListingError, TrainingCheckpoints
from fwemu.client.control_plane import ControlPlaneClient
from fwemu.client.retry import NO_RETRY, RetryPolicy
from fwemu.client.timeparse import parse_rfc3339
from fwemu.client.trainer_client import AdamParams, TrainerGatewayClient
from fwemu.emulator.settings import QUIRKS
from tests.reliability.conftest import (
    ACCT_A, BASE, KEY_A, create_job, envelope, http_client, import_tar, promote, served,
)

FAST_RETRY = RetryPolicy(max_retries=4, base_delay_s=0.01, max_delay_s=0.05, max_elapsed_s=10)
TOKENS = list(b"quirks of the real service")


def datum() -> dict:
    n = len(TOKENS) - 1
    return {"model_input": {"chunks": [{"type": "encoded_text", "tokens": TOKENS[:-1]}]},
            "loss_fn_inputs": {"target_tokens": {"data": TOKENS[1:], "dtype": "int64", "shape": [n]},
                               "weights": {"data": [1.0] * n, "dtype": "float32", "shape": [n]}}}


@contextmanager
def run(tmp_path, job_id: str, lora_rank: int = 0, retry: RetryPolicy = FAST_RETRY, **quirk_settings):
    """A served emulator with the quirk(s), our control-plane client, a trained model and its
    TrainingCheckpoints (log_path under tmp_path)."""
    with served(**quirk_settings) as srv:
        cp = ControlPlaneClient(srv.url, KEY_A, retry=retry, operation_poll_s=0.01)
        cp.create_job(BASE, lora_rank=lora_rank, job_id=job_id)
        cp.wait_until_running(job_id, poll_interval_s=0.01, timeout_s=10)
        gw = TrainerGatewayClient(cp.gateway_url_for_job(job_id), KEY_A, retry=FAST_RETRY, heartbeat_interval_s=None)
        gw.create_session()
        model = gw.create_model(BASE, lora_rank)
        ckpts = TrainingCheckpoints(model, cp, job_id, str(tmp_path / job_id), lora_rank,
                                    appear_timeout_s=10, poll_s=0.05)
        try:
            yield srv, cp, model, ckpts
        finally:
            gw.close()
            cp.close()


def train_step(model) -> None:
    model.forward_backward([datum()], "cross_entropy")
    model.optim_step(AdamParams(learning_rate=1e-3))


def test_every_quirk_is_covered_here():
    """A new quirk in settings.QUIRKS must come with a test in this module and a docs/quirks.md entry."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "quirks.md").read_text()
    source = Path(__file__).read_text()
    for name in QUIRKS:
        assert f"## `{name}`" in doc, name
        assert f"def test_{name.replace('-', '_')}" in source, name


# ------------------------------------------------------------------ mixed-precision-timestamps
def test_mixed_precision_timestamps(tmp_path):
    """Stamps alternate between `...:SSZ` and `...:SS.ffffffZ`, so the string maximum is not the
    newest row; resume still picks the newest resumable save by parsed time."""
    with run(tmp_path, "mixed", quirks=frozenset({"mixed-precision-timestamps"})) as (srv, cp, model, ckpts):
        train_step(model)
        for step in (1, 2, 3):   # back to back, so the whole-second stamp and the next one share a second
            ckpts.save(f"step-{step}", resumable=True, promotable=False, data_consumed=8 * step)
        rows = cp.list_checkpoints("mixed")
        stamps = [r.raw["createTime"] for r in rows]
        assert [s.count(".") for s in stamps] == [1, 0, 1], stamps          # frac, whole second, frac
        assert max(stamps) == stamps[1]                                    # the string trap ...
        parsed = [parse_rfc3339(s) for s in stamps]
        assert parsed == sorted(parsed) and max(parsed) == parsed[2]       # ... the real order

        info = ckpts.resume()
        assert (info.checkpoint_name, info.step, info.data_consumed) == ("step-3", 3, 24)


# ------------------------------------------------------------------ rename-dcp-saves
def test_rename_dcp_saves(tmp_path):
    """A LoRA save_state("step-5") is stored as step-<trainer step>; dataloader.json follows the
    listed name, so resume restores data_consumed instead of resetting it to 0, and a rerun of
    the same save is recognised and skipped."""
    with run(tmp_path, "renamed", lora_rank=4, quirks=frozenset({"rename-dcp-saves"})) as (srv, cp, model, ckpts):
        train_step(model)
        result = ckpts.save("step-5", resumable=True, promotable=False, data_consumed=40)
        listed_names = [r.short_name for r in cp.list_checkpoints("renamed") if r.resumable]
        assert listed_names == [result.dcp_name] and result.dcp_name != "step-5"   # the quirk
        assert result.dcp_name == "step-1"                                        # trainer step 1
        assert ckpts.dataloader.read()[result.dcp_name].data_consumed == 40

        again = ckpts.save("step-5", resumable=True, promotable=False, data_consumed=40)
        assert again.skipped == ("dcp",) and again.dcp_name == result.dcp_name
        assert len([r for r in cp.list_checkpoints("renamed") if r.resumable]) == 1

        info = ckpts.resume()
        assert (info.checkpoint_name, info.data_consumed, info.data_consumed_restored) == ("step-1", 40, True)


# ------------------------------------------------------------------ slow-operations
def test_slow_operations(sample_tars):
    """An async promotion answers an unfinished operation that is done only after N polls; our
    client polls it to the model."""
    polls = 4
    with served(quirks=frozenset({"slow-operations"}), quirk_operation_polls=polls) as srv, \
            http_client(srv.url) as http:
        create_job(http, "ops")
        for name in ("base-a", "base-b"):
            assert import_tar(http, "ops", name, sample_tars["INFERENCE_BASE"]).status_code == 200
        r = promote(http, "ops", "base-a", "raw-model", async_promotion=True)
        op = r.json()["operation"]
        assert r.status_code == 200 and op["done"] is False and "response" not in op
        seen = [http.get(f"/v1/{op['name']}").json()["done"] for _ in range(polls)]
        assert seen == [False] * (polls - 1) + [True]

        slept: list[float] = []
        with ControlPlaneClient(srv.url, KEY_A, retry=FAST_RETRY, sleep=slept.append) as cp:
            model = cp.promote_checkpoint(f"accounts/{ACCT_A}/rlorTrainerJobs/ops/checkpoints/base-b",
                                          "client-model", BASE)
        assert model.name == f"accounts/{ACCT_A}/models/client-model" and model.state == "READY"
        assert len(slept) == polls                      # it waited the operation out, no more


# ------------------------------------------------------------------ listing-delay
def test_listing_delay(tmp_path):
    """A new row is listed only after the delay; the client waits for its own save to appear
    before keying dataloader.json or promoting, instead of guessing."""
    delay = 0.6
    with run(tmp_path, "late", quirks=frozenset({"listing-delay"}), quirk_listing_delay_s=delay) as (
            srv, cp, model, ckpts):
        train_step(model)
        t0 = time.monotonic()
        saved = ckpts.save("step-1", resumable=True, promotable=True, data_consumed=16)
        assert time.monotonic() - t0 >= delay                        # it had to wait for the listing
        assert saved.dcp_name == "step-1" and saved.sampler_name == f"step-1-{model.session_suffix}"
        assert ckpts.dataloader.read()["step-1"].data_consumed == 16
        promoted = ckpts.promote_latest("late-model", BASE)
        assert promoted.state == "READY"

        train_step(model)
        model.save_state("step-2")                                     # straight to the trainer
        assert "step-2" not in {r.short_name for r in cp.list_checkpoints("late")}   # the quirk
        time.sleep(delay)
        assert "step-2" in {r.short_name for r in cp.list_checkpoints("late")}


# ------------------------------------------------------------------ list-failures
def test_list_failures(sample_tars, tmp_path):
    """Every other listing answers 503 UNAVAILABLE: with retries the client saves and resumes as
    usual; without, TrainingCheckpoints refuses loudly instead of taking it for a fresh start."""
    with served(quirks=frozenset({"list-failures"})) as srv, http_client(srv.url) as http:
        create_job(http, "raw")
        assert import_tar(http, "raw", "step-1", sample_tars["TRAINING"]).status_code == 200
        url = f"/v1/accounts/{ACCT_A}/rlorTrainerJobs/raw/checkpoints"
        answers = [http.get(url) for _ in range(4)]
        assert sorted(r.status_code for r in answers) == [200, 200, 503, 503]
        envelope(next(r for r in answers if r.status_code == 503), 503, "UNAVAILABLE")

    with run(tmp_path, "flaky", quirks=frozenset({"list-failures"})) as (srv, cp, model, ckpts):
        train_step(model)
        for _ in range(3):     # each save lists at least twice; half of those listings fail
            assert ckpts.save("step-1", resumable=True, promotable=False, data_consumed=8).dcp_name == "step-1"
        assert ckpts.resume().data_consumed == 8

        with ControlPlaneClient(srv.url, KEY_A, retry=NO_RETRY) as bare:
            unretried = TrainingCheckpoints(model, bare, "flaky", ckpts.log_path)
            outcomes = []
            for _ in range(4):
                try:
                    outcomes.append(unretried.resume().checkpoint_name)
                except CheckpointListingError as exc:
                    assert "Refusing to continue" in str(exc) and "503" in str(exc)
                    outcomes.append("refused")
        assert sorted(outcomes) == ["refused", "refused", "step-1", "step-1"]   # never a silent fresh start
