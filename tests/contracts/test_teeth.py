"""F2: the suite catches a broken target. For every break switch the emulator offers, the contract
properties aimed at the rule it breaks must FAIL and name that invariant; the clean emulator must
pass (tests/contracts/test_clean.py). A new switch gets its test here automatically, and must say
in its description which invariant it breaks ("... (breaks K4)")."""

from __future__ import annotations

import pytest

from fwemu.contracts.runner import expected_ids, run_contracts
from fwemu.contracts.targets import InProcessTarget
from fwemu.emulator.settings import BREAK_SWITCHES


@pytest.mark.parametrize("switch", sorted(BREAK_SWITCHES))
def test_focused_properties_catch_the_break_and_name_the_invariant(switch, pytestconfig):
    wanted = expected_ids(switch)
    assert wanted, f"break switch {switch!r} does not say which invariant it breaks: {BREAK_SWITCHES[switch]!r}"
    with InProcessTarget(breaks={switch}) as target:
        report = run_contracts(target, max_examples=4, seed=pytestconfig.getoption("--fw-seed"), only=wanted,
                               machine=False, shrink=False)
    caught = report.failed_ids & wanted
    assert caught, f"{switch} ({BREAK_SWITCHES[switch]}) was not caught by {sorted(wanted)}:\n{report.table()}"
    assert not report.errors, report.table()
    assert report.results["F2"].status == "pass", report.table()
    for inv_id in caught:
        assert report.results[inv_id].message, "a failure must say what broke"


def test_the_state_machine_alone_catches_a_break_and_prints_a_program():
    """The random programs find it too, without the focused properties, and the failure comes with a
    program a person can replay (shrunk within the time budget)."""
    switch = "newest-first"
    with InProcessTarget(breaks={switch}) as target:
        report = run_contracts(target, max_examples=40, seed=0, properties=False, steps=20, shrink=True,
                               shrink_seconds=10)
    wanted = expected_ids(switch)
    assert report.failed_ids & wanted, report.table()
    program = report.results[sorted(report.failed_ids & wanted)[0]].program
    assert program and "state = ContractMachine()" in program and "state.teardown()" in program, program
    steps = [ln for ln in program.splitlines() if ln.strip().startswith("state.") and "check_server_state" not in ln]
    assert len(steps) <= 25, f"the printed program is not short:\n{program}"
