"""Fault plans: rule counting (pure), path -> operation, and each action against live HTTP.

F1 (docs/invariants.md): a fault in any single call leaves the server state valid, and our client
either retries to success or fails with a clear error. Each action test checks both sides.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from fwemu.client.control_plane import ControlPlaneClient
from fwemu.client.errors import FwApiError, FwError
from fwemu.client.retry import RetryPolicy
from fwemu.emulator.faults.operations import classify
from fwemu.emulator.faults.plan import FaultPlan, PlanError, parse_rule
from tests.reliability.conftest import (
    ACCT_A, BASE, KEY_A, KEY_B, create_job, envelope, http_client, import_tar, in_process, listed, served, settings,
    short,
)

FAST_RETRY = RetryPolicy(max_retries=4, base_delay_s=0.01, max_delay_s=0.05, max_elapsed_s=10)


def fires(plan: FaultPlan, calls: int, operation="save_weights", account="a", job="j") -> list[int]:
    """The 1-based call numbers on which some rule fired."""
    return [n for n in range(1, calls + 1) if plan.on_call(operation, account, job) is not None]


# ------------------------------------------------------------------ counting (pure)
def test_nth_and_times_fire_on_consecutive_calls():
    plan = FaultPlan.from_json([{"operation": "save_weights", "action": "error", "nth": 3, "times": 2}])
    assert fires(plan, 8) == [3, 4]


def test_default_is_one_firing_on_the_first_call():
    plan = FaultPlan.from_json([{"operation": "save_weights", "action": "error"}])
    assert fires(plan, 4) == [1]


def test_every_repeats_until_times_runs_out():
    plan = FaultPlan.from_json([{"operation": "save_weights", "action": "error", "nth": 2, "every": 3}])
    assert fires(plan, 12) == [2, 5, 8, 11]
    capped = FaultPlan.from_json([{"operation": "save_weights", "action": "error", "every": 2, "times": 2}])
    assert fires(capped, 10) == [1, 3]


def test_random_rules_replay_from_their_seed():
    """Same seed and call order -> the same calls fail; another seed -> another pattern."""
    spec = {"seed": 42, "rules": [{"operation": "*", "action": "error", "probability": 0.3}]}
    first = fires(FaultPlan.from_json(spec), 400)
    assert first == fires(FaultPlan.from_json(spec), 400)
    assert first != fires(FaultPlan.from_json({**spec, "seed": 43}), 400)
    assert 80 <= len(first) <= 160          # p = 0.3 of 400 calls, far from both 0 and 400


def test_seed_set_later_replays_the_whole_plan():
    late = FaultPlan.from_json([{"operation": "*", "action": "error", "probability": 0.5}])
    late.load({"seed": 9})
    assert fires(late, 100) == fires(FaultPlan.from_json(
        {"seed": 9, "rules": [{"operation": "*", "action": "error", "probability": 0.5}]}), 100)


def test_every_rule_counts_every_call_and_the_first_firing_rule_wins():
    """A rule that loses a call to an earlier rule keeps its firing for a later call."""
    plan = FaultPlan.from_json([
        {"operation": "save_weights", "action": "delay", "seconds": 0.01, "nth": 2},
        {"operation": "*", "action": "error", "nth": 2, "times": 2},
    ])
    got = [plan.on_call("save_weights", "a", "j") for _ in range(4)]
    assert [f.action if f else None for f in got] == [None, "delay", "error", "error"]
    desc = plan.describe()["rules"]
    assert [(r["calls"], r["fired"]) for r in desc] == [(4, 1), (4, 2)]


def test_job_and_account_filters():
    plan = FaultPlan.from_json([{"operation": "get_job", "action": "error", "job": "j1", "account": "a", "times": 9}])
    assert plan.on_call("get_job", "a", "j2") is None
    assert plan.on_call("get_job", "b", "j1") is None
    assert plan.on_call("list_checkpoints", "a", "j1") is None
    assert plan.on_call("get_job", "a", "j1") is not None
    assert plan.describe()["rules"][0]["calls"] == 1     # only the matching call was counted


@pytest.mark.parametrize("spec, field", [
    ({"action": "error"}, "operation"),
    ({"operation": "x", "action": "explode"}, "action"),
    ({"operation": "x", "action": "error", "nth": 0}, "nth"),
    ({"operation": "x", "action": "error", "status": 302}, "status"),
    ({"operation": "x", "action": "error", "every": 2, "probability": 0.5}, "every"),
    ({"operation": "x", "action": "error", "probability": 1.5}, "probability"),
    ({"operation": "x", "action": "delay"}, "seconds"),
    ({"operation": "x", "action": "delay", "seconds": 1e9}, "seconds"),
    ({"operation": "x", "action": "crash", "stage": "after"}, "stage"),
    ({"operation": "x", "action": "error", "grpc_status": "NOPE"}, "grpc_status"),
    ({"operation": "x", "action": "error", "bogus": 1}, "bogus"),
    ({"operation": "x", "action": "error", "times": True}, "times"),
])
def test_bad_rules_name_the_field(spec, field):
    with pytest.raises(PlanError, match=field):
        parse_rule(spec)


@pytest.mark.parametrize("method, path, want", [
    ("GET", "/v1/accounts/a/rlorTrainerJobs/j/checkpoints", ("list_checkpoints", "a", "j")),
    ("POST", "/v1/accounts/a/checkpoints/step-1:promote", ("promote", "a", None)),
    ("POST", "/v1/accounts/a/rlorTrainerJobs", ("create_job", "a", None)),
    ("GET", "/v1/accounts/a/rlorTrainerJobs/j", ("get_job", "a", "j")),
    ("POST", "/v1/accounts/a/rlorTrainerJobs/j:resume", ("resume", "a", "j")),
    ("DELETE", "/v1/accounts/a/rlorTrainerJobs/j", ("delete", "a", "j")),
    ("POST", "/_emulator/v1/accounts/a/rlorTrainerJobs/j/checkpoints:import", ("import", "a", "j")),
    ("POST", "/training/v1/rlorTrainerJobs/a/j/api/v1/save_weights", ("save_weights", "a", "j")),
    ("POST", "/training/v1/rlorTrainerJobs/a/j/api/v1/retrieve_future", ("retrieve_future", "a", "j")),
    ("POST", "/training/v1/rlorTrainerJobs/a/j/api/v1/client/config", ("config", "a", "j")),
    ("GET", "/v1/accounts", ("list_accounts", None, None)),
    ("GET", "/v1/operations/op-1", ("get_operation", None, None)),
    ("POST", "/_emulator/v1/faults", (None, None, None)),      # the plan itself is never faulted
    ("POST", "/_emulator/v1/reset", (None, None, None)),
])
def test_paths_map_to_operation_names(method, path, want):
    assert tuple(classify(method, path)) == want


# ------------------------------------------------------------------ the admin routes
def test_fault_routes_add_list_and_reset():
    with in_process() as cp:
        r = cp.post("/_emulator/v1/faults", json={"seed": 5, "rules": [
            {"operation": "get_job", "action": "error", "status": 429, "nth": 2}]})
        assert r.status_code == 200, r.text
        assert r.json()["added"] == 1 and r.json()["seed"] == 5
        create_job(cp, "j1")
        assert cp.get(f"/v1/accounts/{ACCT_A}/rlorTrainerJobs/j1").status_code == 200
        envelope(cp.get(f"/v1/accounts/{ACCT_A}/rlorTrainerJobs/j1"), 429, "RESOURCE_EXHAUSTED")
        rules = cp.get("/_emulator/v1/faults").json()["rules"]
        assert (rules[0]["calls"], rules[0]["fired"]) == (2, 1)
        assert cp.delete("/_emulator/v1/faults").json()["rules"] == []
        assert cp.get(f"/v1/accounts/{ACCT_A}/rlorTrainerJobs/j1").status_code == 200
        msg = envelope(cp.post("/_emulator/v1/faults", json={"rules": [{"operation": "x", "action": "delay"}]}),
                       400, "INVALID_ARGUMENT")
        assert "seconds" in msg
        envelope(cp.post("/_emulator/v1/faults", json={"rules": [{"operation": "x", "action": "nope"}]}),
                 400, "INVALID_ARGUMENT")
        assert cp.get("/_emulator/v1/faults").json()["rules"] == []     # refused plans add nothing


def test_plan_from_settings_and_environment(tmp_path, monkeypatch):
    """FWEMU_FAULT_PLAN takes JSON text or a file path; the rules are live from the first call."""
    rules = {"rules": [{"operation": "list_jobs", "action": "error", "status": 500}]}
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(rules))
    for source in (json.dumps(rules), str(path)):
        monkeypatch.setenv("FWEMU_FAULT_PLAN", source)
        with in_process() as cp:
            envelope(cp.get(f"/v1/accounts/{ACCT_A}/rlorTrainerJobs"), 500, "INTERNAL")
            assert cp.get(f"/v1/accounts/{ACCT_A}/rlorTrainerJobs").status_code == 200


def test_serve_refuses_a_bad_plan_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"rules": [{"operation": "x", "action": "melt"}]}')
    out = subprocess.run([sys.executable, "-m", "fwemu.emulator.cli", "serve", "--in-memory", "--port", "1",
                          "--fault-plan", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "action" in out.stderr and "melt" in out.stderr


# ------------------------------------------------------------------ actions, over real HTTP
def test_error_before_the_app_changes_nothing_and_the_client_retries_to_success():
    with served() as srv, http_client(srv.url) as http:
        http.post("/_emulator/v1/faults", json={"rules": [
            {"operation": "create_job", "action": "error", "status": 503, "times": 2}]}).raise_for_status()
        r = http.post(f"/v1/accounts/{ACCT_A}/rlorTrainerJobs", params={"rlorTrainerJobId": "jx"},
                      json={"trainingConfig": {"baseModel": BASE}})
        details = r.json()["error"]["details"][0]
        assert envelope(r, 503, "UNAVAILABLE").startswith("injected fault")
        assert details["reason"] == "INJECTED_FAULT"
        assert http.get(f"/v1/accounts/{ACCT_A}/rlorTrainerJobs/jx").status_code == 404   # never ran
        with ControlPlaneClient(srv.url, KEY_A, retry=FAST_RETRY) as client:
            job = client.create_job(BASE, job_id="jx")     # one more 503, then through
        assert job.job_id == "jx"
        assert http.get("/_emulator/v1/faults").json()["rules"][0]["fired"] == 2


def test_error_after_the_app_keeps_its_effect_and_the_client_recovers_from_409():
    """A lost answer: the job was created, the client saw 503, retried, got 409, and fetched it."""
    with served() as srv, http_client(srv.url) as http:
        http.post("/_emulator/v1/faults", json={"rules": [
            {"operation": "create_job", "action": "error", "status": 502, "stage": "after"}]}).raise_for_status()
        with ControlPlaneClient(srv.url, KEY_A, retry=FAST_RETRY) as client:
            job = client.create_job(BASE, job_id="lost-answer")
        assert job.job_id == "lost-answer" and job.base_model == BASE
        assert len(http.get(f"/v1/accounts/{ACCT_A}/rlorTrainerJobs").json()["rlorTrainerJobs"]) == 1


def test_delay_slows_exactly_the_chosen_call():
    with served() as srv, http_client(srv.url) as http:
        create_job(http, "slow")
        http.post("/_emulator/v1/faults", json={"rules": [
            {"operation": "get_job", "action": "delay", "seconds": 0.6, "job": "slow"}]}).raise_for_status()
        t0 = time.monotonic()
        assert http.get(f"/v1/accounts/{ACCT_A}/rlorTrainerJobs/slow").status_code == 200
        slow = time.monotonic() - t0
        t0 = time.monotonic()
        assert http.get(f"/v1/accounts/{ACCT_A}/rlorTrainerJobs/slow").status_code == 200
        assert slow >= 0.6 > time.monotonic() - t0


def test_a_dropped_connection_is_an_incomplete_response_and_the_client_retries(sample_tars):
    with served() as srv, http_client(srv.url) as http:
        create_job(http, "dj")
        assert import_tar(http, "dj", "step-1", sample_tars["TRAINING"]).status_code == 200
        http.post("/_emulator/v1/faults", json={"rules": [
            {"operation": "list_checkpoints", "action": "drop", "times": 2}]}).raise_for_status()
        with pytest.raises(httpx.RemoteProtocolError):
            http.get(f"/v1/accounts/{ACCT_A}/rlorTrainerJobs/dj/checkpoints")
        with ControlPlaneClient(srv.url, KEY_A, retry=FAST_RETRY) as client:
            rows = client.list_checkpoints("dj")                 # one more drop, then the listing
        assert [r.short_name for r in rows] == ["step-1"]


def test_a_drop_after_an_import_commits_once_and_the_retry_gets_409(sample_tars):
    """The upload landed but its answer was cut: retrying says ALREADY_EXISTS, the row is listed once."""
    with served() as srv, http_client(srv.url) as http:
        create_job(http, "dk")
        http.post("/_emulator/v1/faults", json={"rules": [
            {"operation": "import", "action": "drop", "stage": "after"}]}).raise_for_status()
        with pytest.raises(httpx.RemoteProtocolError):
            import_tar(http, "dk", "step-1", sample_tars["TRAINING"])
        envelope(import_tar(http, "dk", "step-1", sample_tars["TRAINING"]), 409, "ALREADY_EXISTS")
        assert [short(r) for r in listed(http, "dk")] == ["step-1"]
        assert srv.app.state.services.store.integrity_ok()


def test_a_drop_after_a_promotion_leaves_one_whole_model_and_a_clear_client_error(sample_tars):
    with served() as srv, http_client(srv.url) as http:
        create_job(http, "dp")
        assert import_tar(http, "dp", "step-1-0a1b2c3d", sample_tars["INFERENCE_BASE"]).status_code == 200
        http.post("/_emulator/v1/faults", json={"rules": [
            {"operation": "promote", "action": "drop", "stage": "after"}]}).raise_for_status()
        with ControlPlaneClient(srv.url, KEY_A, retry=FAST_RETRY) as client:
            with pytest.raises(FwApiError) as caught:
                client.promote_checkpoint(f"accounts/{ACCT_A}/rlorTrainerJobs/dp/checkpoints/step-1-0a1b2c3d",
                                          "dropped-model", BASE)
            assert caught.value.status == 409 and "already exists" in caught.value.message
            assert client.get_model("dropped-model").state == "READY"
        store = srv.app.state.services.store
        assert sorted(p.name for p in store.model_dir(ACCT_A, "dropped-model").iterdir()) == sorted(
            p.name for p in store.checkpoint_dir(ACCT_A, "dp", "step-1-0a1b2c3d").iterdir())


def test_preempt_fails_the_job_cleanly_and_resume_brings_it_back():
    """The trainer dies under a call: FAILED, gateway calls answer 400 (never 5xx), sessions are gone."""
    gw = f"/training/v1/rlorTrainerJobs/{ACCT_A}/pj/api/v1"
    with served() as srv, http_client(srv.url) as http:
        create_job(http, "pj")
        session = http.post(f"{gw}/create_session", json={}).json()["session_id"]
        http.post("/_emulator/v1/faults", json={"rules": [
            {"operation": "session_heartbeat", "action": "preempt", "job": "pj"}]}).raise_for_status()
        r = http.post(f"{gw}/session_heartbeat", json={"session_id": session})
        assert "JOB_STATE_FAILED" in envelope(r, 400, "FAILED_PRECONDITION")
        envelope(http.post(f"{gw}/create_session", json={}), 400, "FAILED_PRECONDITION")
        assert http.get(f"{gw}/healthz").status_code == 503
        assert http.get(f"/v1/accounts/{ACCT_A}/rlorTrainerJobs/pj").json()["state"] == "JOB_STATE_FAILED"
        with ControlPlaneClient(srv.url, KEY_A, retry=FAST_RETRY) as client:
            with pytest.raises(FwError, match="failed"):
                client.wait_until_running("pj", poll_interval_s=0.01, timeout_s=5)
            client.resume_job("pj")
            assert client.wait_until_running("pj", poll_interval_s=0.01, timeout_s=10).state == "RUNNING"
        envelope(http.post(f"{gw}/session_heartbeat", json={"session_id": session}), 404, "NOT_FOUND")
        assert http.post(f"{gw}/create_session", json={}).status_code == 200


def test_state_changing_rules_ignore_a_strangers_calls():
    """Account B (or a bad key) calling A's job path neither preempts A's job nor uses the rule up;
    A's own next call does."""
    with served() as srv, http_client(srv.url) as http:
        create_job(http, "mine")
        http.post("/_emulator/v1/faults", json={"rules": [
            {"operation": "get_job", "action": "preempt", "job": "mine"}]}).raise_for_status()
        with http_client(srv.url, KEY_B) as other:
            envelope(other.get(f"/v1/accounts/{ACCT_A}/rlorTrainerJobs/mine"), 404, "NOT_FOUND")
        envelope(http.get(f"/v1/accounts/{ACCT_A}/rlorTrainerJobs/mine",
                          headers={"X-Api-Key": "wrong"}), 401, "UNAUTHENTICATED")
        assert http.get("/_emulator/v1/faults").json()["rules"][0]["calls"] == 0   # not even counted
        assert http.get(f"/v1/accounts/{ACCT_A}/rlorTrainerJobs/mine").json()["state"] == "JOB_STATE_FAILED"


