"""Focused properties: short, targeted programs for one invariant group each.

The state machine explores everything at once; these make sure each rule is driven on purpose
in every run, however the random programs fall (a break of R2 needs train -> save -> train ->
interrupt, which a random program of 25 steps only sometimes contains). They reuse the machine's
rules and model, so a property and the machine can never disagree about what is expected.

Each `Property` names the invariants it targets; `run_contracts(only=...)` runs the ones that
target the requested ids.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hypothesis import example, given
from hypothesis import strategies as st

from fwemu.contracts.drivers import CHECKPOINTS, CRASH, FAULTS
from fwemu.contracts.faults import FAULT_KINDS
from fwemu.contracts.invariants import R6
from fwemu.contracts.machine import BAD_MODEL_IDS, ContractMachine, MachineConfig, make_machine
from fwemu.contracts.hot_load_chain import save_and_hotload_chain
from fwemu.contracts.property_recipe import _recipe
from fwemu.contracts.resharding import resharded_resume
from fwemu.contracts.rules_preconditions import BROKEN, PATHS
from fwemu.contracts.targets import CLOCK, FAULT_API, RANKS, RESTART, REWRITE


@dataclass(frozen=True)
class Property:
    name: str
    targets: tuple[str, ...]           # invariant ids it is built to falsify
    build: Callable                    # (PropertyContext) -> hypothesis test function, or None if n/a
    weight: float = 1.0                # share of the run's max_examples
    needs: tuple[str, ...] = ()        # target capabilities
    driver_caps: tuple[str, ...] = ()  # driver capabilities
    why_needed: str = ""
    examples: int | None = None        # a fixed number of generated examples (costly properties), else by weight


@dataclass
class PropertyContext:
    config: MachineConfig
    variant: Callable[..., MachineConfig | None]   # a config for a target variant (quirks), or None

    def machine(self, config: MachineConfig | None = None) -> ContractMachine:
        return make_machine(config or self.config)()


@contextlib.contextmanager
def machine_of(ctx: PropertyContext, config: MachineConfig | None = None):
    m = ctx.machine(config)
    try:
        yield m
    finally:
        m.teardown()


# ------------------------------------------------------------------------------ R1, R2
def _resume(ctx: PropertyContext):
    """train -> save -> ... -> train (progress the interruption loses) -> interrupt -> resume -> replay.
    With mixed timestamp precisions where the target can (the newest row must win by parsed time), and
    always one run past step 9 (the newest row must win by time, not by name)."""
    mixed = ctx.variant(quirks={"mixed-precision-timestamps"}) or ctx.config
    probe = ctx.machine(mixed)
    interrupts = ["crash"] if CRASH in probe.driver.caps else ["reconnect"]
    if probe.has(RESTART):
        interrupts.append("restart")
    if probe.has(FAULT_API) and FAULTS in probe.driver.caps:
        interrupts.append("preempt")
    if CHECKPOINTS in probe.driver.caps:
        interrupts.append("corrupt-dataloader")
    save_kinds = ["checkpoints", "save_state"] if CHECKPOINTS in probe.driver.caps else ["save_state"]
    probe.teardown()

    @given(lora=st.booleans(),
           saves=st.lists(st.tuples(st.integers(1, 2), st.sampled_from(save_kinds)), min_size=1, max_size=3),
           lost=st.integers(1, 2), interrupt=st.sampled_from(interrupts))
    @example(lora=False, saves=[(1, save_kinds[0]), (2, save_kinds[-1])], lost=2, interrupt=interrupts[0])
    @example(lora=True, saves=[(2, save_kinds[0])], lost=1, interrupt=interrupts[-1])
    # step-10 after step-9: the newest by time is not the greatest name ("step-9" > "step-10")
    @example(lora=False, saves=[(9, save_kinds[0]), (1, save_kinds[0])], lost=1, interrupt=interrupts[0])
    def resume_restores_and_replays(lora, saves, lost, interrupt):
        with machine_of(ctx, mixed) as m:
            job = m._new_job(lora)
            for steps, how in saves:
                m.train(job, steps, 1)
                if how == "checkpoints":
                    m.save(job, True, False)
                else:
                    m.save_state(job)
                m.check_server_state()
            m.train(job, lost, 1)
            if interrupt == "crash":
                m.crash_and_resume(job, 1)
            elif interrupt == "reconnect":
                m.reconnect_and_load(job, 1)
            elif interrupt == "restart":
                m.restart_emulator()
                m.train(job, 1, 1)   # the next use reconnects, resumes and replays
            elif interrupt == "preempt":
                m.preempt_trainer(job)
            else:
                m.corrupt_dataloader_json(job)
            m.check_server_state()
    return resume_restores_and_replays


# ------------------------------------------------------------------------------ R4
def _cross_job(ctx: PropertyContext):
    """A new job initialised from another job's checkpoint: those weights, step 0, data_consumed 0;
    refused together with an adapter warm start; an interrupted init run without checkpoints of
    its own initialises again, one with its own checkpoints continues from them."""
    @given(lora=st.booleans(), before=st.integers(1, 3), pick=st.integers(0, 3), after=st.integers(0, 2),
           own_save=st.booleans())
    @example(lora=False, before=2, pick=1, after=1, own_save=False)
    @example(lora=True, before=1, pick=0, after=2, own_save=True)
    def init_from_checkpoint_starts_at_zero(lora, before, pick, after, own_save):
        with machine_of(ctx) as m:
            src = m._new_job(lora)
            for _ in range(before):
                m.train(src, 1, 1)
                m.save_state(src)
            job = m.init_from_other_job(src, pick)
            m.check_server_state()
            if after:
                m.train(job, after, 1)
            if own_save:
                m.save(job, True, False)
            m.crash_and_resume(job, 1)
            m.check_server_state()
    return init_from_checkpoint_starts_at_zero


# ------------------------------------------------------------------------------ K1, K2, K4
def _chain(ctx: PropertyContext):
    """Sampler saves of every checkpoint_type (and none: the chain decides), with training between."""
    canonical = [(None, False), (None, True), ("delta", True), ("merged_base", False), ("base", False)]

    @given(lora=st.booleans(),
           saves=st.lists(st.tuples(st.sampled_from([None, "base", "delta", "merged_base"]), st.booleans()),
                          min_size=1, max_size=5))
    @example(lora=False, saves=canonical)
    @example(lora=True, saves=canonical)
    def sampler_kinds_follow_the_chain(lora, saves):
        with machine_of(ctx) as m:
            job = m._new_job(lora)
            for checkpoint_type, train_first in saves:
                if train_first:
                    m.train(job, 1, 1)
                m.sampler_save(job, checkpoint_type)
                m.check_server_state()
    return sampler_kinds_follow_the_chain


# ------------------------------------------------------------------------------ K3, K5, K6
def _promotion(ctx: PropertyContext):
    """Every kind of row is promoted: promotable ones make READY models, the others are refused with
    the kind named; invalid and taken ids are refused; concurrent promotes to one id: one winner."""
    @given(lora=st.booleans(), bad_id=st.sampled_from(BAD_MODEL_IDS), racers=st.integers(2, 4),
           with_checkpoints=st.booleans())
    @example(lora=False, bad_id="trailing-newline\n", racers=3, with_checkpoints=True)
    @example(lora=True, bad_id="UPPER", racers=2, with_checkpoints=False)
    def promotion_accepts_exactly_promotable(lora, bad_id, racers, with_checkpoints):
        with machine_of(ctx) as m:
            job = m._new_job(lora)
            m.train(job, 1, 1)
            if with_checkpoints and CHECKPOINTS in m.driver.caps:
                m.save(job, True, True)
            else:
                m.save_state(job)
                m.sampler_save(job, "base")
            m.train(job, 1, 1)
            m.sampler_save(job, "delta")
            m.check_server_state()
            for i in range(len(job.certain_rows())):
                m.promote_any_row(i)
            m.promote_with_driver(0)
            m.promote_to_invalid_id(0, bad_id)
            m.promote_to_existing_id(0, 0)
            m.promote_race(0, racers)
            for path in PATHS:                 # every precondition down every promote path (K7)
                for broken in BROKEN:
                    m.promote_precondition(0, broken, path)
            if CHECKPOINTS in m.driver.caps:
                m.promote_latest(job)
                empty = m._new_job(lora)
                m.promote_latest(empty)   # nothing promotable: a clear refusal (R7)
            m.check_server_state()
            if not loaded_once:
                loaded_once.append(m.check_models_load_in_transformers())
    loaded_once: list[bool] = []   # transformers is slow to import: load one promoted model per run
    return promotion_accepts_exactly_promotable


# ------------------------------------------------------------------------------ L1, L2
def _listing(ctx: PropertyContext):
    """Many rows; every page size returns each row once, oldest first; a restart loses none."""
    mixed = ctx.variant(quirks={"mixed-precision-timestamps"}) or ctx.config

    @given(lora=st.booleans(), kinds=st.lists(st.sampled_from(["state", "base", "delta"]), min_size=2, max_size=7),
           page_sizes=st.lists(st.integers(1, 4), min_size=1, max_size=3), restart=st.booleans())
    @example(lora=False, kinds=["state", "base", "delta", "state", "base"], page_sizes=[1, 2, 3], restart=True)
    def listing_is_ordered_paged_and_durable(lora, kinds, page_sizes, restart):
        with machine_of(ctx, mixed) as m:
            job = m._new_job(lora)
            for kind in kinds:
                m.train(job, 1, 1)
                if kind == "state":
                    m.save_state(job)
                else:
                    m.sampler_save(job, kind)
            m.check_server_state()
            for size in page_sizes:
                m.check_pagination(job, size)
            if restart and m.has(RESTART):
                m.restart_emulator()
                m.check_server_state()
                for size in page_sizes:
                    m.check_pagination(job, size)
    return listing_is_ordered_paged_and_durable


# ------------------------------------------------------------------------------ L3
def _retention(ctx: PropertyContext):
    @given(lora=st.booleans(), restart=st.booleans(),
           shares=st.lists(st.sampled_from([0.3, 0.6, 0.99]), min_size=1, max_size=2))
    @example(lora=False, restart=True, shares=[0.3, 0.99])
    @example(lora=True, restart=False, shares=[0.6])
    def deleted_jobs_keep_rows_for_the_window(lora, restart, shares):
        with machine_of(ctx) as m:
            job = m._new_job(lora)
            m.train(job, 1, 1)
            m.save_state(job)
            m.sampler_save(job, "base")
            m.check_server_state()
            m.delete_job(job)
            m.check_server_state()
            if restart and m.has(RESTART):
                m.restart_emulator()
                m.check_server_state()
            for i in range(len(job.certain_rows())):
                m.promote_any_row(i)      # promotable rows still promote; the others are still refused
            if m.has(CLOCK):
                for share in shares:      # part-way into the window, then just before its end (L5)
                    m.advance_inside_retention(share)
                    m.check_server_state()
                m.expire_deleted_jobs()
                m.check_server_state()    # NOT_FOUND now
                m.promote_any_row(0)
    return deleted_jobs_keep_rows_for_the_window


# ------------------------------------------------------------------------------ K1 (bytes)
def _writer_lies(ctx: PropertyContext):
    """Rows whose bytes are replaced by another kind's: the listing follows the bytes."""
    @given(pick=st.integers(0, 20), donor=st.integers(0, 20), promote=st.booleans(),
           changes=st.lists(st.sampled_from(["garbage", "other-kind"]), max_size=2))
    @example(pick=0, donor=0, promote=True, changes=["garbage", "other-kind"])
    @example(pick=1, donor=3, promote=False, changes=["other-kind", "garbage"])
    def listing_follows_the_bytes(pick, donor, promote, changes):
        with machine_of(ctx) as m:
            full, lora = m._new_job(False), m._new_job(True)
            for job in (full, lora):
                m.train(job, 1, 1)
                m.sampler_save(job, "base")
                m.sampler_save(job, "delta")
            m.check_server_state()
            # Garbage first: a listing that trusts the writer's label still drops it (K1 is left to
            # the rewrite below), one that never judges again keeps it (K8).
            for to in sorted(changes, key=lambda c: c != "garbage"):
                if to == "other-kind":
                    m.rewrite_row_bytes(pick, donor)
                    m.check_server_state()
                m.change_listed_bytes(pick, to)   # bytes change after the row was listed (K8)
                m.check_server_state()
            if not changes:
                m.rewrite_row_bytes(pick, donor)
                m.check_server_state()
            if promote:
                for i in range(6):
                    m.promote_any_row(i)
    return listing_follows_the_bytes


