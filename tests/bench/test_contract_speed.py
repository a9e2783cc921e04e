"""The contract suite's step counter (contracts.machine.STEPS) that bench/contract_speed.py reports.

No timing thresholds: only that every rule is counted and the Report's counts add up.
"""

from __future__ import annotations

import inspect

import pytest


def test_every_rule_and_invariant_is_counted():
    from hypothesis import stateful

    from fwemu.contracts.machine import ContractMachine

    names = ("RULE_MARKER", "INITIALIZE_RULE_MARKER", "INVARIANT_MARKER")
    # a Hypothesis that renamed these would leave the check below blind: fail loudly instead
    assert all(hasattr(stateful, m) for m in names), [m for m in names if not hasattr(stateful, m)]
    markers = [getattr(stateful, m) for m in names]
    found = {}
    for name, member in inspect.getmembers(ContractMachine):
        for marker in markers:
            spec = getattr(member, marker, None)
            if spec is not None:
                found[name] = getattr(spec.function, "fwemu_counted", False)
    assert len(found) > 20
    missing = sorted(n for n, ok in found.items() if not ok)
    assert not missing, f"rules without @counted (or invariants without @counted_check): {missing}"


@pytest.mark.slow
def test_report_counts_state_machine_steps():
    from fwemu.contracts.machine import STEPS
    from fwemu.contracts.runner import run_contracts

    report = run_contracts(max_examples=2, steps=6, seed=0, properties=False, shrink=False)
    machine = report.machine_run
    assert report.ok, report.table()
    assert machine is not None and machine.examples == 2
    assert report.steps == sum(report.rule_counts.values()) == machine.steps
    assert 0 < report.steps <= 2 * 6      # Hypothesis' stateful_step_count includes initialize rules
    assert report.rule_counts["first_full_job"] == report.rule_counts["first_lora_job"] == 2
    assert set(report.rule_seconds) == set(report.rule_counts)
    assert all(s >= 0 for s in report.rule_seconds.values())
    assert report.invariant_checks >= report.steps - 2 * 2 and report.invariant_seconds > 0
    assert report.steps_per_second and report.steps_per_second > 0
    assert f"state machine: {report.steps} steps in 2 examples" in report.table()
    assert STEPS.steps == report.steps


def test_table_without_a_machine_run_has_no_step_line():
    from fwemu.contracts.runner import Report

    report = Report("t", "client", 0, 1, [])
    assert report.steps == 0 and report.steps_per_second is None
    assert "steps/s" not in report.table()
