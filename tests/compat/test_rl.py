"""The cookbook's rl_loop.main(cfg), unchanged, against `fwemu serve`: GRPO with hot loads, crash + resume.

Each step the recipe samples a group of completions from its deployment, scores them, trains
one GRPO step only on groups whose rewards differ, saves a sampler snapshot and hot-loads it.
The reward is the launcher's (drive_recipe.py `even_bytes`, the fraction of even byte tokens in
the response), so it depends on what was sampled and groups are not all zero. What is checked
is what the user sees (the recipe's log and metrics ledger, the rows the control plane lists,
the promoted model) and, for the hot loads, the deployment's own persisted hot-load state.

The two runs (a full run; a run SIGKILLed after a DCP row, then resumed) start together when
the first test here asks for them; their time is mostly the cookbook's 15 s settle after each
DCP save with a cursor (two per run here).
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from tests.compat.conftest import API_KEY, BASE_MODEL, TOKENIZER
from tests.compat.recipes import CrashAndResume, list_rows, start
from tests.compat.test_sft import model, short

pytestmark = [pytest.mark.compat, pytest.mark.slow]

GROUP = 4          # completions per prompt
ROWS = 3           # prompts = steps (one prompt group per step)
# The policy job's create line (the reference's payload carries forwardOnly): its id, whatever
# order the two concurrent creates log "Created trainer job" in.
POLICY_JOB_RE = re.compile(r"Creating RLOR job: POST \S+rlorTrainerJobId=(\S+) \(model=[^)]*\) "
                           r"\(payload=(?!.*'forwardOnly': True)")
HOTLOAD_RE = re.compile(r"Hotloading (BASE \(non-delta\)|DELTA) snapshot '(\S+)' to deployment '(\S+)'")
LOADED_RE = re.compile(r"Hotload complete: (\S+) ")
STEP_RE = re.compile(r"Step (\d+) \| reward ([0-9.]+) \| RefKL")
SHAPE = "accounts/fireworks/deploymentShapes/qwen3-8b-h200/versions/v1"


def write_prompts(path: Path) -> Path:
    """RL prompt rows: a user turn (the recipe samples the assistant turn) and a ground truth."""
    rows = [{"messages": [{"role": "user", "content": f"What is {i} + {i}? Answer in <answer></answer>."}],
             "ground_truth": f"<answer>{2 * i}</answer>"} for i in range(ROWS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rl_spec(work: Path, deployment_id: str, output_model_id: str) -> dict:
    """Only fields a user sets: paths, the model, a short context, a small group, DCP every 2 steps,
    the deployment's tokenizer, id and shape (no training shape is looked up), and the reward."""
    return dict(log_path=str(work / "logs"), dataset=str(write_prompts(work / "prompts.jsonl")),
                base_model=BASE_MODEL, max_seq_len=256, completions_per_prompt=GROUP, max_completion_tokens=16,
                dcp_save_interval=2, output_model_id=output_model_id, reward="even_bytes",
                deployment=dict(tokenizer_model=TOKENIZER, deployment_id=deployment_id, deployment_shape=SHAPE))


@pytest.fixture(scope="module")
def rl_runs(compat, emulator, env, tmp_path_factory) -> dict:
    """Start the full run and the crash-and-resume chain together; each with its metrics ledger."""
    full_work, crash_work = tmp_path_factory.mktemp("rl_full"), tmp_path_factory.mktemp("rl_crash")
    full = start(compat, {**env, "COOKBOOK_METRICS_FILE": str(full_work / "metrics.jsonl")}, "rl-full", "rl_loop",
                 rl_spec(full_work, "compat-rl-full", "compat-rl-full"), full_work)
    crash = CrashAndResume(compat, {**env, "COOKBOOK_METRICS_FILE": str(crash_work / "metrics.jsonl")},
                           rl_spec(crash_work, "compat-rl-resumed", "compat-rl-resumed"), crash_work,
                           emulator.url, API_KEY, kill_at="step-2", recipe="rl_loop", job_re=POLICY_JOB_RE).begin()
    yield {"full": full, "crash": crash, "full_work": full_work, "crash_work": crash_work}
    for run in (full, crash.first, crash.second):
        if run is not None and run.proc is not None and run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


def ledger(work: Path) -> list[dict]:
    """The recipe's per-step metric records (COOKBOOK_METRICS_FILE), in order."""
    return [r for r in map(json.loads, (work / "metrics.jsonl").read_text().splitlines()) if "rollout/raw_samples" in r]


def hot_load_state(emulator, deployment_id: str) -> dict:
    """The deployment's persisted hot-load state (read-only peek at the store: the status route
    answers no replicas once the recipe's cleanup has scaled the deployment to zero)."""
    db = sqlite3.connect(f"file:{emulator.data_dir / 'fwemu.sqlite'}?mode=ro", uri=True)
    try:
        (raw,) = db.execute("SELECT hot_load FROM deployments WHERE account='local' AND deployment_id=?",
                            (deployment_id,)).fetchone()
    finally:
        db.close()
    return json.loads(raw)


def hot_loads(log: str) -> list[tuple[str, str]]:
    """(kind, snapshot) the SDK hot-loaded, checking each one completed, in order."""
    started = [(kind.split()[0], snap) for kind, snap, _ in HOTLOAD_RE.findall(log)]
    assert [s for _, s in started] == LOADED_RE.findall(log)
    return started


def session_of(snapshot: str) -> str:
    return snapshot.rsplit("-", 1)[1]


