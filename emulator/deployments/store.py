"""Deployment rows and the weights each deployment serves, in the emulator's store.

Rows live in the store's SQLite database (own tables, created here; the store's lock and
transactions serialise them with everything else). The weights a deployment has hot-loaded are
materialised as a directory `deployments/<account>/<id>/<version>/`: a full Hugging Face
directory (a base, or a base with its chain of deltas applied, bit for bit) or a PEFT adapter.
Like checkpoints, a version directory appears in one rename before the row naming it is
committed; at start-up every version directory no row names is removed.
"""

from __future__ import annotations

import json
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from fwemu.emulator.store import AlreadyExists, NotFound, Store
from fwemu.emulator.store.atomic import publish_dir, remove_tree

SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    account TEXT NOT NULL, deployment_id TEXT NOT NULL, record TEXT NOT NULL, hot_load TEXT NOT NULL,
    create_us INTEGER NOT NULL, update_us INTEGER NOT NULL, deleted_us INTEGER,
    PRIMARY KEY (account, deployment_id));
"""


@dataclass(frozen=True)
class Deployment:
    account: str
    deployment_id: str
    record: dict
    hot_load: dict = field(default_factory=dict)
    create_us: int = 0
    update_us: int = 0
    deleted_us: int | None = None

    @property
    def base_model(self) -> str:
        return self.record["baseModel"]


class DeploymentStore:
    """CRUD on deployment rows plus their version directories; all methods are thread-safe."""

    def __init__(self, store: Store):
        self.store = store
        self.root = store.root / "deployments"
        self.root.mkdir(parents=True, exist_ok=True)
        with store._lock:  # the store's one connection and lock (see emulator/store/store.py)
            store.db.executescript(SCHEMA)
        self.sweep()

    @contextmanager
    def _tx(self):
        with self.store._tx() as db:
            yield db

    # ------------------------------------------------------------------ rows
    def _row(self, r: tuple) -> Deployment:
        return Deployment(r[0], r[1], json.loads(r[2]), json.loads(r[3]), r[4], r[5], r[6])

    def get(self, account: str, deployment_id: str, *, include_deleted: bool = False) -> Deployment | None:
        with self.store._lock:
            r = self.store.db.execute("SELECT * FROM deployments WHERE account=? AND deployment_id=?",
                                      (account, deployment_id)).fetchone()
        d = self._row(r) if r else None
        if d is not None and d.deleted_us is not None and not include_deleted:
            return None
        return d

    def list(self, account: str) -> list[Deployment]:
        with self.store._lock:
            rows = self.store.db.execute(
                "SELECT * FROM deployments WHERE account=? AND deleted_us IS NULL ORDER BY create_us, deployment_id",
                (account,)).fetchall()
        return [self._row(r) for r in rows]

    def create(self, account: str, deployment_id: str, record: dict) -> Deployment:
        """A new row; a soft-deleted row of the same id is replaced (and its weights dropped)."""
        now = self.store.clock.now_us()
        with self._tx() as db:
            r = db.execute("SELECT deleted_us FROM deployments WHERE account=? AND deployment_id=?",
                           (account, deployment_id)).fetchone()
            if r is not None and r[0] is None:
                raise AlreadyExists(f"deployment accounts/{account}/deployments/{deployment_id} already exists")
            db.execute("DELETE FROM deployments WHERE account=? AND deployment_id=?", (account, deployment_id))
            db.execute("INSERT INTO deployments VALUES (?,?,?,?,?,?,NULL)",
                       (account, deployment_id, json.dumps(record), "{}", now, now))
        if r is not None:
            remove_tree(self.root / account / deployment_id)
        return self.get(account, deployment_id)  # type: ignore[return-value]

    def update(self, account: str, deployment_id: str, *, record: dict | None = None,
               hot_load: dict | None = None) -> Deployment:
        now = self.store.clock.now_us()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE deployments SET record=COALESCE(?, record), hot_load=COALESCE(?, hot_load), update_us=?"
                " WHERE account=? AND deployment_id=? AND deleted_us IS NULL",
                (json.dumps(record) if record is not None else None,
                 json.dumps(hot_load) if hot_load is not None else None, now, account, deployment_id))
            if cur.rowcount == 0:
                raise NotFound(f"deployment {deployment_id} not found")
        return self.get(account, deployment_id)  # type: ignore[return-value]

    def delete(self, account: str, deployment_id: str, *, hard: bool) -> None:
        """hard: the row and its weights are gone (GET answers 404); else the row stays as DELETED."""
        now = self.store.clock.now_us()
        with self._tx() as db:
            if hard:
                cur = db.execute("DELETE FROM deployments WHERE account=? AND deployment_id=?",
                                 (account, deployment_id))
            else:
                cur = db.execute("UPDATE deployments SET deleted_us=?, update_us=?, hot_load='{}'"
                                 " WHERE account=? AND deployment_id=? AND deleted_us IS NULL",
                                 (now, now, account, deployment_id))
            if cur.rowcount == 0:
                raise NotFound(f"deployment {deployment_id} not found")
        remove_tree(self.root / account / deployment_id)

    def reset(self) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM deployments")
        remove_tree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ weights
    def version_dir(self, account: str, deployment_id: str, version: str) -> Path:
        return self.root / account / deployment_id / version

    @contextmanager
    def staged_version(self, account: str, deployment_id: str, version: str) -> Iterator[Path]:
        """A path to fill (it does not exist yet); on clean exit it becomes the version directory."""
        parent = Path(tempfile.mkdtemp(prefix="deploy-", dir=self.store.staging))
        out = parent / "v"
        try:
            yield out
            publish_dir(out, self.version_dir(account, deployment_id, version), fsync=self.store.fsync)
        finally:
            remove_tree(parent)

    def drop_versions_except(self, account: str, deployment_id: str, keep: str | None) -> None:
        base = self.root / account / deployment_id
        if base.is_dir():
            for entry in base.iterdir():
                if entry.name != keep:
                    remove_tree(entry)

    def sweep(self) -> int:
        """Remove version directories no row names (a crash between publish and commit)."""
        with self.store._lock:
            rows = self.store.db.execute("SELECT account, deployment_id, hot_load FROM deployments").fetchall()
        keep = {(a, d, json.loads(h).get("version")) for a, d, h in rows}
        removed = 0
        for vdir in self.root.glob("*/*/*"):
            if (vdir.parts[-3], vdir.parts[-2], vdir.name) not in keep:
                remove_tree(vdir)
                removed += 1
        return removed