def test_random_plan_over_a_session_never_corrupts_state(sample_tars):
    """A seeded storm of 5xx, drops and delays on every import and listing: whatever was answered
    200 is listed exactly once and passes the inspector; nothing else was written."""
    from fwemu.emulator.inspect import inspect_checkpoint

    with served() as srv, http_client(srv.url) as http:
        create_job(http, "storm")
        http.post("/_emulator/v1/faults", json={"seed": 11, "rules": [
            {"operation": "import", "action": "error", "status": 503, "probability": 0.2},
            {"operation": "import", "action": "drop", "stage": "after", "probability": 0.15},
            {"operation": "import", "action": "drop", "probability": 0.1},
            {"operation": "list_checkpoints", "action": "delay", "seconds": 0.01, "probability": 0.3},
        ]}).raise_for_status()
        acked, outcomes = set(), {}
        for i in range(40):
            name = f"s-{i}"
            try:
                status = import_tar(http, "storm", name, sample_tars["INFERENCE_LORA"]).status_code
            except httpx.TransportError:   # cut answer, or reset while the upload was still being sent
                status = "dropped"
            outcomes[status] = outcomes.get(status, 0) + 1
            if status == 200:
                acked.add(name)
        assert outcomes.get(503) and outcomes.get("dropped") and outcomes.get(200), outcomes
        names = [short(r) for r in listed(http, "storm")]
        assert len(names) == len(set(names)) and acked <= set(names)
        store = srv.app.state.services.store
        for n in names:
            assert inspect_checkpoint(store.checkpoint_dir(ACCT_A, "storm", n)).kind is not None
        assert store.counts()["checkpoints"] == len(names)
        assert sorted(p.name for p in (store.blobs / ACCT_A / "storm").iterdir()) == sorted(names)
        assert list(store.staging.iterdir()) == []