def test_full_grpo_run_hot_loads_every_step_and_promotes_a_base_model(rl_runs, emulator):
    run = rl_runs["full"]
    result = run.result()
    log = run.text()
    policy, reference = result["policy_job_id"], result["reference_job_id"]
    assert result["steps"] == ROWS and result["deployment_id"] == "compat-rl-full"
    assert reference and reference != policy              # kl_beta > 0: a frozen reference trainer

    # every step trained on an accepted group (rewards differ within it) and moved the policy
    steps = [(int(s), float(r)) for s, r in STEP_RE.findall(log)]
    assert [s for s, _ in steps] == [1, 2, 3]
    records = ledger(rl_runs["full_work"])
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(r["rollout/raw_samples"] == GROUP and r["rollout/filtered_samples"] == GROUP for r in records)
    assert all(0.0 < r["rollout/raw_reward"] < 1.0 for r in records)
    assert all(r["train/mean_adv_loss"] != 0.0 for r in records), records   # nonzero advantages
    # the policy moves away from the frozen reference: identical at step 1, apart after updates
    assert records[0]["train/ref_kl"] == 0.0 and records[-1]["train/ref_kl"] > 0.0

    # one hot load before the first rollout (a base) and one after every step (deltas)
    loads = hot_loads(log)
    sess = session_of(loads[0][1])
    assert loads == [("BASE", f"step-0-{sess}")] + [("DELTA", f"step-{i}-{sess}") for i in (1, 2, 3)]
    state = hot_load_state(emulator, "compat-rl-full")
    assert state["seq"] == 4 and state["current"] == f"step-3-{sess}" and state["kind"] == "full"
    assert state["source_job"] == f"local/{policy}" and state["applied"] == "delta"

    # rows: the weight-sync snapshots, the DCP save at step 2, the final save at step 3
    kinds = {short(r): (r["checkpointType"], r["promotable"]) for r in list_rows(emulator.url, API_KEY, policy)}
    assert kinds == {
        f"step-0-{sess}": ("CHECKPOINT_TYPE_INFERENCE_BASE", True),
        f"step-1-{sess}": ("CHECKPOINT_TYPE_INFERENCE_ARC_V2", False),
        f"step-2-{sess}": ("CHECKPOINT_TYPE_INFERENCE_ARC_V2", False),
        "step-2": ("CHECKPOINT_TYPE_TRAINING", False),
        "step-3": ("CHECKPOINT_TYPE_TRAINING", False),
        # the final promotable save reuses the step-3 weight sync's name: a full base replaces the delta
        f"step-3-{sess}": ("CHECKPOINT_TYPE_INFERENCE_BASE", True),
    }
    cursor = json.loads((rl_runs["full_work"] / "logs" / "dataloader.json").read_text())
    assert cursor == {"step-2": 2, "step-3": 3}

    m = model(emulator, "compat-rl-full")
    assert m["state"] == "READY" and m["kind"] == "HF_BASE_MODEL"
    assert m["sourceCheckpoint"].endswith(f"/{policy}/checkpoints/step-3-{sess}")
    assert f"Deleted trainer job: {reference}" in log and f"Deleted trainer job: {policy}" in log
    assert "Scaled deployment to zero: compat-rl-full" in log


def test_grpo_sigkill_after_a_dcp_row_then_rerun_resumes_and_promotes(rl_runs, emulator):
    crash: CrashAndResume = rl_runs["crash"].join()
    assert not crash.error, crash.error + "\n" + (crash.first.text()[-4000:] if crash.first else "")
    first_log = crash.first.text()
    assert crash.first.returncode == -9
    assert crash.cursor_at_kill == {"step-2": 2}          # 2 steps x 1 prompt
    sess1 = session_of(hot_loads(first_log)[0][1])
    at_kill = {short(r) for r in crash.rows_at_kill}
    assert "step-2" in at_kill and "step-3" not in at_kill
    assert max(int(s) for s, _ in STEP_RE.findall(first_log)) in (2, 3)

    result = crash.second.result()
    log = crash.second.text()
    assert result["steps"] == ROWS and result["policy_job_id"] == crash.job_id
    assert "Resuming from control-plane row: step-2" in log
    assert [int(s) for s, _ in STEP_RE.findall(log)] == [3]          # step and data cursor restored
    # the weights came back too: a fresh policy equals the fresh reference (KL exactly 0, as at step 1)
    resumed = ledger(crash.workdir)[-1]
    assert resumed["step"] == 3 and resumed["train/ref_kl"] > 0.0
    # the deployment run 1 left attached to the job is reused, not re-created
    assert "Deployment compat-rl-resumed is already attached to trainer" in log
    assert json.loads((Path(crash.spec["log_path"]) / "dataloader.json").read_text()) == {"step-2": 2, "step-3": 3}
    # the resumed run re-publishes the restored policy as a base, then hot-loads after its step
    loads = hot_loads(log)
    sess2 = session_of(loads[0][1])
    assert sess2 != sess1
    assert loads == [("BASE", f"step-2-{sess2}"), ("DELTA", f"step-3-{sess2}")]
    state = hot_load_state(emulator, "compat-rl-resumed")
    assert state["current"] == f"step-3-{sess2}" and state["kind"] == "full"
    assert state["seq"] == len(LOADED_RE.findall(first_log)) + len(loads)   # one deployment, every load counted

    rows = list_rows(emulator.url, API_KEY, crash.job_id)
    promotable = [short(r) for r in rows if r["promotable"]]
    assert f"step-3-{sess2}" in promotable
    m = model(emulator, "compat-rl-resumed")
    assert m["state"] == "READY" and m["kind"] == "HF_BASE_MODEL"
    assert m["sourceCheckpoint"].endswith(f"/{crash.job_id}/checkpoints/step-3-{sess2}")