# ------------------------------------------------------------------------------ R8
def _attempts(ctx: PropertyContext):
    """Two attempts of one step with different weights (step-2, then step-2-1 after going back to
    step-1 and training step 2 on a different batch): a load by name gets exactly the one named."""
    @given(lora=st.booleans(), size=st.integers(2, 3), first=st.sampled_from(["save", "state"]))
    @example(lora=False, size=2, first="save")
    @example(lora=True, size=3, first="state")
    def a_load_gets_the_attempt_named(lora, size, first):
        with machine_of(ctx) as m:
            job = m._new_job(lora)
            m.train(job, 1, 1)
            m.save(job, True, False)          # step-1
            m.train(job, 1, 1)
            if first == "save":
                m.save(job, True, False)      # step-2 (weights A)
            else:
                m.save_state(job)
            m.check_server_state()
            # back to step-1, step 2 again on `size` examples: step-2-1 (weights B); then each attempt
            # of step 2 is loaded by name (retry_step does that)
            m.retry_step(job, 0, size)
            m.check_server_state()
    return a_load_gets_the_attempt_named


# ------------------------------------------------------------------------------ F1
def _faults(ctx: PropertyContext):
    ops = sorted(ContractMachine._FAULT_OPS)

    @given(op=st.sampled_from(ops), kind=st.sampled_from(FAULT_KINDS), which=st.integers(0, 3),
           server=st.sampled_from([None, "save_weights", "save_weights_for_sampler", "forward_backward",
                                   "optim_step", "list_checkpoints"]), lora=st.booleans())
    @example(op="save", kind="drop_after", which=1, server="save_weights", lora=False)
    @example(op="train", kind="drop_after", which=1, server="optim_step", lora=True)
    @example(op="promote_latest", kind="http503", which=1, server=None, lora=False)
    def faults_leave_valid_state(op, kind, which, server, lora):
        with machine_of(ctx) as m:
            job = m._new_job(lora)
            m.train(job, 1, 1)
            m.save(job, True, True)
            m.check_server_state()
            m.wire_fault(job, op, kind, which)
            m.check_server_state()
            if server is not None and m.has(FAULT_API):
                m.server_fault_after_work(job, server)
                m.check_server_state()
            m.train(job, 1, 1)
            m.check_server_state()
    return faults_leave_valid_state


