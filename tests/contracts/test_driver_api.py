"""`--driver module:Class`: a team's own checkpoint logic under test, passing when right and caught when wrong.

The drivers here subclass our client's driver and swap its `checkpoints_class`, the way the
README's driver section suggests. `StringTimeCheckpoints` picks "newest" by sorting the
`createTime` strings, as the cookbook's promote scripts do: under the mixed-precision-timestamps
quirk a whole-second stamp (`...:14Z`) sorts after the microsecond stamps of the same second
(`...:14.000001Z`), so it picks an older row, and the suite must say which invariant that breaks.
"""

from __future__ import annotations

import pytest

from fwemu.client.checkpoints import NoPromotableCheckpointError, TrainingCheckpoints, describe_kinds
from fwemu.contracts.drivers import OurDriver
from fwemu.contracts.runner import run_contracts
from fwemu.contracts.targets import InProcessTarget
from fwemu.emulator.cli import main

HERE = "tests.contracts.test_driver_api"


class TeamCheckpoints(TrainingCheckpoints):
    """A team's subclass that changes nothing that matters: it must pass."""

    saves = 0

    def save(self, *args, **kwargs):
        type(self).saves += 1
        return super().save(*args, **kwargs)


class TeamDriver(OurDriver):
    name = "team"
    checkpoints_class = TeamCheckpoints


def _by_string_time(rows):
    return sorted(rows, key=lambda r: r.raw.get("createTime") or "", reverse=True)


class StringTimeCheckpoints(TrainingCheckpoints):
    """Newest = the largest createTime *string*, for resume and for promote_latest."""

    def _auto_resume(self, rows):   # our client's rule (newest row dataloader.json knows), string-sorted
        resumable = _by_string_time([r for r in rows if r.resumable])
        if not resumable:
            return None
        entries = self.dataloader.read()
        row = next((r for r in resumable if r.short_name in entries), resumable[0])
        return self._load(row.short_name, entries.get(row.short_name))

    def promote_latest(self, output_model_id, base_model):
        rows = self.list_rows("promote")
        promotable = _by_string_time([r for r in rows if r.promotable])
        if not promotable:
            raise NoPromotableCheckpointError(f"trainer job {self.trainer_id} has no promotable checkpoint "
                                              f"({describe_kinds(rows)})")
        return self.control_plane.promote_checkpoint(promotable[0].name, output_model_id, base_model)


class StringTimeDriver(OurDriver):
    name = "string-time"
    checkpoints_class = StringTimeCheckpoints


@pytest.mark.parametrize("spec, words", [
    ("no_such_module_xyz:Driver", "cannot import no_such_module_xyz"),
    (f"{HERE}:NoSuchClass", "has no attribute NoSuchClass"),
    (f"{HERE}:HERE", "not a driver class"),
    (f"{HERE}:TeamCheckpoints", "lacks create_job"),
    ("not a spec", "expected client, sdk, cookbook[=PATH] or module:Class"),
    ("cookbook=/nonexistent", "/nonexistent is not a cookbook checkout"),
])
def test_a_bad_driver_spec_is_one_line_and_exit_2(capsys, spec, words):
    assert main(["contracts", "--driver", spec]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1, err


def test_a_team_driver_by_module_and_class_passes():
    TeamCheckpoints.saves = 0
    with InProcessTarget() as target:
        report = run_contracts(target, max_examples=3, steps=10, seed=0, driver=f"{HERE}:TeamDriver",
                               properties=["resume", "promotion"], shrink=False)
    assert report.ok, report.table()
    assert report.driver == f"{HERE}:TeamDriver"
    assert TeamCheckpoints.saves > 0      # the suite really went through the team's class
    assert report.policies == {}          # our client's logic declares none: the strict defaults
    for inv_id in ("R1", "R2", "R7", "K3"):
        assert report.results[inv_id].status == "pass", report.table()


def test_string_sorted_createtime_is_caught_under_mixed_precision_timestamps():
    with InProcessTarget(quirks={"mixed-precision-timestamps"}) as target:
        report = run_contracts(target, max_examples=6, steps=12, seed=0, driver=StringTimeDriver,
                               properties=["resume", "promotion"], shrink=False)
    assert {"R1", "R7"} <= report.failed_ids, report.table()   # resume and promote_latest both picked an older row
    assert "resume picked" in report.results["R1"].message, report.table()
    assert "the newest promotable row is" in report.results["R7"].message, report.table()


def test_policies_default_to_our_clients_and_a_value_outside_the_list_is_refused():
    from fwemu.contracts.driver_api import POLICIES, DriverSpecError, policy

    class Declares:
        resume_policy = "newest-row"
        save_policy = "sometimes"

    assert policy(object(), "init_policy") == POLICIES["init_policy"][0] == "own-rows-first"
    assert policy(Declares(), "resume_policy") == "newest-row"
    with pytest.raises(DriverSpecError, match=r"Declares.save_policy = 'sometimes': expected one of"):
        policy(Declares(), "save_policy")
