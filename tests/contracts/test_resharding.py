"""R9 resharded-resume has teeth: resharded loads patched (in the test, not by a product switch) to
drop the optimizer state when several ranks load a save fail the suite on R9 alone. (The clean
emulator passing R9 is tests/contracts/test_clean.py's: the default profile runs every property.)"""

from __future__ import annotations

import pytest

from fwemu.contracts.resharding import Segment, check_same_training
from fwemu.contracts.invariants import InvariantViolation
from fwemu.contracts.runner import run_contracts
from fwemu.contracts.targets import InProcessTarget
from fwemu.emulator.trainer.rank_group import MultiRankTrainer


def run_r9(seed: int):
    with InProcessTarget() as target:
        return run_contracts(target, max_examples=2, seed=seed, only=["R9"], machine=False, shrink=False)


def drop_optimizer_on_sharded_loads(monkeypatch):
    real = MultiRankTrainer.load_state
    monkeypatch.setattr(MultiRankTrainer, "load_state", lambda self, src, optimizer: real(self, src, False))


def test_a_resharded_load_without_its_optimizer_state_fails_r9(monkeypatch, pytestconfig):
    drop_optimizer_on_sharded_loads(monkeypatch)
    report = run_r9(pytestconfig.getoption("--fw-seed"))
    assert report.failed_ids == {"R9"}, report.table()
    assert "resharded load" in report.results["R9"].message


def test_the_check_tolerates_rounding_and_names_the_segment():
    a = (-1.0, -2.0)
    check_same_training([Segment(2, [a]), Segment(1, [(-1.0 - 1e-7, -2.0)])], [Segment(1, [a]), Segment(1, [a])], [2, 1])
    with pytest.raises(InvariantViolation, match=r"segment 2 of ranks \[2, 1\], step 1 \(after resuming a 2-rank save at 1 ranks\)"):
        check_same_training([Segment(2, [a]), Segment(1, [(-1.01, -2.0)])], [Segment(1, [a]), Segment(1, [a])], [2, 1])
