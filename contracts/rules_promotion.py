"""Promotion rules: any row (K3), through the driver, promote_latest (R7), invalid and existing model
ids and concurrent promotes (K6); and the K5 checks of a promoted model's record and files."""

from __future__ import annotations

import threading
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from fwemu.client.checkpoints import NoPromotableCheckpointError
from fwemu.contracts import invariants as inv
from fwemu.contracts.drivers import CHECKPOINTS
from fwemu.contracts.invariants import K3, K5, K6, L3, R7, tally
from fwemu.contracts.model import JobModel, ModelRecord, RowModel
from fwemu.contracts.rulekit import BAD_MODEL_IDS, _read_files, counted, expect_ok, has_promotable, has_rows, jobs
from fwemu.contracts.targets import BLOBS


class PromotionRules:
    """Mixin of ContractMachine (contracts/machine.py)."""

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

    @precondition(lambda self: any(j.certain_rows() for j in self.world.jobs))
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

    @precondition(has_promotable)
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

    @precondition(lambda self: CHECKPOINTS in self.driver.caps and has_rows(self))
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

    @precondition(has_promotable)
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

    @precondition(lambda self: has_promotable(self) and self.world.models)
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

    @precondition(has_promotable)
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

