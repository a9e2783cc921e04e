"""K9 save-and-hotload has teeth: hot loads patched (in the test, not by a product switch) to serve
stale weights after a delta, or to ignore the SDK's chain metadata, fail the suite on K9 alone.
(The clean emulator passing K9 is tests/contracts/test_clean.py's: the default profile runs it.)"""

from __future__ import annotations

import shutil

from fwemu.contracts.runner import run_contracts
from fwemu.contracts.targets import InProcessTarget
from fwemu.emulator.deployments import hot_load, states
from fwemu.emulator.trainer import arc_v2


def run_k9(seed: int):
    with InProcessTarget() as target:
        return run_contracts(target, max_examples=2, seed=seed, only=["K9"], machine=False, shrink=False)


def test_a_delta_that_keeps_serving_the_old_weights_fails_k9(monkeypatch, pytestconfig):
    def stale(current_dir, snap_dir, out, keep=None):   # "applied": the old shard copied, the XOR skipped
        shutil.copytree(current_dir, out, dirs_exist_ok=True)
        return None
    monkeypatch.setattr(arc_v2, "apply_delta", stale)
    report = run_k9(pytestconfig.getoption("--fw-seed"))
    assert report.failed_ids == {"K9"}, report.table()
    assert "not serving the saved weights" in report.results["K9"].message


def test_a_hot_load_that_ignores_the_chain_metadata_fails_k9(monkeypatch, pytestconfig):
    real = states.plan_hot_load

    def trusting(kind, identity, current, current_is_full, metadata, delta_base):
        if metadata:   # trust the delta's own delta.json; forget which snapshot the SDK said it follows
            metadata = {**metadata, "previous_snapshot_identity": current}
        return real(kind, identity, current, current_is_full, metadata, delta_base)
    monkeypatch.setattr(hot_load.states, "plan_hot_load", trusting)
    report = run_k9(pytestconfig.getoption("--fw-seed"))
    assert report.failed_ids == {"K9"}, report.table()
    assert "does not serve must fail to load" in report.results["K9"].message
