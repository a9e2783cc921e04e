"""The contract state machine: random programs of save / crash / resume / promote / delete / restart.

`make_machine(config)` returns a `RuleBasedStateMachine` class bound to a target and a driver.
Every rule acts through the driver (the client under test) and updates the model (`World`);
`check_server_state` (an `@invariant`) then compares what the server lists with the model after
every step. A failure shrinks to a short program Hypothesis prints, e.g.

    state = ContractMachine()
    jobs_0 = state.first_lora_job()
    jobs_1 = state.first_full_job()
    state.sampler_save(checkpoint_type=None, job=jobs_1)
    state.sampler_save(checkpoint_type=None, job=jobs_1)
    state.teardown()
    # K2Violation: [K2 promotable-iff] job ...: row sample-...-4-... is INFERENCE_ARC_V2 but listed promotable=True

Rules whose capability the target or driver lacks are disabled by a precondition (restart and
clock need the in-process emulator; rewriting bytes needs the blob dir; TrainingCheckpoints,
crashes and wire faults need our client); the report lists what was not exercised and why.

Every rule is decorated with `@counted` (under `@rule`/`@initialize`; `@counted_check` under
`@invariant`): `STEPS` counts each execution and the seconds spent in it, for the report's step
count and `bench/contract_speed.py`. A new rule needs it too (tests/bench checks).

The machine is assembled here from one module per area: rulekit (shared pieces), machine_core
(setup, clients, resume), rules_training, rules_attempts (R8), rules_promotion, rules_preconditions (K7),
rules_lifecycle (L3, L5), rules_bytes (K1, K8), rules_faults, checks.
"""

from __future__ import annotations

from fwemu.contracts.checks import ServerChecks
from fwemu.contracts.machine_core import MachineCore
from fwemu.contracts.rulekit import (BAD_MODEL_IDS, MAX_JOBS, STEPS, MachineConfig, SavePlan, StepTally, counted,
                                     counted_check, expect_ok)
from fwemu.contracts.rules_attempts import AttemptRules
from fwemu.contracts.rules_bytes import BytesRules
from fwemu.contracts.rules_faults import FaultRules
from fwemu.contracts.rules_lifecycle import LifecycleRules
from fwemu.contracts.rules_preconditions import PreconditionRules
from fwemu.contracts.rules_promotion import PromotionRules
from fwemu.contracts.rules_training import TrainingRules

__all__ = ["BAD_MODEL_IDS", "MAX_JOBS", "STEPS", "ContractMachine", "MachineConfig", "SavePlan", "StepTally",
           "counted", "counted_check", "expect_ok", "make_machine"]


class ContractMachine(TrainingRules, AttemptRules, PromotionRules, PreconditionRules, LifecycleRules, BytesRules,
                      FaultRules, ServerChecks, MachineCore):
    """Rules act through the driver; the model predicts; invariants compare after every step."""


def make_machine(config: MachineConfig, name: str = "ContractMachine") -> type[ContractMachine]:
    """A machine class bound to `config` (Hypothesis constructs machines with no arguments)."""
    return type(name, (ContractMachine,), {"config": config})