# ------------------------------------------------------------------------------ R6
def _dataloader(ctx: PropertyContext):
    """dataloader.json is keyed by the *listed* name, also when the trainer renames DCP saves
    (quirk rename-dcp-saves: "caller passes step-42, service stores as step-0"); resume then still
    restores data_consumed; the file keeps the newest 20 entries."""
    renamed = ctx.variant(quirks={"rename-dcp-saves"})

    @given(saves=st.integers(1, 3), offset=st.integers(1, 50), many=st.booleans())
    @example(saves=2, offset=40, many=False)
    def dataloader_json_follows_listed_names(saves, offset, many):
        from fwemu.client.checkpoints import TrainingCheckpoints

        with machine_of(ctx, renamed or ctx.config) as m:
            job = m._new_job(True)
            ck = TrainingCheckpoints(job.handle.model, m.driver.cp, job.job_id, job.log_path, job.lora_rank,
                                     appear_timeout_s=0.0, poll_s=0.0)
            count = 21 if many else saves
            last = None
            for _ in range(count):
                m.train(job, 1, 1)
                asked = f"step-{job.step + offset}"     # the caller's own numbering
                result = ck.save(asked, True, False, job.data_consumed, step=job.step)
                rows = {r.short_name: r for r in m.driver.cp.list_checkpoints(job.job_id)}
                R6.require(result.dcp_name in rows and rows[result.dcp_name].resumable,
                           f"save({asked}) reported {result.dcp_name}, which is not a listed resumable row "
                           f"(listed: {sorted(rows)})")
                entries = json.loads((Path(job.log_path) / "dataloader.json").read_text())
                R6.require(entries.get(result.dcp_name, {}).get("data_consumed") == job.data_consumed,
                           f"dataloader.json is not keyed by the listed name {result.dcp_name}: {sorted(entries)}")
                R6.require(len(entries) <= 20, f"dataloader.json holds {len(entries)} entries; the cap is 20")
                last = (result.dcp_name, job.step, job.data_consumed)
            entries = json.loads((Path(job.log_path) / "dataloader.json").read_text())
            if many:
                R6.require(len(entries) == 20, f"after {count} saves dataloader.json holds {len(entries)} "
                                               "entries; it keeps exactly the newest 20")
            m._drop_client(job, crash=True)
            job.handle = m.driver.connect(job.job_id, job.lora_rank)
            info = TrainingCheckpoints(job.handle.model, m.driver.cp, job.job_id, job.log_path, job.lora_rank,
                                       appear_timeout_s=0.0, poll_s=0.0).resume()
            name, step, dc = last
            R6.require(info is not None and info.checkpoint_name == name and info.step == step
                       and info.data_consumed == dc and info.data_consumed_restored,
                       f"resume after renamed saves gave {info}; expected {name} at step {step} with "
                       f"data_consumed {dc} restored from dataloader.json")
            job.handle.close()
            job.handle = None
    return dataloader_json_follows_listed_names


