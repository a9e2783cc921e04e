"""fwemu's contract suite: docs/invariants.md as Hypothesis state machines and properties (see README.md).

    from fwemu.contracts import run_contracts
    report = run_contracts()                 # a fresh in-process emulator, default profile
    print(report.table()); assert report.ok

Importing this package is cheap (the pytest plugin is loaded in every test run): hypothesis,
torch and the clients are imported by `run_contracts` and the fixtures, not here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fwemu.contracts.invariants import REGISTRY, InvariantViolation

if TYPE_CHECKING:
    from fwemu.contracts.runner import Report


def run_contracts(target: Any = None, max_examples: int | None = None, seed: int = 0, **kwargs: Any) -> "Report":
    """Run the suite against `target` (default: in-process emulator); see contracts.runner.run_contracts."""
    from fwemu.contracts.runner import run_contracts as _run

    return _run(target, max_examples, seed, **kwargs)


__all__ = ["REGISTRY", "InvariantViolation", "run_contracts"]
