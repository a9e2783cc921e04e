"""The state machine's core: per-example setup, training clients, training steps, and resume
(R1, R2, R4) as a user would do it after a crash or restart; teardown. Rules live in rules_*.py."""

from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from hypothesis.stateful import RuleBasedStateMachine

from fwemu.client.errors import FwError
from fwemu.contracts import invariants as inv
from fwemu.contracts.data import batch
from fwemu.contracts.drivers import CHECKPOINTS, Observer, make_driver
from fwemu.contracts.invariants import R1, R2, R4, tally
from fwemu.contracts.model import JobModel, RowModel, World
from fwemu.contracts.rulekit import MachineConfig, expect_ok, jobs
from fwemu.contracts.targets import RESTART

log = logging.getLogger("fwemu.contracts.machine")


class MachineCore(RuleBasedStateMachine):
    """Rules act through the driver; the model predicts; invariants compare after every step."""

    config: MachineConfig  # set by make_machine
    jobs = jobs


    def __init__(self) -> None:
        super().__init__()
        tally().new_example()
        self.target = self.config.target_for_example()
        self.account = self.target.new_account()
        self.obs = Observer(self.target, self.account)
        self.driver = make_driver(self.config.driver, self.target, self.account)
        self.world = World(tag=secrets.token_hex(3))
        self.tmp = Path(tempfile.mkdtemp(prefix="fwemu-contracts-run-"))
        self._verdicts: dict[tuple[str, str], str | None] = {}   # (path, fingerprint) -> kind
        self._paged: dict[str, tuple] = {}                      # job -> listing last checked for pagination
        self._models_checked = 0
        self._restart_seq = 0                                   # world.seq at the last restart

    # ------------------------------------------------------------------ helpers
    def has(self, cap: str) -> bool:
        return self.target.has(cap)

    def drives(self, cap: str) -> bool:
        return cap in self.driver.caps

    def _new_job(self, lora: bool) -> JobModel:
        job_id = self.world.fresh("ct")
        lora_rank = 4 if lora else 0
        got = self.driver.create_job(lora_rank, job_id)
        log_path = self.tmp / got
        log_path.mkdir(parents=True, exist_ok=True)
        job = JobModel(job_id=got, lora_rank=lora_rank, log_path=str(log_path), index=len(self.world.jobs),
                       origin=("fresh", lora_rank))
        self.world.jobs.append(job)
        self._connect(job)
        self._check_lineage(job, "a fresh training client")
        return job

    def _connect(self, job: JobModel, invariant: inv.Invariant | None = None) -> None:
        """A new training client on the job, with its own TrainingCheckpoints (as a recipe holds one)."""
        if invariant is None:
            job.handle = self.driver.connect(job.job_id, job.lora_rank)
        else:
            job.handle = expect_ok(invariant, f"connecting a training client to job {job.job_id}",
                                   self.driver.connect, job.job_id, job.lora_rank)
        job.ck = (self.driver.checkpoints(job.handle, job.job_id, job.log_path, job.lora_rank)
                  if self.drives(CHECKPOINTS) else None)
        job.current, job.current_valid, job.sampler_saved = set(), False, False

    def _drop_client(self, job: JobModel, crash: bool) -> None:
        if job.handle is not None:
            job.handle.abandon() if crash else job.handle.close()
        job.handle = job.ck = None

    def _probe(self, job: JobModel) -> tuple:
        job.touched()
        return job.handle.probe()

    def _check_lineage(self, job: JobModel, what: str) -> tuple:
        """Record the probe of this lineage the first time; on every later visit it must match (R2)."""
        probe = self._probe(job)
        ref = self.world.references.get(job.lineage)
        if ref is None:
            self.world.references[job.lineage] = probe
        else:
            inv.check_probe(R2, f"job {job.job_id} at step {job.step} ({what}); the same data from the same "
                                "start must give the same weights", probe, ref)
        return probe

    def _train_step(self, job: JobModel, size: int) -> None:
        start = job.data_consumed
        job.touched()
        job.handle.train_step(batch(job.job_id, start, size))
        job.steps = job.steps + ((start, size),)
        job.data_consumed += size
        job.step += 1
        self._check_lineage(job, f"after step {job.step}")

    def _busy(self, job: JobModel, want=lambda r: True) -> JobModel:
        """`job` if it has a row `want` accepts, else the live job with the most such rows: rules that
        act on a job's rows spend their step on a job that has some (the printed program names the
        drawn job; the rule's message names the one it used)."""
        if any(want(r) for r in job.certain_rows()) or job.deleted:
            return job
        live = [j for j in self.world.jobs if not j.deleted]
        best = max(live, key=lambda j: sum(1 for r in j.certain_rows() if want(r)), default=job)
        return best if any(want(r) for r in best.certain_rows()) else job

    def _live(self, job: JobModel):
        """The job's training client; after a restart or crash, reconnect and resume like a user would."""
        if job.handle is None:
            self._reconnect(job, previous=(job.origin, job.steps))
        return job.handle

    def _checkpoints(self, job: JobModel):
        """The job's TrainingCheckpoints; without a live client, a fresh one (listing and promotion only).

        On a target whose listings lag (the real service, the listing-delay quirk), first wait until
        every row the model knows was saved is listed: resume and promote_latest can only see what
        the control plane lists, as a user who waits a moment would find."""
        if self.target.listing_may_lag:
            self._settle(job)
        if job.ck is not None:
            return job.ck
        return self.driver.checkpoints(None, job.job_id, job.log_path, job.lora_rank)

    def _policy(self, ck, name: str) -> str:
        """What the checkpoint logic under test declares for `name` (contracts/driver_api.py POLICIES)."""
        from fwemu.contracts.driver_api import POLICIES, policy

        value = policy(ck, name)
        tally().policy(name, value, POLICIES[name][0])
        return value

    def _settle(self, job: JobModel, timeout_s: float = 30.0) -> None:
        want = {r.name for r in job.certain_rows()}
        deadline = time.monotonic() + timeout_s
        while want:
            status, pages = self.obs.list_all(job.job_id)
            listed = {r.name for page in pages for r in page}
            if (status == 200 and want <= listed) or time.monotonic() >= deadline:
                return  # a row that never appears is L2's to report, not this wait's
            time.sleep(0.05)

    # ------------------------------------------------------------------ resume (R1, R2, R4)
    def _reconnect(self, job: JobModel, previous: tuple) -> None:
        """New training client + resume; checks what was restored, then replays the steps the
        interruption lost and checks they land on the same weights as the first time (R2)."""
        self._connect(job, R1)
        if self.drives(CHECKPOINTS):
            self._resume_with_checkpoints(job)
        else:
            self._resume_with_load_state(job)
        prev_origin, prev_steps = previous
        if prev_origin == job.origin and prev_steps[:len(job.steps)] == job.steps:
            for start, size in prev_steps[len(job.steps):][:4]:
                if start != job.data_consumed:
                    break
                expect_ok(R2, f"replaying step {job.step + 1} of job {job.job_id} after resume",
                          self._train_step, job, size)

    def _resume_with_checkpoints(self, job: JobModel) -> None:
        ck = self._checkpoints(job)
        own = [r for r in job.certain_rows() if r.resumable]
        if job.init_ref and (not own or self._policy(ck, "init_policy") == "init-first"):
            src_job_id, src_name = job.init_ref.split(":", 1)
            src = next(j for j in self.world.jobs if j.job_id == src_job_id)
            if src.purged:
                self._init_from_gone_job(job, ck, src_job_id)
                return
            info = expect_ok(R4, f"resume of job {job.job_id} with init_from_checkpoint={job.init_ref}",
                             ck.resume, init_from_checkpoint=job.init_ref)
            job.touched()
            self._check_cross_job_init(job, info, src_job_id, src_name)
            return
        row, known, why = self.world.expected_resume(job, self._policy(ck, "resume_policy"))
        info = expect_ok(R1, f"resume of job {job.job_id}", ck.resume, init_from_checkpoint=job.init_ref)
        want = inv.ResumeExpectation(
            name=row.name if row else None, step=row.step or 0 if row else 0,
            data_consumed=job.dataloader[row.name][1] if (row and known) else 0, data_restored=known,
            probe=row.probe if row else None, why=why, candidates=[r.name for r in own])
        inv.check_resume(job.job_id, info, want)
        if row is not None:
            job.note_state(row.name, replace=True)
        self._adopt(job, row, known)

    def _init_from_gone_job(self, job: JobModel, ck, src_job_id: str) -> None:
        """The init source's retention ended: resume must fail clearly, naming it (and load nothing)."""
        try:
            ck.resume(init_from_checkpoint=job.init_ref)
        except FwError as exc:
            R4.require(src_job_id in str(exc), f"init_from_checkpoint={job.init_ref} after job {src_job_id} was "
                                               f"purged failed without naming it: {exc}")
        else:
            R4.fail(f"init_from_checkpoint={job.init_ref} succeeded although job {src_job_id} is gone")
        job.touched()
        job.init_ref = None          # the user has to start this run from something else
        self._adopt(job, None, False)

    def _resume_with_load_state(self, job: JobModel) -> None:
        """Drivers without TrainingCheckpoints: load the newest resumable row with its optimizer."""
        own = [r for r in job.certain_rows() if r.resumable]
        row = own[-1] if own else None
        if row is not None:
            job.touched()
            expect_ok(R1, f"load_state_with_optimizer({row.name}) on job {job.job_id}",
                      job.handle.load_state, row.name, True)
        self._adopt(job, row, False)

    def _adopt(self, job: JobModel, row: RowModel | None, known: bool) -> None:
        if row is None:
            job.origin, job.steps, job.step, job.data_consumed = ("fresh", job.lora_rank), (), 0, 0
            self._check_lineage(job, "a fresh start after resume found no resumable row")
            return
        origin, _job, steps = row.lineage
        job.origin, job.steps, job.step = origin, steps, row.step or 0
        job.data_consumed = job.dataloader[row.name][1] if known else (row.data_consumed or 0)
        probe = self._probe(job)
        inv.check_probe(R1, f"job {job.job_id}: weights after resuming from {row.name}", probe, row.probe)

    def _check_cross_job_init(self, job: JobModel, info, src_job_id: str, src_name: str) -> None:
        R4.require(info is not None and info.step == 0 and info.data_consumed == 0
                   and info.source_job_id == src_job_id,
                   f"init_from_checkpoint={src_job_id}:{src_name} gave {info!r}; expected step 0, data_consumed 0 "
                   f"and source job {src_job_id}")
        src = next(j for j in self.world.jobs if j.job_id == src_job_id)
        row = src.rows[src_name]
        job.origin, job.steps, job.step, job.data_consumed = ("init", src_job_id, src_name), (), 0, 0
        inv.check_probe(R4, f"job {job.job_id}: weights after init_from_checkpoint={src_job_id}:{src_name}",
                        self._probe(job), row.probe)
        self._check_lineage(job, "right after a cross-job init")

    # ------------------------------------------------------------------ teardown
    def teardown(self):
        try:
            for job in self.world.jobs:
                if job.handle is not None:
                    job.handle.close()
                    job.handle = None
            if self.target.has(RESTART):
                return  # a per-example emulator: releasing it frees everything
            for job in self.world.jobs:   # shared or real target: leave nothing running
                if not job.deleted:
                    try:
                        self.driver.delete_job(job.job_id)
                    except Exception:  # noqa: BLE001 - best effort on teardown
                        log.warning("could not delete job %s", job.job_id)
        finally:
            self.driver.close()
            self.obs.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.config.release(self.target)


