"""Rules that change a job's world from outside the training client: deletion and the retention
clock (L3, and L5 part-way through the window), and emulator restarts (L2)."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import consumes, precondition, rule

from fwemu.contracts.invariants import L3, L5, tally
from fwemu.contracts.rulekit import counted, expect_ok, jobs
from fwemu.contracts.targets import CLOCK, RESTART


class LifecycleRules:
    """Mixin of ContractMachine (contracts/machine.py)."""

    # ------------------------------------------------------------------ deletion, retention, restart
    @rule(job=consumes(jobs))
    @counted
    def delete_job(self, job):
        """Delete the job: its rows stay listable and promotable for the retention window (L3)."""
        self._drop_client(job, crash=False)
        expect_ok(L3, f"deleting job {job.job_id}", self.driver.delete_job, job.job_id)
        job.deleted = True
        job.deleted_age_s = 0.0

    @precondition(lambda self: self.has(CLOCK) and any(j.deleted and not j.purged for j in self.world.jobs))
    @rule()
    @counted
    def expire_deleted_jobs(self):
        """Move the clock past the retention window: deleted jobs' rows answer NOT_FOUND (L3)."""
        self.target.advance_clock(self.target.retention_s + 3600, self.account.api_key)
        for j in self.world.jobs:
            if j.deleted:
                j.purged = True

    @precondition(lambda self: self.has(CLOCK) and any(j.deleted and not j.purged for j in self.world.jobs))
    @rule(share=st.sampled_from([0.3, 0.6, 0.99]))
    @counted
    def advance_inside_retention(self, share):
        """Move the clock part-way into the retention window of the oldest deletion (up to an hour
        before its end): every row of every deleted job is still listed, and promotes (L5)."""
        deleted = [j for j in self.world.jobs if j.deleted and not j.purged]
        room = self.target.retention_s - max(j.deleted_age_s for j in deleted) - 3600
        if room <= 60:
            return
        seconds = room * share
        self.target.advance_clock(seconds, self.account.api_key)
        for j in deleted:
            j.deleted_age_s += seconds
        for j in deleted:
            self._check_inside_retention(j)

    def _check_inside_retention(self, job) -> None:
        days = job.deleted_age_s / 86400
        where = f"job {job.job_id}, deleted {days:.1f} of {self.target.retention_s / 86400:g} retention days ago"
        status, pages = self.obs.list_all(job.job_id)
        L5.require(status == 200, f"{where}: listing answered HTTP {status} inside the retention window")
        listed = [r.name for page in pages for r in page]
        want = [r.name for r in job.certain_rows()]
        L5.require(listed == want, f"{where}: rows {sorted(set(want) - set(listed))} vanished inside the "
                                   f"retention window (listed {listed})")
        promotable = [r for r in job.certain_rows() if r.promotable]
        if promotable:
            row = promotable[-1]
            model_id = self.world.fresh("m")
            status, body = self.obs.promote(job.job_id, row.name, model_id, self.target.base_model)
            L5.require(status == 200, f"{where}: promote of {row.name} answered HTTP {status} inside the "
                                      f"retention window: {str(body)[:200]}")
            self._accept_model(model_id, job, row, body.get("model") or {})
        tally().exercised(L5.id)

    @precondition(lambda self: self.has(RESTART) and self.world.seq != self._restart_seq)
    @rule()
    @counted
    def restart_emulator(self):
        """Stop and start the emulator on the same data dir: rows survive (L2), trainers do not.
        Enabled once something was saved since the last restart (before that it proves nothing new)."""
        self._restart_seq = self.world.seq
        for j in self.world.jobs:
            self._drop_client(j, crash=True)
        self.target.restart()
        self.obs.reconnect()
        self.driver.reconnect()
