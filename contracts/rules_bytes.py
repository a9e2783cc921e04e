"""Rules that change a row's stored bytes behind the control plane's back: a writer that lies
(another kind's bytes under a row: the listing follows the bytes, K1), and bytes that change after
the row was listed, to another kind or to something that is no longer a checkpoint (K8: the row is
judged again, at once, by the listing and by promote alike)."""

from __future__ import annotations

import shutil

from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from fwemu.contracts.invariants import K8
from fwemu.contracts.rulekit import counted, live_rows
from fwemu.contracts.targets import REWRITE


class BytesRules:
    """Mixin of ContractMachine (contracts/machine.py)."""

    def _replace_files(self, dest, src=None) -> None:
        """Swap the files under `dest` for `src`'s, or (no `src`) for garbage of the same names and sizes."""
        for f in sorted(dest.iterdir()):
            size = f.stat().st_size
            f.unlink()   # unlink, not overwrite: a promoted model hard-links these files
            if src is None:
                (dest / f.name).write_bytes((b"\xffnot a checkpoint\n" * (size // 18 + 1))[:size])
        if src is not None:
            for f in src.iterdir():
                shutil.copyfile(f, dest / f.name)
        self._verdicts = {k: v for k, v in self._verdicts.items() if k[0] != str(dest)}

    def _raw_sampler_pairs(self):
        sampler = [(j, r) for j, r in self._promote_candidates() if not r.resumable]
        # Only raw sampler rows are rewritten: TrainingCheckpoints relies on its step-N-<suffix> names.
        targets = [(j, r) for j, r in sampler if r.name.startswith("sample-")]
        return targets, [(a, b) for a in targets for b in sampler if a[1].kind != b[1].kind]

    @precondition(lambda self: self.has(REWRITE) and live_rows(self, lambda r: r.name.startswith("sample-")))
    @rule(pick=st.integers(0, 100), donor=st.integers(0, 100))
    @counted
    def rewrite_row_bytes(self, pick, donor):
        """A writer that lies: the bytes under a sampler row are replaced with another row's bytes of
        another kind. The listing must follow the bytes, never the writer's label (K1)."""
        _, pairs = self._raw_sampler_pairs()
        if not pairs:
            return
        (job, row), (djob, drow) = pairs[(pick * 101 + donor) % len(pairs)]
        dest = self.target.checkpoint_dir(self.obs.account, job.job_id, row.name)
        src = self.target.checkpoint_dir(self.obs.account, djob.job_id, drow.name)
        self._replace_files(dest, src)
        row.kind, row.rank = drow.kind, drow.rank
        row.sampler_expect = None
        row.how += f", then its bytes replaced with those of {drow.name} ({drow.kind})"


    @precondition(lambda self: self.has(REWRITE) and live_rows(self, lambda r: r.name.startswith("sample-")))
    @rule(pick=st.integers(0, 100), to=st.sampled_from(["garbage", "other-kind"]))
    @counted
    def change_listed_bytes(self, pick, to):
        """A listed row's bytes change out-of-band: to garbage of the same names and sizes, or to another
        kind's. The very next listing and promote must judge the new bytes (K8)."""
        targets, pairs = self._raw_sampler_pairs()
        if to == "garbage":
            # not a full job's INFERENCE_BASE: later deltas are computed against it
            cases = [((j, r), None) for j, r in targets if r.kind != "INFERENCE_BASE" and r.first_listed]
        else:
            cases = [(a, b) for a, b in pairs if a[1].first_listed]
        if not cases:
            return
        (job, row), donor = cases[pick % len(cases)]
        dest = self.target.checkpoint_dir(self.obs.account, job.job_id, row.name)
        self._replace_files(dest, None if donor is None else
                            self.target.checkpoint_dir(self.obs.account, donor[0].job_id, donor[1].name))
        was = row.kind
        model_id = self.world.fresh("m")
        status, pages = self.obs.list_all(job.job_id)
        listed = {r.name: r for page in pages for r in page}
        p_status, body = self.obs.promote(job.job_id, row.name, model_id, self.target.base_model)
        where = f"job {job.job_id}: row {row.name} ({was}, listed at {row.first_listed})"
        if donor is None:
            K8.require(row.name not in listed, f"{where} had its bytes replaced by garbage but is still listed "
                                               f"as {listed[row.name].kind if row.name in listed else ''}")
            K8.require(p_status == 404, f"{where} had its bytes replaced by garbage; promote answered HTTP "
                                        f"{p_status}, expected 404 NOT_FOUND: {str(body)[:200]}")
            del job.rows[row.name]
            self._paged.pop(job.job_id, None)
            return
        drow = donor[1]
        got = listed[row.name].kind if row.name in listed else "not listed"
        K8.require(got == drow.kind, f"{where} now holds {drow.kind} bytes (those of {drow.name}) but is "
                                     f"listed as {got}")
        K8.require((p_status == 200) == drow.promotable,
                   f"{where} now holds {drow.kind} bytes; promote answered HTTP {p_status}: {str(body)[:200]}")
        row.kind, row.rank, row.sampler_expect = drow.kind, drow.rank, None
        row.how += f", then (after it was listed) its bytes replaced with those of {drow.name} ({drow.kind})"
        if p_status == 200:
            self._accept_model(model_id, job, row, body.get("model") or {})
