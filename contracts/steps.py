"""What the state machine spends its steps on, and which invariant a failed step is blamed on.

`STEPS` counts every rule execution and invariant check with the seconds inside it, and how many
rule executions acted on a job that already held rows (`on_rows`): a step on an empty job
exercises little, so the machine is weighted towards jobs with rows (`contracts.machine`) and the
report prints the mix (`Report.step_mix`).

`counted` also decides *which* invariant a failed rule is reported under. A client-side check (R,
F) that fails inside a rule may be the symptom of a server that broke a K or L rule first (a
listing in the wrong order makes resume pick the wrong row); before the client-side failure is
raised, the machine's `_server_blame` looks at the server's own consistency and raises that
violation instead, so the report names the invariant actually broken.

Kept apart from `machine.py` so the rule mixins (`promote_paths`, `bytes_rules`, ...) can use
`counted` without importing the machine.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from fwemu.contracts.invariants import REGISTRY, InvariantViolation


@dataclass
class StepTally:
    """Every rule the machine executes (initialize rules included) and every invariant check, with the
    seconds spent inside each: always on, two `perf_counter` calls per step. Focused properties call
    rules directly and are counted too; `contracts.runner` resets the tally per component and puts the
    state machine's counts on the Report (`steps`, `rule_counts`, `rule_seconds`, `on_rows`)."""

    rules: Counter = field(default_factory=Counter)          # rule name -> executions
    rule_seconds: Counter = field(default_factory=Counter)   # rule name -> seconds inside the rule
    checks: Counter = field(default_factory=Counter)         # invariant name -> executions
    check_seconds: Counter = field(default_factory=Counter)  # invariant name -> seconds inside it
    job_steps: Counter = field(default_factory=Counter)      # rule name -> executions that took a job
    on_rows: Counter = field(default_factory=Counter)        # ... of which the job already held rows
    nested: Counter = field(default_factory=Counter)         # rule name -> calls made by another rule
    depth: int = 0                                           # rules running now (1 inside a step)

    @property
    def steps(self) -> int:
        return sum(self.rules.values())

    def reset(self) -> "StepTally":
        for c in (self.rules, self.rule_seconds, self.checks, self.check_seconds, self.job_steps, self.on_rows,
                  self.nested):
            c.clear()
        self.depth = 0
        return self


STEPS = StepTally()


def _job_arg(args: tuple, kwargs: dict):
    """The JobModel a rule acts on (argument `job` or `src`), if any."""
    for value in (kwargs.get("job"), kwargs.get("src"), *args[:1]):
        if value is not None and hasattr(value, "certain_rows") and hasattr(value, "job_id"):
            return value
    return None


def _timed(counts: Counter, seconds: Counter, *, is_rule: bool) -> Callable[[Callable], Callable]:
    def decorate(fn: Callable) -> Callable:
        name = fn.__name__

        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            if is_rule and STEPS.depth > 0:   # a rule another rule called: part of that step, not a step
                STEPS.nested[name] += 1
                STEPS.depth += 1
                try:
                    return fn(self, *args, **kwargs)
                finally:
                    STEPS.depth -= 1
            counts[name] += 1
            if is_rule:
                job = _job_arg(args, kwargs)
                if job is not None:
                    STEPS.job_steps[name] += 1
                    if job.certain_rows():
                        STEPS.on_rows[name] += 1
                STEPS.depth += 1
            t0 = time.perf_counter()
            try:
                return fn(self, *args, **kwargs)
            except InvariantViolation as exc:
                inv = REGISTRY.get(exc.id)
                blame = getattr(self, "_server_blame", None)
                if is_rule and blame is not None and inv is not None and inv.side != "server":
                    blame(exc)      # raises the server-side violation behind `exc`, if there is one
                raise
            finally:
                seconds[name] += time.perf_counter() - t0
                if is_rule:
                    STEPS.depth -= 1
        wrapper.fwemu_counted = True
        return wrapper
    return decorate


# Apply under @rule / @initialize (`counted`) and @invariant (`counted_check`), right above the def.
counted = _timed(STEPS.rules, STEPS.rule_seconds, is_rule=True)
counted_check = _timed(STEPS.checks, STEPS.check_seconds, is_rule=False)


def weight(cls: type, weights: dict[str, int]) -> type:
    """Give rule `name` `weights[name]` chances in Hypothesis' uniform choice of the next rule.

    Hypothesis picks uniformly among the enabled rules it collected from the class's attributes;
    the same rule function under more attribute names is collected more often. Every copy has the
    same function name, so swarm testing switches them on and off together and a printed program
    shows the rule's own name."""
    for name, w in weights.items():
        fn = getattr(cls, name)
        for i in range(1, w):
            setattr(cls, f"_{name}_weight_{i}", fn)
    return cls
