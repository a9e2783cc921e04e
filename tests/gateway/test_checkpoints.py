"""Saves and loads through the gateway, judged by what the control plane lists (kinds come from bytes)."""

from __future__ import annotations

import json
import pickle

import pytest

from tests.gateway.helpers import OTHER_KEY, Gateway, datum, gateway

T = "CHECKPOINT_TYPE_"


def fwd_loss(gw: Gateway, job: str, model: str) -> float:
    """loss:sum of a forward pass on the fixed batch (no gradients touched)."""
    out = gw.ok(job, "forward", {"forward_input": {"data": [datum()], "loss_fn": "cross_entropy"},
                                 "model_id": model, "seq_id": gw.seq(job, model)})
    return out["metrics"]["loss:sum"]


@pytest.mark.parametrize("lora_rank, kind", [(0, "TRAINING"), (4, "TRAINING_LORA")])
def test_save_state_rows_and_trainer_listing(gw, lora_rank, kind):
    job = gw.create_job(f"dcp-{lora_rank}", lora_rank=lora_rank)
    model = gw.model(job, lora_rank=lora_rank)
    gw.step(job, model)
    assert gw.save_state(job, model, "step-1") == {"path": "step-1", "type": "save_weights"}
    gw.step(job, model)
    assert gw.save_state(job, model, "step-2")["path"] == "step-2"
    assert gw.save_sampler(job, model, "step-2-0badc0de", "base")["path"] == "step-2-0badc0de"
    listed = gw.kinds(job)
    assert listed["step-1"] == listed["step-2"] == (T + kind, False)
    # the trainer's own listing: DCP names only, oldest first
    assert gw.get(job, "list_checkpoints").json() == {"checkpoints": ["step-1", "step-2"]}


def test_save_state_name_rules(gw):
    job = gw.create_job("dcp-names")
    model = gw.model(job)
    assert gw.save_state(job, model, "step-1")["path"] == "step-1"
    assert gw.save_state(job, model, "step-1")["path"] == "step-1"      # a taken name is replaced (test_replace.py)
    bad = gw.save_state(job, model, "Step_1")
    assert bad["category"] == "user" and "DNS label" in bad["error"]
    assert list(gw.kinds(job)) == ["step-1"]


def test_full_run_sampler_types(gw):
    """base -> INFERENCE_BASE (promotable); delta -> ARC_V2 against the newest base; merged_base refused."""
    job = gw.create_job("full-sampler")
    model = gw.model(job)
    early = gw.save_sampler(job, model, "s0-11111111", "delta")
    assert early["category"] == "user" and "base" in early["error"]   # no base to delta against yet
    gw.step(job, model)
    assert gw.save_sampler(job, model, "s1-11111111", None)["path"] == "s1-11111111"   # chain: base
    gw.step(job, model)
    assert gw.save_sampler(job, model, "s2-11111111", None)["path"] == "s2-11111111"   # chain: delta
    assert gw.save_sampler(job, model, "s3-11111111", "base")["path"] == "s3-11111111"
    assert gw.save_sampler(job, model, "s4-11111111", "DELTA")["path"] == "s4-11111111"
    merged = gw.save_sampler(job, model, "s5-11111111", "merged_base")
    assert merged["category"] == "user" and "merged_base" in merged["error"]
    assert gw.kinds(job) == {
        "s1-11111111": (T + "INFERENCE_BASE", True),
        "s2-11111111": (T + "INFERENCE_ARC_V2", False),
        "s3-11111111": (T + "INFERENCE_BASE", True),
        "s4-11111111": (T + "INFERENCE_ARC_V2", False),
    }
    store = gw.app.state.services.store
    manifest = json.loads((store.checkpoint_dir("local", job, "s4-11111111") / "delta.json").read_text())
    assert manifest["base_identity"] == "s3-11111111"   # the job's newest base at the time


def test_lora_run_sampler_types(gw):
    """LoRA: base and delta both store the whole adapter (INFERENCE_LORA); merged_base is full weights."""
    job = gw.create_job("lora-sampler", lora_rank=4)
    model = gw.model(job, lora_rank=4)
    gw.step(job, model)
    for name, ctype in (("a-22222222", None), ("b-22222222", "base"), ("c-22222222", "delta"),
                        ("d-22222222", "merged_base")):
        assert gw.save_sampler(job, model, name, ctype)["path"] == name
    assert gw.kinds(job) == {
        "a-22222222": (T + "INFERENCE_LORA", True),
        "b-22222222": (T + "INFERENCE_LORA", True),
        "c-22222222": (T + "INFERENCE_LORA", True),
        "d-22222222": (T + "INFERENCE_BASE", True),
    }


def test_load_with_and_without_optimizer(gw):
    """optimizer=True continues exactly like the uninterrupted run; optimizer=False restarts Adam."""
    job = gw.create_job("load-same-job")
    model = gw.model(job)
    gw.step(job, model)
    gw.step(job, model)
    assert gw.save_state(job, model, "ckpt")["path"] == "ckpt"
    at_save = fwd_loss(gw, job, model)
    gw.step(job, model)
    uninterrupted = fwd_loss(gw, job, model)

    assert gw.load(job, model, "ckpt", optimizer=True) == {"path": "ckpt", "type": "load_weights"}
    assert fwd_loss(gw, job, model) == at_save
    gw.step(job, model)
    assert fwd_loss(gw, job, model) == uninterrupted

    assert gw.load(job, model, "ckpt", optimizer=False)["path"] == "ckpt"
    assert fwd_loss(gw, job, model) == at_save
    gw.step(job, model)
    assert fwd_loss(gw, job, model) != uninterrupted


