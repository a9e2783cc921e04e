"""The contract suite holds against the emulator with each of the real service's quirks switched on."""

from __future__ import annotations

import pytest

from fwemu.contracts.runner import run_contracts
from fwemu.contracts.targets import InProcessTarget

QUIRKS_THE_SUITE_HANDLES = ["mixed-precision-timestamps", "rename-dcp-saves", "slow-operations", "list-failures",
                            "listing-delay"]


@pytest.mark.parametrize("quirk", QUIRKS_THE_SUITE_HANDLES)
def test_every_invariant_holds_under_the_quirk(quirk):
    target = InProcessTarget(quirks={quirk})
    try:
        report = run_contracts(target, profile="ci", max_examples=2, seed=0, shrink=False)
    finally:
        target.close()
    assert report.ok, report.table()
    assert any(r.examples > 0 for r in report.results.values())
