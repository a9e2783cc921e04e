"""The emulator's state: SQLite metadata plus blob directories, behind one small API.

Checkpoint rows are never taken from the writer's word: each committed directory is classified
by the inspector (`emulator.inspect`), and the verdict is cached next to the directory's
fingerprint. A listing re-checks the fingerprint of each row it returns and re-inspects a
directory whose files changed, so the cache can never hide what the bytes say.

Everything is serialised through one lock around one SQLite connection (WAL on disk): the
emulator's write rate is tiny, and a single writer makes every multi-step change atomic.
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import fwemu.emulator.inspect as inspector  # inspector.inspect_checkpoint / .fingerprint load on first use
from fwemu.emulator.inspect import Kind, Verdict
from fwemu.emulator.store.atomic import publish_dir, remove_tree
from fwemu.emulator.store.clock import Clock
from fwemu.emulator.store.models_ops import ModelsAndOperations
from fwemu.emulator.store.replace import CheckpointReplacement, fingerprint_or_none
from fwemu.emulator.store.metrics_log import StepLog

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    account TEXT NOT NULL, job_id TEXT NOT NULL, body TEXT NOT NULL, state TEXT NOT NULL,
    create_us INTEGER NOT NULL, update_us INTEGER NOT NULL, ready_us INTEGER NOT NULL,
    deleted_us INTEGER, generation INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account, job_id));
CREATE TABLE IF NOT EXISTS checkpoints (
    account TEXT NOT NULL, job_id TEXT NOT NULL, name TEXT NOT NULL,
    create_us INTEGER NOT NULL, update_us INTEGER NOT NULL,
    fingerprint TEXT NOT NULL, kind TEXT, reason TEXT, details TEXT NOT NULL,
    claimed_kind TEXT,
    PRIMARY KEY (account, job_id, name));
CREATE INDEX IF NOT EXISTS checkpoints_by_time ON checkpoints (account, job_id, create_us, name);
CREATE TABLE IF NOT EXISTS models (
    account TEXT NOT NULL, model_id TEXT NOT NULL, record TEXT NOT NULL, create_us INTEGER NOT NULL,
    PRIMARY KEY (account, model_id));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS operations (
    account TEXT NOT NULL, op_id TEXT NOT NULL, record TEXT NOT NULL, polls_left INTEGER NOT NULL,
    PRIMARY KEY (account, op_id));
"""


class StoreError(Exception):
    """Base for store refusals; the HTTP layer maps each subclass to an error envelope."""


class AlreadyExists(StoreError):
    pass


class NotFound(StoreError):
    pass


class Rejected(StoreError):
    """The inspector refused a directory that had to be a valid checkpoint."""

    def __init__(self, verdict: Verdict):
        super().__init__(verdict.reason)
        self.verdict = verdict


@dataclass(frozen=True)
class Job:
    account: str
    job_id: str
    body: dict
    state: str
    create_us: int
    update_us: int
    ready_us: int
    deleted_us: int | None
    generation: int

    @property
    def base_model(self) -> str:
        return (self.body.get("trainingConfig") or {}).get("baseModel", "")

    @property
    def lora_rank(self) -> int:
        return int((self.body.get("trainingConfig") or {}).get("loraRank") or 0)


@dataclass(frozen=True)
class CheckpointRow:
    account: str
    job_id: str
    name: str
    kind: Kind | None
    create_us: int
    update_us: int
    details: dict = field(default_factory=dict)
    reason: str | None = None
    claimed_kind: str | None = None


def _encode_token(create_us: int, name: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([create_us, name]).encode()).decode().rstrip("=")


