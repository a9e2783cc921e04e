"""The cookbook's examples/tools scripts, unchanged, on a job a real recipe run left behind.

The job is the crash-and-resume SFT run's: rows step-3 (DCP only), step-6 (DCP) and
step-6-<session> (the sampler save, already promoted by the recipe as compat-sft-resumed).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.compat.conftest import API_KEY, BASE_MODEL
from tests.compat.recipes import list_rows
from tests.compat.test_sft import model, short

pytestmark = [pytest.mark.compat, pytest.mark.slow]


def tools(compat, env, tmp_path, *calls: tuple[str, ...]) -> list[subprocess.CompletedProcess]:
    """Run each (script, *args) at once (each start is seconds of imports), in the compat venv."""
    procs = []
    for name, *args in calls:
        script = compat.cookbook / "training" / "examples" / "tools" / name
        procs.append(subprocess.Popen([str(compat.python), str(script), *args], env=env, cwd=tmp_path, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def test_list_checkpoints_table_json_and_promotable_only(compat, env, emulator, resumed_job, tmp_path):
    rows = list_rows(emulator.url, API_KEY, resumed_job)

    as_json, table, only = tools(
        compat, env, tmp_path, ("list_checkpoints.py", "--job-id", resumed_job, "--json"),
        ("list_checkpoints.py", "--job-id", resumed_job),
        ("list_checkpoints.py", "--job-id", resumed_job, "--promotable-only", "--json"))
    assert as_json.returncode == 0, as_json.stderr
    listed = json.loads(as_json.stdout)
    assert sorted(r["name"] for r in listed) == sorted(r["name"] for r in rows)
    assert [short(r) for r in listed][0].startswith("step-6-")        # the script sorts newest first

    assert table.returncode == 0, table.stderr
    body = [ln.split() for ln in table.stdout.splitlines()[2:]]
    assert {(b[0], b[2], b[3]) for b in body} == {(short(r), r["checkpointType"], str(r["promotable"])) for r in rows}

    assert only.returncode == 0, only.stderr
    assert [r["name"] for r in json.loads(only.stdout)] == [r["name"] for r in rows if r["promotable"]]


def test_promote_checkpoint_newest_named_and_refused(compat, env, emulator, resumed_job, tmp_path):
    (sampler,) = [r for r in list_rows(emulator.url, API_KEY, resumed_job) if r["promotable"]]

    # newest promotable; by logical name ("step-6" matches step-6-<session>); step-3, a DCP row
    newest, named, refused = tools(
        compat, env, tmp_path,
        ("promote_checkpoint.py", "--job-id", resumed_job, "--base-model", BASE_MODEL,
         "--output-model-id", "compat-tool-newest"),
        ("promote_checkpoint.py", "--job-id", resumed_job, "--checkpoint-name", "step-6", "--base-model", BASE_MODEL,
         "--output-model-id", "compat-tool-named"),
        ("promote_checkpoint.py", "--job-id", resumed_job, "--checkpoint-name", "step-3", "--base-model", BASE_MODEL,
         "--output-model-id", "compat-tool-no"))
    assert newest.returncode == 0, newest.stderr
    assert "state=READY kind=HF_BASE_MODEL" in newest.stderr
    assert model(emulator, "compat-tool-newest")["sourceCheckpoint"] == sampler["name"]
    assert named.returncode == 0, named.stderr
    assert model(emulator, "compat-tool-named")["sourceCheckpoint"] == sampler["name"]
    # not promotable, so the script refuses and nothing is created
    assert refused.returncode == 1
    assert f"no promotable checkpoint named 'step-3' on job '{resumed_job}'" in refused.stderr
    assert model_status(emulator, "compat-tool-no") == 404


def test_the_server_itself_refuses_to_promote_the_dcp_row(compat, env, emulator, resumed_job, tmp_path):
    """The script filters client-side; the same SDK call it makes, aimed at step-3, is refused by fwemu."""
    code = ("import os, sys\nfrom fireworks.training.sdk import TrainerJobManager\n"
            "m = TrainerJobManager(api_key=os.environ['FIREWORKS_API_KEY'], base_url=os.environ['FIREWORKS_BASE_URL'])\n"
            "m.promote_checkpoint(name=sys.argv[1], output_model_id='compat-server-no', base_model=sys.argv[2])\n")
    name = f"accounts/local/rlorTrainerJobs/{resumed_job}/checkpoints/step-3"
    done = subprocess.run([str(compat.python), "-c", code, name, BASE_MODEL], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "not promotable" in done.stderr and "CHECKPOINT_TYPE_TRAINING" in done.stderr
    assert model_status(emulator, "compat-server-no") == 404


def model_status(emulator, model_id: str) -> int:
    import httpx

    return httpx.get(f"{emulator.url}/v1/accounts/local/models/{model_id}",
                     headers={"authorization": f"Bearer {API_KEY}"}, timeout=30).status_code
