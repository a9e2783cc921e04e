"""The client sub-commands (ls, promote, import, train, demo) against a real HTTP emulator."""

from __future__ import annotations

import argparse
import importlib
import json
import shutil

import pytest

from fwemu.client.recipes.sft_loop import main
from fwemu.emulator.cli import COMMANDS
from tests.client.conftest import ACCOUNT, BASE_MODEL, DATASET, KEY
from tests.client.helpers import Stop, interrupt_after_save


def run_cmd(name: str, argv: list[str]) -> int:
    module = importlib.import_module(f"fwemu.client.commands.{name}")
    parser = argparse.ArgumentParser(prog=f"fwemu {name}")
    module.configure(parser)
    return module.run(parser.parse_args(argv))


@pytest.fixture(scope="module")
def trained_job(http_emulator, tmp_path_factory):
    """A job with step-2 and step-4 DCP rows and one promotable sampler row."""
    log_path = tmp_path_factory.mktemp("cli") / "run"
    return main(http_emulator.config(log_path, interval=2, max_steps=4))


def conn(emu) -> list[str]:
    return ["--base-url", emu.url, "--api-key", KEY]


def test_every_client_command_module_has_the_cli_interface():
    for module_name, _ in COMMANDS.values():
        if module_name.startswith("fwemu.client."):
            module = importlib.import_module(module_name)
            assert callable(module.configure) and callable(module.run), module_name


