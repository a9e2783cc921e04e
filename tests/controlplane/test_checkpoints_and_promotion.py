"""Checkpoint rows from the bytes, pagination, promotion checks in order, import, retention."""

from __future__ import annotations

import pytest

from tests.builders import dcp_dir, hf_dir, peft_dir
from tests.controlplane.conftest import BASE, KEY_B, create_job, import_dir, make_client, rows
from tests.controlplane.test_jobs_and_auth import envelope


def promote(client, ckpt, model_id, job="job-1", base=BASE, account="acct-a", **extra):
    body = {"output_model": f"accounts/{account}/models/{model_id}",
            "trainer_job_id": f"accounts/{account}/rlorTrainerJobs/{job}", "base_model": base, **extra}
    return client.post(f"/v1/accounts/{account}/checkpoints/{ckpt}:promote", json=body)


@pytest.fixture
def job_with_rows(cp, tmp_path):
    create_job(cp, "job-1")
    for name, d in [("step-1", dcp_dir(tmp_path / "dcp")), ("step-1-0a1b2c3d", hf_dir(tmp_path / "hf")),
                    ("lora-1", peft_dir(tmp_path / "peft"))]:
        r = import_dir(cp, "job-1", name, d)
        assert r.status_code == 200, r.text
    return cp


def test_rows_carry_kind_from_bytes_oldest_first(job_with_rows):
    listed = rows(job_with_rows, "job-1")["checkpoints"]
    assert [(r["name"].rsplit("/", 1)[1], r["checkpointType"], r["promotable"]) for r in listed] == [
        ("step-1", "CHECKPOINT_TYPE_TRAINING", False),
        ("step-1-0a1b2c3d", "CHECKPOINT_TYPE_INFERENCE_BASE", True),
        ("lora-1", "CHECKPOINT_TYPE_INFERENCE_LORA", True)]
    assert listed[0]["name"] == "accounts/acct-a/rlorTrainerJobs/job-1/checkpoints/step-1"
    assert all(r["createTime"].endswith("Z") for r in listed)


def test_pagination_returns_every_row_once(cp, tmp_path):
    create_job(cp, "job-p")
    src = hf_dir(tmp_path / "hf")
    names = [f"s-{i}" for i in range(7)]
    for n in names:
        assert import_dir(cp, "job-p", n, src).status_code == 200
    seen, token = [], ""
    while True:
        page = rows(cp, "job-p", pageSize=3, pageToken=token)
        assert len(page["checkpoints"]) <= 3
        seen += [r["name"].rsplit("/", 1)[1] for r in page["checkpoints"]]
        token = page["nextPageToken"]
        if not token:
            break
    assert seen == names
    envelope(cp.get("/v1/accounts/acct-a/rlorTrainerJobs/job-p/checkpoints", params={"pageToken": "garbage"}),
             400, "INVALID_ARGUMENT")


