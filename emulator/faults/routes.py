"""/_emulator/v1/faults: read, extend and reset the fault plan of a running emulator.

The plan is global to the emulator (like its clock), but only a caller with a valid key may
touch it, and rules that change state (crash, preempt) fire only on their owner's calls.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from fwemu.emulator.auth import caller_account
from fwemu.emulator.errors import invalid_argument
from fwemu.emulator.faults.plan import ACTIONS, MAX_DELAY_S, MAX_RULES, STAGES, FaultPlan, PlanError
from fwemu.emulator.lazy_routes import LazyAPIRoute

router = APIRouter(prefix="/_emulator/v1", tags=["emulator admin: faults"], route_class=LazyAPIRoute)


class RuleBody(BaseModel):
    """One fault rule (see emulator.faults.plan for the counting rules)."""

    model_config = ConfigDict(extra="forbid")
    operation: str = Field(min_length=1, max_length=128, description="e.g. save_weights, promote, import, or *")
    action: Literal[ACTIONS]  # type: ignore[valid-type]
    job: str | None = Field(default=None, min_length=1, max_length=128)
    account: str | None = Field(default=None, min_length=1, max_length=128)
    nth: int = Field(default=1, ge=1)
    times: int | None = Field(default=None, ge=1)
    every: int | None = Field(default=None, ge=1)
    probability: float | None = Field(default=None, ge=0, le=1)
    status: int = Field(default=503, ge=400, le=599)
    grpc_status: str | None = Field(default=None, max_length=64)
    message: str | None = Field(default=None, min_length=1, max_length=2048)
    seconds: float = Field(default=0.0, ge=0, le=MAX_DELAY_S)
    stage: Literal[STAGES] = "before"  # type: ignore[valid-type]


class PlanBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int | None = None
    rules: list[RuleBody] = Field(default_factory=list, max_length=MAX_RULES)


def plan_of(request: Request) -> FaultPlan:
    return request.app.state.fault_plan


@router.get("/faults")
def get_faults(_caller: str = Depends(caller_account), plan: FaultPlan = Depends(plan_of)):
    """The rules, how many calls each has seen and fired on, and any crash armed for a commit."""
    return plan.describe()


@router.post("/faults")
def add_faults(body: PlanBody, _caller: str = Depends(caller_account), plan: FaultPlan = Depends(plan_of)):
    """Append rules (and set the seed of random rules); counting starts now for the new rules."""
    spec = {"rules": [r.model_dump(exclude_unset=True) for r in body.rules]}
    if body.seed is not None:
        spec["seed"] = body.seed
    try:
        added = plan.load(spec)
    except PlanError as exc:
        raise invalid_argument(str(exc), reason="BAD_FAULT_PLAN") from None
    return {"added": len(added), **plan.describe()}


@router.delete("/faults")
def reset_faults(_caller: str = Depends(caller_account), plan: FaultPlan = Depends(plan_of)):
    """Drop every rule, counter and armed crash."""
    plan.reset()
    return plan.describe()
