"""Issue 17: bugs the suite used to miss, each planted by a small patch *in the test* (never a product
switch), must fail the default-profile properties and name the invariant they break.

One test per class: promotion preconditions on every path (K7), bytes changed after listing (K8),
retention inside the window (L5), loading exactly the row named (R8), and a client bug reported
under the invariant it breaks (R1, not the dataloader's R6).
"""

from __future__ import annotations

import re

import pytest

from fwemu.contracts.runner import run_contracts
from fwemu.contracts.targets import InProcessTarget


def _run(only: list[str], pytestconfig, examples: int = 2):
    with InProcessTarget() as target:
        return run_contracts(target, max_examples=examples, seed=pytestconfig.getoption("--fw-seed"), only=only,
                             machine=False, shrink=False)


def _assert_named(report, wanted: str, not_blamed: tuple[str, ...] = ()) -> None:
    assert wanted in report.failed_ids, report.table()
    assert report.results[wanted].message, "a failure must say what broke"
    wrong = report.failed_ids & set(not_blamed)
    assert not wrong, f"the bug was also reported as {sorted(wrong)}:\n{report.table()}"


# ------------------------------------------------------------------------------ K7
def skip_base_model_check(monkeypatch):
    """promote() that never compares base models: the request's base model is swapped for the job's."""
    from fwemu.emulator.controlplane import checkpoint_routes, promotion

    real = promotion.promote

    def promote(services, caller, account, checkpoint, body):
        job_id = (body.trainer_job_id or "").rsplit("/", 1)[-1]
        job = services.store.get_job(account, job_id, include_deleted=True)
        if job is not None:
            body = body.model_copy(update={"base_model": job.base_model})
        return real(services, caller, account, checkpoint, body)
    monkeypatch.setattr(checkpoint_routes, "promote", promote)


def sync_path_skips_kind_check(monkeypatch):
    """The synchronous answer (async_promotion false or absent) forgets the promotable check."""
    from fwemu.emulator.controlplane import checkpoint_routes, promotion

    real = promotion.promote

    def promote(services, caller, account, checkpoint, body):
        if body.async_promotion:
            return real(services, caller, account, checkpoint, body)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(promotion, "listed_promotable", lambda kind, settings: kind is not None)
            return real(services, caller, account, checkpoint, body)
    monkeypatch.setattr(checkpoint_routes, "promote", promote)


@pytest.mark.parametrize("patch", [skip_base_model_check, sync_path_skips_kind_check], ids=lambda p: p.__name__)
def test_a_promotion_path_that_skips_a_precondition_fails_k7(monkeypatch, patch, pytestconfig):
    patch(monkeypatch)
    _assert_named(_run(["K7"], pytestconfig), "K7")


# ------------------------------------------------------------------------------ K8
def keep_verdict_of_rotten_bytes(monkeypatch):
    """A directory the inspector now rejects keeps its old kind and stays listed."""
    from fwemu.emulator.store.store import Store

    real = Store._check

    def _check(self, r):
        row, update = real(self, r)
        if row.kind is None and r[6]:
            return self._row(r), None
        return row, update
    monkeypatch.setattr(Store, "_check", _check)


def never_rejudge(monkeypatch):
    """The cached verdict is trusted forever: changed bytes of another kind keep the old kind."""
    from fwemu.emulator.store.store import Store

    monkeypatch.setattr(Store, "_check", lambda self, r: (self._row(r), None))


@pytest.mark.parametrize("patch", [keep_verdict_of_rotten_bytes, never_rejudge], ids=lambda p: p.__name__)
def test_bytes_changed_after_listing_that_are_not_rejudged_fail_k8(monkeypatch, patch, pytestconfig):
    patch(monkeypatch)
    _assert_named(_run(["K8"], pytestconfig, examples=4), "K8", not_blamed=("L2",))


# ------------------------------------------------------------------------------ L5
def test_rows_vanishing_inside_the_retention_window_fail_l5(monkeypatch, pytestconfig):
    """A window of one day where the settings say 30: right after the delete and after 30 days all is
    as L3 wants; only a look inside the window sees the rows gone."""
    from fwemu.emulator.controlplane import access

    def retention_over(services, job):
        return job.deleted_us is not None and services.clock.peek_us() >= job.deleted_us + 86400 * 1_000_000
    monkeypatch.setattr(access, "retention_over", retention_over)
    _assert_named(_run(["L5"], pytestconfig), "L5", not_blamed=("L2",))


# ------------------------------------------------------------------------------ R8
def test_a_load_of_another_attempt_of_the_name_fails_r8(monkeypatch, pytestconfig):
    """load_state("step-3-1") reads step-3 when that exists: the right step, the wrong weights."""
    from fwemu.emulator.gateway import checkpoints

    real = checkpoints.resolve_loadable

    def resolve_loadable(services, model, path):
        m = re.fullmatch(r"(step-\d+)-\d+", path) if isinstance(path, str) else None
        if m:
            try:
                return real(services, model, m.group(1))
            except Exception:  # noqa: BLE001 - no first attempt: load what was named
                pass
        return real(services, model, path)
    monkeypatch.setattr(checkpoints, "resolve_loadable", resolve_loadable)
    _assert_named(_run(["R8"], pytestconfig), "R8", not_blamed=("R1", "R2"))


# ------------------------------------------------------------------------------ blame
def test_a_resume_order_bug_is_reported_as_r1_not_as_the_dataloaders(monkeypatch, pytestconfig):
    """TrainingCheckpoints' automatic resume takes the oldest resumable row: R1, never R6."""
    from fwemu.client.checkpoints import TrainingCheckpoints

    real = TrainingCheckpoints._auto_resume

    def oldest_first(self, rows):
        resumable = [r for r in rows if r.resumable]
        return real(self, [r for r in rows if not r.resumable] + resumable[:1])
    monkeypatch.setattr(TrainingCheckpoints, "_auto_resume", oldest_first)
    _assert_named(_run(["R1", "R6"], pytestconfig), "R1", not_blamed=("R6",))


def test_the_machine_spends_most_steps_on_jobs_with_rows():
    """The step mix (issue 17): most steps that take a job act on one that holds rows, and training
    and saving are the commonest steps. Counts, not times."""
    with InProcessTarget() as target:
        report = run_contracts(target, max_examples=3, seed=0, steps=15, properties=False, shrink=False)
    assert report.ok, report.table()
    assert report.job_steps and report.on_rows * 2 > report.job_steps, report.step_mix()
    counts = report.rule_counts
    work = sum(counts.get(n, 0) for n in ("train", "recipe_step", "save", "save_state", "sampler_save"))
    assert work * 3 > report.steps, report.step_mix()
    assert "step mix:" in report.table()
