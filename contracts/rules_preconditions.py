"""K7: every precondition of promotion on every way a promotion can be asked for.

A promote can be asked for synchronously (`async_promotion` false: the answer holds the model) or as
a long-running operation (`async_promotion` true: the answer is an operation to poll); our client and
the SDK pick one of them. A server that enforces a check on one path and forgets it on the other
passes every rule that only ever uses one path, so this rule sends each broken precondition down
each path on its own, and a valid promote down each path too (it must succeed on both).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from fwemu.contracts import invariants as inv
from fwemu.contracts.invariants import K7
from fwemu.contracts.rulekit import counted, has_rows

PATHS = ("sync", "operation")
BROKEN = ("valid", "base_model", "kind", "missing_checkpoint", "model_id", "taken_id")
OTHER_BASE_MODEL = "accounts/fireworks/models/some-other-base-model"


class PreconditionRules:
    """Mixin of ContractMachine (contracts/machine.py)."""

    def _promote_on_path(self, job_id: str, checkpoint: str, model_id: str, base_model: str,
                         path: str) -> tuple[int, Any, dict | None]:
        """(status, body, model record or None) of one promote sent synchronously or as an operation."""
        body = {"output_model": f"accounts/{self.obs.account}/models/{model_id}",
                "trainer_job_id": f"accounts/{self.obs.account}/rlorTrainerJobs/{job_id}",
                "base_model": base_model, "async_promotion": path == "operation"}
        r = self.obs.http.request("POST", f"/v1/accounts/{self.obs.account}/checkpoints/{checkpoint}:promote",
                                  json=body, check=False)
        try:
            out = r.json()
        except ValueError:
            return r.status_code, r.text, None
        if r.status_code != 200 or not isinstance(out, dict):
            return r.status_code, out, None
        if path == "sync":
            return r.status_code, out, out.get("model") or None
        op = out.get("operation") or {}
        for _ in range(50):
            if op.get("done") or not op.get("name"):
                break
            op = self.obs.http.get_json(f"/v1/{op['name']}")
        model = {k: v for k, v in (op.get("response") or {}).items() if k != "@type"}
        return r.status_code, out, model or None

    def _precondition_case(self, broken: str, pick: int):
        """(job, checkpoint name, row or None, model id, base model) breaking exactly `broken`, or None."""
        rows = self._promote_candidates()
        want_promotable = broken != "kind"
        rows = [(j, r) for j, r in rows if r.promotable == want_promotable]
        if not rows or (broken == "taken_id" and not self.world.models):
            return None
        job, row = rows[pick % len(rows)]
        name, model_id, base = row.name, self.world.fresh("m"), self.target.base_model
        if broken == "base_model":
            base = OTHER_BASE_MODEL
        elif broken == "missing_checkpoint":
            name, row = f"{row.name}-never-saved", None
        elif broken == "model_id":
            model_id = "Not_A_Valid_Id"
        elif broken == "taken_id":
            model_id = sorted(self.world.models)[pick % len(self.world.models)]
        return job, name, row, model_id, base

    @precondition(has_rows)
    @rule(pick=st.integers(0, 100), broken=st.sampled_from(BROKEN), path=st.sampled_from(PATHS))
    @counted
    def promote_precondition(self, pick, broken, path):
        """One promote with exactly one precondition broken (or none), down one path (K7)."""
        case = self._precondition_case(broken, pick)
        if case is None:
            return
        job, name, row, model_id, base = case
        before = self._model_names()
        taken = self.obs.get_model(model_id) if broken == "taken_id" else None
        status, body, model = self._promote_on_path(job.job_id, name, model_id, base, path)
        where = f"{path} promote of {name} from job {job.job_id} to {model_id!r}"
        if broken == "valid":
            K7.require(status == 200 and model, f"{where}: every precondition holds, but it answered HTTP "
                                                f"{status} {str(body)[:300]}")
            self._accept_model(model_id, job, row, model)
            return
        why = {"base_model": f"base_model {base} is not the job's ({self.target.base_model})",
               "kind": f"the row is {row.kind if row else '?'}, not promotable",
               "missing_checkpoint": "no such checkpoint", "model_id": "the model id is invalid",
               "taken_id": "the model id is taken"}[broken]
        K7.require(status != 200, f"{where} was accepted although {why}: {str(body)[:300]}")
        K7.require(400 <= status < 500, f"{where} ({why}) answered HTTP {status}, not a 4xx")
        inv.check_error_envelope(K7, f"{where} ({why})", status, body)
        if broken == "missing_checkpoint":
            K7.require(status == 404, f"{where}: a checkpoint that does not exist answered {status}, not 404")
        after = self._model_names()
        K7.require(after == before, f"{where} was refused ({why}) but changed the models: "
                                    f"{sorted(after ^ before)}")
        if taken is not None:
            K7.require(self.obs.get_model(model_id) == taken, f"{where}: a refused promote changed {model_id}")
