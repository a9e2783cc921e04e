"""R8: a load by name gets exactly the row named, also among several attempts of one step.

A run that goes back to an earlier checkpoint and trains the next step again (with other data, here
another batch size) saves that step a second time; TrainingCheckpoints then saves under a free name
(`step-3` is taken: `step-3-1`). The two attempts hold different weights under names that share a
prefix, which is where a loader that matches loosely (newest attempt, prefix match) goes wrong.
These rules build such attempts on purpose and load each of them by name.
"""

from __future__ import annotations

import re

from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from fwemu.contracts import invariants as inv
from fwemu.contracts.drivers import CHECKPOINTS
from fwemu.contracts.invariants import R2, R8
from fwemu.contracts.model import JobModel, RowModel
from fwemu.contracts.rulekit import counted, expect_ok, has_resumable, jobs


def attempts_of(job: JobModel, name: str) -> list[RowModel]:
    """The resumable rows saved for the logical name `name`: `name` itself and `name-1`, `name-2`..."""
    pattern = re.compile(re.escape(name) + r"(-\d+)?")
    return [r for r in job.certain_rows() if r.resumable and pattern.fullmatch(r.name)]


class AttemptRules:
    """Mixin of ContractMachine (contracts/machine.py)."""

    def _load_named(self, job: JobModel, row: RowModel, why: str) -> None:
        """A fresh training client on the job loads `row` by name; its weights must be that row's (R8)."""
        self._drop_client(job, crash=False)
        self._connect(job, R8)
        job.touched()
        expect_ok(R8, f"load_state_with_optimizer({row.name!r}) on job {job.job_id}", job.handle.load_state,
                  row.name, True)
        origin, _job, steps = row.lineage
        job.origin, job.steps, job.step = origin, steps, row.step or 0
        job.data_consumed = row.data_consumed or 0
        others = [r.name for r in attempts_of(job, f"step-{job.step}") if r.name != row.name]
        inv.check_probe(R8, f"job {job.job_id}: weights after loading {row.name!r} by name ({why}; other "
                            f"attempts of step {job.step}: {others or 'none'})", self._probe(job), row.probe)

    @precondition(has_resumable)
    @rule(job=jobs, pick=st.integers(0, 100))
    @counted
    def load_by_name(self, job, pick):
        """Load a resumable row by name, preferring one of a step saved more than once (R8)."""
        job = self._busy(job, lambda r: r.resumable)
        rows = [r for r in job.certain_rows() if r.resumable and r.lineage is not None]
        if not rows or job.purged or job.deleted:
            return
        shared = [r for r in rows if len(attempts_of(job, f"step-{r.step}")) > 1]
        row = (shared or rows)[pick % len(shared or rows)]
        self._load_named(job, row, "picked at random")

    @precondition(lambda self: CHECKPOINTS in self.driver.caps and has_resumable(self))
    @rule(job=jobs, pick=st.integers(0, 100), size=st.integers(1, 3))
    @counted
    def retry_step(self, job, pick, size):
        """Go back to an earlier resumable row, train the next step again with `size` examples, save it
        (a second attempt under a free name when the name is taken), then load every attempt of that
        step by name: each must give its own weights (R8)."""
        job = self._busy(job, lambda r: r.resumable)
        rows = [r for r in job.certain_rows() if r.resumable and r.lineage is not None]
        if not rows or job.purged or job.deleted:
            return
        self._load_named(job, rows[pick % len(rows)], "the start of a retried step")
        expect_ok(R2, f"training step {job.step + 1} of job {job.job_id} again", self._train_step, job, size)
        self.save(job, True, False)
        attempts = attempts_of(job, f"step-{job.step}")
        for row in attempts[-3:]:
            self._load_named(job, row, f"one of {len(attempts)} attempts of step {row.step}")
