"""The contract state machine: random programs of save / crash / resume / promote / delete / restart.

`make_machine(config)` returns a `RuleBasedStateMachine` class bound to a target and a driver.
Every rule acts through the driver (the client under test) and updates the model (`World`);
`check_server_state` (an `@invariant`) then compares what the server lists with the model after
every step. A failure shrinks to a short program Hypothesis prints, e.g.

    state = ContractMachine()
    jobs_0 = state.first_lora_job()
    jobs_1 = state.first_full_job()
    state.sampler_save(checkpoint_type=None, job=jobs_1)
    state.sampler_save(checkpoint_type=None, job=jobs_1)
    state.teardown()
    # K2Violation: [K2 promotable-iff] job ...: row sample-...-4-... is INFERENCE_ARC_V2 but listed promotable=True

Rules whose capability the target or driver lacks are disabled by a precondition (restart and
clock need the in-process emulator; rewriting bytes needs the blob dir; TrainingCheckpoints,
crashes and wire faults need our client); the report lists what was not exercised and why.

Every rule is decorated with `@counted` (under `@rule`/`@initialize`; `@counted_check` under
`@invariant`): `STEPS` counts each execution and the seconds spent in it, for the report's step
count and `bench/contract_speed.py`. A new rule needs it too (tests/bench checks).
"""

from __future__ import annotations

import functools
import logging
import secrets
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, multiple, precondition, rule

from fwemu.client.checkpoints import NoPromotableCheckpointError
from fwemu.client.errors import FwError
from fwemu.contracts import invariants as inv
from fwemu.contracts.data import batch
from fwemu.contracts.drivers import CHECKPOINTS, CRASH, FAULTS, Observer, make_driver
from fwemu.contracts.faults import FAULT_KINDS
from fwemu.contracts.invariants import (F1, K1, K3, K4, K5, K6, L2, L3, L4, R1, R2, R4, R6, R7, InvariantViolation,
                                  ListedRow, tally)
from fwemu.contracts.model import (JobModel, ModelRecord, RowModel, World, chain_type, dcp_kind, sampler_kind)
from fwemu.contracts.targets import BLOBS, CLOCK, FAULT_API, RESTART, REWRITE, Target

log = logging.getLogger(__name__)

MAX_JOBS = 5
BAD_MODEL_IDS = ["", "UPPER", "has_underscore", "dot.id", "space id", "a" * 64, "trailing-newline\n",
                 "ünïcode", "slash/id", "x" * 63 + "\n", "tab\tid"]


@dataclass
class StepTally:
    """Every rule the machine executes (initialize rules included) and every invariant check, with the
    seconds spent inside each: always on, two `perf_counter` calls per step. Focused properties call
    rules directly and are counted too; `contracts.runner` resets the tally per component and puts the
    state machine's counts on the Report (`steps`, `rule_counts`, `rule_seconds`)."""

    rules: Counter = field(default_factory=Counter)          # rule name -> executions
    rule_seconds: Counter = field(default_factory=Counter)   # rule name -> seconds inside the rule
    checks: Counter = field(default_factory=Counter)         # invariant name -> executions
    check_seconds: Counter = field(default_factory=Counter)  # invariant name -> seconds inside it

    @property
    def steps(self) -> int:
        return sum(self.rules.values())

    def reset(self) -> "StepTally":
        for c in (self.rules, self.rule_seconds, self.checks, self.check_seconds):
            c.clear()
        return self


STEPS = StepTally()