def test_cross_job_load_within_the_account_only(gw):
    source = gw.create_job("cross-source")
    model = gw.model(source)
    gw.step(source, model)
    gw.save_state(source, model, "step-1")
    expected = fwd_loss(gw, source, model)

    target = gw.create_job("cross-target")
    fresh = gw.model(target)
    assert fwd_loss(gw, target, fresh) != expected
    assert gw.load(target, fresh, "cross_job://cross-source/step-1", optimizer=True)["path"] == \
        "cross_job://cross-source/step-1"
    assert fwd_loss(gw, target, fresh) == expected

    # another account's job (same id scheme) is not found from here
    other = Gateway(gw.http, key=OTHER_KEY, account="elsewhere")
    theirs = other.create_job("theirs")
    their_model = other.model(theirs)
    assert other.save_state(theirs, their_model, "step-1")["path"] == "step-1"
    refused = gw.load(target, fresh, "cross_job://theirs/step-1", optimizer=False)
    assert refused["category"] == "user" and "not found" in refused["error"]
    missing = gw.load(target, fresh, "cross_job://cross-source/step-9", optimizer=False)
    assert missing["category"] == "user" and "step-1" in missing["error"]  # names what is there


class _Boom:
    """Unpickling this would create a marker file: proof that a load ran pickle on the bytes."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_load_refuses_sampler_rows_rejected_dirs_and_mismatched_kinds(gw, tmp_path):
    job = gw.create_job("load-refusals")
    model = gw.model(job)
    gw.save_sampler(job, model, "samp-33333333", "base")
    sampler = gw.load(job, model, "samp-33333333", optimizer=False)
    assert sampler["category"] == "user" and "INFERENCE_BASE" in sampler["error"]

    # a directory the inspector rejects is never handed to torch's (pickle-based) DCP reader
    marker = tmp_path / "unpickled"
    store = gw.app.state.services.store
    with store.write_checkpoint("local", job, "evil") as staging:
        (staging / ".metadata").write_bytes(pickle.dumps(_Boom(str(marker))))
        (staging / "__0_0.distcp").write_bytes(b"\0" * 16)
    assert store.get_checkpoint("local", job, "evil").kind is None
    evil = gw.load(job, model, "evil", optimizer=True)
    assert evil["category"] == "user" and "inspector" in evil["error"]
    assert not marker.exists()

    lora_job = gw.create_job("load-refusals-lora", lora_rank=4)
    lora_model = gw.model(lora_job, lora_rank=4)
    gw.save_state(lora_job, lora_model, "adapter")
    mismatch = gw.load(job, model, "cross_job://load-refusals-lora/adapter", optimizer=True)
    assert mismatch["category"] == "user" and "TRAINING_LORA" in mismatch["error"]
    bad_ref = gw.load(job, model, "gs://bucket/step-1", optimizer=True)
    assert bad_ref["category"] == "user"


def test_quirk_rename_dcp_saves_names_lora_saves_by_trainer_step():
    """The real service-mode trainer may store a LoRA DCP save as step-<its step>; path says so."""
    with gateway(quirks=frozenset({"rename-dcp-saves"})) as gw:
        job = gw.create_job("renamed", lora_rank=4)
        model = gw.model(job, lora_rank=4)
        gw.step(job, model)
        gw.step(job, model)
        assert gw.save_state(job, model, "step-42")["path"] == "step-2"
        assert gw.save_state(job, model, "step-43")["path"] == "step-2-1"
        assert gw.get(job, "list_checkpoints").json()["checkpoints"] == ["step-2", "step-2-1"]
        assert gw.load(job, model, "step-2", optimizer=True)["path"] == "step-2"
        full_job = gw.create_job("not-renamed")
        full = gw.model(full_job)
        assert gw.save_state(full_job, full, "step-42")["path"] == "step-42"


def test_break_drop_optimizer_state_is_silent_but_changes_the_continuation():
    """The row still lists as resumable and loads, but Adam restarts: only the numbers tell."""
    with gateway(breaks=frozenset({"drop-optimizer-state"})) as gw:
        job = gw.create_job("dropped-optim")
        model = gw.model(job)
        gw.step(job, model)
        gw.step(job, model)
        gw.save_state(job, model, "ckpt")
        at_save = fwd_loss(gw, job, model)
        gw.step(job, model)
        uninterrupted = fwd_loss(gw, job, model)
        assert gw.kinds(job)["ckpt"] == (T + "TRAINING", False)
        assert gw.load(job, model, "ckpt", optimizer=True)["path"] == "ckpt"
        assert fwd_loss(gw, job, model) == at_save
        gw.step(job, model)
        assert fwd_loss(gw, job, model) != uninterrupted