def test_ls_prints_name_kind_promotable_created(http_emulator, trained_job, capsys):
    assert run_cmd("ls_cmd", [trained_job["job_id"], *conn(http_emulator)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "PROMOTABLE", "CREATED"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["step-2", "TRAINING_LORA", "no"], ["step-4", "TRAINING_LORA", "no"],
        [trained_job["final_sampler_checkpoint"], "INFERENCE_LORA", "yes"]]


def test_jobs_lists_the_accounts_jobs_as_table_and_json(http_emulator, trained_job, capsys):
    assert run_cmd("jobs_cmd", conn(http_emulator)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["JOB", "STATE", "BASE", "MODEL", "LORA", "CREATED"]
    row = next(line.split() for line in lines[1:] if line.split()[0] == trained_job["job_id"])
    assert row[1:3] == ["RUNNING", BASE_MODEL]
    assert run_cmd("jobs_cmd", ["--json", *conn(http_emulator)]) == 0
    listed = {j["jobId"]: j for j in json.loads(capsys.readouterr().out)}
    assert listed[trained_job["job_id"]]["baseModel"] == BASE_MODEL
    assert listed[trained_job["job_id"]]["name"] == f"accounts/{ACCOUNT}/rlorTrainerJobs/{trained_job['job_id']}"


def test_ls_unknown_job_is_a_one_line_error(http_emulator, capsys):
    assert run_cmd("ls_cmd", ["no-such-job", *conn(http_emulator)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the server refused:") and "no-such-job" in err and "Traceback" not in err


def test_unreachable_server_is_a_one_line_error(capsys):
    assert run_cmd("ls_cmd", ["job", "--base-url", "http://127.0.0.1:9", "--api-key", KEY]) == 1
    err = capsys.readouterr().err
    assert "could not reach the server" in err and "Traceback" not in err


def test_promote_defaults_to_newest_promotable_row(http_emulator, trained_job, capsys):
    argv = ["--job-id", trained_job["job_id"], "--output-model-id", "cli-model", "--base-model", BASE_MODEL]
    assert run_cmd("promote_cmd", argv + conn(http_emulator)) == 0
    out = capsys.readouterr().out
    assert f"promoted {trained_job['final_sampler_checkpoint']} (INFERENCE_LORA) -> accounts/{ACCOUNT}/models/cli-model" in out
    assert "HF_PEFT_ADDON, READY, LoRA r=4" in out


def test_promote_refusal_is_explained_with_the_servers_message(http_emulator, trained_job, capsys):
    argv = ["--job-id", trained_job["job_id"], "--output-model-id", "cli-refused", "--base-model", BASE_MODEL,
            "--checkpoint-name", "step-2"]
    assert run_cmd("promote_cmd", argv + conn(http_emulator)) == 1
    err = capsys.readouterr().err
    assert "promotion of step-2 (TRAINING_LORA) was refused" in err and "not promotable" in err


def test_promote_by_logical_name_finds_the_suffixed_row(http_emulator, trained_job, capsys):
    argv = ["--job-id", trained_job["job_id"], "--output-model-id", "cli-by-name", "--base-model", BASE_MODEL,
            "--checkpoint-name", "step-4"]
    assert run_cmd("promote_cmd", argv + conn(http_emulator)) == 0
    assert f"promoted {trained_job['final_sampler_checkpoint']} (INFERENCE_LORA)" in capsys.readouterr().out


def test_promote_without_promotable_rows_names_the_kinds(http_emulator, tmp_path, capsys):
    with pytest.raises(Stop):
        main(http_emulator.config(tmp_path / "run", interval=2, max_steps=4), on_step=interrupt_after_save("step-2"))
    job_id = json.loads((tmp_path / "run" / "run.json").read_text())["job_id"]
    argv = ["--job-id", job_id, "--output-model-id", "cli-none", "--base-model", BASE_MODEL]
    assert run_cmd("promote_cmd", argv + conn(http_emulator)) == 1
    err = capsys.readouterr().err
    assert f"job {job_id} has no promotable checkpoint (kinds seen: TRAINING_LORA x1)" in err


@pytest.mark.parametrize("flags, how", [([], "copied by the server"), (["--stream"], "streamed")])
def test_import_puts_a_checkpoint_directory_into_a_job(http_emulator, trained_job, tmp_path, capsys, flags, how):
    """To an emulator on loopback the server copies the directory itself; --stream sends a tar."""
    source = http_emulator.store.checkpoint_dir(ACCOUNT, trained_job["job_id"], trained_job["final_sampler_checkpoint"])
    copy = shutil.copytree(source, tmp_path / "adapter")
    name = f"my-adapter-{'tar' if flags else 'path'}"
    argv = [str(copy), "--job", "imported-job", "--name", name, "--base-model", BASE_MODEL, *flags]
    assert run_cmd("import_cmd", argv + conn(http_emulator)) == 0
    out = capsys.readouterr().out
    assert f"({how}) -> accounts/{ACCOUNT}/rlorTrainerJobs/imported-job/checkpoints/{name}" in out
    assert "[INFERENCE_LORA, promotable]" in out
    assert http_emulator.checkpoint_files("imported-job", name) == {p.name: p.read_bytes() for p in copy.iterdir()}


def test_import_refusal_carries_the_inspectors_reason(http_emulator, tmp_path, capsys):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "weights.bin").write_bytes(b"\x80\x04pickle")
    argv = [str(tmp_path / "junk"), "--job", "imported-junk", "--name", "x", "--base-model", BASE_MODEL]
    assert run_cmd("import_cmd", argv + conn(http_emulator)) == 1
    err = capsys.readouterr().err
    assert "import refused" in err and "weights.bin" in err


def test_train_command_runs_the_recipe_from_toml(http_emulator, tmp_path, capsys):
    config = tmp_path / "train.toml"
    config.write_text(f'log_path = "{tmp_path / "run"}"\nbase_model = "{BASE_MODEL}"\ndataset = "{DATASET}"\n'
                      f'lora_rank = 4\nmax_steps = 2\n[weight_sync]\ndcp_save_interval = 1\n')
    argv = ["--config", str(config), "--output-model-id", "cli-train", "--no-progress", *conn(http_emulator)]
    assert run_cmd("train_cmd", argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["steps"], summary["promoted_model"]) == (2, f"accounts/{ACCOUNT}/models/cli-train")
    assert summary["saved"] == ["step-1", "step-2"]


def test_train_command_config_error_is_one_line(capsys):
    assert run_cmd("train_cmd", ["--log-path", "x", "--base-model", "m", "--dataset", "/missing.jsonl"]) == 1
    assert capsys.readouterr().err.strip() == "error: dataset '/missing.jsonl' is not a file"


def test_demo_on_an_embedded_emulator(tmp_path, capsys):
    assert run_cmd("demo_cmd", ["--dir", str(tmp_path / "demo"), "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("PASS") == 4 and "FAIL" not in out and "demo passed: 4/4 stages" in out
    assert "INFERENCE_LORA  yes" in out
