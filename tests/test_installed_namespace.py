"""Installed (not editable), fwemu is one `fwemu` namespace: a user project with its own `client/`
package and `contracts.py` keeps them, and the pytest plugin still loads and runs beside them.

The venv sees this environment's packages (torch, fastapi, ...) but gets its own, non-editable
fwemu from a wheel built from a clean copy of the source, so nothing of the checkout leaks in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE = ["pyproject.toml", "setup.py", "README.md", "fwemu", "emulator", "client", "contracts"]

USER_TEST = '''
import client
import contracts
import fwemu


def test_the_users_own_modules_win():
    assert client.WHO == "user client" and contracts.WHO == "user contracts"
    assert "site-packages" in fwemu.__file__, fwemu.__file__


def test_the_plugin_works_beside_them(fw_target, fw_control_plane, fw_trainer):
    from fwemu.client.tokenizer import datum_from_tokens, encode

    model = fw_trainer.create_model(fw_target.base_model)
    result = model.forward_backward([datum_from_tokens(encode("namespaces keep their own names"))])
    assert result.metric("loss") > 0
    jobs = [j.job_id for j in fw_control_plane.list_jobs()]
    assert fw_trainer.job_id in jobs
'''


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCE:
        p = REPO / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(p, src / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(src)], check=True, capture_output=True, timeout=300)
    (whl,) = out.glob("fwemu-*.whl")
    return whl


def test_the_wheel_has_one_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert top == {"fwemu"}, top
    assert {"fwemu/emulator/app.py", "fwemu/client/control_plane.py", "fwemu/contracts/plugin.py",
            "fwemu/client/data/tiny_chat.jsonl"} <= set(names)


@pytest.mark.slow
def test_a_user_project_with_client_and_contracts_runs_the_plugin(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    project = tmp_path / "project"
    (project / "client").mkdir(parents=True)
    (project / "client" / "__init__.py").write_text('WHO = "user client"\n')
    (project / "contracts.py").write_text('WHO = "user contracts"\n')
    (project / "tests").mkdir()
    (project / "tests" / "test_user.py").write_text(USER_TEST)
    (project / "pyproject.toml").write_text('[tool.pytest.ini_options]\npythonpath = ["."]\n')
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    out = subprocess.run([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=project,
                         env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 passed" in out.stdout, out.stdout
    # the plugin came from the venv's wheel, not from this checkout
    where = subprocess.run([str(py), "-c", "import fwemu.contracts.plugin as p; print(p.__file__)"], cwd=project,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(venv)), where
