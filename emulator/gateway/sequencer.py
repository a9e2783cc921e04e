"""One worker thread per model, executing its requests in `seq_id` order.

The SDK numbers each training client's requests 1, 2, 3, ... but may post them out of order:
the chunks of one forward_backward are posted concurrently, and a retry can overtake a slow
request. The trainer must still apply them in order (an optim_step must see every gradient
posted before it), so a request whose predecessor has not arrived is held.

A hole in the sequence never hangs a client: when the worker has waited `gap_timeout_s` for a
missing seq_id, every held request fails with a user error that names the hole, and the
sequence continues after them. A seq_id that was already used (or given up) fails at once.

Requests without a seq_id (create_model, unload_model) are barriers: create_model runs before
anything else; unload_model runs after every seq_id that had arrived when it was posted.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable

from fwemu.emulator.gateway.futures import SERVER, USER, FutureRecord, failure

log = logging.getLogger(__name__)

DEFAULT_GAP_TIMEOUT_S = 30.0


class UserError(Exception):
    """A request the caller got wrong: the future fails with category "user"."""


def is_user_error(exc: BaseException) -> bool:
    if isinstance(exc, UserError):
        return True
    # The trainer's own user-error type, recognised without importing torch here.
    trainer = sys.modules.get("fwemu.emulator.trainer.model_session")
    user_type = getattr(trainer, "TrainerUserError", None) if trainer else None
    return user_type is not None and isinstance(exc, user_type)


@dataclass
class Work:
    """One unit of work: `run()` returns the success payload or raises."""

    future: FutureRecord
    run: Callable[[], dict]
    seq_id: int | None = None
    after_seq: int = 0          # barrier: run only once every seq_id <= after_seq is done


class ModelWorker:
    def __init__(self, name: str, gap_timeout_s: float = DEFAULT_GAP_TIMEOUT_S):
        self.name = name
        self.gap_timeout_s = gap_timeout_s
        self._cond = threading.Condition()
        self._first: list[Work] = []            # run before any seq_id (create_model)
        self._held: dict[int, Work] = {}        # seq_id -> work waiting for its turn
        self._barriers: list[Work] = []         # seq-less work (unload_model)
        self._next_seq = 1                     # the seq_id that runs next
        self._max_seen = 0
        self._blocked_since: float | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"fwemu-{name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ submit
    def _refused_closed(self, work: Work) -> bool:
        """Called with the lock held: fail work that arrives after the worker stopped."""
        if self._closed:
            work.future.resolve(failure(f"{self.name} was unloaded or its trainer restarted; "
                                        "the request was not executed", SERVER))
        return self._closed

    def submit_first(self, work: Work) -> None:
        with self._cond:
            if not self._refused_closed(work):
                self._first.append(work)
                self._cond.notify()

    def submit(self, work: Work) -> None:
        """Queue sequenced work; a seq_id that is not ahead of the sequence fails at once."""
        seq = work.seq_id
        assert seq is not None
        with self._cond:
            if self._refused_closed(work):
                return
            if seq < self._next_seq or seq in self._held:
                reason = "is already queued" if seq in self._held else "was already used"
                work.future.resolve(failure(
                    f"seq_id {seq} for {self.name} {reason}; the next expected seq_id is "
                    f"{self._next_seq}. Each training client numbers its requests 1, 2, 3, ... "
                    "and a retried request must reuse its X-Idempotency-Key."))
                return
            self._held[seq] = work
            self._max_seen = max(self._max_seen, seq)
            self._cond.notify()

    def submit_barrier(self, work: Work) -> None:
        with self._cond:
            if not self._refused_closed(work):
                work.after_seq = self._max_seen
                self._barriers.append(work)
                self._cond.notify()

    def close(self, reason: str = "the model was dropped") -> None:
        """Stop after the running work; everything still queued fails with a server error."""
        with self._cond:
            self._closed = True
            pending = self._first + list(self._held.values()) + self._barriers
            self._first, self._held, self._barriers = [], {}, []
            self._cond.notify()
        for work in pending:
            work.future.resolve(failure(f"{self.name}: {reason}; the request was not executed", SERVER))

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ loop
    def _take(self) -> Work | None:
        """Called with the lock held: the next runnable work, or None when there is none (yet)."""
        if self._first:
            return self._first.pop(0)
        for i, b in enumerate(self._barriers):  # before later seq_ids: they were posted after it
            if b.after_seq < self._next_seq:
                return self._barriers.pop(i)
        work = self._held.pop(self._next_seq, None)
        if work is not None:
            self._next_seq += 1
        return work

    def _give_up_gap(self) -> list[Work]:
        """Called with the lock held after gap_timeout_s: fail held work, move past the hole."""
        failed = [self._held[s] for s in sorted(self._held)]
        missing = self._next_seq
        self._next_seq = max(self._held) + 1
        self._held = {}
        for work in failed:
            work.future.resolve(failure(
                f"seq_id {work.seq_id} for {self.name} waited {self.gap_timeout_s:g}s for seq_id {missing}, "
                "which never arrived, and was not executed. Requests of one training client must "
                "carry consecutive seq_ids starting at 1."))
        return failed

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    work = self._take()
                    if work is not None:
                        self._blocked_since = None
                        break
                    if self._held:
                        now = time.monotonic()
                        if self._blocked_since is None:
                            self._blocked_since = now
                        remaining = self._blocked_since + self.gap_timeout_s - now
                        if remaining <= 0:
                            self._give_up_gap()
                            self._blocked_since = None
                            continue
                        self._cond.wait(remaining)
                    else:
                        self._blocked_since = None
                        self._cond.wait()
            self._execute(work)

    def _execute(self, work: Work) -> None:
        if work.future.done:
            return
        try:
            payload = work.run()
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the caller
            if is_user_error(exc):
                work.future.resolve(failure(str(exc), USER))
            else:
                log.error("%s: %s failed:\n%s", self.name, work.future.request_type, traceback.format_exc())
                work.future.resolve(failure(
                    f"internal trainer error in {work.future.request_type}: {type(exc).__name__}: {exc}", SERVER))
            if not isinstance(exc, Exception):
                raise
            return
        if not isinstance(payload, dict) or "error" in payload:
            work.future.resolve(failure(
                f"internal trainer error in {work.future.request_type}: malformed result", SERVER))
            return
        work.future.resolve(payload)
