"""The step log's columnar sidecar: the job page's count and chart columns without decoding JSON,
always equal to what the JSON path (`read` + `chart_columns`) gives, whatever happened to the files."""

from __future__ import annotations

import json
import os

import pytest

from fwemu.emulator.store import step_columns
from fwemu.emulator.store.metrics_log import StepLog, chart_columns, step_record


def _rec(i: int, model: str = "model-0", gen: int = 0, loss: float | None = None) -> dict:
    return step_record(t_us=i, generation=gen, model_id=model, fb_calls=1,
                       fb_metrics={} if loss is None and i % 5 == 0 else {"loss:sum": float(loss or i)},
                       step_metrics={"step:max": float(i), "loss_tokens:sum": 2.0, "grad_norm:mean": i / 10})


def _same_as_json_path(log: StepLog, account="a", job="j", create_us=1) -> StepLog:
    """summary() of this log and of a fresh StepLog (a restart) both equal the JSON path's view."""
    records = StepLog(log.root).read(account, job, create_us)
    for fresh in (log, StepLog(log.root)):
        s = fresh.summary(account, job, create_us)
        assert s.count == len(records)
        assert s.columns == chart_columns(records)
        assert s.last == (records[-1] if records else None)
    return log


def _fill(log: StepLog, n: int, **kw) -> None:
    for i in range(1, n + 1):
        log.append("a", "j", 1, _rec(i, **kw))


def test_summary_matches_the_json_path_across_models_generations_and_gaps(tmp_path):
    log = StepLog(tmp_path)
    _fill(log, 7)
    for i in range(8, 12):
        log.append("a", "j", 1, _rec(i, model="model-1"))
        log.append("a", "j", 1, _rec(i, gen=1))
    _same_as_json_path(log)
    cols_path, series_path = step_columns.paths(log.path("a", "j", 1))
    assert cols_path.stat().st_size == step_columns.HEADER.size + 15 * step_columns.ENTRY.size
    assert len(series_path.read_text().splitlines()) == 3
    s = log.summary("a", "j", 1)
    assert list(s.columns) == ["model-0", "model-1", "gen 1 / model-0"]
    assert s.columns["model-0"][0][:5] == [0.5, 1.0, 1.5, 2.0, None], "loss per token; no loss is a gap"


def test_summary_of_a_missing_log_is_empty(tmp_path):
    s = StepLog(tmp_path).summary("a", "nope", 1)
    assert (s.count, s.last, s.columns) == (0, None, {})


def test_new_steps_are_read_incrementally_and_a_restart_sees_them(tmp_path):
    log = StepLog(tmp_path)
    _fill(log, 3)
    assert log.summary("a", "j", 1).count == 3
    log.append("a", "j", 1, _rec(4))
    _same_as_json_path(log)
    assert log.summary("a", "j", 1).count == 4


@pytest.mark.parametrize("damage", ["delete-cols", "delete-series", "truncate-cols", "garbage-cols",
                                    "wrong-inode", "entry-past-log", "torn-series"])
def test_a_damaged_sidecar_is_rebuilt_from_the_log(tmp_path, damage):
    log = StepLog(tmp_path)
    _fill(log, 6)
    log.append("a", "j", 1, _rec(7, model="model-1"))
    cols_path, series_path = step_columns.paths(log.path("a", "j", 1))
    data = cols_path.read_bytes()
    if damage == "delete-cols":
        cols_path.unlink()
    elif damage == "delete-series":
        series_path.unlink()
    elif damage == "truncate-cols":
        cols_path.write_bytes(data[: step_columns.HEADER.size + step_columns.ENTRY.size * 2 + 5])
    elif damage == "garbage-cols":
        cols_path.write_bytes(os.urandom(len(data)))
    elif damage == "wrong-inode":
        cols_path.write_bytes(step_columns.HEADER.pack(step_columns.MAGIC, 12345) + data[step_columns.HEADER.size:])
    elif damage == "entry-past-log":
        cols_path.write_bytes(data + step_columns.ENTRY.pack(10**9, 10**9 + 5, 0, 1.0, 1.0))
    elif damage == "torn-series":
        series_path.write_bytes(series_path.read_bytes()[:-4])  # model-1's line torn: its entry names no series
    _same_as_json_path(StepLog(tmp_path))
    assert StepLog(tmp_path).summary("a", "j", 1).count == 7
    # rebuilt on disk: a later reader takes the sidecar as it is (it fits the log again)
    log_path = log.path("a", "j", 1)
    st = os.stat(log_path)
    with open(log_path, "rb") as f:
        fits = step_columns.load(log_path, f.fileno(), st.st_size, st.st_ino, 0, None,
                                 lambda _d: pytest.fail("no log bytes should need parsing"))
    assert fits is not None and fits.count == 7


def test_a_log_line_without_its_entry_is_still_counted(tmp_path):
    """A crash between the log write and the sidecar write: the line has no entry, then steps go on."""
    log = StepLog(tmp_path)
    _fill(log, 2)
    path = log.path("a", "j", 1)
    with open(path, "ab") as f:  # step 3 reached the log only
        f.write(json.dumps(_rec(3), separators=(",", ":")).encode() + b"\n")
    _same_as_json_path(log)
    log.append("a", "j", 1, _rec(4))
    _same_as_json_path(log)
    assert [p[0] for p in [log.summary("a", "j", 1).columns["model-0"]]][0] == [0.5, 1.0, 1.5, 2.0]


def test_torn_and_unterminated_tails_match_the_json_path(tmp_path):
    log = StepLog(tmp_path)
    _fill(log, 3)
    path = log.path("a", "j", 1)
    third = json.dumps(_rec(9), separators=(",", ":")).encode()
    path.write_bytes(path.read_bytes() + third[: len(third) // 2])  # torn: skipped
    _same_as_json_path(log)
    log.append("a", "j", 1, _rec(4))  # heals the fragment onto its own line
    _same_as_json_path(log)
    path.write_bytes(path.read_bytes() + json.dumps(_rec(5)).encode())  # complete, no newline: counted
    _same_as_json_path(log)
    log.append("a", "j", 1, _rec(6))
    _same_as_json_path(log)
    assert log.summary("a", "j", 1).count == 6


def test_foreign_lines_in_the_log_match_the_json_path(tmp_path):
    log = StepLog(tmp_path)
    _fill(log, 2)
    with open(log.path("a", "j", 1), "ab") as f:
        f.write(b'{"model": ["odd"], "gen": 2, "fbm": 3}\n[1,2]\nnot json\n')
    log.append("a", "j", 1, _rec(3))
    _same_as_json_path(log)


def test_two_log_objects_appending_to_one_log_keep_series_ids_apart(tmp_path):
    one, two = StepLog(tmp_path), StepLog(tmp_path)
    one.append("a", "j", 1, _rec(1))
    two.append("a", "j", 1, _rec(2, model="model-1"))
    one.append("a", "j", 1, _rec(3, model="model-2"))
    _same_as_json_path(one)
    assert list(StepLog(tmp_path).summary("a", "j", 1).columns) == ["model-0", "model-1", "model-2"]


def test_remove_job_removes_the_sidecar(tmp_path):
    log = StepLog(tmp_path)
    _fill(log, 2)
    log.summary("a", "j", 1)
    log.remove_job("a", "j")
    assert not (tmp_path / "a" / "j").exists()
    assert log.summary("a", "j", 1).count == 0
    log.append("a", "j", 1, _rec(1))
    assert log.summary("a", "j", 1).count == 1
