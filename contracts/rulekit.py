"""What every rule module of the contract state machine shares: the step tally (`STEPS`, `counted`),
the machine's config, the `jobs` bundle, and `expect_ok`. Kept apart so rule modules import it
without importing each other."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from hypothesis.stateful import Bundle

from fwemu.contracts import invariants as inv
from fwemu.contracts.invariants import InvariantViolation
from fwemu.contracts.targets import Target

MAX_JOBS = 5
BAD_MODEL_IDS = ["", "UPPER", "has_underscore", "dot.id", "space id", "a" * 64, "trailing-newline\n",
                 "ünïcode", "slash/id", "x" * 63 + "\n", "tab\tid"]


@dataclass
class StepTally:
    """Every rule the machine executes (initialize rules included) and every invariant check, with the
    seconds spent inside each: always on, two `perf_counter` calls per step. Focused properties call
    rules directly and are counted too; `contracts.runner` resets the tally per component and puts the
    state machine's counts on the Report (`steps`, `rule_counts`, `rule_seconds`)."""

    rules: Counter = field(default_factory=Counter)          # rule name -> executions
    rule_seconds: Counter = field(default_factory=Counter)   # rule name -> seconds inside the rule
    checks: Counter = field(default_factory=Counter)         # invariant name -> executions
    check_seconds: Counter = field(default_factory=Counter)  # invariant name -> seconds inside it

    @property
    def steps(self) -> int:
        return sum(self.rules.values())

    def reset(self) -> "StepTally":
        for c in (self.rules, self.rule_seconds, self.checks, self.check_seconds):
            c.clear()
        return self


STEPS = StepTally()


def _timed(counts: Counter, seconds: Counter) -> Callable[[Callable], Callable]:
    """Count and time the outermost call only: a rule that runs another rule (checkpointed_step
    saves through `save`) is one step, and its seconds are counted once, under its own name."""
    depth = threading.local()

    def decorate(fn: Callable) -> Callable:
        name = fn.__name__

        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            if getattr(depth, "n", 0):
                return fn(self, *args, **kwargs)
            counts[name] += 1
            depth.n = 1
            t0 = time.perf_counter()
            try:
                return fn(self, *args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - t0
                depth.n = 0
        wrapper.fwemu_counted = True
        return wrapper
    return decorate


# Apply under @rule / @initialize (`counted`) and @invariant (`counted_check`), right above the def.
counted = _timed(STEPS.rules, STEPS.rule_seconds)
counted_check = _timed(STEPS.checks, STEPS.check_seconds)


@dataclass
class MachineConfig:
    """What one run of the machine is bound to. `target_for_example` gives a target per example
    (a fresh in-process emulator, or the same remote one) and `release` hands it back."""

    target_for_example: Callable[[], Target]
    release: Callable[[Target], None]
    driver: str = "client"
    fault_api: bool = True      # use /_emulator/v1/faults where the target serves it


@dataclass
class SavePlan:
    """The model's prediction for one TrainingCheckpoints.save call."""

    name: str
    resumable: bool
    promotable: bool
    probe: tuple
    reuse_dcp: str | None = None
    save_as: str | None = None
    reuse_sampler: str | None = None
    sampler_taken: str | None = None   # the `<name>-<suffix>` the client will ask for, already a row


def _read_files(path: Path | None) -> dict[str, bytes] | None:
    if path is None or not path.is_dir():
        return None
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def expect_ok(invariant: inv.Invariant, what: str, fn: Callable, *args, **kwargs):
    """Run `fn`; an exception means the target broke `invariant` (the message says where)."""
    try:
        return fn(*args, **kwargs)
    except InvariantViolation:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure here is the finding
        invariant.fail(f"{what} failed: {type(exc).__name__}: {exc}")


class _CaptureWarnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())



jobs = Bundle("jobs")


# Preconditions shared by rule modules. A rule that would do nothing (no row to promote, nothing
# saved since the last restart) is disabled rather than run as a no-op step: Hypothesis favours
# the rules it sorts first (fewest arguments), and a no-op it favours eats the step budget.
def live_rows(machine, want=lambda r: True) -> bool:
    return any(want(r) for j in machine.world.jobs if not j.purged for r in j.certain_rows())


def has_rows(machine) -> bool:
    return live_rows(machine)


def has_promotable(machine) -> bool:
    return live_rows(machine, lambda r: r.promotable)


def has_resumable(machine) -> bool:
    return live_rows(machine, lambda r: r.resumable)   # shared by every rule module: rules draw jobs from it, create_job adds to it
