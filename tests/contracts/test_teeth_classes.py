"""K7, K8, L5 and R8 have teeth: the emulator patched inside the test (never a product break switch)
with one realistic bug of each class fails the suite, and the report names that invariant.

Each run is the focused properties aimed at the id (`only=`), two generated examples plus the
properties' explicit ones, no shrinking: a few seconds each.
"""

from __future__ import annotations

import threading

import pytest

from fwemu.contracts.runner import run_contracts
from fwemu.contracts.targets import InProcessTarget
from fwemu.emulator.controlplane import access, checkpoint_routes, promotion
from fwemu.emulator.gateway import checkpoints as gateway_checkpoints
from fwemu.emulator.store.store import Store


def _sync_promote_patched(monkeypatch, fix_body=None, skip_kind=False):
    """Wrap the promote route so that only the synchronous path (async_promotion false) is buggy."""
    real = checkpoint_routes.promote
    sync = threading.local()
    real_promotable = promotion.listed_promotable

    def listed_promotable(kind, settings):
        return kind is not None if getattr(sync, "on", False) else real_promotable(kind, settings)

    def promote(services, caller, account, checkpoint, body):
        if body.async_promotion:
            return real(services, caller, account, checkpoint, body)
        if fix_body:
            body = fix_body(services, account, body)
        sync.on = skip_kind
        try:
            return real(services, caller, account, checkpoint, body)
        finally:
            sync.on = False
    monkeypatch.setattr(checkpoint_routes, "promote", promote)
    monkeypatch.setattr(promotion, "listed_promotable", listed_promotable)


def sync_promote_skips_base_model_check(monkeypatch):
    def job_base_model(services, account, body):
        job = services.store.get_job(account, body.trainer_job_id.rsplit("/", 1)[-1], include_deleted=True)
        return body.model_copy(update={"base_model": job.base_model}) if job else body
    _sync_promote_patched(monkeypatch, fix_body=job_base_model)


def sync_promote_skips_kind_check(monkeypatch):
    _sync_promote_patched(monkeypatch, skip_kind=True)


def listing_never_rejudges(monkeypatch):
    """The verdict cached at save time is served forever: changed bytes keep the old kind."""
    monkeypatch.setattr(Store, "_check", lambda self, r: (self._row(r), None))


def retention_ends_early(monkeypatch):
    """Deleted jobs are forgotten after a tenth of the retention window."""
    def retention_over(services, job):
        if job.deleted_us is None:
            return False
        window_us = int(services.settings.retention_days * 86400 * 1_000_000) // 10
        return services.clock.peek_us() >= job.deleted_us + window_us
    monkeypatch.setattr(access, "retention_over", retention_over)
    monkeypatch.setattr(gateway_checkpoints, "retention_over", retention_over)


def load_picks_newest_attempt(monkeypatch):
    """Loading `step-2` while `step-2-1` exists loads `step-2-1` (a loose match on the name)."""
    real = gateway_checkpoints.resolve_loadable

    def resolve_loadable(services, model, path):
        found = real(services, model, path)
        retry = found.with_name(f"{found.name}-1")
        return retry if retry.is_dir() else found
    monkeypatch.setattr(gateway_checkpoints, "resolve_loadable", resolve_loadable)


CASES = [
    (sync_promote_skips_base_model_check, "K7"),
    (sync_promote_skips_kind_check, "K7"),
    (listing_never_rejudges, "K8"),
    (retention_ends_early, "L5"),
    (load_picks_newest_attempt, "R8"),
]


@pytest.mark.parametrize("patch,inv_id", CASES, ids=[p.__name__ for p, _ in CASES])
def test_the_suite_catches_the_bug_and_names_the_invariant(monkeypatch, patch, inv_id, pytestconfig):
    patch(monkeypatch)
    with InProcessTarget() as target:
        report = run_contracts(target, max_examples=2, seed=pytestconfig.getoption("--fw-seed"), only=[inv_id],
                               machine=False, shrink=False)
    assert inv_id in report.failed_ids, report.table()
    assert report.results[inv_id].message, "a failure must say what broke"
    assert not report.errors, report.errors
