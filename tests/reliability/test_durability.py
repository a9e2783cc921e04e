"""Durability modes: atomic and crash-safe by default; `--fsync` adds power-loss durability.

Crash safety of the default mode (no fsync) is proven by test_crash_kill.py, which SIGKILLs a
real `fwemu serve` mid-write; these tests pin down what each mode asks of the kernel.
"""

from __future__ import annotations

import argparse
import os

import pytest

from fwemu.emulator import serve
from fwemu.emulator.inspect.examples import write_example
from fwemu.emulator.store.store import Store


def _publish_one(tmp_path, fsync: bool, monkeypatch) -> tuple[list[int], int]:
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    store = Store(tmp_path / f"data-{fsync}", fsync=fsync)
    try:
        with store.write_checkpoint("a", "j", "c1", require_valid=True) as staging:
            _copy_example(tmp_path, staging)
        synchronous = store.db.execute("PRAGMA synchronous").fetchone()[0]
        assert store.get_checkpoint("a", "j", "c1").kind is not None
    finally:
        store.close()
    return calls, synchronous


def _copy_example(tmp_path, staging):
    source = tmp_path / "example"
    if not source.exists():
        write_example("INFERENCE_BASE", source)
    for f in source.iterdir():
        (staging / f.name).write_bytes(f.read_bytes())


def test_default_store_publishes_atomically_without_fsync(tmp_path, monkeypatch):
    calls, synchronous = _publish_one(tmp_path, False, monkeypatch)
    assert calls == [] and synchronous == 1          # 1 = NORMAL: WAL commits survive a process crash


def test_fsync_mode_syncs_every_file_and_directory_and_commits_full(tmp_path, monkeypatch):
    calls, synchronous = _publish_one(tmp_path, True, monkeypatch)
    assert len(calls) >= 3 + 2 and synchronous == 2  # 3 files, the directory, its parent; 2 = FULL


@pytest.mark.parametrize("argv, env, expected", [([], {}, False), (["--fsync"], {}, True),
                                                  ([], {"FWEMU_FSYNC": "1"}, True)])
def test_serve_flag_and_environment_choose_the_mode(argv, env, expected, monkeypatch):
    monkeypatch.delenv("FWEMU_FSYNC", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    parser = argparse.ArgumentParser()
    serve.configure(parser)
    settings = serve.settings_from_args(parser.parse_args(["--in-memory", *argv]))
    assert settings.fsync is expected and settings.allow_path_import is True
    assert serve.settings_from_args(parser.parse_args(["--in-memory", "--no-path-import"])).allow_path_import is False
