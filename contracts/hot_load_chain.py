"""K9 save-and-hotload: the seed's two WeightSyncer rows, plus what a hot load must then serve.

`WeightSyncer.save_and_hotload()` saves a sampler checkpoint and hot-loads it onto the deployment
that samples for the run: for a full-parameter run the first save is a full `base` snapshot and
every later one an ARC_V2 `delta` chained on the snapshot the deployment serves; for LoRA every
save is an adapter. The seed's rules: the first save is promotable for LoRA and full runs, later
saves are promotable for LoRA only. An RL loop samples from that deployment after every load, so
a load that reports success but serves other weights (a delta applied to the wrong base, an
adapter not applied) silently trains on the wrong policy's samples.

The property does what the SDK does, over the same wire (docs/deployments.md): the driver under
test trains and saves (`checkpoint_type` base/delta for full runs, none for LoRA, as the SDK's
syncer sends), the harness creates the deployment attached to the job and posts each hot load
with the SDK's headers and incremental metadata. After each load: the row is promotable iff it
is the first save or the run is LoRA (read from the listing), the deployment's status names the
snapshot as current with stage done, and the prompt logprobs the deployment returns for the
probe sequence equal the trainer's forward logprobs for it (same stand-in, same weights: they
are equal to rounding; `ATOL` allows for a different kernel order). A delta whose metadata names
a snapshot the deployment does not serve must be a failed load that keeps serving the previous
weights.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from fwemu.contracts import invariants as inv
from fwemu.contracts.data import PROBE

ATOL = 1e-5
PROBE_TOKENS = [*PROBE["model_input"]["chunks"][0]["tokens"], PROBE["loss_fn_inputs"]["target_tokens"]["data"][-1]]


class Deployment:
    """One deployment of the observer's account, driven over raw HTTP exactly as the SDK's
    DeploymentManager, WeightSyncer and DeploymentSampler send it (no client of ours involved)."""

    def __init__(self, obs, deployment_id: str, job_id: str, base_model: str):
        self.obs, self.base_model = obs, base_model
        self.name = f"accounts/{obs.account}/deployments/{deployment_id}"
        body = {"baseModel": base_model, "enableHotLoad": True,
                "hotLoadTrainerJob": f"accounts/{obs.account}/rlorTrainerJobs/{job_id}"}
        r = obs.http.request("POST", f"/v1/accounts/{obs.account}/deployments", json=body, check=False,
                             params={"deploymentId": deployment_id, "acceptShapelessRisk": "true"})
        inv.K9.require(r.status_code == 200, f"creating deployment {deployment_id} for job {job_id} answered "
                                             f"{r.status_code}: {r.text[:300]}")

    def _headers(self) -> dict[str, str]:
        return {"fireworks-deployment": self.name, "fireworks-model": self.base_model}

    def hot_load(self, identity: str, previous: str | None) -> None:
        body: dict = {"identity": identity, "reset_prompt_cache": True}
        if previous is not None:
            body["incremental_snapshot_metadata"] = {"previous_snapshot_identity": previous,
                                                     "compression_format": "arc_v2", "checksum_format": "alder32"}
        r = self.obs.http.request("POST", "/hot_load/v1/models/hot_load", json=body, headers=self._headers(),
                                  check=False)
        inv.K9.require(r.status_code == 200, f"hot load of {identity} answered HTTP {r.status_code} (a refused "
                                             f"load must be a failed load, not an HTTP error): {r.text[:300]}")

    def replica(self) -> dict:
        r = self.obs.http.request("GET", "/hot_load/v1/models/hot_load", headers=self._headers(), check=False)
        inv.K9.require(r.status_code == 200 and (r.json().get("replicas") or []),
                       f"hot-load status of {self.name} answered {r.status_code}: {r.text[:300]}")
        return r.json()["replicas"][0]

    def probe_logprobs(self) -> tuple:
        """The served model's logprobs of the probe's tokens 1.. given the tokens before (echo)."""
        body = {"model": self.name, "prompt": PROBE_TOKENS, "max_tokens": 1, "temperature": 0.0,
                "logprobs": True, "echo": True}
        r = self.obs.http.request("POST", "/inference/v1/completions", json=body, check=False)
        inv.K9.require(r.status_code == 200, f"completion on {self.name} answered {r.status_code}: {r.text[:300]}")
        rows = r.json()["choices"][0]["logprobs"]["content"]
        return tuple(float(row["logprob"]) for row in rows[1:len(PROBE_TOKENS)])


def _close(a: tuple, b: tuple) -> float | None:
    """The largest difference, or None when they agree within ATOL."""
    if len(a) != len(b):
        return float("inf")
    worst = max((abs(x - y) for x, y in zip(a, b)), default=0.0)
    return worst if worst > ATOL else None


def check_served(dep: Deployment, identity: str, trainer_probe: tuple, what: str) -> None:
    replica = dep.replica()
    state = replica.get("loading_state") or {}
    inv.K9.require(replica.get("current_snapshot_identity") == identity and state.get("stage") == "done",
                   f"{what}: the deployment reports current snapshot {replica.get('current_snapshot_identity')!r}, "
                   f"stage {state.get('stage')!r} ({state.get('reason') or state.get('error') or ''}), "
                   f"expected {identity!r} loaded")
    worst = _close(dep.probe_logprobs(), trainer_probe)
    if worst is not None:
        inv.K9.fail(f"{what}: the deployment reports {identity} loaded, but its logprobs on the probe sequence "
                    f"differ from the trainer's forward logprobs for those weights by {worst:.3g}; it is not "
                    "serving the saved weights")
    inv.K9.held()


def check_promotable(listed: dict, name: str, first: bool, lora: bool, what: str) -> None:
    row = listed.get(name)
    inv.K9.require(row is not None, f"{what}: the saved snapshot {name} is not listed")
    want = first or lora
    inv.K9.require(row.promotable is want,
                   f"{what}: listed promotable={row.promotable!r} ({row.kind}); save_and_hotload's "
                   f"{'first' if first else 'later'} save of a {'LoRA' if lora else 'full-parameter'} run must be "
                   f"{'promotable' if want else 'not promotable'}")


def save_and_hotload_chain(ctx):
    """The property: a chain of save + hot load on one job (full or LoRA), and a mismatched delta."""
    from fwemu.contracts.properties import machine_of

    @given(lora=st.booleans(), saves=st.integers(2, 3), wrong_previous=st.booleans())
    @example(lora=False, saves=3, wrong_previous=True)   # every run: a full chain of two deltas, a stray delta
    @example(lora=True, saves=2, wrong_previous=False)   # and a LoRA chain
    def hot_loads_serve_what_was_saved(lora, saves, wrong_previous):
        with machine_of(ctx) as m:
            job = m._new_job(lora)
            dep = Deployment(m.obs, m.world.fresh("dep"), job.job_id, m.target.base_model)
            current = None
            for i in range(saves):
                m.train(job, 1, 1)
                m.sampler_save(job, None if lora else ("base" if i == 0 else "delta"))
                name = job.certain_rows()[-1].name
                what = f"save_and_hotload #{i + 1} of job {job.job_id} ({'LoRA' if lora else 'full'})"
                if m.target.listing_may_lag:
                    m._settle(job)        # as save_and_hotload's user would: the row shows up late
                m.check_server_state()
                status, pages = m.obs.list_all(job.job_id)
                check_promotable({r.name: r for page in pages for r in page}, name, i == 0, lora, what)
                dep.hot_load(name, None if (lora or i == 0) else current)
                check_served(dep, name, job.handle.probe(), what)
                current = name
            if wrong_previous and not lora:
                m.train(job, 1, 1)
                m.sampler_save(job, "delta")
                stray = job.certain_rows()[-1].name
                served = dep.probe_logprobs()
                dep.hot_load(stray, previous=f"{current}-not-served")
                state = dep.replica()
                inv.K9.require(state.get("current_snapshot_identity") == current
                               and (state.get("loading_state") or {}).get("stage") == "error",
                               f"a delta of job {job.job_id} whose metadata names a snapshot the deployment does "
                               f"not serve must fail to load and keep {current}; status: {state}")
                inv.K9.require(_close(dep.probe_logprobs(), served) is None,
                               f"a refused delta ({stray}) changed what the deployment serves")
    return hot_loads_serve_what_was_saved
