"""The checks themselves, on made-up observations: each one fails on the data that breaks its rule,
names its invariant, and passes on good data. No server, no torch."""

from __future__ import annotations

import httpx
import pytest

from fwemu.contracts import invariants as inv
from fwemu.contracts.faults import FaultPlan, FaultTransport
from fwemu.contracts.invariants import InvariantViolation, ListedRow
from fwemu.contracts.model import JobModel, chain_type, sampler_kind
from fwemu.contracts.runner import InvariantResult, Report, expected_ids

T0, T1, T2 = "2026-01-01T00:00:01Z", "2026-01-01T00:00:01.500Z", "2026-01-01T00:00:02.000001Z"


def row(name, kind, promotable=None, t=T0):
    promotable = kind in inv.PROMOTABLE if promotable is None else promotable
    return ListedRow.from_wire({"name": f"accounts/a/rlorTrainerJobs/j/checkpoints/{name}",
                                "checkpointType": f"CHECKPOINT_TYPE_{kind}", "promotable": promotable,
                                "createTime": t})


def violation(fn, *args) -> InvariantViolation:
    with pytest.raises(InvariantViolation) as err:
        fn(*args)
    return err.value


def test_violation_types_are_per_invariant_so_hypothesis_shrinks_each_separately():
    a = InvariantViolation("K2", "x")
    b = InvariantViolation("L1", "y")
    assert type(a) is not type(b)
    assert type(a).__name__ == "K2Violation" and isinstance(a, InvariantViolation)
    assert str(a) == "[K2 promotable-iff] x"


def test_k1_compares_the_listing_with_the_bytes():
    rows = [row("a", "INFERENCE_BASE"), row("b", "INFERENCE_LORA")]
    inv.check_k1("j", rows, {"a": "INFERENCE_BASE", "b": "INFERENCE_LORA"})
    v = violation(inv.check_k1, "j", rows, {"a": "INFERENCE_BASE", "b": "INFERENCE_ARC_V2"})
    assert v.id == "K1" and "b is listed as INFERENCE_LORA but its stored bytes are INFERENCE_ARC_V2" in v.message
    assert violation(inv.check_k1, "j", rows, {"a": "INFERENCE_BASE", "b": None}).id == "K1"


def test_k1_without_bytes_falls_back_to_what_was_written_and_rejects_unknown_types():
    rows = [row("a", "TRAINING")]
    inv.check_k1("j", rows, None, {"a": "TRAINING"})
    assert violation(inv.check_k1, "j", rows, None, {"a": "TRAINING_LORA"}).id == "K1"
    bare = ListedRow.from_wire({"name": "x/y", "checkpointType": "INFERENCE_BASE", "promotable": True, "createTime": T0})
    assert "prefixed spelling" in violation(inv.check_k1, "j", [bare], None).message
    odd = ListedRow.from_wire({"name": "x/z", "checkpointType": "CHECKPOINT_TYPE_WEIRD", "promotable": False})
    assert "unknown type" in violation(inv.check_k1, "j", [odd], None).message


@pytest.mark.parametrize("kind", inv.KINDS)
def test_k2_promotable_exactly_for_inference_base_and_lora(kind):
    right = kind in ("INFERENCE_BASE", "INFERENCE_LORA")
    inv.check_k2("j", [row("a", kind, right)])
    assert violation(inv.check_k2, "j", [row("a", kind, not right)]).id == "K2"
    assert violation(inv.check_k2, "j", [row("a", kind, "true")]).id == "K2"   # a string is not a bool


def test_k3_refusal_must_be_a_4xx_envelope_naming_the_kind():
    body = {"error": {"code": 9, "status": "FAILED_PRECONDITION",
                      "message": "checkpoint type CHECKPOINT_TYPE_TRAINING_LORA cannot be promoted"}}
    inv.check_promote_refused("s", "TRAINING_LORA", 400, body)
    assert "without naming the kind" in violation(inv.check_promote_refused, "s", "TRAINING", 400, body).message
    assert violation(inv.check_promote_refused, "s", "TRAINING_LORA", 500, body).id == "K3"
    assert violation(inv.check_promote_refused, "s", "TRAINING_LORA", 400, {"message": "x"}).id == "K3"


