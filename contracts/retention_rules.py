"""L5: a deleted job's rows are there at every instant of the retention window, not just its ends.

L3 looks right after the delete and after the window; a window measured in the wrong unit (hours
for days, a day for a month) passes both. `advance_within_retention` moves the target's clock to a
point inside every open window (never within an hour of its end, so the real seconds a run takes
cannot tip it over) and requires each deleted job to list every row it had, and to promote or
refuse each kind as before. The model keeps its own clock (`World.clock_s`, `JobModel.deleted_at`)
so windows opened at different times are each judged by their own start.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from fwemu.contracts import invariants as inv
from fwemu.contracts.invariants import L5
from fwemu.contracts.steps import counted
from fwemu.contracts.targets import CLOCK

MARGIN_S = 2 * 3600.0   # never stop closer than this to a window's end


class RetentionRules:
    """Mixin for ContractMachine: walk the clock through open retention windows."""

    def _open_windows(self):
        return [j for j in self.world.jobs if j.deleted and not j.purged]

    def _room_in_window(self) -> float:
        """Seconds the clock may move and still be inside every open window (by MARGIN_S)."""
        elapsed = max(self.world.clock_s - (j.deleted_at or 0.0) for j in self._open_windows())
        return self.target.retention_s - MARGIN_S - elapsed

    @precondition(lambda self: self.has(CLOCK) and self._open_windows() and self._room_in_window() > 60)
    @rule(percent=st.integers(1, 100))
    @counted
    def advance_within_retention(self, percent):
        """Move the clock `percent`% of the way to the end of the soonest-closing open window (less a
        margin): every deleted job still lists its rows and promotes them as before (L5)."""
        seconds = self._room_in_window() * percent / 100
        self.target.advance_clock(seconds, self.account.api_key)
        self.world.clock_s += seconds
        for job in self._open_windows():
            self._check_inside_window(job)

    def _window_point(self, job) -> str:
        days = (self.world.clock_s - (job.deleted_at or 0.0)) / 86400
        return f"{days:.2f} days after job {job.job_id} was deleted ({self.target.retention_s / 86400:g}-day window)"

    def _check_inside_window(self, job) -> None:
        status, pages = self.obs.list_all(job.job_id)
        rows = [r for p in pages for r in p]
        inv.check_l5(job.job_id, status, rows, [r.name for r in job.certain_rows()], self._window_point(job))
        listed = {r.name for r in rows}
        promotable = [r for r in job.certain_rows() if r.promotable and r.name in listed]
        refused = [r for r in job.certain_rows() if not r.promotable and r.name in listed]
        for row in promotable[-1:] + refused[-1:]:
            model_id = self.world.fresh("m")
            status, body = self.obs.promote(job.job_id, row.name, model_id, self.target.base_model)
            where = f"promote of {row.name} ({row.kind}) {self._window_point(job)}"
            if row.promotable:
                L5.require(status == 200, f"{where} answered HTTP {status}: {str(body)[:200]}")
                self._accept_model(model_id, job, row, body.get("model") or {})
            else:
                L5.require(status != 200, f"{where} was accepted")
                inv.check_promote_refused(row.name, row.kind, status, body)
