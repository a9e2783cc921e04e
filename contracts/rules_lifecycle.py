"""Rules that change a job's world from outside the training client: deletion and the retention
clock (L3), emulator restarts (L2), and rewriting a row's bytes out-of-band (K1)."""

from __future__ import annotations

import shutil

from hypothesis import strategies as st
from hypothesis.stateful import consumes, precondition, rule

from fwemu.contracts.invariants import L3
from fwemu.contracts.rulekit import counted, expect_ok, jobs
from fwemu.contracts.targets import CLOCK, RESTART, REWRITE


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

    @precondition(lambda self: self.has(CLOCK) and any(j.deleted and not j.purged for j in self.world.jobs))
    @rule()
    @counted
    def expire_deleted_jobs(self):
        """Move the clock past the retention window: deleted jobs' rows answer NOT_FOUND (L3)."""
        self.target.advance_clock(self.target.retention_s + 3600, self.account.api_key)
        for j in self.world.jobs:
            if j.deleted:
                j.purged = True

    @precondition(lambda self: self.has(RESTART))
    @rule()
    @counted
    def restart_emulator(self):
        """Stop and start the emulator on the same data dir: rows survive (L2), trainers do not."""
        for j in self.world.jobs:
            self._drop_client(j, crash=True)
        self.target.restart()
        self.obs.reconnect()
        self.driver.reconnect()

    @precondition(lambda self: self.has(REWRITE))
    @rule(pick=st.integers(0, 100), donor=st.integers(0, 100))
    @counted
    def rewrite_row_bytes(self, pick, donor):
        """A writer that lies: the bytes under a sampler row are replaced with another row's bytes of
        another kind. The listing must follow the bytes, never the writer's label (K1)."""
        sampler = [(j, r) for j, r in self._promote_candidates() if not r.resumable]
        # Only raw sampler rows are rewritten: TrainingCheckpoints relies on its step-N-<suffix> names.
        targets = [(j, r) for j, r in sampler if r.name.startswith("sample-")]
        pairs = [(a, b) for a in targets for b in sampler if a[1].kind != b[1].kind]
        if not pairs:
            return
        (job, row), (djob, drow) = pairs[(pick * 101 + donor) % len(pairs)]
        dest = self.target.checkpoint_dir(self.obs.account, job.job_id, row.name)
        src = self.target.checkpoint_dir(self.obs.account, djob.job_id, drow.name)
        for f in list(dest.iterdir()):
            f.unlink()   # unlink, not overwrite: a promoted model hard-links these files
        for f in src.iterdir():
            shutil.copyfile(f, dest / f.name)
        row.kind, row.rank = drow.kind, drow.rank
        row.sampler_expect = None
        row.how += f", then its bytes replaced with those of {drow.name} ({drow.kind})"

