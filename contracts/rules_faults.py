"""Fault rules (F1): a fault on one wire call, the server failing after doing the work, a preempted
trainer. The client must retry to success or fail clearly; the server state stays valid."""

from __future__ import annotations

from typing import Any, Callable

from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from fwemu.client.checkpoints import NoPromotableCheckpointError
from fwemu.client.errors import FwError
from fwemu.contracts.data import batch
from fwemu.contracts.drivers import FAULTS
from fwemu.contracts.faults import FAULT_KINDS
from fwemu.contracts.invariants import F1, R7, InvariantViolation, tally
from fwemu.contracts.model import JobModel, RowModel, dcp_kind, sampler_kind
from fwemu.contracts.rulekit import counted, expect_ok, has_rows, jobs
from fwemu.contracts.targets import FAULT_API


class FaultRules:
    """Mixin of ContractMachine (contracts/machine.py)."""

    # ------------------------------------------------------------------ faults (F1)
    _FAULT_OPS = {
        "train": [r"/forward_backward$", r"/optim_step$", r"/retrieve_future$"],
        "save": [r"/checkpoints$", r"/save_weights$", r"/save_weights_for_sampler$", r"/retrieve_future$"],
        "promote_latest": [r"/checkpoints$", r":promote$"],
        "list": [r"/checkpoints$"],
    }

    @precondition(lambda self: FAULTS in self.driver.caps and has_rows(self))
    @rule(job=jobs, op=st.sampled_from(sorted(_FAULT_OPS)), kind=st.sampled_from(FAULT_KINDS),
          which=st.integers(0, 3))
    @counted
    def wire_fault(self, job, op, kind, which):
        """One call of the op fails on the wire (503, delay, dropped before sending, or dropped after the
        server answered). A retrying client must still succeed when the server never saw the call; in
        every case the server state stays valid (the invariants run next) and errors are clear (F1)."""
        job = self._busy(job)
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

    @precondition(lambda self: self.has(FAULT_API) and self.config.fault_api and FAULTS in self.driver.caps
                  and has_rows(self))
    @rule(job=jobs)
    @counted
    def preempt_trainer(self, job):
        """The trainer's machine is taken away mid-run (fault API "preempt"): the job fails, the live
        client errors; :resume, reconnect and resume must restore the last resumable state (F1, R1)."""
        job = self._busy(job, lambda r: r.resumable)
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