def test_mentions_kind_matches_whole_names_in_either_spelling():
    assert inv.mentions_kind("type CHECKPOINT_TYPE_TRAINING_LORA here", "TRAINING_LORA")
    assert not inv.mentions_kind("type CHECKPOINT_TYPE_TRAINING_LORA here", "TRAINING")
    assert inv.mentions_kind("it is TRAINING.", "TRAINING")


def test_k4_sampler_rows_must_have_the_chain_kind():
    rows = [row("s1", "INFERENCE_BASE"), row("s2", "INFERENCE_ARC_V2")]
    inv.check_k4("j", rows, {"s1": ("INFERENCE_BASE", "base"), "s2": ("INFERENCE_ARC_V2", "delta")})
    v = violation(inv.check_k4, "j", rows, {"s2": ("INFERENCE_LORA", "LoRA delta")})
    assert v.id == "K4" and "s2" in v.message


def test_k5_promoted_model_shape():
    good = {"state": "READY", "kind": "HF_PEFT_ADDON", "peftDetails": {"baseModel": "b", "r": 4}}
    inv.check_promoted_model(good, "s", "INFERENCE_LORA", "b", 4)
    assert violation(inv.check_promoted_model, {**good, "state": "CREATING"}, "s", "INFERENCE_LORA", "b", 4).id == "K5"
    assert violation(inv.check_promoted_model, good, "s", "INFERENCE_BASE", "b", 0).id == "K5"
    assert violation(inv.check_promoted_model, good, "s", "INFERENCE_LORA", "b", 8).id == "K5"
    inv.check_same_files(inv.K5, "m", {"a": b"1"}, {"a": b"1"})
    assert "differ" in violation(inv.check_same_files, inv.K5, "m", {"a": b"1"}, {"a": b"2"}).message


def test_l1_order_by_parsed_time_not_by_string():
    # '...01Z' sorts after '...01.500Z' as a string, but is older: the check must parse.
    ordered = [row("a", "TRAINING", t=T0), row("b", "TRAINING", t=T1), row("c", "TRAINING", t=T2)]
    inv.check_l1_order("j", ordered)
    v = violation(inv.check_l1_order, "j", list(reversed(ordered)))
    assert v.id == "L1" and "oldest createTime first" in v.message


def test_l1_pages_exactly_once():
    inv.check_l1_pages("j", ["a", "b", "c"], [["a", "b"], ["c"]], 2)
    assert "more than once" in violation(inv.check_l1_pages, "j", ["a", "b"], [["a", "b"], ["b"]], 2).message
    assert violation(inv.check_l1_pages, "j", ["a", "b", "c"], [["a", "b"]], 2).id == "L1"
    assert violation(inv.check_l1_pages, "j", ["a", "b", "c"], [["a", "b", "c"]], 2).id == "L1"


def test_l2_rows_stay_and_no_stray_rows_appear():
    rows = [row("a", "TRAINING", t=T0)]
    inv.check_l2("j", rows, {"a": T0}, ())
    assert "gone" in violation(inv.check_l2, "j", [], {"a": T0}, ()).message
    assert "createTime" in violation(inv.check_l2, "j", [row("a", "TRAINING", t=T1)], {"a": T0}, ()).message
    assert "no save that succeeded" in violation(inv.check_l2, "j", rows, {}, ()).message
    inv.check_l2("j", rows, {}, ("a",))  # a row a faulted save may or may not have made


def test_l3_listing_status_inside_and_after_the_window():
    inv.check_l3_listing("j", 200, within_retention=True)
    inv.check_l3_listing("j", 404, within_retention=False)
    assert violation(inv.check_l3_listing, "j", 404, True).id == "L3"
    assert violation(inv.check_l3_listing, "j", 200, False).id == "L3"


def test_r1_resume_must_pick_the_expected_row_step_and_data():
    class Info:
        checkpoint_name, step, data_consumed, data_consumed_restored = "step-4", 4, 8, True

    want = inv.ResumeExpectation("step-4", 4, 8)
    inv.check_resume("j", Info(), want)
    assert "picked step-4, expected step-6" in violation(
        inv.check_resume, "j", Info(), inv.ResumeExpectation("step-6", 6, 12)).message
    assert "data_consumed" in violation(inv.check_resume, "j", Info(), inv.ResumeExpectation("step-4", 4, 7)).message
    assert violation(inv.check_resume, "j", None, want).id == "R1"


