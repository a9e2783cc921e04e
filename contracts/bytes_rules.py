"""K1 and K8: bytes that change behind the trainer's back, after the row was listed.

The control plane caches each row's verdict under its directory's fingerprint. A writer that lies
(another kind's files under a row) and bytes that rot (emptied, truncated, overwritten with junk)
must both show in the next listing: the row takes the new kind, or leaves the listing when the
inspector rejects it, and promotion and load follow. `rewrite_row_bytes` does either to any row
the harness can account for afterwards; the model then expects the new kind (`RowModel.rewritten`)
or no row at all (`JobModel.rejected`), and `check_k8` runs before the other listing checks, so a
stale verdict is reported as K8, not as a K1 or L2 symptom.
"""

from __future__ import annotations

import os
import shutil

from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from fwemu.contracts import invariants as inv
from fwemu.contracts.invariants import K8, InvariantViolation
from fwemu.contracts.steps import counted
from fwemu.contracts.targets import REWRITE

ROT = ("emptied", "truncated", "junk")     # ways bytes become something the inspector must reject


def _rot(dest, how: str) -> None:
    """Make `dest` invalid. Unlink before writing: a promoted model hard-links these files."""
    for f in sorted(p for p in dest.iterdir() if p.is_file()):
        data = f.read_bytes()
        f.unlink()
        if how == "truncated":
            f.write_bytes(data[: max(1, len(data) // 3)])
        elif how == "junk":
            f.write_bytes(os.urandom(min(len(data), 4096)) or b"x")


class BytesRules:
    """Mixin for ContractMachine: rewrite a row's bytes out of band."""

    def _rewrite_targets(self):
        """Rows whose bytes may change without the harness losing track: not a row the live client
        believes holds its weights (it would reuse it), not a row another job was started from."""
        init_sources = {j.init_ref for j in self.world.jobs if j.init_ref}
        out = []
        for j, r in self._promote_candidates():
            if j.deleted or r.name in j.holds_current() or f"{j.job_id}:{r.name}" in init_sources:
                continue
            out.append((j, r))
        return out

    def _rewrite_donors(self):
        # Only sampler exports give their bytes: a resumable row carries a lineage the model tracks.
        return [(j, r) for j, r in self._promote_candidates() if not r.resumable]

    @precondition(lambda self: self.has(REWRITE) and self._rewrite_targets())
    @rule(pick=st.integers(0, 100), donor=st.integers(0, 100), how=st.sampled_from(("another kind",) + ROT))
    @counted
    def rewrite_row_bytes(self, pick, donor, how):
        """Out of band, a row's directory gets another kind's files (a writer that lies) or becomes
        invalid. The next listing follows the bytes (K1, K8); promotion and load of it follow too (K8)."""
        targets = self._rewrite_targets()
        job, row = targets[pick % len(targets)]
        dest = self.target.checkpoint_dir(self.obs.account, job.job_id, row.name)
        if how == "another kind":
            donors = [(j, r) for j, r in self._rewrite_donors() if r.kind != row.kind]
            if not donors:
                how = ROT[(pick + donor) % len(ROT)]
            else:
                djob, drow = donors[donor % len(donors)]
                src = self.target.checkpoint_dir(self.obs.account, djob.job_id, drow.name)
                for f in list(dest.iterdir()):
                    f.unlink()   # unlink, not overwrite: a promoted model hard-links these files
                for f in src.iterdir():
                    shutil.copyfile(f, dest / f.name)
                row.kind, row.rank = drow.kind, drow.rank
                row.sampler_expect = None
                row.rewritten = True
                row.how += f", then its bytes replaced with those of {drow.name} ({drow.kind})"
        if how in ROT:
            _rot(dest, how)
            job.rows.pop(row.name)
            row.how += f", then its bytes {how}"
            job.rejected[row.name] = row
        self._check_rewritten(job, row, how)

    def _check_rewritten(self, job, row, how: str) -> None:
        """Right away: the listing, a promotion, and (for a rejected one) a load follow the new bytes."""
        status, pages = self.obs.list_all(job.job_id)
        K8.require(status == 200, f"listing job {job.job_id} after {row.name}'s bytes changed: HTTP {status}")
        rows = [r for p in pages for r in p]
        inv.check_k8(job.job_id, rows, self._k8_expect(job))
        model_id = self.world.fresh("m")
        status, body = self.obs.promote(job.job_id, row.name, model_id, self.target.base_model)
        if row.name in job.rejected:
            K8.require(status != 200, f"promote of {row.name}, whose bytes were {how} after it was listed, was "
                                      f"accepted: {str(body)[:200]}")
            inv.check_error_envelope(K8, f"promote of {row.name} (bytes {how})", status, body)
            got, _ = self.obs.get_model(model_id)
            K8.require(got == 404, f"refused promote of {row.name} (bytes {how}) still created {model_id}")
            if job.handle is not None and row.resumable and (row.kind == "TRAINING_LORA") == job.lora:
                self._load_rejected(job, row, how)
        elif row.promotable:
            K8.require(status == 200, f"promote of {row.name}, now {row.kind} bytes, was refused: HTTP {status} "
                                      f"{str(body)[:200]}")
            self._accept_model(model_id, job, row, body.get("model") or {})
        else:
            K8.require(status != 200, f"promote of {row.name}, now {row.kind} bytes (not promotable), was accepted")
            inv.check_promote_refused(row.name, row.kind, status, body)

    def _load_rejected(self, job, row, how: str) -> None:
        job.touched()
        try:
            job.handle.load_state(row.name, True)
        except InvariantViolation:
            raise
        except Exception:  # noqa: BLE001 - refused, as it must be
            K8.held()
            return
        K8.fail(f"load_state({row.name}) on job {job.job_id} succeeded although its bytes were {how} "
                "after it was listed; the inspector rejects them")

    def _k8_expect(self, job) -> dict[str, str | None]:
        """Row name -> the kind its changed bytes have (None: rejected, must not be listed)."""
        want = {r.name: r.kind for r in job.certain_rows() if getattr(r, "rewritten", False)}
        want.update({name: None for name in job.rejected})
        return want
