"""A save under a name the job already has replaces that checkpoint (the SDK logs "overwriting").

Through the real gateway routes: new bytes, new createTime and updateTime, kind judged again from
the new bytes, one row per name; a model promoted from the old bytes keeps them; a load reads the
new save. The store-level guarantees (atomic swap, crash, concurrent writers, listings during a
replace) are in tests/reliability/test_replace_atomic.py.
"""

from __future__ import annotations

from fwemu.emulator.store.store import Store
from tests.gateway.helpers import ACCOUNT, BASE


def files(path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def store_of(gw) -> Store:
    return gw.app.state.services.store


def promote(gw, job: str, name: str, model_id: str):
    return gw.http.post(f"/v1/accounts/{ACCOUNT}/checkpoints/{name}:promote", headers=gw.headers(),
                        json={"output_model": f"accounts/{ACCOUNT}/models/{model_id}", "base_model": BASE,
                              "trainer_job_id": f"accounts/{ACCOUNT}/rlorTrainerJobs/{job}"})


def row(gw, job: str, name: str) -> dict:
    (found,) = [r for r in gw.rows(job) if r["name"].endswith(f"/checkpoints/{name}")]
    return found


def test_save_state_under_a_taken_name_replaces_it(gw):
    job = gw.create_job("replace-dcp")
    model = gw.model(job)
    gw.step(job, model)
    assert gw.save_state(job, model, "step-1")["path"] == "step-1"
    store = store_of(gw)
    first_row, first_bytes = row(gw, job, "step-1"), files(store.checkpoint_dir(ACCOUNT, job, "step-1"))
    gw.step(job, model)
    assert gw.save_state(job, model, "step-1")["path"] == "step-1"       # the cookbook's final save does this
    second = row(gw, job, "step-1")
    assert [r["name"].rsplit("/", 1)[-1] for r in gw.rows(job)] == ["step-1"]
    assert second["createTime"] > first_row["createTime"] and second["updateTime"] > first_row["updateTime"]
    assert second["checkpointType"] == "CHECKPOINT_TYPE_TRAINING"
    now = files(store.checkpoint_dir(ACCOUNT, job, "step-1"))
    assert set(now) == set(first_bytes) and now != first_bytes           # the trained weights, not the old ones
    # a load of that name gets the second save: one more step from it matches one more step from here
    fresh = gw.model(job)
    assert "error" not in gw.load(job, fresh, "step-1", optimizer=True)
    a, _ = gw.step(job, model)
    b, _ = gw.step(job, fresh)
    assert a["metrics"]["loss:sum"] == b["metrics"]["loss:sum"]


def test_sampler_replace_is_judged_again_and_a_promoted_model_keeps_the_old_bytes(gw):
    job = gw.create_job("replace-sampler")
    model = gw.model(job)
    gw.step(job, model)
    assert gw.save_sampler(job, model, "weights-0badc0de", "base")["path"] == "weights-0badc0de"
    assert row(gw, job, "weights-0badc0de")["checkpointType"] == "CHECKPOINT_TYPE_INFERENCE_BASE"
    store = store_of(gw)
    old = files(store.checkpoint_dir(ACCOUNT, job, "weights-0badc0de"))
    promoted = promote(gw, job, "weights-0badc0de", "from-old-bytes")
    assert promoted.status_code == 200, promoted.text
    # a base is needed for a delta: keep one under another name, then replace with a delta
    assert gw.save_sampler(job, model, "anchor-0badc0de", "base")["path"] == "anchor-0badc0de"
    gw.step(job, model)
    assert gw.save_sampler(job, model, "weights-0badc0de", "delta")["path"] == "weights-0badc0de"
    replaced = row(gw, job, "weights-0badc0de")
    assert replaced["checkpointType"] == "CHECKPOINT_TYPE_INFERENCE_ARC_V2" and replaced["promotable"] is False
    assert [r["name"].rsplit("/", 1)[-1] for r in gw.rows(job)] == ["anchor-0badc0de", "weights-0badc0de"]
    assert files(store.model_dir(ACCOUNT, "from-old-bytes")) == old   # the model's own files are untouched
    again = promote(gw, job, "weights-0badc0de", "from-new-bytes")
    assert again.status_code == 400 and "INFERENCE_ARC_V2" in again.text    # judged from the new bytes
