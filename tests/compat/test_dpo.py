"""The cookbook's dpo_loop.main(cfg), unchanged, against `fwemu serve`: policy + reference, promote.

Full-parameter DPO makes the SDK provision a second, frozen reference trainer job; the recipe
caches its logprobs, releases it, trains the policy and promotes the final sampler save.
"""

from __future__ import annotations

import re

import pytest

from tests.compat.conftest import API_KEY
from tests.compat.recipes import JOB_RE, list_rows
from tests.compat.test_sft import model, short

pytestmark = [pytest.mark.compat, pytest.mark.slow]

DPO_STEP_RE = re.compile(r"Step (\d+)/(\d+) \| Loss: ([0-9.]+) \| Margin: ([+-][0-9.]+)")


def test_dpo_trains_against_a_separate_reference_and_promotes(dpo_run, emulator):
    result = dpo_run.result()
    log = dpo_run.text()
    policy = result["policy_job_id"]
    assert result["steps"] == 2
    created = JOB_RE.findall(log)
    assert len(created) == 2 and policy in created        # the policy and its reference trainer
    reference = next(j for j in created if j != policy)
    assert f"Deleted trainer job: {reference}" in log      # released after the reference cache

    dpo_steps = [(int(a), float(loss), float(margin)) for a, _, loss, margin in DPO_STEP_RE.findall(log)]
    assert [s[0] for s in dpo_steps] == [1, 2]
    assert dpo_steps[0][1] == pytest.approx(0.6931, abs=1e-3)   # policy == reference at step 1: log(2)
    assert dpo_steps[1][2] != 0.0                                 # the policy moved away from the reference

    rows = list_rows(emulator.url, API_KEY, policy)
    promotable = [r for r in rows if r["promotable"]]
    assert len(promotable) == 1 and re.fullmatch(r"step-2-[0-9a-f]{8}", short(promotable[0]))
    assert list_rows(emulator.url, API_KEY, reference) == []      # the reference saved nothing
    m = model(emulator, "compat-dpo")
    assert m["state"] == "READY" and m["kind"] == "HF_BASE_MODEL" and m["sourceCheckpoint"] == promotable[0]["name"]
