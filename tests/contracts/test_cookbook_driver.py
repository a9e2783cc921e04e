"""`--driver cookbook`: the real cookbook's TrainingCheckpoints (and its promote scripts) under the contract suite.

Runs in the compat venv (tinker, fireworks-ai 1.2.9):
    FWEMU_COOKBOOK=... PYTHONPATH=$PWD <venv-python> -m pytest tests/contracts/test_cookbook_driver.py -m compat

R6's dataloader.json check asks the driver's checkpoints object (`dataloader_entry`) where it has
one: the cookbook keeps {name: data_consumed}, our client {name: {step, data_consumed}}.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compat.venv import cookbook_dir

pytestmark = pytest.mark.compat

COOKBOOK = cookbook_dir()
if not (COOKBOOK / "training" / "utils" / "checkpoints.py").is_file():
    pytest.skip(f"no cookbook checkout at {COOKBOOK} (set FWEMU_COOKBOOK)", allow_module_level=True)
pytest.importorskip("tinker", reason="the cookbook needs the compat venv (scripts/compat_env.sh)")

from fwemu.contracts.drivers import driver_class  # noqa: E402
from fwemu.contracts.runner import run_contracts  # noqa: E402
from fwemu.contracts.targets import InProcessTarget  # noqa: E402

SPEC = f"cookbook={COOKBOOK}"
MIXED = {"mixed-precision-timestamps"}


def _run(driver, properties, quirks=frozenset(), machine=False, max_examples=2):
    with InProcessTarget(transport="socket", quirks=quirks) as target:
        return run_contracts(target, max_examples=max_examples, steps=10, seed=0, driver=driver,
                             properties=properties, machine=machine, shrink=False)


def test_the_spec_binds_the_checkouts_own_class():
    cls = driver_class(SPEC)
    where = Path(__import__(cls.checkpoints_class.__module__, fromlist=["x"]).__file__).resolve()
    assert cls.checkpoints_class.__name__ == "TrainingCheckpoints" and COOKBOOK in where.parents


def test_the_real_cookbook_passes_promotion_under_mixed_precision():
    """save(promotable) + promote_latest through the cookbook's class: it sorts by parsed time (R7 holds)."""
    report = _run(SPEC, ["promotion"], MIXED)
    assert report.ok, report.table()
    for inv_id in ("R7", "K3", "K5"):
        assert report.results[inv_id].status == "pass", report.table()


def test_a_broken_copy_that_promotes_ignoring_promotable_fails_r7():
    base = driver_class(SPEC)
    import training.utils.checkpoints as real

    class IgnoresPromotable(base.checkpoints_class):
        """The cookbook's promote_latest without its `promotable` filter: the newest row of any kind."""

        def promote_latest(self, output_model_id, base_model, *, hot_load_deployment_id=None):
            rows = real._newest_first(self._list_checkpoints())
            if not rows:
                raise RuntimeError(f"No promotable checkpoints found for trainer job '{self._trainer_id}'.")
            return self._fw_client.promote_checkpoint(name=rows[0]["name"], output_model_id=output_model_id,
                                                      base_model=base_model)

    broken = type("BrokenCookbookDriver", (base,), {"checkpoints_class": IgnoresPromotable})
    report = _run(broken, ["promotion"])
    assert "R7" in report.failed_ids, report.table()
    assert "promote_latest" in report.results["R7"].message, report.table()


@pytest.mark.parametrize("script", ["PromoteScriptDriver", "MergeScriptDriver"])
def test_the_promote_scripts_string_sort_is_caught_only_under_mixed_precision(script):
    """promote_checkpoint.py `_resolve_checkpoint` and merge_lora_and_promote.py `_resolve_merged_checkpoint`
    sort createTime strings: right while every stamp has one precision, wrong (R7) when they mix."""
    spec = f"fwemu.contracts.cookbook_driver:{script}"
    clean = _run(spec, ["promotion"])
    assert clean.ok and clean.results["R7"].status == "pass", clean.table()
    mixed = _run(spec, ["promotion"], MIXED)
    assert "R7" in mixed.failed_ids, mixed.table()
    assert "the newest promotable row is" in mixed.results["R7"].message, mixed.table()


def test_the_real_cookbook_passes_the_machine_and_the_resume_properties_under_its_declared_policies():
    """The rules where the cookbook differs from our client (a taken name is saved again; resume takes
    the newest row even without a dataloader.json entry; init_from_checkpoint always wins) are its
    declared policies: the suite holds it to them and passes it, and the report says which it declared.
    (The whole default profile, `fwemu contracts --driver cookbook`, takes ~4 min: see the closing note.)"""
    report = _run(SPEC, ["resume", "cross-job-init", "attempts", "replace"], machine=True, max_examples=6)
    assert report.ok, report.table()
    for inv_id in ("R1", "R2", "R4", "R6", "R8", "L4"):
        assert report.results[inv_id].status == "pass", report.table()
    assert report.policies == {"resume_policy": "newest-row", "init_policy": "init-first",
                               "save_policy": "resave"}, report.policies
    assert "declared policies" in report.table()


def test_a_broken_copy_that_resumes_by_name_order_fails_r1():
    """`_newest_first` by name instead of by time: `step-9` sorts after `step-10`, so the resume
    property's run past step 9 resumes the older row; R1 names both."""
    base = driver_class(SPEC)
    import training.utils.checkpoints as real

    class ByName(base.checkpoints_class):
        def _latest_resumable(self):
            rows = [r for r in self._list_checkpoints() if real._is_resumable_row(r)]
            return max(rows, key=lambda r: r["name"]) if rows else None

    broken = type("BrokenCookbookDriver", (base,), {"checkpoints_class": ByName})
    report = _run(broken, ["resume"])
    assert report.failed_ids == {"R1"}, report.table()
    assert "resume picked step-9, expected step-10" in report.results["R1"].message, report.table()