def decode_page_token(token: str) -> tuple[int, str]:
    """Raises ValueError for anything that is not a token this store issued."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        create_us, name = json.loads(raw)
        if not isinstance(create_us, int) or not isinstance(name, str):
            raise TypeError
        return create_us, name
    except Exception as exc:  # noqa: BLE001 - any malformed token is the same user error
        raise ValueError(f"pageToken {token[:40]!r} is not valid") from exc


class Store(CheckpointReplacement, ModelsAndOperations):
    def __init__(self, data_dir: Path | None, clock: Clock | None = None, *, mixed_precision_stamps: bool = False,
                 fsync: bool = False):
        self.clock = clock or Clock()
        self.fsync = fsync  # False: atomic and crash-safe, but not power-loss durable (see store/atomic.py)
        self.mixed_precision_stamps = mixed_precision_stamps  # quirk: every other row on a whole second
        self._stamps = 0
        self._lock = threading.RLock()
        self._released = threading.Condition(self._lock)   # a reserved checkpoint name became free
        self._reserved: set[tuple[str, ...]] = set()
        # called after a blob dir is published and before its row is committed (emulator.faults crash rules)
        self.before_commit: Callable[[str, str, str], None] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fwemu-")
            self.root = Path(self._tmp.name)
            db_path = ":memory:"
        else:
            self._tmp = None
            self.root = Path(data_dir)
            self.root.mkdir(parents=True, exist_ok=True)
            db_path = str(self.root / "fwemu.sqlite")
        self.blobs = self.root / "blobs"
        self.models_dir = self.root / "models"
        self.staging = self.root / "staging"
        # a replaced checkpoint's old directory waits here until the new row is committed
        self.replacing = self.root / "replacing"
        for d in (self.blobs, self.models_dir, self.staging, self.replacing):
            d.mkdir(parents=True, exist_ok=True)
        self.step_log = StepLog(self.root / "metrics", fsync=fsync)  # per-step training metrics (dashboard)
        self.db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        if db_path != ":memory:":
            self.db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL loses nothing when the process dies; FULL also survives power loss
            self.db.execute("PRAGMA synchronous=FULL" if fsync else "PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.recover()

    # ------------------------------------------------------------------ lifecycle
    closed = False   # set once close() ran: a request still in flight then is answered 503, not 500

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self.db.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def recover(self) -> dict[str, int]:
        """Drop what a crash left behind: staging dirs, and blob or model dirs with no row."""
        removed = {"staging": 0, "checkpoints": 0, "models": 0, "replacements_undone": 0}
        with self._lock:
            for entry in list(self.staging.iterdir()):
                remove_tree(entry)
                removed["staging"] += 1
            removed["replacements_undone"] = self._recover_replacements()
            rows = {(a, j, n) for a, j, n in self.db.execute("SELECT account, job_id, name FROM checkpoints")}
            for ckpt in self.blobs.glob("*/*/*"):
                if (ckpt.parts[-3], ckpt.parts[-2], ckpt.parts[-1]) not in rows:
                    remove_tree(ckpt)
                    removed["checkpoints"] += 1
            models = {(a, m) for a, m in self.db.execute("SELECT account, model_id FROM models")}
            for mdir in self.models_dir.glob("*/*"):
                if (mdir.parts[-2], mdir.parts[-1]) not in models:
                    remove_tree(mdir)
                    removed["models"] += 1
        return removed

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def integrity_ok(self) -> bool:
        with self._lock:
            return self.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # ------------------------------------------------------------------ jobs
    def create_job(self, account: str, job_id: str, body: dict, ready_delay_us: int) -> Job:
        now = self.clock.now_us()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM jobs WHERE account=? AND job_id=?", (account, job_id)).fetchone():
                raise AlreadyExists(f"trainer job {job_id} already exists")
            db.execute(
                "INSERT INTO jobs VALUES (?,?,?,?,?,?,?,NULL,0)",
                (account, job_id, json.dumps(body), "JOB_STATE_CREATING", now, now, now + ready_delay_us),
            )
        return self.get_job(account, job_id, include_deleted=True)  # type: ignore[return-value]

    def get_job(self, account: str, job_id: str, *, include_deleted: bool = False) -> Job | None:
        with self._lock:
            row = self.db.execute("SELECT * FROM jobs WHERE account=? AND job_id=?", (account, job_id)).fetchone()
        if row is None:
            return None
        job = Job(row[0], row[1], json.loads(row[2]), *row[3:])
        if job.deleted_us is not None and not include_deleted:
            return None
        return job

    def list_jobs(self, account: str) -> list[Job]:
        with self._lock:
            ids = [r[0] for r in self.db.execute(
                "SELECT job_id FROM jobs WHERE account=? AND deleted_us IS NULL ORDER BY create_us", (account,))]
        return [j for j in (self.get_job(account, i) for i in ids) if j]

    def set_job_state(self, account: str, job_id: str, state: str, *, ready_us: int | None = None,
                      bump_generation: bool = False, deleted: bool = False) -> Job:
        now = self.clock.now_us()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET state=?, update_us=?, ready_us=COALESCE(?, ready_us),"
                " generation=generation+?, deleted_us=CASE WHEN ? THEN ? ELSE deleted_us END"
                " WHERE account=? AND job_id=?",
                (state, now, ready_us, int(bump_generation), int(deleted), now, account, job_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"trainer job {job_id} not found")
        return self.get_job(account, job_id, include_deleted=True)  # type: ignore[return-value]

    def purge_job(self, account: str, job_id: str) -> None:
        """Forget a job whose retention window ended: rows first, then its blobs."""
        with self._tx() as db:
            db.execute("DELETE FROM checkpoints WHERE account=? AND job_id=?", (account, job_id))
            db.execute("DELETE FROM jobs WHERE account=? AND job_id=?", (account, job_id))
        remove_tree(self.blobs / account / job_id)
        self.step_log.remove_job(account, job_id)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_dir(self, account: str, job_id: str, name: str) -> Path:
        return self.blobs / account / job_id / name

    @contextmanager
    def write_checkpoint(self, account: str, job_id: str, name: str, *, require_valid: bool = False,
                         claimed_kind: str | None = None, replace: bool = False) -> Iterator[Path]:
        """Yield an empty staging dir; on clean exit classify, publish and record it atomically.

        With require_valid, a directory the inspector rejects raises Rejected and nothing is kept.
        Otherwise a rejected directory is kept and recorded without a kind: it is not a row, but
        the admin listing shows it with the inspector's reason.

        A name the job already has raises AlreadyExists, unless `replace`: then the new bytes take
        the old row's place in one step (new createTime and updateTime, kind judged again); a
        listing sees the old row or the new one, never neither; a crash keeps the old one; models
        promoted from the old bytes keep their own links to them. Writers of one name take turns.
        """
        if not NAME_RE.fullmatch(name):  # fullmatch: `$` would let "step-1\n" through
            raise ValueError(f"checkpoint name {name!r} must match {NAME_RE.pattern}")
        key = ("ckpt", account, job_id, name)
        with self._released:
            while True:
                if not replace and self._has_row(account, job_id, name):
                    raise AlreadyExists(f"checkpoint {name} already exists in job {job_id}")
                if key not in self._reserved:
                    break
                if not replace:
                    raise AlreadyExists(f"checkpoint {name} already exists in job {job_id}")
                self._released.wait()
            self._reserved.add(key)
        staging = Path(tempfile.mkdtemp(prefix="ckpt-", dir=self.staging))
        try:
            yield staging
            verdict = inspector.inspect_checkpoint(staging)
            if verdict.kind is None and require_valid:
                raise Rejected(verdict)
            final = self.checkpoint_dir(account, job_id, name)
            if self._replace_checkpoint(account, job_id, name, staging, final, verdict, claimed_kind):
                return
            publish_dir(staging, final, fsync=self.fsync)
            try:
                if self.before_commit:
                    self.before_commit("checkpoint", account, job_id)
                self._record_checkpoint(account, job_id, name, final, verdict, claimed_kind)
            except BaseException:
                remove_tree(final)  # published but never recorded: not a checkpoint
                raise
        except BaseException:
            remove_tree(staging)
            raise
        finally:
            with self._released:
                self._reserved.discard(key)
                self._released.notify_all()

    def _has_row(self, account: str, job_id: str, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM checkpoints WHERE account=? AND job_id=? AND name=?",
                               (account, job_id, name)).fetchone() is not None

    def _stamp(self) -> int:
        """A createTime for a row committed now (inside the write lock: createTime order == commit order)."""
        self._stamps += 1
        if self.mixed_precision_stamps and self._stamps % 2 == 0:
            return self.clock.now_us_whole_second()
        return self.clock.now_us()

    def _record_checkpoint(self, account, job_id, name, final: Path, verdict: Verdict, claimed, *,
                           replace: bool = False) -> None:
        fp = inspector.fingerprint(final)
        with self._tx() as db:  # stamp inside the write lock: createTime order == commit order (L1)
            now = self._stamp()
            values = (account, job_id, name, now, now, fp, verdict.kind.value if verdict.kind else None,
                      verdict.reason, json.dumps(verdict.details), claimed)
            if replace:
                db.execute("DELETE FROM checkpoints WHERE account=? AND job_id=? AND name=?", (account, job_id, name))
            db.execute("INSERT INTO checkpoints VALUES (?,?,?,?,?,?,?,?,?,?)", values)

    def _row(self, r: tuple) -> CheckpointRow:
        return CheckpointRow(
            account=r[0], job_id=r[1], name=r[2], create_us=r[3], update_us=r[4],
            kind=Kind(r[6]) if r[6] else None, reason=r[7], details=json.loads(r[8]), claimed_kind=r[9],
        )

    def _check(self, r: tuple) -> tuple[CheckpointRow, tuple | None]:
        """The row as its directory is now, plus the SQL update to persist when its fingerprint moved.

        The fast path (fingerprint unchanged) takes no lock. A mismatch is looked at again under
        the lock, with the row read afresh: a replace swaps the directory and commits the new row
        while holding it, so a listing never mistakes a replace in flight for changed bytes.
        """
        path = self.checkpoint_dir(r[0], r[1], r[2])
        if fingerprint_or_none(path) == r[5]:
            return self._row(r), None
        with self._lock:
            fresh = self.db.execute("SELECT * FROM checkpoints WHERE account=? AND job_id=? AND name=?",
                                    (r[0], r[1], r[2])).fetchone()
            if fresh is None:                        # purged meanwhile: not a row any more
                gone = self._row(r)
                return CheckpointRow(gone.account, gone.job_id, gone.name, None, gone.create_us, gone.update_us,
                                     {}, f"{gone.name}: deleted", gone.claimed_kind), None
            row = self._row(fresh)
            fp = fingerprint_or_none(path)
            if fp == fresh[5]:
                return row, None
            verdict = inspector.inspect_checkpoint(path) if fp else None
        kind = verdict.kind.value if verdict and verdict.kind else None
        reason = verdict.reason if verdict else f"{row.name}: directory is missing"
        details = verdict.details if verdict else {}
        now = self.clock.now_us()
        # compare-and-set on the fingerprint judged: a replace committed since then is not undone
        update = (fp or "", kind, reason, json.dumps(details), now, row.account, row.job_id, row.name, fresh[5])
        return CheckpointRow(row.account, row.job_id, row.name, Kind(kind) if kind else None,
                             row.create_us, now, details, reason, row.claimed_kind), update

    def _verified_all(self, raw: list[tuple]) -> list[CheckpointRow]:
        """Check a page of rows; re-judged ones are written back in one transaction."""
        checked = [self._check(r) for r in raw]
        updates = [u for _, u in checked if u is not None]
        if updates:
            with self._tx() as db:
                db.executemany(
                    "UPDATE checkpoints SET fingerprint=?, kind=?, reason=?, details=?, update_us=?"
                    " WHERE account=? AND job_id=? AND name=? AND fingerprint=?", updates)
        return [row for row, _ in checked]

    def list_checkpoints(self, account: str, job_id: str, page_size: int, page_token: str | None = None,
                         *, newest_first: bool = False, visible_before_us: int | None = None,
                         ) -> tuple[list[CheckpointRow], str]:
        """One page of valid rows, oldest first; the token is a cursor, so rows never repeat or skip."""
        after = decode_page_token(page_token) if page_token else None
        order = "DESC" if newest_first else "ASC"
        cmp = "<" if newest_first else ">"
        sql = "SELECT * FROM checkpoints WHERE account=? AND job_id=? AND kind IS NOT NULL"
        args: list[Any] = [account, job_id]
        if visible_before_us is not None:
            sql += " AND create_us <= ?"
            args.append(visible_before_us)
        if after:
            sql += f" AND (create_us, name) {cmp} (?, ?)"
            args += list(after)
        sql += f" ORDER BY create_us {order}, name {order} LIMIT ?"
        args.append(page_size + 1)
        with self._lock:
            raw = self.db.execute(sql, args).fetchall()
        more = len(raw) > page_size
        raw = raw[:page_size]
        rows = self._verified_all(raw)
        token = _encode_token(raw[-1][3], raw[-1][2]) if more and raw else ""
        return [r for r in rows if r.kind is not None], token

    def get_checkpoint(self, account: str, job_id: str, name: str) -> CheckpointRow | None:
        with self._lock:
            r = self.db.execute(
                "SELECT * FROM checkpoints WHERE account=? AND job_id=? AND name=?", (account, job_id, name)
            ).fetchone()
        return self._verified_all([r])[0] if r else None

    def rejected_checkpoints(self, account: str, job_id: str | None = None) -> list[CheckpointRow]:
        sql = "SELECT * FROM checkpoints WHERE account=? AND kind IS NULL"
        args: list[Any] = [account]
        if job_id:
            sql += " AND job_id=?"
            args.append(job_id)
        with self._lock:
            return [self._row(r) for r in self.db.execute(sql + " ORDER BY create_us", args)]

    def newest_checkpoint(self, account: str, job_id: str, kinds: set[Kind]) -> CheckpointRow | None:
        """Newest row of these kinds whose bytes still say so; reads rows in small batches."""
        marks = ",".join("?" * len(kinds))
        sql = (f"SELECT * FROM checkpoints WHERE account=? AND job_id=? AND kind IN ({marks})"
               " AND (create_us, name) < (?, ?) ORDER BY create_us DESC, name DESC LIMIT 16")
        before: tuple[int, str] = (2**62, "")
        while True:
            with self._lock:
                batch = self.db.execute(sql, [account, job_id, *[k.value for k in kinds], *before]).fetchall()
            if not batch:
                return None
            for row in self._verified_all(batch):
                if row.kind in kinds:
                    return row
            before = (batch[-1][3], batch[-1][2])

    def checkpoint_names(self, account: str, job_id: str, kinds: set[Kind]) -> list[str]:
        marks = ",".join("?" * len(kinds))
        with self._lock:
            return [r[0] for r in self.db.execute(
                f"SELECT name FROM checkpoints WHERE account=? AND job_id=? AND kind IN ({marks})"
                " ORDER BY create_us", [account, job_id, *[k.value for k in kinds]])]

    # ------------------------------------------------------------------ admin
    def latest_stamp(self) -> int:
        """The newest stamp stored anywhere, so a restarted clock keeps createTime order (L1)."""
        with self._lock:
            return max(self.db.execute(
                "SELECT MAX(v) FROM (SELECT MAX(update_us) AS v FROM checkpoints UNION ALL "
                "SELECT MAX(update_us) FROM jobs UNION ALL SELECT MAX(create_us) FROM models)").fetchone()[0] or 0, 0)

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            r = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return r[0] if r else None

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                       (key, value))

    def reset(self) -> None:
        with self._tx() as db:
            for table in ("jobs", "checkpoints", "models", "operations"):
                db.execute(f"DELETE FROM {table}")
        for d in (self.blobs, self.models_dir, self.staging):
            remove_tree(d)
            d.mkdir(parents=True, exist_ok=True)
        self.step_log.remove_all()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {t: self.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                    for t in ("jobs", "checkpoints", "models", "operations")}


