"""Replacing a checkpoint is atomic: readers see the old row or the new one, a crash keeps the old one,
and concurrent writers of one name leave exactly one complete winner (real store, real directories)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from fwemu.emulator.inspect import Kind
from fwemu.emulator.store.store import Store

ACCOUNT, JOB = "acct", "job"


def files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def write(store: Store, name: str, src: Path) -> None:
    with store.write_checkpoint(ACCOUNT, JOB, name, require_valid=True, replace=True) as staging:
        for f in src.iterdir():
            shutil.copy(f, staging / f.name)


def listed(store: Store) -> list:
    rows, _ = store.list_checkpoints(ACCOUNT, JOB, page_size=100)
    return rows


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "state")
    s.create_job(ACCOUNT, JOB, {"trainingConfig": {"baseModel": "b"}}, 0)
    yield s
    s.close()


def test_listings_during_replaces_see_one_complete_row(store, sample_dirs):
    kinds = {Kind.TRAINING: sample_dirs["TRAINING"], Kind.INFERENCE_BASE: sample_dirs["INFERENCE_BASE"]}
    contents = {k: files(p) for k, p in kinds.items()}
    write(store, "x", kinds[Kind.TRAINING])
    stop, seen, problems = threading.Event(), set(), []

    def writer():
        try:
            for i in range(40):
                write(store, "x", kinds[Kind.INFERENCE_BASE] if i % 2 == 0 else kinds[Kind.TRAINING])
        finally:
            stop.set()

    def reader():
        while not stop.is_set():
            rows = listed(store)
            if [r.name for r in rows] != ["x"]:
                problems.append(f"listing showed {[r.name for r in rows]}")
                continue
            seen.add(rows[0].kind)
            with store.snapshot_dir(store.checkpoint_dir(ACCOUNT, JOB, "x")) as snap:
                if files(snap) not in contents.values():
                    problems.append("a reader saw a mix of two saves")

    threads = [threading.Thread(target=writer), threading.Thread(target=reader), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not problems, problems[:5]
    assert seen <= set(kinds) and seen                      # both kinds show up over time, nothing else
    (last,) = listed(store)
    assert last.kind is Kind.TRAINING and files(store.checkpoint_dir(ACCOUNT, JOB, "x")) == contents[Kind.TRAINING]
    assert not list(store.replacing.rglob("*.distcp")) and not list(store.staging.iterdir())


def test_concurrent_replaces_leave_exactly_one_complete_winner(store, sample_dirs):
    write(store, "x", sample_dirs["TRAINING"])
    candidates = [sample_dirs["INFERENCE_BASE"], sample_dirs["TRAINING_LORA"], sample_dirs["INFERENCE_LORA"]]
    barrier = threading.Barrier(len(candidates))

    def race(src):
        barrier.wait()
        write(store, "x", src)

    threads = [threading.Thread(target=race, args=(c,)) for c in candidates]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    (row,) = listed(store)
    winner = files(store.checkpoint_dir(ACCOUNT, JOB, "x"))
    assert winner in [files(c) for c in candidates]
    assert row.kind is Kind(next(k for k, d in sample_dirs.items() if files(d) == winner))


def test_a_failed_commit_keeps_the_old_checkpoint(store, sample_dirs):
    write(store, "x", sample_dirs["TRAINING"])
    (before,) = listed(store)

    def fail(*_):
        raise OSError("disk full")
    store.before_commit = fail
    with pytest.raises(OSError, match="disk full"):
        write(store, "x", sample_dirs["INFERENCE_BASE"])
    store.before_commit = None
    (after,) = listed(store)
    assert (after.kind, after.create_us) == (before.kind, before.create_us)
    assert files(store.checkpoint_dir(ACCOUNT, JOB, "x")) == files(sample_dirs["TRAINING"])


CRASH = textwrap.dedent("""
    import os, shutil, sys
    from pathlib import Path
    from fwemu.emulator.store.store import Store
    data, old, new, where = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    s = Store(data)
    s.create_job("acct", "job", {"trainingConfig": {"baseModel": "b"}}, 0)

    def save(src):
        with s.write_checkpoint("acct", "job", "x", require_valid=True, replace=True) as staging:
            for f in src.iterdir():
                shutil.copy(f, staging / f.name)
    save(old)
    if where == "before-commit":          # new bytes in place, row not committed
        s.before_commit = lambda *a: os._exit(9)
    else:                                 # between moving the old directory out and the new one in
        real, calls = os.rename, []
        def rename(a, b):
            calls.append(1)
            real(a, b)
            if len(calls) == 1:
                os._exit(9)
        os.rename = rename
    save(new)
    os._exit(0)
""")


@pytest.mark.parametrize("where", ["before-commit", "between-renames"])
def test_a_crash_during_a_replace_keeps_the_old_checkpoint(tmp_path, sample_dirs, where):
    data = tmp_path / "state"
    out = subprocess.run([sys.executable, "-c", CRASH, str(data), str(sample_dirs["TRAINING"]),
                          str(sample_dirs["INFERENCE_BASE"]), where], capture_output=True, text=True, timeout=120)
    assert out.returncode == 9, out.stderr
    store = Store(data)                                    # start-up recovery
    try:
        (row,) = listed(store)
        assert row.name == "x" and row.kind is Kind.TRAINING
        assert files(store.checkpoint_dir(ACCOUNT, JOB, "x")) == files(sample_dirs["TRAINING"])
        assert not any(store.replacing.rglob("*")) or not list(store.replacing.glob("*/*/*"))
    finally:
        store.close()
