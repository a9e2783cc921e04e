"""`run_contracts(target, max_examples, seed) -> Report`: the state machine plus the focused properties.

Each component is a Hypothesis test; a failure is caught, its shrunk program captured, and the
invariant it names recorded. The report has one row per invariant: pass, FAIL, or "not exercised"
(with the reason, e.g. the target cannot restart) - never a silent pass for a rule that did not run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

from fwemu.contracts.invariants import REGISTRY, InvariantViolation, reset_tally
from fwemu.contracts.targets import CAP_TEXT, InProcessTarget, Target

log = logging.getLogger(__name__)

# Profiles: the CI one fits the repo's 3-minute budget on 2 cores; nightly is the same suite, longer.
PROFILES = {
    "ci": {"max_examples": 8, "steps": 20},
    "default": {"max_examples": 25, "steps": 20},
    "nightly": {"max_examples": 500, "steps": 40},
}


@dataclass
class InvariantResult:
    id: str
    title: str
    status: str                 # "pass" | "FAIL" | "not exercised" | "n/a"
    examples: int
    message: str | None = None
    found_by: str | None = None
    program: str | None = None


@dataclass
class ComponentRun:
    name: str
    targets: tuple[str, ...]
    examples: int
    seconds: float
    outcome: str                # "passed" | "failed: <id>" | "error" | "skipped: <why>"
    steps: int = 0              # machine rules executed (a property's direct rule calls count too)


@dataclass
class Report:
    target: str
    driver: str
    seed: int
    max_examples: int
    breaks: list[str]
    results: dict[str, InvariantResult] = field(default_factory=dict)
    components: list[ComponentRun] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # The state machine component's executed rules (initialize rules included), from contracts.machine.STEPS
    steps: int = 0
    rule_counts: dict[str, int] = field(default_factory=dict)
    rule_seconds: dict[str, float] = field(default_factory=dict)     # seconds inside each rule
    invariant_checks: int = 0
    invariant_seconds: float = 0.0
    policies: dict[str, str] = field(default_factory=dict)   # what the driver declared (contracts/driver_api.py)

    @property
    def machine_run(self) -> ComponentRun | None:
        return next((c for c in self.components if c.name == "state machine"), None)

    @property
    def steps_per_second(self) -> float | None:
        m = self.machine_run
        return self.steps / m.seconds if m is not None and m.seconds > 0 else None

    @property
    def failed_ids(self) -> set[str]:
        return {r.id for r in self.results.values() if r.status == "FAIL"}

    @property
    def ok(self) -> bool:
        return not self.failed_ids and not self.errors

    def table(self) -> str:
        rows = [("id", "invariant", "result", "examples")]
        for r in self.results.values():
            rows.append((r.id, r.title, r.status, str(r.examples)))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = [f"fwemu contracts: {self.target}, driver {self.driver}, seed {self.seed}, "
                 f"max_examples {self.max_examples} ({self.seconds:.1f}s)"]
        if self.policies:
            lines.append("driver's declared policies (held to exactly these): "
                         + ", ".join(f"{k}={v}" for k, v in sorted(self.policies.items())))
        for i, row in enumerate(rows):
            lines.append("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row)).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        m = self.machine_run
        if m is not None and self.steps:
            lines.append(f"state machine: {self.steps} steps in {m.examples} examples, {m.seconds:.1f}s "
                         f"({self.steps_per_second:.1f} steps/s)")
        for r in self.results.values():
            if r.status == "FAIL":
                lines.append(f"\n{r.id} failed ({r.found_by}): {r.message}")
                if r.program:
                    lines.append("  falsifying program:\n" + "\n".join("    " + ln for ln in r.program.splitlines()))
            elif r.status in ("not exercised", "n/a") and r.message:
                lines.append(f"{r.id} {r.status}: {r.message}")
            elif r.id == "F2" and r.message:
                lines.append(f"F2 {r.status}: {r.message}")
        for e in self.errors:
            lines.append(f"\nERROR {e}")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)


def expected_ids(break_switch: str) -> set[str]:
    """The invariant ids a break switch says it breaks: "... (breaks R1/R2)" -> {"R1", "R2"}."""
    from fwemu.emulator.settings import BREAK_SWITCHES

    text = BREAK_SWITCHES.get(break_switch, "")
    m = re.search(r"breaks ([A-Z]\d(?:\s*/\s*[A-Z]?\d)*)", text)
    if not m:
        return set()
    ids, letter = set(), ""
    for part in re.split(r"\s*/\s*", m.group(1)):
        if part[0].isalpha():
            letter = part[0]
            ids.add(part)
        else:
            ids.add(letter + part)
    return ids


class _Capture:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, value: Any) -> None:
        self.lines.append(str(value))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _violations(exc: BaseException) -> list[InvariantViolation]:
    if isinstance(exc, InvariantViolation):
        return [exc]
    found: list[InvariantViolation] = []
    for sub in getattr(exc, "exceptions", ()) or ():
        found += _violations(sub)
    cause = exc.__cause__ or exc.__context__
    if not found and cause is not None and cause is not exc:
        found += _violations(cause)
    return found


def _program(exc: BaseException, found: InvariantViolation, captured: str) -> str:
    """The falsifying program Hypothesis attached to the failure (PEP 678 notes), else what it printed."""
    notes = list(getattr(found, "__notes__", ()) or ())
    if found is not exc:
        notes += list(getattr(exc, "__notes__", ()) or ())   # one program per failure; repeated steps are real
    keep = [n for n in notes if not n.startswith(("You can add @seed", "Explanation:"))]
    return "\n".join(keep).strip() or captured.strip()


@contextlib.contextmanager
def shrink_budget(seconds: float | None):
    """Bound the time Hypothesis spends shrinking one failure (its own cap is 5 minutes). Each step of
    this suite is a real HTTP round trip, so an unbounded shrink can take longer than finding the bug."""
    try:
        from hypothesis.internal.conjecture import engine
    except ImportError:  # pragma: no cover - a Hypothesis without that module: keep its default
        yield
        return
    old = getattr(engine, "MAX_SHRINKING_SECONDS", None)
    if seconds is None or old is None:
        yield
        return
    engine.MAX_SHRINKING_SECONDS = seconds
    try:
        yield
    finally:
        engine.MAX_SHRINKING_SECONDS = old


def _settings(max_examples: int, steps: int, shrink: bool):
    from hypothesis import HealthCheck, Phase, settings

    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])
    return settings(max_examples=max_examples, stateful_step_count=steps, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck), report_multiple_bugs=False, phases=phases,
                    print_blob=True)


def run_contracts(target: Target | None = None, max_examples: int | None = None, seed: int = 0, *,
                  driver: str | type = "client", only: Iterable[str] | None = None, profile: str = "default",
                  steps: int | None = None, shrink: bool = True, machine: bool = True,
                  properties: bool | Iterable[str] = True, progress: Callable[[str], None] | None = None,
                  shrink_seconds: float | None = 60.0) -> Report:
    """Run the contract suite against `target` (default: a fresh in-process emulator).

    `driver`: client | sdk | cookbook[=PATH] | module:Class, or a driver class (contracts/driver_api.py).
    `only`: invariant ids; components that target none of them are left out. `properties`: False,
    True, or the names of the focused properties to run. `shrink_seconds` bounds the shrinking of
    each failure. Never raises for a contract failure: read `report.failed_ids` / `report.ok`.
    """
    from hypothesis import seed as hseed
    from hypothesis.reporting import with_reporter

    from fwemu.contracts.machine import STEPS, MachineConfig, make_machine
    from fwemu.contracts.properties import PROPERTIES, PropertyContext

    prof = PROFILES[profile]
    max_examples = max_examples if max_examples is not None else prof["max_examples"]
    steps = steps if steps is not None else prof["steps"]
    owned = target is None
    target = target or InProcessTarget()
    only_ids = set(only) if only else None
    started = time.monotonic()
    tally = reset_tally()
    from fwemu.contracts.drivers import driver_class

    driver_cls = driver_class(driver)   # a bad spec raises DriverSpecError before anything starts
    report = Report(target=target.describe(), driver=driver if isinstance(driver, str) else driver_cls.__name__, seed=seed, max_examples=max_examples,
                    breaks=sorted(target.breaks))
    variants: dict[frozenset, Any] = {}

    def config_for(t: Target) -> MachineConfig:
        if isinstance(t, InProcessTarget):
            return MachineConfig(target_for_example=t.renew, release=lambda _t: None, driver=driver)
        return MachineConfig(target_for_example=lambda: t, release=lambda _t: None, driver=driver)

    def variant(**overrides: Any) -> MachineConfig | None:
        if not isinstance(target, InProcessTarget):
            return None
        key = frozenset((k, frozenset(v) if isinstance(v, (set, frozenset)) else v) for k, v in overrides.items())
        if key not in variants:
            variants[key] = target.variant(**overrides)
        return config_for(variants[key])

    base_config = config_for(target)
    components: list[tuple[str, tuple[str, ...], Callable[[], Any], int]] = []
    if machine:
        machine_cls = make_machine(base_config)
        hseed(seed)(machine_cls)

        def machine_test(cls=machine_cls):
            from hypothesis.stateful import run_state_machine_as_test

            run_state_machine_as_test(cls, settings=_settings(max_examples, steps, shrink))
        components.append(("state machine", tuple(REGISTRY), machine_test, max_examples))
    wanted_props = None if properties is True else set(properties or ())
    if properties:
        ctx = PropertyContext(config=base_config, variant=variant)
        probe_driver_caps = frozenset(driver_cls.caps)
        for prop in PROPERTIES:
            if wanted_props is not None and prop.name not in wanted_props:
                continue
            if only_ids is not None and not (set(prop.targets) & only_ids):
                continue
            missing = [c for c in prop.needs if not target.has(c)] + \
                      [c for c in prop.driver_caps if c not in probe_driver_caps]
            if missing:
                report.components.append(ComponentRun(prop.name, prop.targets, 0, 0.0,
                                                      f"skipped: {prop.why_needed}"))
                continue
            if prop.name in OUR_CLIENT_PROPERTIES and not _is_our_client(driver_cls):
                report.components.append(ComponentRun(prop.name, prop.targets, 0, 0.0,
                                                      f"skipped: {OUR_CLIENT_PROPERTIES[prop.name]}"))
                continue
            n = prop.examples or max(2, round(max_examples * prop.weight / 4))

            def prop_test(prop=prop, n=n):
                test = prop.build(ctx)
                test = _settings(n, steps, shrink)(test)
                hseed(seed)(test)
                test()
            components.append((prop.name, prop.targets, prop_test, n))

    failures: dict[str, tuple[str, str, str]] = {}
    try:
        for name, targets, run, n in components:
            if progress:
                progress(f"running {name} ({n} examples)...")
            t0 = time.monotonic()
            before = tally.example
            STEPS.reset()
            capture = _Capture()
            outcome = "passed"
            try:
                with with_reporter(capture), shrink_budget(shrink_seconds):
                    run()
            except BaseException as exc:  # noqa: BLE001 - a failure is the result, not a crash of the run
                if isinstance(exc, KeyboardInterrupt):
                    raise
                found = _violations(exc)
                if found:
                    v = found[0]
                    failures.setdefault(v.id, (v.message, name, _program(exc, v, capture.text)))
                    outcome = f"failed: {v.id}"
                else:
                    outcome = "error"
                    report.errors.append(f"in {name}: {type(exc).__name__}: {exc}\n{capture.text}\n"
                                         + "".join(traceback.format_exception(exc))[-3000:])
            report.components.append(ComponentRun(name, targets, tally.example - before,
                                                  time.monotonic() - t0, outcome, STEPS.steps))
            if name == "state machine":
                report.steps = STEPS.steps
                report.rule_counts = dict(STEPS.rules.most_common())
                report.rule_seconds = {k: round(v, 6) for k, v in STEPS.rule_seconds.most_common()}
                report.invariant_checks = sum(STEPS.checks.values())
                report.invariant_seconds = round(sum(STEPS.check_seconds.values()), 6)
    finally:
        for v in variants.values():
            v.close()
        if owned:
            target.close()

    _fill_results(report, tally, failures, target, driver_cls)
    report.policies = dict(tally.policies)
    report.seconds = time.monotonic() - started
    return report


# Focused properties that build our client's TrainingCheckpoints / recipes themselves (through
# `driver.cp`) instead of asking the driver: they test our client, so only drivers built on it run them.
OUR_CLIENT_PROPERTIES = {
    "faults": "it drives our client's TrainingCheckpoints and transport directly, not the driver's",
    "dataloader": "it checks our client's dataloader.json format, not the driver's",
    "recipe": "it runs our client's sft_loop recipe, not the driver's",
}


def _is_our_client(driver_cls: type) -> bool:
    from fwemu.contracts.drivers import OurDriver

    return issubclass(driver_cls, OurDriver)


def _fill_results(report: Report, tally, failures: dict, target: Target, driver_cls: type) -> None:
    driver_caps = frozenset(driver_cls.caps)
    for inv_id, inv in REGISTRY.items():
        n = tally.examples(inv_id)
        if inv_id in failures:
            message, by, program = failures[inv_id]
            report.results[inv_id] = InvariantResult(inv_id, inv.title, "FAIL", n, message, by, program)
        elif inv_id == "F2":
            report.results[inv_id] = _f2(report, target)
        elif n > 0:
            report.results[inv_id] = InvariantResult(inv_id, inv.title, "pass", n)
        else:
            report.results[inv_id] = InvariantResult(inv_id, inv.title, "not exercised", 0,
                                                     _why_not(inv_id, target, driver_caps, report))


def _f2(report: Report, target: Target) -> InvariantResult:
    inv = REGISTRY["F2"]
    if not target.breaks:
        return InvariantResult("F2", inv.title, "n/a", 0, "run with --break SWITCH (tests/contracts/test_teeth.py "
                                                          "runs every switch)")
    failed = {i for i, r in report.results.items() if r.status == "FAIL"}
    missed = [b for b in sorted(target.breaks) if not (expected_ids(b) & failed)]
    if missed:
        return InvariantResult("F2", inv.title, "FAIL", len(target.breaks),
                               f"break switch(es) {missed} were not caught by "
                               f"{sorted(set().union(*(expected_ids(b) for b in missed)))}", "teeth")
    names = ", ".join(f"{b} -> {'/'.join(sorted(expected_ids(b) & failed))}" for b in sorted(target.breaks))
    return InvariantResult("F2", inv.title, "pass", len(target.breaks), f"caught: {names}")


def _why_not(inv_id: str, target: Target, driver_caps: frozenset[str], report: Report) -> str:
    skipped = [c for c in report.components if c.outcome.startswith("skipped") and inv_id in c.targets]
    reasons = [f"{c.name} {c.outcome}" for c in skipped]
    from fwemu.contracts.drivers import CHECKPOINTS, FAULTS

    if inv_id in ("R3", "R4", "R5", "R6", "R7") and CHECKPOINTS not in driver_caps:
        reasons.append("TrainingCheckpoints rules need our client (fwemu contracts --driver client; "
                       "pytest plugin --fw-driver client)")
    if inv_id == "F1" and FAULTS not in driver_caps:
        reasons.append("faults are injected through our client's transport")
    if inv_id == "L3" and not target.has("clock"):
        reasons.append(f"target cannot {CAP_TEXT['clock']}")
    return "; ".join(reasons) or "no example reached it; raise --max-examples"
