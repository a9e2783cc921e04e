"""Futures: the request ids a mutation answers at once, and the results `retrieve_future` hands out.

Every mutating trainer call answers `{"request_id", "model_id"}` immediately; the work runs later
on the model's worker thread, which resolves the future with either a success payload or
`{"error": msg, "category": "user"|"server"}` (docs/wire.md B.2). `retrieve_future` long-polls a
future from the event loop without tying up a thread, so many idle polls cost nothing.

Results are kept after they are read (the SDK re-polls after a dropped connection), bounded
per table so long runs do not grow memory without limit: the oldest finished futures go first.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

USER, SERVER = "user", "server"

# Kept per table; a finished future older than this many newer finished ones is forgotten.
MAX_FINISHED = 4096


def failure(message: str, category: str = USER) -> dict:
    """The failed-future payload; `category` is the SDK's RequestErrorCategory value (lowercase)."""
    return {"error": message, "category": category}


@dataclass(frozen=True)
class Owner:
    """Who may read a future: the job incarnation (create time + generation) that created it."""

    account: str
    job_id: str
    generation: int
    create_us: int = 0


@dataclass
class FutureRecord:
    request_id: str
    owner: Owner
    model_id: str | None
    request_type: str
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _payload: dict | None = field(default=None, repr=False)
    _waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = field(default_factory=list, repr=False)
    _done_callbacks: list[Any] = field(default_factory=list, repr=False)

    @property
    def done(self) -> bool:
        return self._payload is not None

    @property
    def payload(self) -> dict | None:
        return self._payload

    def resolve(self, payload: dict) -> bool:
        """Set the result once; later calls are ignored (returns False) so a result never changes."""
        with self._lock:
            if self._payload is not None:
                return False
            self._payload = payload
            waiters, self._waiters = self._waiters, []
            callbacks, self._done_callbacks = self._done_callbacks, []
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_set_if_pending, fut)
            except RuntimeError:  # the waiting loop is closed; nobody is listening any more
                pass
        for cb in callbacks:
            cb(self)
        return True

    def add_done_callback(self, cb) -> None:
        with self._lock:
            if self._payload is None:
                self._done_callbacks.append(cb)
                return
        cb(self)

    async def wait(self, timeout_s: float) -> dict | None:
        """The payload, or None when it is not ready within timeout_s (the caller says try_again)."""
        if self._payload is not None:
            return self._payload
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._lock:
            if self._payload is not None:
                return self._payload
            entry = (loop, fut)
            self._waiters.append(entry)
        try:
            await asyncio.wait_for(fut, timeout=max(timeout_s, 0.0))
        except asyncio.TimeoutError:
            pass
        finally:
            with self._lock:
                if entry in self._waiters:
                    self._waiters.remove(entry)
        return self._payload


def _set_if_pending(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


class FutureTable:
    """All futures of one gateway runtime, by request id."""

    def __init__(self, max_finished: int = MAX_FINISHED):
        self._lock = threading.Lock()
        self._records: dict[str, FutureRecord] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._max_finished = max_finished
        self._counter = itertools.count(1)
        # A random per-process prefix: ids from before an emulator restart never match new ones.
        self._prefix = secrets.token_hex(3)

    def create(self, owner: Owner, model_id: str | None, request_type: str) -> FutureRecord:
        rid = f"req-{self._prefix}-{next(self._counter)}"
        rec = FutureRecord(rid, owner, model_id, request_type)
        with self._lock:
            self._records[rid] = rec
        rec.add_done_callback(self._finished_one)
        return rec

    def _finished_one(self, rec: FutureRecord) -> None:
        with self._lock:
            if rec.request_id not in self._records:
                return
            self._finished[rec.request_id] = None
            while len(self._finished) > self._max_finished:
                old, _ = self._finished.popitem(last=False)
                self._records.pop(old, None)

    def get(self, request_id: str) -> FutureRecord | None:
        with self._lock:
            return self._records.get(request_id)

    def drop_job(self, account: str, job_id: str, keep_generation: int | None = None) -> list[FutureRecord]:
        """Forget a job's futures (all, or all but one generation's); pending ones are returned."""
        with self._lock:
            gone = [r for r in self._records.values()
                    if r.owner.account == account and r.owner.job_id == job_id
                    and r.owner.generation != keep_generation]
            for r in gone:
                self._records.pop(r.request_id, None)
                self._finished.pop(r.request_id, None)
        return [r for r in gone if not r.done]

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)