# ------------------------------------------------------------------------------ L4
def _replace(ctx: PropertyContext):
    """Save again under a taken name: a DCP save at the same step (the cookbook's final save) and a
    sampler save under an earlier sampler name, after that row was listed and promoted. The row is
    listed once, newer, of the kind its new bytes have; the promoted model keeps its files."""
    @given(lora=st.booleans(), checkpoint_type=st.sampled_from([None, "base", "delta"]), train_between=st.booleans())
    @example(lora=False, checkpoint_type="delta", train_between=True)
    @example(lora=True, checkpoint_type=None, train_between=True)
    def a_taken_name_is_replaced(lora, checkpoint_type, train_between):
        with machine_of(ctx) as m:
            job = m._new_job(lora)
            m.train(job, 1, 1)
            m.save_state(job)
            m.sampler_save(job, "base")
            m.check_server_state()                     # both rows listed: their createTimes are known
            sampler = next(r for r in job.certain_rows() if r.base_name)
            status, body = m.obs.promote(job.job_id, sampler.name, m.world.fresh("m"), m.target.base_model)
            if status == 200:
                m._accept_model(body["model"]["name"].rsplit("/", 1)[-1], job, sampler, body.get("model") or {})
            m.save_state(job)                          # same step, same name: replaced
            if train_between:
                m.train(job, 1, 1)
            m.sampler_resave(job, 0, checkpoint_type)
            m.check_server_state()
    return a_taken_name_is_replaced