def test_probe_comparison_is_exact():
    inv.check_probe(inv.R2, "x", (1.0, 2.0), (1.0, 2.0))
    v = violation(inv.check_probe, inv.R2, "after resume", (1.0, 2.0), (1.0, 2.0000001))
    assert v.id == "R2" and "max |diff|" in v.message


def test_tally_counts_examples_that_exercised_an_invariant():
    t = inv.reset_tally()
    t.new_example()
    inv.K2.require(True, "")
    inv.K2.require(True, "")
    t.new_example()
    with pytest.raises(InvariantViolation):
        inv.K2.require(False, "boom")
    assert t.examples("K2") == 2 and t.checks_by_id["K2"] == 3 and t.examples("K1") == 0


def test_model_chain_rule_and_sampler_kinds():
    assert [chain_type(False, saved, None) for saved in (False, True)] == ["base", "delta"]
    assert chain_type(True, True, None) == "base"
    assert chain_type(False, True, "base") == "base"
    assert sampler_kind(True, "delta")[0] == "INFERENCE_LORA"
    assert sampler_kind(True, "merged_base")[0] == "INFERENCE_BASE"
    assert sampler_kind(False, "delta")[0] == "INFERENCE_ARC_V2"
    assert sampler_kind(False, "merged_base")[0] is None


def test_model_dataloader_mirror_keeps_newest_twenty_and_moves_rerecorded_entries():
    job = JobModel("j", 0, "/tmp/x", 0)
    for i in range(25):
        job.record_entry(f"step-{i}", i, i * 2)
    assert len(job.dataloader) == 20 and next(iter(job.dataloader)) == "step-5"
    job.record_entry("step-5", 5, 99)
    assert list(job.dataloader)[-1] == "step-5" and job.dataloader["step-5"] == (5, 99)


def test_expected_ids_read_from_the_break_switch_descriptions():
    from fwemu.emulator.settings import BREAK_SWITCHES

    for switch in BREAK_SWITCHES:
        assert expected_ids(switch), f"{switch!r} does not say which invariant it breaks: {BREAK_SWITCHES[switch]}"
    assert all(i in inv.REGISTRY for s in BREAK_SWITCHES for i in expected_ids(s))


def test_report_table_marks_failures_and_unexercised_rules():
    report = Report("t", "client", 0, 1, [])
    report.results["K1"] = InvariantResult("K1", "kind-from-bytes", "FAIL", 3, "row x lies", "chain",
                                           "state = M()\nstate.go()")
    report.results["L3"] = InvariantResult("L3", "deleted-jobs", "not exercised", 0, "target cannot move the clock")
    text = report.table()
    assert "FAIL" in text and "row x lies" in text and "state.go()" in text
    assert "L3 not exercised: target cannot move the clock" in text
    assert not report.ok and report.failed_ids == {"K1"}


def _echo(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"path": request.url.path})


@pytest.mark.parametrize("kind", ["http503", "drop_before", "drop_after", "delay"])
def test_fault_transport_breaks_exactly_one_matching_call(kind):
    seen = []

    def handler(request):
        seen.append(request.url.path)
        return _echo(request)

    plan = FaultPlan()
    client = httpx.Client(transport=FaultTransport(httpx.MockTransport(handler), plan), base_url="http://x")
    fault = plan.arm(kind, r"/save$")
    assert client.get("/other").status_code == 200 and fault.fired == 0
    if kind == "http503":
        assert client.get("/save").status_code == 503
    elif kind in ("drop_before", "drop_after"):
        with pytest.raises(httpx.TransportError):
            client.get("/save")
    else:
        assert client.get("/save").json() == {"path": "/save"}
    assert fault.fired == 1
    # the server saw the call only when the fault let it through
    assert seen.count("/save") == (1 if kind in ("drop_after", "delay") else 0)
    assert client.get("/save").status_code == 200   # one fault, then disarmed
