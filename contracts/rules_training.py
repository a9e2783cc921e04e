"""Rules that make rows: jobs, training, saves (TrainingCheckpoints, save_state, sampler saves),
and interruptions (crash + resume, reconnect + load, cross-job init, a corrupt dataloader.json)."""

from __future__ import annotations

import logging
from pathlib import Path

from hypothesis import strategies as st
from hypothesis.stateful import initialize, multiple, precondition, rule

from fwemu.client.errors import FwError
from fwemu.contracts.drivers import CHECKPOINTS, CRASH
from fwemu.contracts.invariants import F1, K4, L2, L4, R2, R4, R6, tally
from fwemu.contracts.model import JobModel, RowModel, chain_type, dcp_kind, sampler_kind
from fwemu.contracts.rulekit import (MAX_JOBS, SavePlan, _CaptureWarnings, _read_files, counted, expect_ok,
                                     has_resumable, jobs)
from fwemu.contracts.targets import BLOBS


class TrainingRules:
    """Mixin of ContractMachine (contracts/machine.py)."""

    # ------------------------------------------------------------------ jobs
    @initialize(target=jobs)
    @counted
    def first_full_job(self):
        """Every program starts with a full-parameter job and a LoRA job: the rules differ for them."""
        return self._new_job(lora=False)

    @initialize(target=jobs)
    @counted
    def first_lora_job(self):
        return self._new_job(lora=True)

    @precondition(lambda self: len(self.world.jobs) < MAX_JOBS)
    @rule(target=jobs, lora=st.booleans())
    @counted
    def create_job(self, lora):
        return self._new_job(lora)

    @rule(job=jobs, steps=st.integers(1, 3), size=st.integers(1, 2))
    @counted
    def train(self, job, steps, size):
        """`steps` optimizer steps of `size` examples each; every step's weights are checked against
        any earlier visit of the same lineage (R2)."""
        self._live(job)
        for _ in range(steps):
            expect_ok(R2, f"training step {job.step + 1} of job {job.job_id}", self._train_step, job, size)

    @rule(job=jobs)
    @counted
    def checkpointed_step(self, job):
        """One training step, then a resumable + promotable save (TrainingCheckpoints.save, else
        save_state and a sampler save): the workhorse that gives the other rules rows to act on.
        One argument, so Hypothesis sorts it among the rules it draws most."""
        self._live(job)
        expect_ok(R2, f"training step {job.step + 1} of job {job.job_id}", self._train_step, job, 1)
        if CHECKPOINTS in self.driver.caps:
            self.save(job, True, True)
        else:
            self.save_state(job)
            self.sampler_save(job, None)

    # ------------------------------------------------------------------ saves
    @precondition(lambda self: CHECKPOINTS in self.driver.caps)
    @rule(job=jobs, resumable=st.booleans(), promotable=st.booleans())
    @counted
    def save(self, job, resumable, promotable):
        """TrainingCheckpoints.save(step-N, ...): the cookbook's save, with its reuse rules."""
        self._live(job)
        if self.target.listing_may_lag:   # the client picks a free name from the listing: let it be current
            self._settle(job)
        if not (resumable or promotable):
            try:
                job.ck.save(f"step-{job.step}", False, False, job.data_consumed)
            except ValueError:
                R6.held()
                return
            R6.fail("TrainingCheckpoints.save(resumable=False, promotable=False) saved nothing and did not refuse")
        plan = self._plan_save(job, resumable, promotable)
        what = f"TrainingCheckpoints.save({plan.name}, resumable={resumable}, promotable={promotable}) on job {job.job_id}"
        if plan.sampler_taken:
            what += (f" (this training client already wrote {plan.sampler_taken}, and its weights may have moved "
                     "since: the save must pick a free name, as it does for the DCP row)")
        result = expect_ok(R6, what, job.ck.save, plan.name, resumable, promotable, job.data_consumed)
        self._apply_save(job, plan, result)

    def _plan_save(self, job: JobModel, resumable: bool, promotable: bool) -> "SavePlan":
        """What TrainingCheckpoints.save must do: reuse a row only when it is known to hold the
        trainer's current weights; otherwise save, under `name-1`... when `name` is taken."""
        name = f"step-{job.step}"
        current = job.holds_current()
        plan = SavePlan(name=name, resumable=resumable, promotable=promotable,
                        probe=self.world.references[job.lineage])
        if self._policy(job.ck, "save_policy") == "resave":
            # the cookbook: the DCP row is always written under `name` (replacing a listed one, L4); the
            # sampler write is skipped when a promotable row of that logical name is listed at all
            plan.save_as = name if resumable else None
            if promotable:
                plan.reuse_sampler = next((r.name for r in job.same_name_promotable(name)), None)
            return plan
        if resumable:
            existing = job.existing_dcp_for(name, job.step)
            if existing is not None and existing.name in current:
                plan.reuse_dcp = existing.name
            else:
                plan.save_as = job.free_name(name)
        if promotable:
            dcp_name = plan.reuse_dcp or plan.save_as
            plan.reuse_sampler = next((r.name for r in job.same_name_promotable(name)
                                       if r.name in current or dcp_name in current), None)
            suffix = getattr(getattr(job.handle, "model", None), "session_suffix", None)
            if plan.reuse_sampler is None and suffix and f"{name}-{suffix}" in job.rows:
                plan.sampler_taken = f"{name}-{suffix}"
        return plan

    def _apply_save(self, job: JobModel, plan: "SavePlan", result) -> None:
        where = f"save({plan.name}) on job {job.job_id}"
        if plan.resumable:
            if plan.reuse_dcp:
                R6.require(result.dcp_name == plan.reuse_dcp and "dcp" in result.skipped,
                           f"{where}: {plan.reuse_dcp} holds these weights and should be reused, got {result}")
            else:
                R6.require(result.dcp_name == plan.save_as and "dcp" not in result.skipped,
                           f"{where}: expected a new resumable row {plan.save_as}, got {result}")
                self._add_or_replace(job, RowModel(
                    name=plan.save_as, kind=dcp_kind(job.lora), how="TrainingCheckpoints.save (resumable)",
                    step=job.step, data_consumed=job.data_consumed, lineage=job.lineage, probe=plan.probe))
                job.note_state(plan.save_as)
            job.record_entry(result.dcp_name, job.step, job.data_consumed)
            self._check_dataloader_file(job, result.dcp_name)
        if plan.promotable:
            if plan.reuse_sampler:
                R6.require(result.sampler_name == plan.reuse_sampler and "sampler" in result.skipped,
                           f"{where}: {plan.reuse_sampler} holds these weights and should be reused, got {result}")
            else:
                from fwemu.contracts.model import matches_logical

                R6.require(result.sampler_name and result.sampler_name not in job.rows
                           and (matches_logical(result.sampler_name, plan.name)
                                or result.sampler_name.startswith(plan.name + "-"))
                           and "sampler" not in result.skipped,
                           f"{where}: expected a new promotable row {plan.name}-<suffix>, got {result}")
                kind, _ = sampler_kind(job.lora, "base")
                self.world.add_row(job, RowModel(
                    name=result.sampler_name, kind=kind, how="TrainingCheckpoints.save (promotable, base)",
                    sampler_expect=kind, step=job.step, probe=plan.probe))
                job.note_state(result.sampler_name)
                job.sampler_saved = True

    def _check_dataloader_file(self, job: JobModel, name: str) -> None:
        """R6: dataloader.json is keyed by the name the control plane lists, with step and data_consumed.

        A driver whose checkpoint logic keeps its own file format (the cookbook's {name: data_consumed})
        answers `dataloader_entry(name) -> (step, data_consumed) | None` on its checkpoints object; the
        rule is the same, only the reading is the driver's."""
        import json

        step, dc = job.dataloader[name]
        own = getattr(job.ck, "dataloader_entry", None)
        if own is not None:
            got = own(name)
            R6.require(got == (step, dc), f"the driver's dataloader.json entry for {name!r} is {got!r}, expected "
                                          f"step {step}, data_consumed {dc}")
            return
        path = Path(job.log_path) / "dataloader.json"
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            R6.fail(f"{path} is unreadable after a save: {exc}")
        entry = entries.get(name)
        R6.require(isinstance(entry, dict) and entry.get("step") == step and entry.get("data_consumed") == dc,
                   f"{path}[{name!r}] is {entry!r}, expected step {step}, data_consumed {dc}")
        R6.require(len(entries) <= 20, f"{path} holds {len(entries)} entries; it keeps the newest 20")

    @rule(job=jobs)
    @counted
    def save_state(self, job):
        """A bare DCP save with no dataloader.json entry (a run that stops between save and bookkeeping).
        At a step that already has its row, this is the cookbook's final save: it replaces the row (L4)."""
        self._live(job)
        name = f"step-{job.step}"
        probe = self.world.references[job.lineage]
        replaced = job.rows.get(name) if name in job.rows and job.rows[name].certain else None
        job.touched()
        try:
            path = job.handle.save_state(name)
        except FwError as exc:
            L4.require(replaced is None, f"save_state({name}) on job {job.job_id} failed; a taken name must be "
                                         f"replaced: {exc}")
            L2.fail(f"save_state({name}) on job {job.job_id} failed though no row has that name: {exc}")
            return
        row = RowModel(name=path, kind=dcp_kind(job.lora), how="save_state", step=job.step,
                       data_consumed=job.data_consumed, lineage=job.lineage, probe=probe)
        self._add_or_replace(job, row)

    def _add_or_replace(self, job: JobModel, row: RowModel) -> None:
        """Record a successful save; under a taken name the new row takes the old one's place (L4)."""
        old = job.rows.pop(row.name, None) if row.name in job.rows and job.rows[row.name].certain else None
        if old is not None:
            row.replaces = old.first_listed or ""
            tally().exercised(L4.id)
        self.world.add_row(job, row)
        if old is None or not self.has(BLOBS):
            return
        for rec in self.world.models.values():
            if (rec.job_id, rec.row) == (job.job_id, row.name) and rec.files is not None:
                now = _read_files(self.target.model_dir(self.obs.account, rec.model_id))
                L4.require(now == rec.files, f"model {rec.model_id}, promoted from {row.name} before that name was "
                                             "saved again, no longer holds the files it was promoted with")

    @rule(job=jobs, checkpoint_type=st.sampled_from([None, "base", "delta", "merged_base"]))
    @counted
    def sampler_save(self, job, checkpoint_type):
        """save_weights_for_sampler; None leaves the type to the weight-sync chain (K4)."""
        self._live(job)
        self._sampler_save(job, self.world.fresh("sample"), checkpoint_type)

    @rule(job=jobs, pick=st.integers(0, 100), checkpoint_type=st.sampled_from([None, "base", "delta"]))
    @counted
    def sampler_resave(self, job, pick, checkpoint_type):
        """A sampler save under the name of an earlier one of this client: it replaces that row (L4)."""
        self._live(job)
        earlier = [r for r in job.certain_rows() if r.base_name]
        if not earlier:
            return
        self._sampler_save(job, earlier[pick % len(earlier)].base_name, checkpoint_type)

    def _sampler_save(self, job: JobModel, name: str, checkpoint_type: str | None) -> None:
        resolved = chain_type(job.lora, job.sampler_saved, checkpoint_type)
        kind, why = sampler_kind(job.lora, resolved)
        if kind == "INFERENCE_ARC_V2" and job.newest_base() is None:
            kind, why = None, "a delta needs an earlier INFERENCE_BASE in the job and there is none"
        job.touched()
        try:
            path = job.handle.save_sampler(name, checkpoint_type)
        except Exception as exc:  # noqa: BLE001
            K4.require(kind is None, f"sampler save {name} (checkpoint_type={checkpoint_type!r}, resolved "
                                     f"{resolved!r}) on job {job.job_id} failed, expected {kind}: "
                                     f"{type(exc).__name__}: {exc}")
            if self.config.driver == "client":
                F1.require(isinstance(exc, FwError), f"a refused sampler save raised {type(exc).__name__}, "
                                                     f"not a clear client error: {exc}")
            return
        K4.require(kind is not None, f"sampler save {path} (checkpoint_type={checkpoint_type!r}, resolved "
                                     f"{resolved!r}) on job {job.job_id} succeeded; it must be refused: {why}")
        self._add_or_replace(job, RowModel(name=path, kind=kind, sampler_expect=kind, step=job.step,
                                           rank=job.lora_rank, base_name=name,
                                           how=f"sampler save ({checkpoint_type or 'chain'} -> {resolved})"))
        job.sampler_saved = True

    # ------------------------------------------------------------------ interruptions
    @precondition(lambda self: CRASH in self.driver.caps)
    @rule(job=jobs, extra_steps=st.integers(1, 2))
    @counted
    def crash_and_resume(self, job, extra_steps):
        """Train a little past the last save, drop the client without closing it, start again with
        the same log_path: resume must restore the newest resumable state (R1) and replaying the lost
        steps must land on the same weights (R2)."""
        self._interrupt(job, extra_steps, crash=True)

    @precondition(lambda self: CRASH not in self.driver.caps)
    @rule(job=jobs, extra_steps=st.integers(1, 2))
    @counted
    def reconnect_and_load(self, job, extra_steps):
        """SDK driver: close the training client, open a new one, load the newest resumable row."""
        self._interrupt(job, extra_steps, crash=False)

    def _interrupt(self, job: JobModel, extra_steps: int, crash: bool) -> None:
        """Train `extra_steps` past the last save (progress the interruption loses), drop the client
        (abandoned when `crash`, else closed) and reconnect: resume, then replay (R1, R2)."""
        self._live(job)
        for _ in range(extra_steps):
            expect_ok(R2, f"training step {job.step + 1} of job {job.job_id}", self._train_step, job, 1)
        previous = (job.origin, job.steps)
        self._drop_client(job, crash=crash)
        self._reconnect(job, previous)

    @precondition(lambda self: CHECKPOINTS in self.driver.caps and len(self.world.jobs) < MAX_JOBS
                  and has_resumable(self))
    @rule(target=jobs, src=jobs, pick=st.integers(0, 20))
    @counted
    def init_from_other_job(self, src, pick):
        """A new job started with init_from_checkpoint="src:name" (R4)."""
        rows = [r for r in src.certain_rows() if r.resumable]
        if not rows:
            return multiple()
        row = rows[pick % len(rows)]
        ref = f"{src.job_id}:{row.name}"
        job_id = self.world.fresh("ct")
        got = self.driver.create_job(src.lora_rank, job_id)
        log_path = self.tmp / got
        log_path.mkdir(parents=True, exist_ok=True)
        job = JobModel(job_id=got, lora_rank=src.lora_rank, log_path=str(log_path), index=len(self.world.jobs),
                       init_ref=ref)
        self.world.jobs.append(job)
        self._connect(job)
        ck = job.ck
        try:
            ck.resume(init_from_checkpoint=ref, warm_start_from_adapter="accounts/x/models/some-adapter")
        except ValueError:
            R4.held()
        else:
            R4.fail(f"init_from_checkpoint={ref} together with warm_start_from_adapter was accepted")
        info = expect_ok(R4, f"resume(init_from_checkpoint={ref}) on new job {job.job_id}", ck.resume,
                         init_from_checkpoint=ref)
        job.touched()
        self._check_cross_job_init(job, info, src.job_id, row.name)
        return job

    @precondition(lambda self: CHECKPOINTS in self.driver.caps and has_resumable(self))
    @rule(job=jobs)
    @counted
    def corrupt_dataloader_json(self, job):
        """Garbage in dataloader.json: the next resume starts its bookkeeping fresh, with a warning (R6)."""
        job = self._busy(job, lambda r: r.resumable)
        path = Path(job.log_path) / "dataloader.json"
        path.write_text("{ this is not json")
        # resume reads the file only when it resumes one of the run's own rows (an init-first logic with
        # init_from_checkpoint set loads the init row at step 0 and never reads it)
        logic = self._checkpoints(job)   # the job's, or a fresh one when its client is gone (a restart)
        init_first = job.init_ref is not None and self._policy(logic, "init_policy") == "init-first"
        reads_it = any(r.resumable for r in job.certain_rows()) and not init_first
        capture = _CaptureWarnings()
        # where the checkpoint logic under test logs its warning (a driver may name its own loggers)
        names = getattr(logic, "warning_loggers", None) or ("fwemu.client.dataloader_state",)
        loggers = [logging.getLogger(n) for n in names]
        saved = [(lg.level, lg.propagate) for lg in loggers]
        for lg in loggers:
            if not lg.isEnabledFor(logging.WARNING):   # the CLI quiets client logs: hear it, print nothing
                lg.setLevel(logging.WARNING)
                lg.propagate = False
            lg.addHandler(capture)
        try:
            previous = (job.origin, job.steps)
            self._drop_client(job, crash=True)
            job.dataloader.clear()
            self._reconnect(job, previous)
        finally:
            for lg, (level, propagate) in zip(loggers, saved):
                lg.removeHandler(capture)
                lg.setLevel(level)
                lg.propagate = propagate
        if reads_it:
            R6.require(any("corrupt" in m.lower() for m in capture.messages),
                       f"a corrupt {path} was read without a warning (warnings: {capture.messages})")