def _timed(counts: Counter, seconds: Counter) -> Callable[[Callable], Callable]:
    def decorate(fn: Callable) -> Callable:
        name = fn.__name__

        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            counts[name] += 1
            t0 = time.perf_counter()
            try:
                return fn(self, *args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - t0
        wrapper.fwemu_counted = True
        return wrapper
    return decorate


# Apply under @rule / @initialize (`counted`) and @invariant (`counted_check`), right above the def.
counted = _timed(STEPS.rules, STEPS.rule_seconds)
counted_check = _timed(STEPS.checks, STEPS.check_seconds)


@dataclass
class MachineConfig:
    """What one run of the machine is bound to. `target_for_example` gives a target per example
    (a fresh in-process emulator, or the same remote one) and `release` hands it back."""

    target_for_example: Callable[[], Target]
    release: Callable[[Target], None]
    driver: str = "client"
    fault_api: bool = True      # use /_emulator/v1/faults where the target serves it


@dataclass
class SavePlan:
    """The model's prediction for one TrainingCheckpoints.save call."""

    name: str
    resumable: bool
    promotable: bool
    probe: tuple
    reuse_dcp: str | None = None
    save_as: str | None = None
    reuse_sampler: str | None = None
    sampler_taken: str | None = None   # the `<name>-<suffix>` the client will ask for, already a row


def _read_files(path: Path | None) -> dict[str, bytes] | None:
    if path is None or not path.is_dir():
        return None
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def expect_ok(invariant: inv.Invariant, what: str, fn: Callable, *args, **kwargs):
    """Run `fn`; an exception means the target broke `invariant` (the message says where)."""
    try:
        return fn(*args, **kwargs)
    except InvariantViolation:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure here is the finding
        invariant.fail(f"{what} failed: {type(exc).__name__}: {exc}")


class _CaptureWarnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class ContractMachine(RuleBasedStateMachine):
    """Rules act through the driver; the model predicts; invariants compare after every step."""

    config: MachineConfig  # set by make_machine
    jobs = Bundle("jobs")

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
        if job.init_ref and not own:
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
        row, known, why = self.world.expected_resume(job)
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

    # ------------------------------------------------------------------ saves
    @precondition(lambda self: CHECKPOINTS in self.driver.caps)
    @rule(job=jobs, resumable=st.booleans(), promotable=st.booleans())
    @counted
    def save(self, job, resumable, promotable):
        """TrainingCheckpoints.save(step-N, ...): the cookbook's save, with its reuse rules."""
        self._live(job)
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
                self.world.add_row(job, RowModel(
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
        """R6: dataloader.json is keyed by the name the control plane lists, with step and data_consumed."""
        import json

        path = Path(job.log_path) / "dataloader.json"
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            R6.fail(f"{path} is unreadable after a save: {exc}")
        entry = entries.get(name)
        step, dc = job.dataloader[name]
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
        self._live(job)
        for _ in range(extra_steps):
            expect_ok(R2, f"training step {job.step + 1} of job {job.job_id}", self._train_step, job, 1)
        previous = (job.origin, job.steps)
        self._drop_client(job, crash=True)
        self._reconnect(job, previous)

    @precondition(lambda self: CRASH not in self.driver.caps)
    @rule(job=jobs, extra_steps=st.integers(1, 2))
    @counted
    def reconnect_and_load(self, job, extra_steps):
        """SDK driver: close the training client, open a new one, load the newest resumable row."""
        self._live(job)
        for _ in range(extra_steps):
            expect_ok(R2, f"training step {job.step + 1} of job {job.job_id}", self._train_step, job, 1)
        previous = (job.origin, job.steps)
        self._drop_client(job, crash=False)
        self._reconnect(job, previous)

    @precondition(lambda self: CHECKPOINTS in self.driver.caps and len(self.world.jobs) < MAX_JOBS)
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

    @precondition(lambda self: CHECKPOINTS in self.driver.caps)
    @rule(job=jobs)
    @counted
    def corrupt_dataloader_json(self, job):
        """Garbage in dataloader.json: the next resume starts its bookkeeping fresh, with a warning (R6)."""
        path = Path(job.log_path) / "dataloader.json"
        path.write_text("{ this is not json")
        reads_it = any(r.resumable for r in job.certain_rows())  # resume reads the file only then
        capture = _CaptureWarnings()
        logger = logging.getLogger("fwemu.client.dataloader_state")
        old_level, old_propagate = logger.level, logger.propagate
        if not logger.isEnabledFor(logging.WARNING):   # the CLI quiets client logs: hear it, print nothing
            logger.setLevel(logging.WARNING)
            logger.propagate = False
        logger.addHandler(capture)
        try:
            previous = (job.origin, job.steps)
            self._drop_client(job, crash=True)
            job.dataloader.clear()
            self._reconnect(job, previous)
        finally:
            logger.removeHandler(capture)
            logger.setLevel(old_level)
            logger.propagate = old_propagate
        if reads_it:
            R6.require(any("corrupt" in m for m in capture.messages),
                       f"a corrupt {path} was read without a warning (warnings: {capture.messages})")

    # ------------------------------------------------------------------ promotion
    def _promote_candidates(self, include_purged: bool = False) -> list[tuple[JobModel, RowModel]]:
        jobs = [j for j in self.world.jobs if include_purged or not j.purged]
        return [(j, r) for j in jobs for r in j.certain_rows()]

    def _pick_promotable(self, pick: int):
        """(job, row) of the promotable candidate `pick` selects, or None when there is none."""
        rows = [(j, r) for j, r in self._promote_candidates() if r.promotable]
        return rows[pick % len(rows)] if rows else None

    def _check_model_files(self, model_id: str, job: JobModel, row: RowModel) -> None:
        """K5: the model's files are the checkpoint's, and the project's own reader accepts them."""
        if not self.has(BLOBS):
            return
        from fwemu.emulator.inspect import inspect_checkpoint

        ckpt = _read_files(self.target.checkpoint_dir(self.obs.account, job.job_id, row.name))
        mdir = self.target.model_dir(self.obs.account, model_id)
        model = _read_files(mdir)
        K5.require(model is not None, f"model {model_id} has no files in the store")
        inv.check_same_files(K5, f"model {model_id} vs checkpoint {row.name}", model, ckpt or {})
        verdict = inspect_checkpoint(mdir)
        K5.require(verdict.kind is not None and verdict.kind.value == row.kind,
                   f"model {model_id}: the inspector reads its files as {verdict.kind or verdict.reason}, "
                   f"expected {row.kind}")

    def check_models_load_in_transformers(self) -> bool:
        """K5: a promoted full model loads into transformers' LlamaForCausalLM with every weight used.
        Returns False when transformers is not installed or no full model was promoted (nothing checked)."""
        try:
            import transformers
        except ImportError:
            tally().note("K5", "transformers not installed: promoted models not loaded into it")
            return False
        full = [m for m in self.world.models.values() if m.kind == "INFERENCE_BASE"]
        if not full or not self.has(BLOBS):
            return False
        path = self.target.model_dir(self.obs.account, full[0].model_id)
        import torch

        model, info = transformers.LlamaForCausalLM.from_pretrained(str(path), dtype=torch.float32,
                                                                    output_loading_info=True)
        missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
        K5.require(not missing and not unexpected, f"model {full[0].model_id} loads into transformers with "
                                                   f"missing {missing[:3]} and unexpected {unexpected[:3]} weights")
        return True

    def _accept_model(self, model_id: str, job: JobModel, row: RowModel, record: dict) -> None:
        inv.check_promoted_model(record, row.name, row.kind, self.target.base_model, row.rank)
        status, fetched = self.obs.get_model(model_id)
        K5.require(status == 200 and isinstance(fetched, dict) and fetched.get("state") == "READY",
                   f"GET model {model_id} after promoting {row.name}: HTTP {status} {str(fetched)[:200]}")
        self._check_model_files(model_id, job, row)
        files = _read_files(self.target.model_dir(self.obs.account, model_id)) if self.has(BLOBS) else None
        self.world.models[model_id] = ModelRecord(model_id, job.job_id, row.name, row.kind, fetched, files)

    @rule(pick=st.integers(0, 100))
    @counted
    def promote_any_row(self, pick):
        """Promote any row, promotable or not (K3), including rows of deleted jobs (L3)."""
        rows = self._promote_candidates(include_purged=True)
        if not rows:
            return
        job, row = rows[pick % len(rows)]
        model_id = self.world.fresh("m")
        status, body = self.obs.promote(job.job_id, row.name, model_id, self.target.base_model)
        if job.purged:
            L3.require(status == 404, f"promote of {row.name} from job {job.job_id} after its retention window "
                                      f"answered HTTP {status}; expected 404 NOT_FOUND")
            return
        if job.deleted:
            tally().exercised(L3.id)
        if row.promotable:
            K3.require(status == 200, f"promote of {row.name} ({row.kind}, promotable) was refused: HTTP {status} "
                                      f"{str(body)[:300]}")
            self._accept_model(model_id, job, row, body.get("model") or {})
        else:
            K3.require(status != 200, f"promote of {row.name} ({row.kind}, not promotable) was accepted and "
                                      f"created model {model_id}")
            inv.check_promote_refused(row.name, row.kind, status, body)
            got, _ = self.obs.get_model(model_id)
            K3.require(got == 404, f"refused promote of {row.name} still created model {model_id} (GET: {got})")

    @rule(pick=st.integers(0, 100))
    @counted
    def promote_with_driver(self, pick):
        """Promote a promotable row through the client under test (its wire, its response handling)."""
        picked = self._pick_promotable(pick)
        if picked is None:
            return
        job, row = picked
        model_id = self.world.fresh("m")
        record = expect_ok(K3, f"promote of {row.name} ({row.kind}) with the {self.driver.name} driver",
                           self.driver.promote, f"accounts/{self.obs.account}/rlorTrainerJobs/{job.job_id}"
                                                f"/checkpoints/{row.name}", model_id)
        self._accept_model(model_id, job, row, record)

    @precondition(lambda self: CHECKPOINTS in self.driver.caps)
    @rule(job=jobs)
    @counted
    def promote_latest(self, job):
        """TrainingCheckpoints.promote_latest: the newest promotable row, or a clear refusal (R7)."""
        want = self.world.newest_promotable(job)
        model_id = self.world.fresh("m")
        ck = self._checkpoints(job)
        if want is None:
            try:
                ck.promote_latest(model_id, self.target.base_model)
            except NoPromotableCheckpointError as exc:
                R7.require(job.job_id in str(exc) and "promot" in str(exc),
                           f"promote_latest on job {job.job_id} with nothing promotable: unclear message {exc}")
            except Exception as exc:  # noqa: BLE001
                R7.fail(f"promote_latest with no promotable row raised {type(exc).__name__}: {exc}")
            else:
                R7.fail(f"promote_latest on job {job.job_id} succeeded with no promotable row")
            status, _ = self.obs.get_model(model_id)
            R7.require(status == 404, f"promote_latest refused but model {model_id} exists (GET: {status})")
            return
        model = expect_ok(R7, f"promote_latest on job {job.job_id} (newest promotable row {want.name})",
                          ck.promote_latest, model_id, self.target.base_model)
        source = model.raw.get("sourceCheckpoint")
        if source is not None:
            R7.require(str(source).endswith(f"/checkpoints/{want.name}"),
                       f"promote_latest on job {job.job_id} promoted {source}, the newest promotable row is {want.name}")
        self._accept_model(model_id, job, want, dict(model.raw))

    @rule(pick=st.integers(0, 100), bad_id=st.sampled_from(BAD_MODEL_IDS))
    @counted
    def promote_to_invalid_id(self, pick, bad_id):
        """An output model id outside ^[a-z0-9-]{1,63}$ is refused and nothing is written (K6)."""
        picked = self._pick_promotable(pick)
        if picked is None:
            return
        job, row = picked
        before = self._model_names()
        status, body = self.obs.promote(job.job_id, row.name, bad_id, self.target.base_model)
        K6.require(status != 200, f"promote of {row.name} to invalid model id {bad_id!r} was accepted: "
                                  f"{str(body)[:200]}")
        inv.check_error_envelope(K6, f"promote to invalid model id {bad_id!r}", status, body)
        after = self._model_names()
        K6.require(after == before, f"a refused promote to {bad_id!r} still changed the models: {sorted(after - before)}")

    @rule(pick=st.integers(0, 100), which=st.integers(0, 100))
    @counted
    def promote_to_existing_id(self, pick, which):
        """Promoting onto an existing model id is refused; the existing model is untouched (K6)."""
        picked = self._pick_promotable(pick)
        if picked is None or not self.world.models:
            return
        job, row = picked
        existing = sorted(self.world.models)[which % len(self.world.models)]
        rec = self.world.models[existing]
        files_before = _read_files(self.target.model_dir(self.obs.account, existing)) if self.has(BLOBS) else None
        status, body = self.obs.promote(job.job_id, row.name, existing, self.target.base_model)
        K6.require(status != 200, f"promote of {row.name} onto existing model {existing} was accepted")
        inv.check_error_envelope(K6, f"promote onto existing model {existing}", status, body)
        got_status, got = self.obs.get_model(existing)
        K6.require(got_status == 200 and got == rec.record,
                   f"a refused promote onto {existing} changed it: {str(got)[:200]}")
        if files_before is not None:
            K6.require(_read_files(self.target.model_dir(self.obs.account, existing)) == files_before,
                       f"a refused promote onto {existing} changed its files")

    @rule(pick=st.integers(0, 100), racers=st.integers(2, 4))
    @counted
    def promote_race(self, pick, racers):
        """Concurrent promotes to one new id: exactly one wins, the others are refused (K6)."""
        picked = self._pick_promotable(pick)
        if picked is None:
            return
        job, row = picked
        model_id = self.world.fresh("race")
        gate = threading.Barrier(racers)
        results: list[tuple[int, Any]] = []

        def one() -> None:
            gate.wait(timeout=10)
            results.append(self.obs.promote(job.job_id, row.name, model_id, self.target.base_model))

        threads = [threading.Thread(target=one) for _ in range(racers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        wins = [b for s, b in results if s == 200]
        K6.require(len(results) == racers, f"{racers} concurrent promotes to {model_id}: only {len(results)} answered")
        K6.require(len(wins) == 1, f"{racers} concurrent promotes of {row.name} to {model_id}: {len(wins)} won "
                                   f"(statuses {sorted(s for s, _ in results)})")
        for s, b in results:
            if s != 200:
                inv.check_error_envelope(K6, f"losing concurrent promote to {model_id}", s, b)
        self._accept_model(model_id, job, row, wins[0].get("model") or {})

    def _model_names(self) -> set[str]:
        r = self.obs.http.request("GET", f"/v1/accounts/{self.obs.account}/models", params={"pageSize": 1000},
                                  check=False)
        return {m.get("name") for m in (r.json().get("models") or [])} if r.status_code == 200 else set()

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

    # ------------------------------------------------------------------ faults (F1)
    _FAULT_OPS = {
        "train": [r"/forward_backward$", r"/optim_step$", r"/retrieve_future$"],
        "save": [r"/checkpoints$", r"/save_weights$", r"/save_weights_for_sampler$", r"/retrieve_future$"],
        "promote_latest": [r"/checkpoints$", r":promote$"],
        "list": [r"/checkpoints$"],
    }

    @precondition(lambda self: FAULTS in self.driver.caps)
    @rule(job=jobs, op=st.sampled_from(sorted(_FAULT_OPS)), kind=st.sampled_from(FAULT_KINDS),
          which=st.integers(0, 3))
    @counted
    def wire_fault(self, job, op, kind, which):
        """One call of the op fails on the wire (503, delay, dropped before sending, or dropped after the
        server answered). A retrying client must still succeed when the server never saw the call; in
        every case the server state stays valid (the invariants run next) and errors are clear (F1)."""
        self._live(job)
        patterns = self._FAULT_OPS[op]
        armed: list = []
        try:
            outcome = self._faulted_op(job, op, lambda: armed.append(
                self.driver.plan.arm(kind, patterns[which % len(patterns)])))
        finally:
            self.driver.plan.disarm()
        if not armed or not armed[0].fired:
            return
        where = f"{op} with a {kind} fault on {armed[0].path.pattern}"
        if isinstance(outcome, BaseException):
            F1.require(isinstance(outcome, FwError) and str(outcome).strip(),
                       f"{where} raised {type(outcome).__name__}, not a clear client error: {outcome}")
            F1.require(kind == "drop_after", f"{where} failed, though the server never saw the call or only "
                                             f"answered late; a retrying client must succeed: {outcome}")
        else:
            tally().exercised(F1.id)

    def _faulted_op(self, job: JobModel, op: str, arm: Callable[[], Any]):
        """Arm a fault and run `op`, keeping the model right whether it succeeds or fails.
        Returns the exception the client raised, or None."""
        try:
            if op == "train":
                start = job.data_consumed
                job.touched()
                arm()
                metrics = job.handle.train_step(batch(job.job_id, start, 1))
                job.steps = job.steps + ((start, 1),)
                job.data_consumed += 1
                job.step += 1
                trainer_step = metrics.get("step:max")
                if trainer_step is not None:  # the emulator reports its optimizer step count
                    F1.require(int(trainer_step) == job.step,
                               f"job {job.job_id}: after one faulted training step the trainer reports step "
                               f"{trainer_step:g}, expected {job.step} (a retried call ran twice?)")
                self._check_lineage(job, f"after step {job.step}, which a fault hit")
            elif op == "save":
                plan = self._plan_save(job, True, True)
                if plan.reuse_dcp or plan.reuse_sampler or plan.sampler_taken:
                    return None   # nothing (or nothing new) would be written: the plain save rule covers it
                suffix = job.handle.model.session_suffix
                uncertain = [
                    RowModel(name=plan.save_as, kind=dcp_kind(job.lora), how="TrainingCheckpoints.save under a "
                             "fault (resumable)", step=job.step, data_consumed=job.data_consumed,
                             lineage=job.lineage, probe=plan.probe, certain=False),
                    RowModel(name=f"{plan.name}-{suffix}", kind=sampler_kind(job.lora, "base")[0],
                             how="TrainingCheckpoints.save under a fault (promotable)",
                             sampler_expect=sampler_kind(job.lora, "base")[0], step=job.step, probe=plan.probe,
                             certain=False)]
                for row in uncertain:
                    self.world.add_row(job, row)
                arm()
                try:
                    result = job.ck.save(plan.name, True, True, job.data_consumed)
                except BaseException:
                    self._sync_dataloader(job)
                    raise
                for row in uncertain:   # it succeeded: record the rows exactly as an unfaulted save does
                    job.rows.pop(row.name, None)
                self._apply_save(job, plan, result)
            elif op == "promote_latest":
                model_id = self.world.fresh("m")
                want = self.world.newest_promotable(job)
                ck = self._checkpoints(job)
                arm()
                try:
                    model = ck.promote_latest(model_id, self.target.base_model)
                except NoPromotableCheckpointError:
                    R7.require(want is None, f"promote_latest on job {job.job_id} found nothing promotable; "
                                             f"{want.name if want else ''} is")
                    return None
                except FwError as exc:
                    status, rec = self.obs.get_model(model_id)
                    if status == 200 and want is not None:
                        self._accept_model(model_id, job, want, rec)
                    return exc
                R7.require(want is not None, f"promote_latest on job {job.job_id} promoted with nothing promotable")
                self._accept_model(model_id, job, want, dict(model.raw))
            elif op == "list":
                ck = self._checkpoints(job)
                arm()
                rows = ck.list_rows("fault test")
                names = [r.short_name for r in rows]
                expected = [r.name for r in job.certain_rows()]
                F1.require(names == expected, f"listing job {job.job_id} through a fault gave {names}, "
                                              f"expected {expected}")
        except InvariantViolation:
            raise
        except Exception as exc:  # noqa: BLE001 - judged by the calling rule
            if op in ("train", "save"):
                # What the trainer holds after a failed call is unknown: start again from the last
                # resumable state, as a user would.
                self._drop_client(job, crash=True)
            return exc
        return None

    def _sync_dataloader(self, job: JobModel) -> None:
        """After a save that may have failed midway, take dataloader.json as the client left it."""
        from fwemu.client.dataloader_state import DataloaderState

        job.dataloader = {n: (e.step, e.data_consumed) for n, e in DataloaderState(job.log_path).read().items()}

    def _server_fault(self, rule_spec: dict) -> None:
        self.obs.http.request("POST", "/_emulator/v1/faults", json={"rules": [{
            **rule_spec, "account": self.obs.account, "times": 1}]})

    @precondition(lambda self: self.has(FAULT_API) and self.config.fault_api and FAULTS in self.driver.caps)
    @rule(job=jobs, operation=st.sampled_from(["save_weights", "save_weights_for_sampler", "forward_backward",
                                               "optim_step", "list_checkpoints"]))
    @counted
    def server_fault_after_work(self, job, operation):
        """The server does the work, then answers 503 (fault API, stage "after"): the retry must not
        do it twice (a second DCP, a second optimizer step) and the client must end up right (F1)."""
        self._live(job)
        op = {"save_weights": "save", "save_weights_for_sampler": "save", "forward_backward": "train",
              "optim_step": "train", "list_checkpoints": "list"}[operation]
        try:
            outcome = self._faulted_op(job, op, lambda: self._server_fault({
                "operation": operation, "action": "error", "status": 503, "stage": "after", "job": job.job_id}))
        finally:
            self.obs.http.request("DELETE", "/_emulator/v1/faults")
        tally().exercised(F1.id)
        F1.require(outcome is None, f"{op} after the server did {operation} and answered 503: the client did "
                                    f"not recover: {type(outcome).__name__}: {outcome}")

    @precondition(lambda self: self.has(FAULT_API) and self.config.fault_api and FAULTS in self.driver.caps)
    @rule(job=jobs)
    @counted
    def preempt_trainer(self, job):
        """The trainer's machine is taken away mid-run (fault API "preempt"): the job fails, the live
        client errors; :resume, reconnect and resume must restore the last resumable state (F1, R1)."""
        self._live(job)
        self._server_fault({"operation": "forward_backward", "action": "preempt", "job": job.job_id})
        previous = (job.origin, job.steps)
        job.touched()
        try:
            job.handle.train_step(batch(job.job_id, job.data_consumed, 1))
        except Exception as exc:  # noqa: BLE001
            F1.require(isinstance(exc, FwError), f"training on a preempted trainer raised "
                                                 f"{type(exc).__name__}, not a clear error: {exc}")
        else:
            F1.fail(f"training step on job {job.job_id} succeeded although its trainer was preempted")
        finally:
            self.obs.http.request("DELETE", "/_emulator/v1/faults")
        self._drop_client(job, crash=True)
        expect_ok(F1, f"resuming preempted job {job.job_id}", self.driver.cp.resume_job, job.job_id)
        expect_ok(F1, f"waiting for preempted job {job.job_id} to run again", self.driver.cp.wait_until_running,
                  job.job_id, poll_interval_s=0.005, timeout_s=60)
        self._reconnect(job, previous)

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


def make_machine(config: MachineConfig, name: str = "ContractMachine") -> type[ContractMachine]:
    """A machine class bound to `config` (Hypothesis constructs machines with no arguments)."""
    return type(name, (ContractMachine,), {"config": config})