def test_faults_need_a_valid_key():
    with in_process() as cp:
        for method in ("GET", "POST", "DELETE"):
            envelope(cp.request(method, "/_emulator/v1/faults", headers={"X-Api-Key": ""}, json={"rules": []}),
                     401, "UNAUTHENTICATED")
            envelope(cp.request(method, "/_emulator/v1/faults", headers={"X-Api-Key": "nope"}, json={"rules": []}),
                     401, "UNAUTHENTICATED")


def test_settings_fault_plan_is_validated_when_the_app_is_built():
    with pytest.raises(PlanError):
        from fwemu.emulator.app import create_app

        create_app(settings(fault_plan='[{"operation": "x"}]'))


def test_training_through_a_fault_storm_ends_bit_identical():
    """5xx, dropped requests and lost answers on every gateway call: our trainer client retries
    (re-sending each submission with its idempotency key), and the run ends with exactly the
    weights of an undisturbed run and one row per save: nothing trained twice, nothing lost."""
    from fwemu.client.trainer_client import AdamParams, TrainerGatewayClient
    from fwemu.emulator.gateway.runtime import runtime_of

    tokens = list(b"faults must not change the numbers")
    datum = {"model_input": {"chunks": [{"type": "encoded_text", "tokens": tokens[:-1]}]},
             "loss_fn_inputs": {"target_tokens": {"data": tokens[1:], "dtype": "int64", "shape": [len(tokens) - 1]},
                                "weights": {"data": [1.0] * (len(tokens) - 1), "dtype": "float32",
                                            "shape": [len(tokens) - 1]}}}
    gateway_ops = ["create_session", "create_model", "forward_backward", "optim_step", "save_weights",
                   "retrieve_future"]
    storm = {"seed": 5, "rules": [   # the lost answers that could double a step come for sure, then chance
        {"operation": "forward_backward", "action": "drop", "stage": "after", "nth": 2},
        {"operation": "optim_step", "action": "drop", "stage": "after", "nth": 1},
        {"operation": "save_weights", "action": "drop", "stage": "after", "nth": 2},
        *({"operation": op, "action": "error", "status": 503, "probability": 0.15} for op in gateway_ops),
        *({"operation": op, "action": "drop", "stage": "after", "probability": 0.15} for op in gateway_ops),
        *({"operation": op, "action": "drop", "probability": 0.1} for op in gateway_ops),
    ]}
    retry = RetryPolicy(max_retries=12, base_delay_s=0.005, max_delay_s=0.02, max_elapsed_s=30)

    def train(job: str, plan: dict | None) -> tuple[str, list[str], list[dict]]:
        with served() as srv, http_client(srv.url) as http:
            create_job(http, job)
            if plan:
                http.post("/_emulator/v1/faults", json=plan).raise_for_status()
            gw = TrainerGatewayClient(f"{srv.url}/training/v1/rlorTrainerJobs/{ACCT_A}/{job}", KEY_A, retry=retry,
                                      heartbeat_interval_s=None)
            gw.create_session()
            model = gw.create_model(BASE, 0, seed=3)
            for step in range(1, 4):
                model.forward_backward([datum], "cross_entropy")
                model.optim_step(AdamParams(learning_rate=1e-2))
                assert model.save_state(f"step-{step}") == f"step-{step}"
            gw.close()
            trainer = next(iter(runtime_of(srv.app.state.services).job(
                srv.app.state.services.store.get_job(ACCT_A, job)).models.values())).trainer
            fired = http.get("/_emulator/v1/faults").json()["rules"]
            return trainer.state_digest(), [short(r) for r in listed(http, job)], fired

    calm_digest, calm_rows, _ = train("calm", None)
    storm_digest, storm_rows, rules = train("stormy", storm)
    assert [r["fired"] for r in rules[:3]] == [1, 1, 1] and sum(r["fired"] for r in rules) >= 8, rules
    assert storm_rows == calm_rows == ["step-1", "step-2", "step-3"]
    assert storm_digest == calm_digest
