"""metrics_log: the per-step record (pure) and the append-only log that survives crashes and restarts."""

from __future__ import annotations

import json
import math

from fwemu.emulator.store.metrics_log import (
    StepLog, loss_per_token, merge_metrics, parse_lines, series_of, step_record,
)


def test_merge_metrics_reduces_by_suffix():
    acc = merge_metrics({}, {"loss:sum": 2.0, "ratio:mean": 1.0, "clip:max": 0.1, "x:min": 5.0, "tag": "no"}, 0)
    acc = merge_metrics(acc, {"loss:sum": 3.0, "ratio:mean": 2.0, "clip:max": 0.3, "x:min": 4.0}, 1)
    acc = merge_metrics(acc, {"loss:sum": 1.0, "ratio:mean": 6.0, "clip:max": 0.2, "x:min": 9.0}, 2)
    assert acc == {"loss:sum": 6.0, "ratio:mean": 3.0, "clip:max": 0.3, "x:min": 4.0}


def test_step_record_is_json_safe_and_gives_loss_per_token():
    rec = step_record(t_us=7, generation=0, model_id="model-0", fb_calls=2,
                      fb_metrics={"loss:sum": 12.0, "bad:mean": float("nan")},
                      step_metrics={"step:max": 3.0, "loss_tokens:sum": 4.0, "grad_norm:mean": float("inf")})
    json.dumps(rec, allow_nan=False)
    assert rec["step"] == 3 and rec["fb"] == 2
    assert rec["fbm"]["bad:mean"] is None and rec["om"]["grad_norm:mean"] is None
    assert loss_per_token(rec) == 3.0
    no_tokens = step_record(t_us=1, generation=0, model_id="m", fb_calls=1, fb_metrics={"loss:sum": 5.0},
                            step_metrics={"step:max": 1.0})
    assert loss_per_token(no_tokens) == 5.0
    assert loss_per_token(step_record(t_us=1, generation=0, model_id="m", fb_calls=0, fb_metrics={},
                                      step_metrics={})) is None


def _rec(i: int) -> dict:
    return step_record(t_us=i, generation=0, model_id="model-0", fb_calls=1, fb_metrics={"loss:sum": float(i)},
                       step_metrics={"step:max": float(i), "loss_tokens:sum": 1.0})


def test_records_survive_a_new_log_object_on_the_same_dir(tmp_path):
    StepLog(tmp_path).append("acct", "job-1", 100, _rec(1))
    StepLog(tmp_path).append("acct", "job-1", 100, _rec(2))
    again = StepLog(tmp_path)  # what a restarted emulator opens
    assert [r["step"] for r in again.read("acct", "job-1", 100)] == [1, 2]
    assert again.last("acct", "job-1", 100)["step"] == 2
    assert again.read("acct", "job-1", 999) == [] and again.last("acct", "job-1", 999) is None, \
        "a job re-created under the same id (new create time) starts a fresh log"
    assert again.read("other", "job-1", 100) == []


def test_a_torn_tail_is_skipped_and_healed_by_the_next_append(tmp_path):
    log = StepLog(tmp_path, fsync=True)
    for i in (1, 2):
        log.append("a", "j", 1, _rec(i))
    path = log.path("a", "j", 1)
    whole = path.read_bytes()
    third = json.dumps(_rec(3), separators=(",", ":")).encode()
    path.write_bytes(whole + third[: len(third) // 2])  # a crash in the middle of the third write
    assert [r["step"] for r in log.read("a", "j", 1)] == [1, 2]
    assert log.last("a", "j", 1)["step"] == 2
    log.append("a", "j", 1, _rec(4))
    assert [r["step"] for r in log.read("a", "j", 1)] == [1, 2, 4]
    assert path.read_bytes().count(b"\n") == 4, "the fragment stays on a line of its own"


def test_a_record_missing_only_its_newline_still_counts(tmp_path):
    log = StepLog(tmp_path)
    log.append("a", "j", 1, _rec(1))
    path = log.path("a", "j", 1)
    path.write_bytes(path.read_bytes() + json.dumps(_rec(2)).encode())  # complete JSON, no "\n" yet
    assert [r["step"] for r in log.read("a", "j", 1)] == [1, 2]
    log.append("a", "j", 1, _rec(3))
    assert [r["step"] for r in log.read("a", "j", 1)] == [1, 2, 3]


def test_parse_lines_skips_foreign_lines():
    data = b'{"step":1}\n[1,2]\nnot json\n\n{"step":2}\n'
    assert parse_lines(data) == [{"step": 1}, {"step": 2}]
    assert parse_lines(b"") == []


def test_remove_job_and_remove_all(tmp_path):
    log = StepLog(tmp_path / "m")
    log.append("a", "j1", 1, _rec(1))
    log.append("a", "j2", 1, _rec(1))
    log.remove_job("a", "j1")
    assert log.read("a", "j1", 1) == [] and len(log.read("a", "j2", 1)) == 1
    log.remove_all()
    assert log.read("a", "j2", 1) == []


def test_series_are_split_by_model_and_generation():
    recs = [dict(_rec(1), model="model-0"), dict(_rec(2), model="model-1"), dict(_rec(3), model="model-0"),
            dict(_rec(4), model="model-2", gen=1)]
    groups = series_of(recs)
    assert list(groups) == ["model-0", "model-1", "gen 1 / model-2"]
    assert [r["step"] for r in groups["model-0"]] == [1, 3]
    assert all(math.isfinite(loss_per_token(r)) for r in recs)


def test_chart_columns_give_loss_per_token_and_grad_norm_per_series():
    from fwemu.emulator.store.metrics_log import chart_columns

    recs = [_rec(1), dict(_rec(2), model="model-1"), {"model": "model-0", "fbm": [1]}, _rec(3)]
    recs[-1]["om"]["grad_norm:mean"] = 0.5
    cols = chart_columns(recs)
    assert list(cols) == ["model-0", "model-1"]
    losses, norms = cols["model-0"]
    assert losses[0] == 1.0 and losses[2] == 3.0 and norms == [None, None, 0.5]
    assert losses[1] is None or isinstance(losses[1], float)  # a foreign record is a gap, never an error
