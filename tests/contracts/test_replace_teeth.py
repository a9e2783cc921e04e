"""L4 has teeth: an emulator patched (inside the test, not by a product switch) to refuse saves under
a taken name, or to replace a row but keep its old createTime, fails the suite on L4."""

from __future__ import annotations

import pytest

from fwemu.contracts.runner import run_contracts
from fwemu.contracts.targets import InProcessTarget
from fwemu.emulator.store.store import Store


def refuse_replaces(monkeypatch):
    real = Store.write_checkpoint

    def write_checkpoint(self, *args, replace=False, **kwargs):
        return real(self, *args, replace=False, **kwargs)      # the old emulator: "already exists"
    monkeypatch.setattr(Store, "write_checkpoint", write_checkpoint)


def keep_old_create_time(monkeypatch):
    real = Store._record_checkpoint

    def record(self, account, job_id, name, final, verdict, claimed, *, replace=False):
        old = self.db.execute("SELECT create_us FROM checkpoints WHERE account=? AND job_id=? AND name=?",
                              (account, job_id, name)).fetchone() if replace else None
        real(self, account, job_id, name, final, verdict, claimed, replace=replace)
        if old:
            with self._tx() as db:
                db.execute("UPDATE checkpoints SET create_us=? WHERE account=? AND job_id=? AND name=?",
                           (old[0], account, job_id, name))
    monkeypatch.setattr(Store, "_record_checkpoint", record)


@pytest.mark.parametrize("patch", [refuse_replaces, keep_old_create_time], ids=lambda p: p.__name__)
def test_the_suite_catches_a_broken_replace_and_names_l4(monkeypatch, patch, pytestconfig):
    patch(monkeypatch)
    with InProcessTarget() as target:
        report = run_contracts(target, max_examples=2, seed=pytestconfig.getoption("--fw-seed"), only=["L4"],
                               machine=False, shrink=False)
    assert "L4" in report.failed_ids, report.table()
    assert report.results["L4"].message
