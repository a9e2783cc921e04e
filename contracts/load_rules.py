"""R8: a load restores exactly the row it names, also when another row of that step holds other weights.

A save retried under a free name (`step-3` taken by an earlier attempt, so this one is `step-3-1`)
leaves two resumable rows of one step with different weights. A load that resolves a name loosely
(by step, by prefix, "the newest attempt") then still restores *a* step-3 state, with the right
step and data_consumed, and only the weights are wrong. `fork_same_step` builds that pair on
purpose (back to an earlier row, train the same step on other data, save again) and loads each
by name; `load_named` loads any resumable row by name. Every load is judged by the weights' probe,
and a mismatch that matches a sibling row's weights says which attempt was loaded instead.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from fwemu.contracts import invariants as inv
from fwemu.contracts.drivers import CHECKPOINTS
from fwemu.contracts.invariants import R8, Invariant
from fwemu.contracts.steps import counted


class LoadRules:
    """Mixin for ContractMachine: loads by name, and two attempts of one step."""

    def _loadable(self, job):
        return [r for r in job.certain_rows() if r.resumable and r.lineage is not None and r.probe is not None
                and (r.kind == "TRAINING_LORA") == job.lora]

    def _siblings(self, job, row):
        """Other resumable rows of the same step whose weights differ from `row`'s."""
        return [r for r in job.certain_rows() if r.resumable and r.name != row.name and r.step == row.step
                and r.probe is not None and r.probe != row.probe]

    def check_loaded(self, job, row, what: str, otherwise: Invariant) -> tuple:
        """The trainer now holds `row`'s weights. A mismatch is R8 when the row has a sibling of its step
        with other weights (and names the sibling whose weights were loaded), else `otherwise`."""
        probe = self._probe(job)
        if probe == row.probe:
            inv.tally().exercised(otherwise.id)
            if self._siblings(job, row):
                R8.held()
            return probe
        siblings = self._siblings(job, row)
        loaded = [r.name for r in siblings if r.probe == probe]
        if loaded:
            R8.fail(f"job {job.job_id}: {what} restored the weights of {loaded[0]}, another attempt of step "
                    f"{row.step}, instead of {row.name}'s")
        if siblings:
            inv.check_probe(R8, f"job {job.job_id}: {what} (rows of step {row.step}: {row.name}, "
                                f"{', '.join(r.name for r in siblings)})", probe, row.probe)
        inv.check_probe(otherwise, f"job {job.job_id}: {what}", probe, row.probe)
        return probe

    def _load_by_name(self, job, row) -> None:
        """load_state(row, with optimizer) on the live client; the job then continues from that row."""
        from fwemu.contracts.machine import expect_ok

        job.touched()

        expect_ok(R8, f"load_state({row.name}) on job {job.job_id}", job.handle.load_state, row.name, True)
        origin, _job, steps = row.lineage
        job.origin, job.steps, job.step = origin, steps, row.step or 0
        job.data_consumed = row.data_consumed or 0
        self.check_loaded(job, row, f"load_state({row.name})", R8)

    @precondition(lambda self: any(self._loadable(j) for j in self.world.jobs if not j.deleted))
    @rule(job=st.runner().flatmap(lambda m: m.job_choice(lambda j: bool(m._loadable(j)))), pick=st.integers(0, 100))
    @counted
    def load_named(self, job, pick):
        """load_state of any resumable row of the job, by its name: exactly its weights (R8)."""
        self._live(job)
        rows = self._loadable(job)
        if rows:
            self._load_by_name(job, rows[pick % len(rows)])

    @precondition(lambda self: CHECKPOINTS in self.driver.caps and any(not j.deleted for j in self.world.jobs))
    @rule(job=st.runner().flatmap(lambda m: m.job_choice()), first=st.integers(1, 2))
    @counted
    def fork_same_step(self, job, first):
        """Two resumable rows of one step with different weights: save here, train a step on `first`
        examples and save it, go back, train that step on the other count, and save it through
        TrainingCheckpoints (the name is taken: a free name). Load each by name (R8)."""
        self._live(job)
        here = job.rows.get(f"step-{job.step}")
        if here is None or not here.resumable or here.lineage != job.lineage:
            self.save_state(job)
        here = job.rows.get(f"step-{job.step}")
        if here is None or not here.resumable or here.lineage is None:
            return
        self.train(job, 1, first)
        self.save_state(job)
        attempt = job.rows.get(f"step-{job.step}")
        self._load_by_name(job, here)
        self.train(job, 1, 3 - first)
        before = set(job.rows)
        self.save(job, True, False)
        retried = [job.rows[n] for n in set(job.rows) - before if job.rows[n].resumable]
        if attempt is None or not retried:
            return
        self._load_by_name(job, attempt)
        self._load_by_name(job, retried[0])
