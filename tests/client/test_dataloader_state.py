"""dataloader.json: keyed entries, the newest-20 cap, atomic writes, corruption handling."""

from __future__ import annotations

import json
import logging
import os

import pytest

from fwemu.client import fileio
from fwemu.client.dataloader_state import KEEP, DataloaderState, step_from_name


def test_record_and_read_back(tmp_path):
    state = DataloaderState(tmp_path)
    assert state.read() == {}
    state.record("step-2", 2, 8)
    state.record("step-0", 4, 16)  # a renamed save: the step is not the one in the name
    entries = state.read()
    assert list(entries) == ["step-2", "step-0"]
    assert (entries["step-0"].step, entries["step-0"].data_consumed) == (4, 16)


def test_capped_at_newest_entries(tmp_path):
    state = DataloaderState(tmp_path)
    for step in range(1, KEEP + 6):
        state.record(f"step-{step}", step, step * 4)
    names = list(json.loads((tmp_path / "dataloader.json").read_text()))
    assert len(names) == KEEP == 20
    assert names[0] == "step-6" and names[-1] == f"step-{KEEP + 5}"


def test_rerecording_moves_an_entry_to_newest(tmp_path):
    state = DataloaderState(tmp_path, keep=2)
    state.record("a", 1, 1)
    state.record("b", 2, 2)
    state.record("a", 3, 3)
    state.record("c", 4, 4)
    assert list(state.read()) == ["a", "c"]


def test_write_is_atomic_when_the_rename_fails(tmp_path, monkeypatch):
    state = DataloaderState(tmp_path)
    state.record("step-2", 2, 8)
    before = (tmp_path / "dataloader.json").read_bytes()

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(fileio.os, "replace", crash)
    with pytest.raises(OSError):
        state.record("step-4", 4, 16)
    assert (tmp_path / "dataloader.json").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["dataloader.json"]  # no temp file left behind


@pytest.mark.parametrize("content", ["{oops", "[]", '{"step-2": "eight"}', '{"step-2": {"step": -1, "data_consumed": 0}}',
                                     '{"step-2": {"step": 2}}', '{"final": 12}', ""])
def test_corrupt_file_is_moved_aside_with_a_warning(tmp_path, caplog, content):
    (tmp_path / "dataloader.json").write_text(content)
    state = DataloaderState(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert state.read() == {}
    assert "corrupt" in caplog.text
    assert not (tmp_path / "dataloader.json").exists()
    assert len(list(tmp_path.glob("dataloader.json.corrupt-*"))) == 1
    state.record("step-2", 2, 8)  # and bookkeeping continues
    assert state.get("step-2").data_consumed == 8


def test_plain_name_to_count_form_is_read(tmp_path):
    (tmp_path / "dataloader.json").write_text('{"step-3": 12}')
    entry = DataloaderState(tmp_path).get("step-3")
    assert (entry.step, entry.data_consumed) == (3, 12)


def test_negative_values_are_refused(tmp_path):
    with pytest.raises(ValueError):
        DataloaderState(tmp_path).record("step-1", 1, -1)


@pytest.mark.parametrize("name, step", [("step-12", 12), ("step-12-45dda197", 12), ("step-0", 0),
                                        ("final", None), ("step-x", None), ("mystep-3", None)])
def test_step_from_name(name, step):
    assert step_from_name(name) == step


def test_step_from_name_reads_retried_and_suffixed_names():
    """Regression: a save retried as `step-N-1` must still resume at step N without dataloader.json."""
    from fwemu.client.dataloader_state import step_from_name

    assert step_from_name("step-12") == 12
    assert step_from_name("step-12-1") == 12
    assert step_from_name("step-12-0a1b2c3d") == 12
    assert step_from_name("step-12-2-0a1b2c3d") == 12
    assert step_from_name("final") is None
    assert step_from_name("step-12\n") is None
