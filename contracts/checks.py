"""The invariant that runs after every step: what the server lists (and what its bytes are, and
what promoted models answer) against the model: K1 K2 K4 K5 L1 L2 L3 L4."""

from __future__ import annotations

from hypothesis.stateful import invariant

from fwemu.contracts import invariants as inv
from fwemu.contracts.invariants import K1, K5, ListedRow
from fwemu.contracts.model import JobModel
from fwemu.contracts.rulekit import counted_check
from fwemu.contracts.targets import BLOBS


class ServerChecks:
    """Mixin of ContractMachine (contracts/machine.py)."""

    # ------------------------------------------------------------------ invariants
    @invariant()
    @counted_check
    def check_server_state(self):
        """K1 K2 K4 L1 L2 L3 on every job this example made, and K5 on every model it promoted."""
        for job in self.world.jobs:
            self._check_job(job)
        if self.target_epoch() == self._models_checked:
            return   # models only change through the rules that check them; re-check after restarts
        self._models_checked = self.target_epoch()
        for model_id, rec in self.world.models.items():
            status, body = self.obs.get_model(model_id)
            K5.require(status == 200 and isinstance(body, dict) and body.get("state") == "READY"
                       and body.get("kind") == rec.record.get("kind"),
                       f"model {model_id} (from {rec.row}) now answers HTTP {status} {str(body)[:200]}")

    def _check_job(self, job: JobModel) -> None:
        status, pages = self.obs.list_all(job.job_id)
        if job.deleted:
            inv.check_l3_listing(job.job_id, status, within_retention=not job.purged)
        if job.purged:
            return
        K1.require(status == 200, f"listing job {job.job_id} answered HTTP {status}")
        rows = [r for page in pages for r in page]
        names = [r.name for r in rows]
        inv.check_l1_order(job.job_id, rows)
        signature = tuple((r.name, r.create_time) for r in rows)
        if len(rows) > 1 and self._paged.get(job.job_id) != signature:
            _, small = self.obs.list_all(job.job_id, page_size=2)
            inv.check_l1_pages(job.job_id, names, [[r.name for r in p] for p in small], 2)
            self._paged[job.job_id] = signature
        listed = {r.name: r for r in rows}
        for name in [n for n, r in job.rows.items() if not r.certain]:
            if name in listed:
                job.rows[name].certain = True
            else:
                del job.rows[name]
        inv.check_l2(job.job_id, rows, {r.name: r.first_listed for r in job.certain_rows()}, (),
                     listing_may_lag=self.target.listing_may_lag)
        for r in job.certain_rows():
            if r.first_listed is None and r.name in listed:
                r.first_listed = listed[r.name].create_time
                if r.replaces:
                    inv.check_l4_newer(job.job_id, listed[r.name], r.replaces)
        inspected = self._inspect(job, rows) if self.has(BLOBS) else None
        inv.check_k1(job.job_id, rows, inspected, {r.name: r.kind for r in job.certain_rows()})
        inv.check_k2(job.job_id, rows)
        inv.check_k4(job.job_id, rows, {r.name: (r.sampler_expect, r.how) for r in job.certain_rows()
                                        if r.sampler_expect})

    def check_pagination(self, job: JobModel, page_size: int) -> None:
        """L1: pages of `page_size` give every row of the full listing exactly once, in order."""
        status, full = self.obs.list_all(job.job_id)
        status_small, pages = self.obs.list_all(job.job_id, page_size=page_size)
        inv.L1.require(status == status_small, f"job {job.job_id}: listing answered {status}, paged {status_small}")
        inv.check_l1_pages(job.job_id, [r.name for p in full for r in p], [[r.name for r in p] for p in pages],
                           page_size)

    def target_epoch(self) -> int:
        return getattr(self.target, "restarts", 0) + sum(j.purged for j in self.world.jobs) + 1

    def _inspect(self, job: JobModel, rows: list[ListedRow]) -> dict[str, str | None]:
        """The inspector's verdict on each row's stored bytes (cached by the directory's fingerprint)."""
        from fwemu.emulator.inspect import fingerprint, inspect_checkpoint

        out: dict[str, str | None] = {}
        for row in rows:
            path = self.target.checkpoint_dir(self.obs.account, job.job_id, row.name)
            if path is None or not path.is_dir():
                out[row.name] = None
                continue
            key = (str(path), fingerprint(path))
            if key not in self._verdicts:
                verdict = inspect_checkpoint(path)
                self._verdicts[key] = verdict.kind.value if verdict.kind is not None else None
            out[row.name] = self._verdicts[key]
        return out

