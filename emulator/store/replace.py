"""Replacing a checkpoint in place, atomically: the swap, its crash recovery, and reader snapshots.

A save under a name the job already has (the SDK and the cookbook reuse names) takes the old
row's place: the old directory moves to `replacing/`, the new one into place, and the new row is
committed, all under the store lock; start-up recovery finishes or undoes a swap a crash cut
short. A mixin of `Store` (same lock, connection and directories).
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import fwemu.emulator.inspect as inspector
from fwemu.emulator.inspect import Verdict
from fwemu.emulator.store.atomic import fsync_tree, link_or_copy_tree, publish_dir, remove_tree


def fingerprint_or_none(path: Path) -> str | None:
    try:
        return inspector.fingerprint(path)
    except OSError:
        return None


class CheckpointReplacement:
    def _recover_replacements(self) -> int:
        """Finish or undo replaces a crash interrupted; returns how many were undone.

        A replace moves the old directory to `replacing/`, the new one into place, then commits
        the row. The row's fingerprint says which side won: the old bytes go back unless the
        new row was committed.
        """
        undone = 0
        for old in self.replacing.glob("*/*/*"):
            account, job_id, name = old.parts[-3:]
            final = self.checkpoint_dir(account, job_id, name)
            r = self.db.execute("SELECT fingerprint FROM checkpoints WHERE account=? AND job_id=? AND name=?",
                                (account, job_id, name)).fetchone()
            committed_old = r is not None and fingerprint_or_none(old) == r[0]
            if r is not None and (not final.exists() or (committed_old and fingerprint_or_none(final) != r[0])):
                remove_tree(final)
                publish_dir(old, final, fsync=self.fsync)
                undone += 1
            else:
                remove_tree(old)
        return undone

    def _replace_checkpoint(self, account, job_id, name, staging: Path, final: Path, verdict: Verdict,
                            claimed) -> bool:
        """When the name has a row: swap the directory and commit the new row under the lock; else False.

        Readers that find a fingerprint moving re-check under the lock, so they see either side.
        """
        if self.fsync:
            fsync_tree(staging)
        old = self.replacing / account / job_id / name
        with self._lock:
            if not self._has_row(account, job_id, name):
                return False
            old.parent.mkdir(parents=True, exist_ok=True)
            remove_tree(old)                               # left by a crash that recovery could not finish
            os.rename(final, old)
            os.rename(staging, final)
            try:
                if self.before_commit:
                    self.before_commit("checkpoint", account, job_id)
                self._record_checkpoint(account, job_id, name, final, verdict, claimed, replace=True)
            except BaseException:
                remove_tree(final)                         # the old bytes and row stay
                os.rename(old, final)
                raise
        remove_tree(old)
        return True

    @contextmanager
    def snapshot_dir(self, path: Path) -> Iterator[Path]:
        """A private hard-linked copy of a stored directory, taken under the lock.

        Readers that open several files of a checkpoint (DCP's .metadata then its data files) read
        the snapshot, so a replace of that name in between can never hand them a mix of two saves.
        The copy keeps the directory's name, so messages about it still name the checkpoint.
        """
        holder = Path(tempfile.mkdtemp(prefix="snap-", dir=self.staging))
        copy = holder / Path(path).name
        try:
            with self._lock:
                link_or_copy_tree(path, copy)
            yield copy
        finally:
            remove_tree(holder)

