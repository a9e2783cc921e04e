"""Fault plans: deterministic rules saying which call fails, and how (pure: no HTTP, no I/O).

A rule names an operation (see `emulator.faults.operations`), optionally a job and an account,
and an action. Each rule counts the calls that match it (1, 2, 3, ...) and fires:

* from call `nth` (default 1) on, `times` times in a row (default 1);
* or, with `every: k`, on calls nth, nth+k, nth+2k, ... (`times` then defaults to unlimited);
* or, with `probability: p`, on each matching call from `nth` on with chance p, drawn from a
  random generator seeded by the plan's `seed` and the rule's position, so the same plan and the
  same call order fire on the same calls (`times` then defaults to unlimited).

Every rule counts every call that matches it, even one another rule already faulted; of the
rules that want to fire on one call, the first in the plan wins.

Actions: `error` (an error envelope with any HTTP status), `delay` (sleep, then serve),
`drop` (the client gets a response cut short), `crash` (the process dies between a blob write
and its metadata commit), `preempt` (the trainer job fails as if its machine was taken away).
"""

from __future__ import annotations

import json
import random
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fwemu.emulator.errors import STATUSES

ACTIONS = ("error", "delay", "drop", "crash", "preempt")
STAGES = ("before", "after")
STATEFUL = ("crash", "preempt")   # actions that change the emulator's state, not just one answer
MAX_RULES = 1000
MAX_DELAY_S = 300.0

# HTTP status -> the gRPC status name its envelope carries (an explicit `grpc_status` wins).
_NAME_BY_HTTP = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 408: "DEADLINE_EXCEEDED", 409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
                 500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