PROPERTIES: list[Property] = [
    Property("resume", ("R1", "R2"), _resume, weight=1.5),
    Property("cross-job-init", ("R4",), _cross_job, weight=0.5, driver_caps=(CHECKPOINTS,),
             why_needed="init_from_checkpoint is TrainingCheckpoints' (our client)"),
    Property("chain", ("K1", "K2", "K4"), _chain),
    Property("promotion", ("K3", "K5", "K6", "K7", "R7"), _promotion),
    Property("listing", ("L1", "L2"), _listing),
    Property("replace", ("L4",), _replace, weight=0.5),
    Property("retention", ("L3", "L5"), _retention),
    Property("writer-lies", ("K1", "K8"), _writer_lies, needs=(REWRITE,),
             why_needed="needs write access to the blob store"),
    Property("attempts", ("R8",), _attempts, weight=0.2, driver_caps=(CHECKPOINTS,),
             why_needed="saves under a free name are TrainingCheckpoints' (our client)"),
    Property("faults", ("F1",), _faults, driver_caps=(FAULTS, CHECKPOINTS),
             why_needed="needs our client (its transport takes the faults)"),
    Property("dataloader", ("R6",), _dataloader, weight=0.5, driver_caps=(CHECKPOINTS,),
             why_needed="TrainingCheckpoints is our client's"),
    Property("recipe", ("R2", "R3", "R5"), _recipe, weight=0.3, driver_caps=(CHECKPOINTS,),
             why_needed="the sft_loop recipe runs on our client"),
    Property("save-and-hotload", ("K9", "K4"), save_and_hotload_chain, examples=1),
    Property("resharded-resume", ("R9",), resharded_resume, examples=1, needs=(RANKS,),
             why_needed="needs a target it can restart at another trainer rank count (the in-process emulator)"),
]
