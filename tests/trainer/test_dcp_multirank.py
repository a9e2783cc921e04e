"""Checkpoints of several ranks: a 2-rank sharded save loads into the one-process stand-in (2 -> 1),
and a one-process save loads into 2 ranks' dim-0 shards (1 -> 2). Gloo on CPU, real dcp.save/load."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp

from fwemu.emulator.inspect import Kind, inspect_checkpoint
from fwemu.emulator.trainer.model_session import TrainerModel
from tests.builders import load_sharded, sharded_dir, standin_state
from tests.trainer.trainer_helpers import BASE, SMALL, sft_batch, train


def adam_state(m: TrainerModel) -> dict:
    names = {p: n for n, p in m.model.named_parameters()}
    return {names[p]: s for p, s in m.optimizer.state.items()}


def test_two_rank_sharded_torchtitan_save_resumes_in_one_process(tmp_path: Path):
    src = TrainerModel(BASE, size=SMALL)
    train(src, sft_batch(3), 2)
    d = sharded_dir(tmp_path / "ckpt", standin_state(src, "torchtitan"), ranks=2)
    md = dcp.FileSystemReader(str(d)).read_metadata()
    q = md.state_dict_metadata["layers.0.attention.wq.weight"]
    assert len(q.chunks) == 2 and sorted(p.name for p in d.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    v = inspect_checkpoint(d)
    assert v.kind is Kind.TRAINING and v.details["ranks"] == 2 and v.details["layout"] == "flat", v.reason

    resumed = TrainerModel(BASE, size=SMALL)
    resumed.load_state(d, optimizer=True)
    assert resumed.state_digest() == src.state_digest()
    assert resumed.step == src.step == 2  # no trainer_step in this layout: Adam's step
    mine = adam_state(resumed)
    for n, s in adam_state(src).items():
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(mine[n][k], s[k]), (n, k)
    train(src, sft_batch(3), 1)
    train(resumed, sft_batch(3), 1)
    assert resumed.state_digest() == src.state_digest()


def test_one_process_save_loads_into_two_ranks_shards(tmp_path: Path):
    src = TrainerModel(BASE, size=SMALL)
    train(src, sft_batch(3), 1)
    src.save_state(tmp_path / "ckpt")
    ref = {f"model.{n}": t.clone() for n, t in src.trainable_state_dict().items()}
    for n, s in adam_state(src).items():
        ref[f"optim.state.{n}.exp_avg"] = s["exp_avg"].clone()
    reports = load_sharded(tmp_path / "ckpt", ref, tmp_path / "out", ranks=2)
    assert [r["mismatched"] for r in reports] == [[], []]
    for key, t in ref.items():  # each rank holds its own rows, and together all of them
        assert reports[0]["rows"][key] + reports[1]["rows"][key] == t.shape[0]
        assert reports[0]["rows"][key] > 0
