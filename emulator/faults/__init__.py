"""Injected faults: make the emulator fail the way the real service fails, on purpose and on cue.

    plan.py        rules and their counting (pure)
    operations.py  request -> operation name, account, job (pure)
    middleware.py  applies a firing rule to the live request; the Store's crash hook
    routes.py      GET / POST / DELETE /_emulator/v1/faults
    crash_loop.py  `python -m emulator.faults.crash_loop`: SIGKILL a real server, check nothing is lost

A plan comes from `fwemu serve --fault-plan FILE.json`, env FWEMU_FAULT_PLAN (JSON text or a
file path), or POST /_emulator/v1/faults. docs/quirks.md describes the rule format.
"""

from __future__ import annotations

from fwemu.emulator.faults.middleware import CRASH_EXIT_CODE, FaultMiddleware, commit_hook
from fwemu.emulator.faults.plan import FaultPlan, PlanError, Rule, load_plan, parse_rule

__all__ = ["CRASH_EXIT_CODE", "FaultPlan", "PlanError", "Rule", "install", "load_plan", "parse_rule"]


def install(app, services) -> FaultPlan:
    """Give the app its fault plan (from settings), the middleware, the routes and the store hook."""
    from fwemu.emulator.faults.routes import router
    from fwemu.emulator.lazy_routes import add_routes

    plan = load_plan(services.settings.fault_plan)
    app.state.fault_plan = plan
    services.store.before_commit = commit_hook(plan)
    app.add_middleware(FaultMiddleware, plan=plan, services=services)
    add_routes(app, router)
    return plan
