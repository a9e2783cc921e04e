"""The pytest plugin: fixtures work, accounts are fresh per test, cloud tests never count as passed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_seen_accounts: list[str] = []


def test_fw_control_plane_talks_to_the_target_as_a_fresh_account(fw_control_plane, fw_account):
    assert fw_control_plane.account_id() == fw_account.account_id
    _seen_accounts.append(fw_account.account_id)


def test_each_test_gets_its_own_account(fw_account, fw_target):
    if fw_target.has("accounts"):
        assert fw_account.account_id not in _seen_accounts
    _seen_accounts.append(fw_account.account_id)


def test_fw_trainer_has_a_session_on_a_running_job(fw_trainer, fw_control_plane):
    assert fw_trainer.session_id and fw_trainer.healthz()
    assert fw_control_plane.get_job(fw_trainer.job_id).state == "RUNNING"
    model = fw_trainer.create_model(fw_control_plane.get_job(fw_trainer.job_id).base_model, 0)
    assert model.save_state("step-0") == "step-0"
    rows = fw_control_plane.list_checkpoints(fw_trainer.job_id)
    assert [(r.short_name, r.kind) for r in rows] == [("step-0", "TRAINING")]


def test_fw_driver_is_the_chosen_client(fw_driver, pytestconfig):
    assert fw_driver.name == pytestconfig.getoption("--fw-driver")


def _inner_pytest(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    (tmp_path / "test_inner.py").write_text(textwrap.dedent("""
        import pytest

        @pytest.mark.cloud
        def test_needs_the_real_service(pytestconfig):
            assert pytestconfig.getoption("--fw-target")

        def test_local():
            assert 1 + 1 == 2
    """))
    # Load the plugin explicitly (and only once, whether or not fwemu is pip-installed).
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:fwemu_contracts", "-p", "fwemu.contracts.plugin",
           "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path / "test_inner.py"), *args]
    full_env = {k: v for k, v in os.environ.items() if k != "FIREWORKS_API_KEY"}
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), full_env.get("PYTHONPATH", "")])
    full_env.update(env or {})
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=full_env, timeout=120)


def test_cloud_tests_are_deselected_not_passed_without_a_key(tmp_path):
    out = _inner_pytest(tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed, 1 deselected" in out.stdout, out.stdout


def test_cloud_tests_run_with_a_key_and_a_target(tmp_path):
    out = _inner_pytest(tmp_path, "--fw-target", "https://api.example.invalid",
                        env={"FIREWORKS_API_KEY": "fw-test-key"})
    assert "2 passed" in out.stdout and "deselected" not in out.stdout, out.stdout + out.stderr


def test_a_bad_driver_spec_is_a_usage_error_and_a_module_class_driver_is_accepted(tmp_path):
    bad = _inner_pytest(tmp_path, "--fw-driver", "no_such_module_xyz:Driver")
    assert bad.returncode == 4, bad.stdout + bad.stderr          # pytest's usage error: nothing ran
    assert "--fw-driver no_such_module_xyz:Driver" in bad.stderr, bad.stderr
    good = _inner_pytest(tmp_path, "--fw-driver", "fwemu.contracts.drivers:OurDriver")
    assert good.returncode == 0 and "1 passed, 1 deselected" in good.stdout, good.stdout + good.stderr