def test_import_refuses_what_the_inspector_rejects_and_stores_nothing(cp, tmp_path):
    create_job(cp, "job-x")
    bad = hf_dir(tmp_path / "bad")
    (bad / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    r = import_dir(cp, "job-x", "bad", bad)
    msg = envelope(r, 400, "INVALID_ARGUMENT")
    assert "adapter_model.bin" in msg
    assert rows(cp, "job-x")["checkpoints"] == []
    assert cp.app.state.services.store.counts()["checkpoints"] == 0
    assert not any(cp.app.state.services.store.blobs.rglob("*.safetensors"))


def test_import_creates_job_with_base_model(cp, tmp_path):
    r = import_dir(cp, "downloaded", "final", hf_dir(tmp_path / "hf"), baseModel=BASE)
    assert r.status_code == 200, r.text
    assert r.json()["checkpoint"]["checkpointType"] == "CHECKPOINT_TYPE_INFERENCE_BASE"
    assert cp.get("/v1/accounts/acct-a/rlorTrainerJobs/downloaded").json()["state"] == "JOB_STATE_COMPLETED"
    envelope(import_dir(cp, "nobase", "x", hf_dir(tmp_path / "hf2")), 404, "NOT_FOUND")


def test_promotion_checks_in_order(job_with_rows):
    cp = job_with_rows
    assert "not valid" in envelope(promote(cp, "step-1", "Bad_ID"), 400, "INVALID_ARGUMENT")
    envelope(promote(cp, "step-1", "m1", job="nojob"), 404, "NOT_FOUND")
    envelope(promote(cp, "missing", "m1"), 404, "NOT_FOUND")
    assert "base model" in envelope(promote(cp, "step-1-0a1b2c3d", "m1", base="accounts/fireworks/models/x"),
                                    400, "INVALID_ARGUMENT")
    msg = envelope(promote(cp, "step-1", "m1"), 400, "FAILED_PRECONDITION")
    assert "TRAINING" in msg and "not promotable" in msg
    assert cp.app.state.services.store.counts()["models"] == 0

    ok = promote(cp, "step-1-0a1b2c3d", "m1")
    assert ok.status_code == 200, ok.text
    model = ok.json()["model"]
    assert model["name"] == "accounts/acct-a/models/m1" and model["state"] == "READY"
    assert model["kind"] == "HF_BASE_MODEL"
    envelope(promote(cp, "lora-1", "m1"), 409, "ALREADY_EXISTS")

    lora = promote(cp, "lora-1", "m2").json()["model"]
    assert lora["kind"] == "HF_PEFT_ADDON"
    assert lora["peftDetails"] == {"baseModel": BASE, "r": 4, "targetModules": ["q_proj"]}
    assert cp.get("/v1/accounts/acct-a/models/m2").json() == lora
    assert [m["name"] for m in cp.get("/v1/accounts/acct-a/models").json()["models"]] == [
        "accounts/acct-a/models/m1", "accounts/acct-a/models/m2"]
    envelope(cp.get("/v1/accounts/acct-a/models/m2", headers={"X-Api-Key": KEY_B}), 404, "NOT_FOUND")
    store = cp.app.state.services.store
    assert sorted(p.name for p in store.model_dir("acct-a", "m1").iterdir()) == ["config.json", "model.safetensors"]


def test_async_promotion_operation_done_at_once(job_with_rows):
    r = promote(job_with_rows, "lora-1", "m-async", async_promotion=True)
    op = r.json()["operation"]
    assert op["done"] is True and op["response"]["name"] == "accounts/acct-a/models/m-async"
    polled = job_with_rows.get(f"/v1/{op['name']}").json()
    assert polled["done"] is True and polled["response"]["kind"] == "HF_PEFT_ADDON"


def test_slow_operations_quirk_needs_polls(tmp_path):
    with make_client(quirks=frozenset({"slow-operations"}), quirk_operation_polls=2) as cp:
        create_job(cp, "job-1")
        import_dir(cp, "job-1", "b", hf_dir(tmp_path / "hf"))
        op = promote(cp, "b", "m", async_promotion=True).json()["operation"]
        assert op["done"] is False
        assert cp.get(f"/v1/{op['name']}").json()["done"] is False
        assert cp.get(f"/v1/{op['name']}").json()["done"] is True


def test_deleted_job_rows_stay_for_retention_then_not_found(job_with_rows):
    cp = job_with_rows
    assert cp.delete("/v1/accounts/acct-a/rlorTrainerJobs/job-1").status_code == 200
    assert len(rows(cp, "job-1")["checkpoints"]) == 3
    assert promote(cp, "lora-1", "after-delete").status_code == 200
    cp.post("/_emulator/v1/clock:advance", json={"seconds": 31 * 86400})
    envelope(cp.get("/v1/accounts/acct-a/rlorTrainerJobs/job-1/checkpoints"), 404, "NOT_FOUND")
    envelope(promote(cp, "step-1-0a1b2c3d", "late"), 404, "NOT_FOUND")


def test_state_survives_restart(tmp_path):
    data = tmp_path / "data"
    with make_client(data_dir=data) as cp:
        create_job(cp, "job-1")
        import_dir(cp, "job-1", "b", hf_dir(tmp_path / "hf"))
        assert promote(cp, "b", "kept").status_code == 200
        before = rows(cp, "job-1")
    with make_client(data_dir=data) as cp:
        assert rows(cp, "job-1") == before
        assert cp.get("/v1/accounts/acct-a/models/kept").json()["state"] == "READY"
        assert cp.app.state.services.store.integrity_ok()


def test_out_of_band_change_is_reclassified(job_with_rows):
    """The cache is keyed by fingerprint: bytes changed behind the store's back are judged again."""
    cp = job_with_rows
    store = cp.app.state.services.store
    d = store.checkpoint_dir("acct-a", "job-1", "step-1-0a1b2c3d")
    (d / "model.safetensors").write_bytes(b"\x00" * 16)
    names = [r["name"].rsplit("/", 1)[1] for r in rows(cp, "job-1")["checkpoints"]]
    assert "step-1-0a1b2c3d" not in names
    rejected = cp.get("/_emulator/v1/accounts/acct-a/rlorTrainerJobs/job-1/rejected").json()["rejected"]
    assert rejected[0]["name"] == "step-1-0a1b2c3d" and "model.safetensors" in rejected[0]["reason"]


def test_break_switches_bend_the_listing(tmp_path):
    with make_client(breaks=frozenset({"newest-first"})) as cp:
        create_job(cp, "job-1")
        for n in ("a", "b"):
            import_dir(cp, "job-1", n, hf_dir(tmp_path / n))
        assert [r["name"][-1] for r in rows(cp, "job-1")["checkpoints"]] == ["b", "a"]


def test_clock_advance_survives_restart(tmp_path):
    """Regression (contract suite, L2 under listing-delay): time must never run backwards on a restart."""
    data = tmp_path / "data"
    with make_client(data_dir=data) as cp:
        cp.post("/_emulator/v1/clock:advance", json={"seconds": 3600})
        before = cp.app.state.services.clock.peek_us()
    with make_client(data_dir=data) as cp:
        assert cp.app.state.services.clock.peek_us() >= before


def test_rows_saved_after_a_restart_sort_after_earlier_ones_even_on_whole_second_stamps(tmp_path):
    """Regression (contract suite, R7 under mixed-precision-timestamps): a whole-second stamp is
    rounded up, so a restarted clock must continue after the newest stored stamp."""
    data = tmp_path / "data"
    with make_client(data_dir=data, quirks=frozenset({"mixed-precision-timestamps"})) as cp:
        create_job(cp, "job-1")
        for n in ("a", "b"):  # the second row gets a whole-second stamp, up to 1 s in the future
            import_dir(cp, "job-1", n, hf_dir(tmp_path / n))
    with make_client(data_dir=data, quirks=frozenset({"mixed-precision-timestamps"})) as cp:
        import_dir(cp, "job-1", "c", hf_dir(tmp_path / "c"))
        listed = rows(cp, "job-1")["checkpoints"]
    assert [r["name"][-1] for r in listed] == ["a", "b", "c"]
    from fwemu.client.timeparse import parse_rfc3339
    times = [parse_rfc3339(r["createTime"]) for r in listed]
    assert times == sorted(times) and len(set(times)) == 3