class PlanError(ValueError):
    """A fault plan or rule that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Rule:
    operation: str
    action: str
    job: str | None = None
    account: str | None = None
    nth: int = 1
    times: int | None = 1           # None: unlimited
    every: int | None = None
    probability: float | None = None
    status: int = 503               # error
    grpc_status: str | None = None  # error: envelope status name (default from `status`)
    message: str | None = None      # error, preempt
    seconds: float = 0.0            # delay
    stage: str = "before"           # error, drop: before the app runs, or after (its effects stay)

    def envelope_status(self) -> str:
        if self.grpc_status:
            return self.grpc_status
        if self.status in _NAME_BY_HTTP:
            return _NAME_BY_HTTP[self.status]
        return "INTERNAL" if self.status >= 500 else "FAILED_PRECONDITION"

    def describe(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Firing:
    """What the middleware must do for one call: the rule that fired and its ordinal."""

    rule: Rule
    index: int        # the rule's position in the plan
    call: int         # which matching call of that rule this is (1-based)

    @property
    def action(self) -> str:
        return self.rule.action

    def message(self) -> str:
        return self.rule.message or (f"injected fault: {self.rule.action} on call {self.call} of "
                                     f"{self.rule.operation} (fault plan rule {self.index})")


_FIELDS = {f for f in Rule.__dataclass_fields__}


def _int(spec: dict, key: str, low: int, high: int | None = None) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f" and <= {high}" if high is not None else ""
        raise PlanError(f"rule field {key!r} must be an integer >= {low}{bound}, got {value!r}")
    return value


def _str(spec: dict, key: str, max_len: int = 512) -> str | None:
    value = spec.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise PlanError(f"rule field {key!r} must be a non-empty string of at most {max_len} characters")
    return value


def parse_rule(spec: Any) -> Rule:
    """A Rule from its JSON form; PlanError names the first bad field."""
    if not isinstance(spec, dict):
        raise PlanError(f"a fault rule must be a JSON object, got {type(spec).__name__}")
    unknown = set(spec) - _FIELDS
    if unknown:
        raise PlanError(f"unknown rule field(s): {', '.join(sorted(unknown))}")
    operation = _str(spec, "operation", 128)
    if operation is None:
        raise PlanError("rule field 'operation' is required (e.g. 'save_weights', 'promote', '*')")
    action = spec.get("action")
    if action not in ACTIONS:
        raise PlanError(f"rule field 'action' must be one of {', '.join(ACTIONS)}, got {action!r}")
    every = _int(spec, "every", 1)
    probability = spec.get("probability")
    if probability is not None and (isinstance(probability, bool) or not isinstance(probability, (int, float))
                                    or not 0.0 <= probability <= 1.0):
        raise PlanError(f"rule field 'probability' must be a number from 0 to 1, got {probability!r}")
    if every is not None and probability is not None:
        raise PlanError("a rule takes 'every' or 'probability', not both")
    if "times" in spec and spec["times"] is None:
        times = None
    else:
        times = _int(spec, "times", 1)
        if times is None:
            times = None if (every is not None or probability is not None) else 1
    status = _int(spec, "status", 400, 599)
    grpc_status = _str(spec, "grpc_status", 64)
    if grpc_status is not None and grpc_status not in STATUSES:
        raise PlanError(f"rule field 'grpc_status' must be one of {', '.join(STATUSES)}, got {grpc_status!r}")
    seconds = spec.get("seconds", 0.0)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= MAX_DELAY_S:
        raise PlanError(f"rule field 'seconds' must be a number from 0 to {MAX_DELAY_S:g}, got {seconds!r}")
    if action == "delay" and "seconds" not in spec:
        raise PlanError("a delay rule needs 'seconds'")
    stage = spec.get("stage", "before")
    if stage not in STAGES or (stage == "after" and action not in ("error", "drop")):
        raise PlanError("rule field 'stage' is 'before' or 'after', and 'after' only for error and drop")
    return Rule(operation=operation, action=action, job=_str(spec, "job", 128), account=_str(spec, "account", 128),
                nth=_int(spec, "nth", 1) or 1, times=times, every=every,
                probability=float(probability) if probability is not None else None,
                status=status or 503, grpc_status=grpc_status, message=_str(spec, "message", 2048),
                seconds=float(seconds), stage=stage)


@dataclass
class _RuleState:
    rule: Rule
    rng: random.Random
    calls: int = 0
    fired: int = 0

    def wants(self) -> bool:
        """Count this call and say whether the rule would fire on it."""
        r = self.rule
        self.calls += 1
        draw = self.rng.random() if r.probability is not None else None  # one draw per call: reproducible
        if self.calls < r.nth or (r.times is not None and self.fired >= r.times):
            return False
        if r.every is not None:
            return (self.calls - r.nth) % r.every == 0
        if draw is not None:
            return draw < r.probability
        return True


@dataclass
class FaultPlan:
    """The rules of one emulator instance, their counters, and the crashes armed for the store."""

    seed: int = 0
    _states: list[_RuleState] = field(default_factory=list)
    _armed: list[tuple[str, str, str | None, Firing]] = field(default_factory=list)  # (point, account, job, firing)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # ---------------------------------------------------------------- building
    @classmethod
    def from_json(cls, spec: Any) -> "FaultPlan":
        """`{"seed": 7, "rules": [...]}` or a bare list of rules."""
        plan = cls()
        plan.load(spec)
        return plan

    def load(self, spec: Any) -> list[Rule]:
        """Add the rules of a plan document (and take its seed, when given); returns the new rules."""
        if isinstance(spec, list):
            spec = {"rules": spec}
        if not isinstance(spec, dict) or set(spec) - {"seed", "rules"}:
            raise PlanError('a fault plan is {"seed": <int>, "rules": [<rule>, ...]} or a list of rules')
        rules = spec.get("rules", [])
        if not isinstance(rules, list):
            raise PlanError("'rules' must be a list")
        seed = spec.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise PlanError(f"'seed' must be an integer, got {seed!r}")
        parsed = [parse_rule(r) for r in rules]
        with self._lock:
            if len(self._states) + len(parsed) > MAX_RULES:
                raise PlanError(f"a fault plan holds at most {MAX_RULES} rules")
            if seed is not None:
                self.seed = seed
                for i, st in enumerate(self._states):  # reseed so the whole plan replays from its seed
                    st.rng = random.Random(f"{seed}:{i}")
            start = len(self._states)
            self._states += [_RuleState(r, random.Random(f"{self.seed}:{start + i}")) for i, r in enumerate(parsed)]
        return parsed

    def reset(self) -> None:
        with self._lock:
            self._states.clear()
            self._armed.clear()
            self.seed = 0

    # ---------------------------------------------------------------- matching
    def on_call(self, operation: str | None, account: str | None, job: str | None,
                owner: bool = True) -> Firing | None:
        """Count one call against every rule it matches; the first rule that fires wins.

        `owner` says the caller's key belongs to the account in the path: rules that change state
        (crash, preempt) match only such calls, so a stranger can neither trigger nor use them up.
        """
        if operation is None:
            return None
        chosen: Firing | None = None
        with self._lock:
            for i, st in enumerate(self._states):
                r = st.rule
                if r.operation not in ("*", operation):
                    continue
                if (r.job is not None and r.job != job) or (r.account is not None and r.account != account):
                    continue
                if r.action in STATEFUL and not owner:
                    continue
                if st.wants() and chosen is None:
                    st.fired += 1
                    chosen = Firing(r, i, st.calls)
        return chosen

    # ---------------------------------------------------------------- crashes
    def arm_crash(self, point: str, account: str | None, job: str | None, firing: Firing) -> None:
        """The next commit at `point` ("checkpoint" or "model") in that account (and job) kills the process."""
        with self._lock:
            self._armed.append((point, account or "", job, firing))

    def take_crash(self, point: str, account: str, job: str | None) -> Firing | None:
        """The armed crash for this commit, if any (removed: one crash per firing)."""
        with self._lock:
            for i, (p, a, j, firing) in enumerate(self._armed):
                if p == point and a in ("", account) and (j is None or j == job):
                    del self._armed[i]
                    return firing
        return None

    # ---------------------------------------------------------------- reporting
    def describe(self) -> dict:
        with self._lock:
            return {
                "seed": self.seed,
                "rules": [{**st.rule.describe(), "calls": st.calls, "fired": st.fired} for st in self._states],
                "armedCrashes": [{"point": p, "account": a or None, "job": j, "rule": f.index}
                                 for p, a, j, f in self._armed],
            }


def read_plan_source(source: str) -> Any:
    """JSON text (starting with `{` or `[`) or the path of a JSON file, as parsed JSON."""
    text = source.strip()
    if not text.startswith(("{", "[")):
        try:
            text = Path(text).expanduser().read_text()
        except OSError as exc:
            raise PlanError(f"cannot read fault plan {source!r}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(f"fault plan is not valid JSON: {exc}") from None


def load_plan(source: str | None) -> FaultPlan:
    """The plan given by `--fault-plan` / FWEMU_FAULT_PLAN (empty when None)."""
    return FaultPlan.from_json(read_plan_source(source)) if source else FaultPlan()
