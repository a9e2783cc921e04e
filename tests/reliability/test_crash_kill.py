"""Crash safety of a real `fwemu serve` process (docs/invariants.md L2, F1).

The targeted tests stop the process exactly between a blob write and its metadata commit (an
injected crash rule) and show the orphan on disk, then its removal by recovery at the next
start. The loop test SIGKILLs the server at random moments under load and checks every
invariant after each restart; `python -m emulator.faults.crash_loop --kills 50` is the long run.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from fwemu.emulator.faults import CRASH_EXIT_CODE
from fwemu.emulator.faults.crash_loop import ACCOUNT, BASE, KEY, Server, run_loop

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path / "data", tmp_path / "server.log")
    srv.start()
    yield srv
    srv.stop()


def client(srv: Server) -> httpx.Client:
    return httpx.Client(base_url=srv.url, headers={"X-Api-Key": KEY}, timeout=60)


def rows_in_db(data_dir: Path, table: str = "checkpoints") -> set[str]:
    db = sqlite3.connect(f"file:{data_dir / 'fwemu.sqlite'}?mode=ro", uri=True)
    try:
        col = "name" if table == "checkpoints" else "model_id"
        return {r[0] for r in db.execute(f"SELECT {col} FROM {table}")}
    finally:
        db.close()


def arm(http: httpx.Client, operation: str) -> None:
    http.post("/_emulator/v1/faults", json={"rules": [{"operation": operation, "action": "crash"}]}).raise_for_status()


def died_by_crash(srv: Server) -> None:
    assert srv.proc.wait(timeout=30) == CRASH_EXIT_CODE
    assert "metadata not committed" in srv.log_path.read_text()


def restart_and_check(srv: Server) -> None:
    srv.start()
    with client(srv) as http:
        assert http.get("/_emulator/v1/state").json()["integrity"] is True
    assert list((srv.data_dir / "staging").iterdir()) == []


def test_crash_between_import_write_and_commit_leaves_no_row(server, sample_tars):
    with client(server) as http:
        r = http.post(f"/v1/accounts/{ACCOUNT}/rlorTrainerJobs", params={"rlorTrainerJobId": "imp"},
                      json={"trainingConfig": {"baseModel": BASE}})
        assert r.status_code == 200, r.text
        url = f"/_emulator/v1/accounts/{ACCOUNT}/rlorTrainerJobs/imp/checkpoints:import"
        assert http.post(url, params={"name": "kept"}, content=sample_tars["TRAINING"]).status_code == 200
        arm(http, "import")
        with pytest.raises(httpx.TransportError):
            http.post(url, params={"name": "lost"}, content=sample_tars["INFERENCE_BASE"])
    died_by_crash(server)
    orphan = server.data_dir / "blobs" / ACCOUNT / "imp" / "lost"
    assert sorted(p.name for p in orphan.iterdir())            # the files were published ...
    assert rows_in_db(server.data_dir) == {"kept"}            # ... but never recorded
    restart_and_check(server)
    assert not orphan.exists()
    with client(server) as http:
        rows = http.get(f"/v1/accounts/{ACCOUNT}/rlorTrainerJobs/imp/checkpoints").json()["checkpoints"]
        assert [row["name"].rsplit("/", 1)[-1] for row in rows] == ["kept"]
        # the name is free again: the retry the client never got an answer for now succeeds
        assert http.post(url, params={"name": "lost"}, content=sample_tars["INFERENCE_BASE"]).status_code == 200


def test_crash_between_model_link_and_insert_leaves_no_model(server, sample_tars):
    with client(server) as http:
        url = f"/_emulator/v1/accounts/{ACCOUNT}/rlorTrainerJobs/pro/checkpoints:import"
        r = http.post(url, params={"name": "base-1", "baseModel": BASE}, content=sample_tars["INFERENCE_BASE"])
        assert r.status_code == 200, r.text
        arm(http, "promote")
        body = {"output_model": f"accounts/{ACCOUNT}/models/m1",
                "trainer_job_id": f"accounts/{ACCOUNT}/rlorTrainerJobs/pro", "base_model": BASE}
        with pytest.raises(httpx.TransportError):
            http.post(f"/v1/accounts/{ACCOUNT}/checkpoints/base-1:promote", json=body)
    died_by_crash(server)
    orphan = server.data_dir / "models" / ACCOUNT / "m1"
    assert orphan.is_dir() and rows_in_db(server.data_dir, "models") == set()
    restart_and_check(server)
    assert not orphan.exists()
    with client(server) as http:
        assert http.get(f"/v1/accounts/{ACCOUNT}/models/m1").status_code == 404
        r = http.post(f"/v1/accounts/{ACCOUNT}/checkpoints/base-1:promote", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["model"]["state"] == "READY"


def test_crash_inside_a_trainer_save_leaves_no_row(server):
    """save_weights answers at once; the crash hits later, on the trainer's worker, mid-commit."""
    gw = f"/training/v1/rlorTrainerJobs/{ACCOUNT}/tr/api/v1"
    with client(server) as http:
        r = http.post(f"/v1/accounts/{ACCOUNT}/rlorTrainerJobs", params={"rlorTrainerJobId": "tr"},
                      json={"trainingConfig": {"baseModel": BASE}})
        assert r.status_code == 200, r.text

        def result(resp: httpx.Response) -> dict:
            assert resp.status_code == 200, resp.text
            rid = resp.json()["request_id"]
            while True:
                out = http.post(f"{gw}/retrieve_future", json={"request_id": rid}).json()
                if out.get("type") != "try_again":
                    return out

        session = http.post(f"{gw}/create_session", json={}).json()["session_id"]
        model = result(http.post(f"{gw}/create_model", json={"session_id": session, "base_model": BASE,
                                                             "lora_config": {"rank": 0}}))["model_id"]
        tokens = list(range(1, 9))
        datum = {"model_input": {"chunks": [{"type": "encoded_text", "tokens": tokens[:-1]}]},
                 "loss_fn_inputs": {"target_tokens": {"data": tokens[1:], "dtype": "int64", "shape": [7]},
                                    "weights": {"data": [1.0] * 7, "dtype": "float32", "shape": [7]}}}
        result(http.post(f"{gw}/forward_backward", json={"model_id": model, "seq_id": 1, "forward_backward_input": {
            "data": [datum], "loss_fn": "cross_entropy"}}))
        result(http.post(f"{gw}/optim_step", json={"model_id": model, "seq_id": 2,
                                                   "adam_params": {"learning_rate": 1e-3}}))
        assert result(http.post(f"{gw}/save_weights", json={"model_id": model, "seq_id": 3,
                                                            "path": "step-1"}))["path"] == "step-1"
        arm(http, "save_weights")
        with pytest.raises(httpx.TransportError):
            result(http.post(f"{gw}/save_weights", json={"model_id": model, "seq_id": 4, "path": "step-2"}))
    died_by_crash(server)
    assert (server.data_dir / "blobs" / ACCOUNT / "tr" / "step-2").is_dir()
    assert rows_in_db(server.data_dir) == {"step-1"}
    restart_and_check(server)
    assert not (server.data_dir / "blobs" / ACCOUNT / "tr" / "step-2").exists()
    with client(server) as http:
        rows = http.get(f"/v1/accounts/{ACCOUNT}/rlorTrainerJobs/tr/checkpoints").json()["checkpoints"]
        assert [(row["name"].rsplit("/", 1)[-1], row["checkpointType"]) for row in rows] == [
            ("step-1", "CHECKPOINT_TYPE_TRAINING")]


def test_crash_on_a_call_without_a_commit_kills_at_once(server):
    """A crash rule on a read-only operation takes the process down when the call arrives."""
    with client(server) as http:
        arm(http, "list_jobs")
        with pytest.raises(httpx.TransportError):
            http.get(f"/v1/accounts/{ACCOUNT}/rlorTrainerJobs")
    assert server.proc.wait(timeout=30) == CRASH_EXIT_CODE
    assert "injected crash (on list_jobs" in server.log_path.read_text()
    restart_and_check(server)
    with client(server) as http:
        assert http.get(f"/v1/accounts/{ACCOUNT}/rlorTrainerJobs").status_code == 200   # the plan died with it


def test_sigkill_loop_loses_nothing_that_was_acknowledged():
    """A short run of the crash loop (the full one is `--kills 50`): every check passes each round."""
    report = run_loop(kills=5, seed=7, crash_every=2, trainer_every=3)
    assert report.problems == []
    assert report.sigkills == 5 and report.injected_crashes >= 2
    assert report.acked_imports > 0 and report.acked_promotions > 0 and report.acked_trainer_saves > 0
    assert report.rows_checked >= report.acked_imports
