"""The futures protocol (docs/wire.md B.2): immediate request ids, try_again, typed results and failures,
seq_id ordering with out-of-order arrival, and X-Idempotency-Key dedupe."""

from __future__ import annotations

import time

from tests.gateway.helpers import BASE, fb_body, gateway, optim_body


def test_mutation_answers_at_once_and_result_has_the_wire_shape(gw):
    """create_model / forward_backward / optim_step: request_id now, exact WIRE payloads later."""
    job = gw.create_job("wire-shape")
    session = gw.session(job)
    r = gw.post(job, "create_model", {"session_id": session, "model_seq_id": 0, "base_model": BASE,
                                      "lora_config": {"rank": 0}, "type": "create_model"})
    assert r.status_code == 200
    assert set(r.json()) == {"request_id", "model_id"} and r.json()["model_id"].startswith("model-")
    created = gw.result(job, r.json()["request_id"])
    assert created == {"model_id": r.json()["model_id"], "type": "create_model"}
    model = r.json()["model_id"]
    gw._seq[(job, model)] = iter(range(1, 100))  # this test created the model by hand

    fb, op = gw.step(job, model)
    assert set(fb) == {"loss_fn_output_type", "loss_fn_outputs", "metrics"}
    assert len(fb["loss_fn_outputs"]) == 1
    # the client splits every metric key on exactly one colon
    assert all(k.count(":") == 1 for k in fb["metrics"]) and "loss:sum" in fb["metrics"]
    assert set(op) == {"metrics"} and all(k.count(":") == 1 for k in op["metrics"])


def test_try_again_while_pending_then_result():
    """A future whose work cannot run yet answers try_again after the long poll, never blocks for good."""
    with gateway(future_long_poll_s=0.05) as gw:
        job = gw.create_job("try-again")
        model = gw.model(job)
        held = gw.submit(job, "optim_step", optim_body(model, 2))  # seq 1 has not arrived
        t0 = time.monotonic()
        payload = gw.poll(job, held)
        assert payload == {"type": "try_again", "request_id": held, "queue_state": "active"}
        assert time.monotonic() - t0 < 5
        gw.submit(job, "forward_backward", fb_body(model, 1))
        assert "metrics" in gw.result(job, held)


def test_failures_carry_category_and_only_fail_their_future(gw):
    """A user mistake fails its own future with category "user"; the model keeps working after it."""
    job = gw.create_job("failures")
    model = gw.model(job)
    bad = gw.result(job, gw.submit(job, "forward_backward", fb_body(model, 1, loss_fn="no_such_loss")))
    assert set(bad) == {"error", "category"} and bad["category"] == "user"
    assert "no_such_loss" in bad["error"]
    bad_adam = gw.result(job, gw.submit(job, "optim_step", {"model_id": model, "seq_id": 2}))
    assert bad_adam["category"] == "user" and "adam_params" in bad_adam["error"]
    fb = gw.ok(job, "forward_backward", fb_body(model, 3))
    assert fb["metrics"]["loss:sum"] > 0


def test_unknown_request_id_is_404_envelope(gw):
    job = gw.create_job("unknown-future")
    r = gw.post(job, "retrieve_future", {"request_id": "req-nope", "allow_metadata_only": True})
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["status"] == "NOT_FOUND" and "req-nope" in err["message"]


def test_out_of_order_arrival_executes_in_seq_order(gw):
    """optim_step (seq 2) posted before its forward_backward (seq 1) still sees that gradient."""
    job = gw.create_job("ordering")
    model = gw.model(job)
    step_rid = gw.submit(job, "optim_step", optim_body(model, 2))
    chunk_b = gw.submit(job, "forward_backward", fb_body(model, 4))   # chunk after the step
    fb_rid = gw.submit(job, "forward_backward", fb_body(model, 1))
    step2 = gw.submit(job, "optim_step", optim_body(model, 5))
    gw.submit(job, "forward_backward", fb_body(model, 3))
    fb1, s1 = gw.result(job, fb_rid), gw.result(job, step_rid)
    # the step normalises nothing and reports the loss tokens it saw: exactly seq 1's
    assert s1["metrics"]["loss_tokens:sum"] == len(fb1["loss_fn_outputs"][0]["logprobs"]["data"])
    assert s1["metrics"]["step:max"] == 1
    s2 = gw.result(job, step2)
    assert s2["metrics"]["step:max"] == 2
    assert s2["metrics"]["loss_tokens:sum"] == 2 * s1["metrics"]["loss_tokens:sum"]  # seq 3 and 4
    # seq 3 ran on the stepped weights: its loss is lower than seq 1's on the same batch
    assert gw.result(job, chunk_b)["metrics"]["loss:sum"] < fb1["metrics"]["loss:sum"]


def test_reused_seq_id_fails_at_once(gw):
    job = gw.create_job("seq-reuse")
    model = gw.model(job)
    gw.ok(job, "forward_backward", fb_body(model, 1))
    again = gw.result(job, gw.submit(job, "forward_backward", fb_body(model, 1)))
    assert again["category"] == "user" and "already used" in again["error"]


def test_missing_seq_fails_held_requests_after_the_gap_timeout():
    """A hole never hangs the client: held requests fail with a message naming the hole."""
    with gateway() as gw:
        gw.runtime().gap_timeout_s = 0.3
        job = gw.create_job("seq-gap")
        model = gw.model(job)
        held = gw.submit(job, "forward_backward", fb_body(model, 2))
        payload = gw.result(job, held)
        assert payload["category"] == "user"
        assert "seq_id 1" in payload["error"] and "never arrived" in payload["error"]
        # the sequence continues after the given-up requests; the late seq 1 is refused
        assert "metrics" in gw.result(job, gw.submit(job, "forward_backward", fb_body(model, 3)))
        late = gw.result(job, gw.submit(job, "forward_backward", fb_body(model, 1)))
        assert late["category"] == "user"


def test_idempotency_key_dedupes_a_retried_post(gw):
    """The same X-Idempotency-Key returns the same request_id and the step runs once."""
    job = gw.create_job("idempotent")
    model = gw.model(job)
    gw.ok(job, "forward_backward", fb_body(model, 1))
    first = gw.post(job, "optim_step", optim_body(model, 2), idem="stainless-python-retry-abc")
    retry = gw.post(job, "optim_step", optim_body(model, 2), idem="stainless-python-retry-abc")
    assert first.status_code == retry.status_code == 200
    assert first.json() == retry.json()
    assert gw.result(job, first.json()["request_id"])["metrics"]["step:max"] == 1
    gw.ok(job, "forward_backward", fb_body(model, 3))
    assert gw.ok(job, "optim_step", optim_body(model, 4))["metrics"]["step:max"] == 2
    # create_session retried with its key gives the same session
    s1 = gw.post(job, "create_session", {}, idem="sess-key").json()
    s2 = gw.post(job, "create_session", {}, idem="sess-key").json()
    assert s1 == s2 and s1["session_id"].startswith("sess-")
