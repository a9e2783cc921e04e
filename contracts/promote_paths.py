"""K7: every promotion precondition, on every way a promotion can be asked for.

The promote handler has one list of checks (emulator/controlplane/promotion.py: output model id,
job, checkpoint, base model, promotable kind, free id) but several ways in: the long-running
operation (`async_promotion: true`, what the SDK and our client send), the synchronous answer
(`async_promotion: false`, or the field left out, which is what our client falls back to), the
camelCase spelling, an output model named by its bare id or its full name, and the client under
test. A check that one way skips is a real bug that a suite promoting one way never sees, so
`promote_every_path` asks each refusal on each way, and one good promotion on each way, in one
step: whenever it runs, the whole matrix runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from fwemu.contracts import invariants as inv
from fwemu.contracts.invariants import K7, InvariantViolation
from fwemu.contracts.steps import counted


@dataclass(frozen=True)
class PromotePath:
    """One way to ask for a promotion: the raw body's extra fields and how the output model is named;
    `client` promotes through the driver (the client under test) instead of raw HTTP."""

    name: str
    extra: dict | None = None
    full_model_name: bool = True
    client: bool = False


PATHS = (
    PromotePath("long-running operation (async_promotion: true)", {"async_promotion": True}),
    PromotePath("synchronous (async_promotion: false)", {"async_promotion": False}),
    PromotePath("synchronous (async_promotion left out), output model as a bare id", {}, full_model_name=False),
    PromotePath("long-running operation (asyncPromotion: true), output model as a bare id",
                {"asyncPromotion": True}, full_model_name=False),
    PromotePath("the client under test", client=True),
)

# The preconditions, in the handler's order; each names what a request breaks to be refused.
PRECONDITIONS = ("valid output model id", "free output model id", "the job exists", "the checkpoint exists",
                 "base model equals the job's", "promotable row")
WRONG_BASE_MODEL = "accounts/fireworks/models/not-the-jobs-base-model"


class PromotePathRules:
    """Mixin for ContractMachine: the K7 matrix."""

    def _promote_on_path(self, path: PromotePath, job_id: str, checkpoint: str, model_id: str,
                         base_model: str) -> tuple[bool, int, Any]:
        """(accepted, HTTP status or 0, body or the client's error) for one promotion on `path`."""
        if path.client:
            full = f"accounts/{self.obs.account}/rlorTrainerJobs/{job_id}/checkpoints/{checkpoint}"
            try:
                return True, 200, {"model": self.driver.promote(full, model_id, base_model)}
            except InvariantViolation:
                raise
            except Exception as exc:  # noqa: BLE001 - a refusal, judged by the caller
                return False, getattr(exc, "status", 0) or 0, exc
        status, body = self.obs.promote(job_id, checkpoint, model_id, base_model, extra=path.extra,
                                        full_model_name=path.full_model_name)
        accepted = status == 200 and isinstance(body, dict) and bool(body.get("model")) and not body.get("error")
        return accepted, status, body

    def _require_refused(self, path: PromotePath, what: str, broken: str, model_id: str,
                         outcome: tuple[bool, int, Any], *, existing: dict | None = None) -> None:
        accepted, status, body = outcome
        where = f"{what} on the {path.name} path"
        K7.require(not accepted, f"{where} was accepted (HTTP {status}); the precondition '{broken}' is "
                                 f"skipped on this path: {str(body)[:200]}")
        if not path.client:
            if isinstance(body, dict) and "operation" in body:   # refused inside the operation: still an error
                K7.require(isinstance(body.get("error"), dict) and body["error"].get("message"),
                           f"{where}: the operation failed without an error message: {str(body)[:200]}")
            else:
                inv.check_error_envelope(K7, where, status, body)
        if existing is None:
            got, _ = self.obs.get_model(model_id)
            K7.require(got == 404, f"{where} was refused ('{broken}') but model {model_id} exists (GET: {got})")
        else:
            got, now = self.obs.get_model(model_id)
            K7.require(got == 200 and now == existing, f"{where} was refused ('{broken}') but changed the existing "
                                                       f"model {model_id}: {str(now)[:200]}")

    @precondition(lambda self: any(r.promotable for _, r in self._promote_candidates()))
    @rule(pick=st.integers(0, 100), other=st.integers(0, 100))
    @counted
    def promote_every_path(self, pick, other):
        """K7: each precondition refused, and one good promotion accepted, on every promotion path."""
        good = [(j, r) for j, r in self._promote_candidates() if r.promotable]
        job, row = good[pick % len(good)]
        bad = [(j, r) for j, r in self._promote_candidates() if not r.promotable]
        base = self.target.base_model
        for path in PATHS:
            if path.client and not hasattr(self.driver, "promote"):
                continue
            model_id = self.world.fresh("m")
            if not path.client:   # the client refuses an invalid id itself, before any request
                self._require_refused(path, f"promote of {row.name} to model id 'Not_Valid'",
                                      PRECONDITIONS[0], "not-valid",
                                      self._promote_on_path(path, job.job_id, row.name, "Not_Valid", base))
            if self.world.models:
                taken = sorted(self.world.models)[other % len(self.world.models)]
                status, existing = self.obs.get_model(taken)
                self._require_refused(path, f"promote of {row.name} onto existing model {taken}", PRECONDITIONS[1],
                                      taken, self._promote_on_path(path, job.job_id, row.name, taken, base),
                                      existing=existing if status == 200 else None)
            self._require_refused(path, f"promote of {row.name} in a job that does not exist", PRECONDITIONS[2],
                                  model_id, self._promote_on_path(path, f"ct-nojob-{self.world.tag}", row.name,
                                                                  model_id, base))
            self._require_refused(path, f"promote of a checkpoint job {job.job_id} does not have", PRECONDITIONS[3],
                                  model_id, self._promote_on_path(path, job.job_id, f"no-such-{self.world.tag}",
                                                                  model_id, base))
            self._require_refused(path, f"promote of {row.name} ({row.kind}) with base model {WRONG_BASE_MODEL} "
                                        f"(the job's is {base})", PRECONDITIONS[4], model_id,
                                  self._promote_on_path(path, job.job_id, row.name, model_id, WRONG_BASE_MODEL))
            if bad:
                bjob, brow = bad[(pick + other) % len(bad)]
                outcome = self._promote_on_path(path, bjob.job_id, brow.name, model_id, base)
                self._require_refused(path, f"promote of {brow.name} ({brow.kind}, not promotable)",
                                      PRECONDITIONS[5], model_id, outcome)
                if not path.client:
                    K7.require(inv.mentions_kind(str((outcome[2].get("error") or {}).get("message", "")), brow.kind),
                               f"promote of {brow.name} on the {path.name} path was refused without naming its "
                               f"kind {brow.kind}: {str(outcome[2])[:200]}")
            accepted, status, body = self._promote_on_path(path, job.job_id, row.name, model_id, base)
            K7.require(accepted, f"promote of {row.name} ({row.kind}, promotable, right base model, free id) on "
                                 f"the {path.name} path was refused: HTTP {status} {str(body)[:300]}")
            self._accept_model(model_id, job, row, dict(body["model"]))
