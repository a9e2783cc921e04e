"""The multi-rank trainer (rank_group.MultiRankTrainer over sharded.ShardedTrainerModel, gloo, FSDP2).

What is compared, always against the one-process TrainerModel on the same data and init:
per-call `loss:sum`, per-datum logprobs, `grad_norm:mean`, and the exported weights.
Tolerance RTOL (relative, 1e-5): the ranks add their gradient shards in a different order than
one process accumulates micro-batches, so results agree to float32 rounding, not bit for bit.
Resharded resumes (2 -> 1, 1 -> 2, 2 -> 3) are compared with an unsharded resume (1 -> 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fwemu.emulator.inspect import Kind, inspect_checkpoint
from fwemu.emulator.trainer.model_session import TrainerModel, TrainerUserError
from fwemu.emulator.trainer.rank_group import MultiRankTrainer, RankGroupFailed, ranks_from_env
from fwemu.emulator.trainer.sharded import share
from tests.trainer.trainer_helpers import ADAM, BASE, SMALL, sft_batch

RTOL = 1e-5
# Weights after Adam steps: Adam's normalised update turns float32 rounding differences of a
# near-zero gradient element into update differences of a few 1e-6 (lr 3e-3); measured max 2.1e-6.
WEIGHT_ATOL = 1e-5
# Five datums split 3 / 2 over two ranks; the one-datum call leaves rank 1 with an idle pass.
CALLS = [sft_batch(5), sft_batch(1, offset=3)]


def step(trainer, calls=CALLS) -> tuple[list[float], float, list]:
    """forward_backward over `calls` (accumulated), then one optim_step normalised by tokens."""
    outs = [trainer.forward_backward(c, "cross_entropy") for c in calls]
    metrics = trainer.optim_step(ADAM, "num_loss_tokens")["metrics"]
    logprobs = [o["logprobs"]["data"] for out in outs for o in out["loss_fn_outputs"]]
    return [o["metrics"]["loss:sum"] for o in outs], metrics["grad_norm:mean"], logprobs


def run(trainer, steps: int) -> list[tuple]:
    return [step(trainer) for _ in range(steps)]


def assert_close(got: list[tuple], want: list[tuple]) -> None:
    assert len(got) == len(want)
    for (gl, gn, glp), (wl, wn, wlp) in zip(got, want):
        np.testing.assert_allclose(gl, wl, rtol=RTOL)
        np.testing.assert_allclose(gn, wn, rtol=RTOL)
        assert len(glp) == len(wlp)
        for a, b in zip(glp, wlp):
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-6)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """One 2-rank group and its one-process twin, driven through training, saves and loads."""
    tmp = tmp_path_factory.mktemp("multirank")
    one, two = TrainerModel(BASE, size=SMALL), MultiRankTrainer(BASE, size=SMALL, ranks=2)
    try:
        out = {"one": run(one, 2), "two": run(two, 2), "tmp": tmp}
        with pytest.raises(TrainerUserError) as bad:
            two.forward_backward([{"model_input": {"chunks": []}}], "cross_entropy")
        out["user_error"] = str(bad.value)
        out["after_error"] = two.forward(sft_batch(2), "cross_entropy")["metrics"]["loss:sum"]
        out["one_forward"] = one.forward(sft_batch(2), "cross_entropy")["metrics"]["loss:sum"]
        one.save_state(tmp / "one")
        two.save_state(tmp / "two")
        one.save_sampler(tmp / "hf-one", "base")
        two.save_sampler(tmp / "hf-two", "base")
        out["step"] = two.step
        two.save_state(tmp / "fresh", fresh_optimizer=True)  # the drop-optimizer-state break switch
        # 1 -> 2: the one-process checkpoint into the 2-rank group, then train on.
        two.load_state(tmp / "one", optimizer=True)
        out["two_from_one"] = run(two, 2)
        unsharded = TrainerModel(BASE, size=SMALL)
        unsharded.load_state(tmp / "one", optimizer=True)
        out["unsharded"] = run(unsharded, 2)
        yield out
    finally:
        two.close()


def test_two_ranks_train_like_one_process(scenario):
    assert_close(scenario["two"], scenario["one"])
    assert scenario["step"] == 2


def test_user_error_on_every_rank_leaves_the_group_usable(scenario):
    assert "datum 0" in scenario["user_error"] or "token" in scenario["user_error"]
    np.testing.assert_allclose(scenario["after_error"], scenario["one_forward"], rtol=RTOL)


def test_save_writes_one_data_file_per_rank_and_inspects_as_training(scenario):
    d = scenario["tmp"] / "two"
    assert sorted(p.name for p in d.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    v = inspect_checkpoint(d)
    assert v.kind is Kind.TRAINING and v.details["ranks"] == 2, v.reason


def test_fresh_optimizer_save_keeps_weights_and_zeroes_adam_state(scenario):
    tmp = scenario["tmp"]
    fresh, real = TrainerModel(BASE, size=SMALL), TrainerModel(BASE, size=SMALL)
    fresh.load_state(tmp / "fresh", optimizer=True)
    real.load_state(tmp / "two", optimizer=True)
    assert fresh.state_digest() == real.state_digest() and fresh.step == real.step == 2
    assert all(float(s["exp_avg"].abs().sum()) == 0 and float(s["step"]) == 0 for s in fresh.optimizer.state.values())
    assert all(float(s["exp_avg"].abs().sum()) > 0 for s in real.optimizer.state.values())


def test_sampler_export_gathers_full_weights_on_rank_zero(scenario):
    tmp = scenario["tmp"]
    assert inspect_checkpoint(tmp / "hf-two").kind is inspect_checkpoint(tmp / "hf-one").kind
    one, two = load_file(str(tmp / "hf-one" / "model.safetensors")), load_file(str(tmp / "hf-two" / "model.safetensors"))
    assert sorted(one) == sorted(two)
    for n in one:
        assert two[n].shape == one[n].shape and two[n].dtype == one[n].dtype
        torch.testing.assert_close(two[n], one[n], rtol=RTOL, atol=WEIGHT_ATOL)


def test_resume_two_ranks_into_one_process(scenario):
    """2 -> 1 against 1 -> 1 (the one-process save resumed in one process)."""
    resumed = TrainerModel(BASE, size=SMALL)
    resumed.load_state(scenario["tmp"] / "two", optimizer=True)
    assert resumed.step == 2
    assert_close(run(resumed, 2), scenario["unsharded"])


def test_resume_one_process_into_two_ranks(scenario):
    assert_close(scenario["two_from_one"], scenario["unsharded"])


def test_resume_two_ranks_into_three(scenario):
    """2 -> 3: three ranks get uneven dim-0 shards (and five datums split 2 / 2 / 1)."""
    three = MultiRankTrainer(BASE, size=SMALL, ranks=3)
    try:
        three.load_state(scenario["tmp"] / "two", optimizer=True)
        assert three.step == 2
        assert_close(run(three, 2), scenario["unsharded"])
        three.save_state(scenario["tmp"] / "three")
    finally:
        three.close()
    assert len(list((scenario["tmp"] / "three").glob("__*_0.distcp"))) == 3
    back = TrainerModel(BASE, size=SMALL)
    back.load_state(scenario["tmp"] / "three", optimizer=True)  # 3 -> 1
    assert back.step == 4


def test_share_splits_contiguously_and_covers_everything():
    for n in range(0, 9):
        for world in (1, 2, 3, 4):
            parts = [share(n, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            assert max(hi - lo for lo, hi in parts) - min(hi - lo for lo, hi in parts) <= 1


def test_ranks_setting_from_env(monkeypatch):
    monkeypatch.delenv("FWEMU_TRAINER_RANKS", raising=False)
    assert ranks_from_env() == 1
    monkeypatch.setenv("FWEMU_TRAINER_RANKS", "2")
    assert ranks_from_env() == 2
    for bad in ("0", "two"):
        monkeypatch.setenv("FWEMU_TRAINER_RANKS", bad)
        with pytest.raises(ValueError, match="FWEMU_TRAINER_RANKS"):
            ranks_from_env()


def test_bad_settings_fail_as_user_errors_before_any_rank_trains():
    with pytest.raises(TrainerUserError, match="ranks must be"):
        MultiRankTrainer(BASE, size=SMALL, ranks=1)
    with pytest.raises(TrainerUserError, match="lora_rank"):
        MultiRankTrainer(BASE, size=SMALL, ranks=2, lora_rank=-1)


def test_a_dead_rank_breaks_the_group_with_a_clear_error():
    two = MultiRankTrainer(BASE, size=SMALL, ranks=2)
    try:
        two._procs[1].kill()
        with pytest.raises(RankGroupFailed, match="rank 1 exited"):
            two.forward(sft_batch(2), "cross_entropy")
        with pytest.raises(RankGroupFailed, match="failed earlier"):
            two.forward(sft_batch(2), "cross_entropy")
    finally:
        two.close()
    assert not any(p.is_alive() for p in two._procs)


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                    reason="CUDA path (NCCL, bf16): needs 2 GPUs; unrun on CPU machines")
def test_cuda_nccl_two_ranks_match_one_gpu_process_and_bf16_runs(tmp_path: Path):
    one = TrainerModel(BASE, size=SMALL, device="cuda:0")
    two = MultiRankTrainer(BASE, size=SMALL, ranks=2, device="cuda")
    bf16 = MultiRankTrainer(BASE, size=SMALL, ranks=2, device="cuda", precision="bf16")
    try:
        assert_close(run(two, 2), run(one, 2))
        losses = [s[0][0] for s in run(bf16, 2)]
        assert all(np.isfinite(losses))
        bf16.save_state(tmp_path / "bf16")
        resumed = TrainerModel(BASE, size=SMALL, device="cuda:0")
        resumed.load_state(tmp_path / "bf16", optimizer=True)  # master weights stay float32
        assert resumed.step == 2
    finally:
        two.close()
        bf16.close()


def test_lora_two_ranks_train_and_export_like_one_process(tmp_path: Path):
    """LoRA under FSDP2: frozen base shards beside trainable adapters; PEFT and merged exports."""
    one = TrainerModel(BASE, size=SMALL, lora_rank=4, lora_alpha=8, seed=3)
    two = MultiRankTrainer(BASE, size=SMALL, ranks=2, lora_rank=4, lora_alpha=8, seed=3)
    try:
        assert_close(run(two, 2), run(one, 2))
        for t, name in ((one, "one"), (two, "two")):
            t.save_sampler(tmp_path / f"peft-{name}", "base")
            t.save_sampler(tmp_path / f"merged-{name}", "merged_base")
            t.save_state(tmp_path / f"dcp-{name}")
    finally:
        two.close()
    assert inspect_checkpoint(tmp_path / "dcp-two").kind is Kind.TRAINING_LORA
    for d, f in (("peft", "adapter_model.safetensors"), ("merged", "model.safetensors")):
        a, b = load_file(str(tmp_path / f"{d}-one" / f)), load_file(str(tmp_path / f"{d}-two" / f))
        assert sorted(a) == sorted(b)
        for n in a:
            torch.testing.assert_close(b[n], a[n], rtol=RTOL, atol=WEIGHT_ATOL)
    resumed = TrainerModel(BASE, size=SMALL, lora_rank=4, lora_alpha=8, seed=3)
    resumed.load_state(tmp_path / "dcp-two", optimizer=True)
    assert resumed.step == 2
