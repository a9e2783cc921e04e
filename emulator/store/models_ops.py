"""Promoted models and long-running operations: the part of the store that promotion uses.

A mixin of `Store` (same lock, same SQLite connection, same staging area), kept apart so the
checkpoint half of the store reads on its own.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from fwemu.emulator.store.atomic import link_or_copy_tree, publish_dir, remove_tree


class ModelsAndOperations:
    # ------------------------------------------------------------------ models
    def create_model(self, account: str, model_id: str, record: dict, source: Path) -> dict:
        """Give the model its own (hard-linked) copy of the files, then record it; one id, one winner."""
        from fwemu.emulator.store.store import AlreadyExists   # defined beside the Store that mixes this in

        key = ("model", account, model_id)
        with self._lock:
            taken = self.db.execute(
                "SELECT 1 FROM models WHERE account=? AND model_id=?", (account, model_id)).fetchone()
            if taken or key in self._reserved:
                raise AlreadyExists(f"model accounts/{account}/models/{model_id} already exists")
            self._reserved.add(key)
        staging = Path(tempfile.mkdtemp(prefix="model-", dir=self.staging)) / "m"
        try:
            with self._lock:                       # a replace of the source swaps it under this lock
                link_or_copy_tree(source, staging)
            final = self.models_dir / account / model_id
            publish_dir(staging, final, fsync=self.fsync)
            try:
                if self.before_commit:
                    self.before_commit("model", account, model_id)
                with self._tx() as db:
                    db.execute("INSERT INTO models VALUES (?,?,?,?)",
                               (account, model_id, json.dumps(record), self.clock.now_us()))
            except BaseException:
                remove_tree(final)
                raise
        finally:
            remove_tree(staging.parent)
            with self._lock:
                self._reserved.discard(key)
        return record

    def get_model(self, account: str, model_id: str) -> dict | None:
        with self._lock:
            r = self.db.execute("SELECT record FROM models WHERE account=? AND model_id=?",
                                (account, model_id)).fetchone()
        return json.loads(r[0]) if r else None

    def list_models(self, account: str) -> list[dict]:
        with self._lock:
            return [json.loads(r[0]) for r in self.db.execute(
                "SELECT record FROM models WHERE account=? ORDER BY create_us", (account,))]

    def model_dir(self, account: str, model_id: str) -> Path:
        return self.models_dir / account / model_id

    # ------------------------------------------------------------------ operations
    def create_operation(self, account: str, op_id: str, record: dict, polls_left: int) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO operations VALUES (?,?,?,?)", (account, op_id, json.dumps(record), polls_left))

    def poll_operation(self, account: str, op_id: str) -> tuple[dict, int] | None:
        """Return (record, polls left before this poll) and count this poll."""
        with self._tx() as db:
            r = db.execute("SELECT record, polls_left FROM operations WHERE account=? AND op_id=?",
                           (account, op_id)).fetchone()
            if r is None:
                return None
            if r[1] > 0:
                db.execute("UPDATE operations SET polls_left=polls_left-1 WHERE account=? AND op_id=?",
                           (account, op_id))
        return json.loads(r[0]), r[1]

