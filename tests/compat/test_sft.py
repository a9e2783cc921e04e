"""The cookbook's sft_loop.main(cfg), unchanged, against `fwemu serve`: full, crash + resume, LoRA.

The recipe runs in the compat venv (fireworks-ai 1.2.9 + tinker 0.23) with only the
environment of `fwemu env` and PYTHONPATH=<cookbook>. What is checked is what the user sees:
the rows the control plane lists, the promoted model, and the recipe's own log and
dataloader.json. Tokens come from the stand-in Qwen3 tokenizer: the emulator's qwen3-8b job
accepts only ids < 282 (a wrong tokenizer's ids fail the step), and HF is offline.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.compat.conftest import API_KEY
from tests.compat.recipes import list_rows

pytestmark = [pytest.mark.compat, pytest.mark.slow]

STEP_RE = re.compile(r"Step (\d+)/(\d+) \| Loss: ([0-9.]+)")


def model(emulator, model_id: str) -> dict:
    r = httpx.get(f"{emulator.url}/v1/accounts/local/models/{model_id}",
                  headers={"authorization": f"Bearer {API_KEY}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def short(row: dict) -> str:
    return row["name"].rsplit("/", 1)[1]


def steps(log: str) -> list[tuple[int, int, float]]:
    return [(int(a), int(b), float(c)) for a, b, c in STEP_RE.findall(log)]


def cursor(log_path: str) -> dict:
    return json.loads((Path(log_path) / "dataloader.json").read_text())


def test_full_run_whose_last_step_is_a_dcp_step_ends_with_a_ready_model(sft_full_run, emulator):
    result = sft_full_run.result()
    log = sft_full_run.text()
    assert result["steps"] == 2 and [s[:2] for s in steps(log)] == [(1, 2), (2, 2)]
    assert "renderer=qwen3" in log                      # Qwen/Qwen3-8B resolved (to the stand-in)
    assert "Deleted trainer job" in log                  # the recipe's own cleanup ran

    rows = list_rows(emulator.url, API_KEY, result["job_id"])
    # the DCP save at step 2 and the final save under the same name: one row, replaced
    assert [short(r) for r in rows if short(r) == "step-2"] == ["step-2"]
    by_name = {short(r): r for r in rows}
    assert by_name["step-2"]["checkpointType"] == "CHECKPOINT_TYPE_TRAINING" and not by_name["step-2"]["promotable"]
    sampler = [r for r in rows if r["promotable"]]
    assert len(sampler) == 1 and re.fullmatch(r"step-2-[0-9a-f]{8}", short(sampler[0]))
    assert sampler[0]["checkpointType"] == "CHECKPOINT_TYPE_INFERENCE_BASE"

    m = model(emulator, "compat-sft-full")
    assert m["state"] == "READY" and m["kind"] == "HF_BASE_MODEL"
    assert m["sourceCheckpoint"] == sampler[0]["name"]


def test_sigkill_after_a_dcp_row_then_rerun_resumes_from_it_and_promotes(crashed_and_resumed, emulator):
    crash = crashed_and_resumed
    first_log = crash.first.text()
    assert crash.first.returncode == -9                  # SIGKILL: no cleanup, no final save
    assert crash.cursor_at_kill == {"step-3": 6}          # 3 steps x batch 2 rows
    assert [(short(r), r["promotable"]) for r in crash.rows_at_kill] == [("step-3", False)]
    killed_at = max(s[0] for s in steps(first_log))
    assert 3 <= killed_at < 6

    result = crash.second.result()
    log = crash.second.text()
    assert result == {"steps": 6, "job_id": crash.job_id}   # same job: TrainerConfig(job_id=...)
    assert "Resuming from control-plane row: step-3" in log
    # step restored (first step is 4) and data cursor restored (6 of 12 rows left -> 3 more steps)
    assert [s[:2] for s in steps(log)] == [(4, 6), (5, 6), (6, 6)]
    assert cursor(crash.spec["log_path"]) == {"step-3": 6, "step-6": 12}
    # the weights came back too: the first resumed loss continues below the first run's step-1 loss
    assert steps(log)[0][2] < steps(first_log)[0][2]

    names = [(short(r), r["promotable"]) for r in list_rows(emulator.url, API_KEY, crash.job_id)]
    assert names[:2] == [("step-3", False), ("step-6", False)] and len(names) == 3
    assert names[2][1] and re.fullmatch(r"step-6-[0-9a-f]{8}", names[2][0])
    m = model(emulator, "compat-sft-resumed")
    assert m["state"] == "READY" and m["sourceCheckpoint"].endswith("/" + names[2][0])


def test_lora_run_promotes_a_peft_adapter(sft_lora_run, emulator):
    result = sft_lora_run.result()
    assert result["steps"] == 2
    rows = list_rows(emulator.url, API_KEY, result["job_id"])
    kinds = {short(r): (r["checkpointType"], r["promotable"]) for r in rows}
    assert kinds["step-2"] == ("CHECKPOINT_TYPE_TRAINING_LORA", False)
    (adapter,) = [n for n, (_, p) in kinds.items() if p]
    assert kinds[adapter][0] == "CHECKPOINT_TYPE_INFERENCE_LORA"
    m = model(emulator, "compat-sft-lora")
    assert m["state"] == "READY" and m["kind"] == "HF_PEFT_ADDON"
    assert m["peftDetails"]["r"] == 8 and m["peftDetails"]["baseModel"] == "accounts/fireworks/models/qwen3-8b"
