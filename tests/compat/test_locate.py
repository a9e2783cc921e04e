"""The compat suite's skip reasons: without a cookbook or a buildable venv it says exactly why.

Unmarked on purpose: these need neither the cookbook nor the venv, so stage 1 runs them.
"""

from __future__ import annotations

import subprocess

from tests.compat import venv


def test_no_cookbook_names_the_path_and_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("FWEMU_COOKBOOK", str(tmp_path / "nowhere"))
    found, why = venv.locate()
    assert found is None
    assert str(tmp_path / "nowhere") in why and "FWEMU_COOKBOOK" in why


def test_a_cookbook_without_its_pinned_requirements_cannot_be_built(tmp_path, monkeypatch):
    (tmp_path / "training" / "recipes").mkdir(parents=True)
    (tmp_path / "training" / "recipes" / "sft_loop.py").write_text("")
    monkeypatch.setenv("FWEMU_COOKBOOK", str(tmp_path))
    found, why = venv.locate()
    assert found is None and "requirements-pinned.txt" in why


def test_a_failed_build_reports_the_exit_status_and_pip_output(tmp_path, monkeypatch):
    """pip with no index and an empty wheel dir (an offline machine): the venv is removed, not cached."""
    (tmp_path / "training" / "recipes").mkdir(parents=True)
    (tmp_path / "training" / "recipes" / "sft_loop.py").write_text("")
    (tmp_path / "requirements-pinned.txt").write_text("fwemu-no-such-package-anywhere==0.0.0\n")
    monkeypatch.setenv("FWEMU_COOKBOOK", str(tmp_path))
    monkeypatch.setenv("FWEMU_COMPAT_DIR", str(tmp_path / "cache"))
    (tmp_path / "wheels").mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    found, why = venv.locate()
    assert found is None
    assert "exit 3" in why and "torch" in why and "building the venv failed" in why
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")] == []


def test_the_script_refuses_a_missing_cookbook_with_exit_2(tmp_path):
    done = subprocess.run(["bash", str(venv.SCRIPT)], env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                                          "FWEMU_COOKBOOK": str(tmp_path / "none")},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "set FWEMU_COOKBOOK" in done.stderr and done.stdout == ""
