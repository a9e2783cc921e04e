"""Every code block in README.md runs as written, in document order, as a new user would run it.

Shell blocks run command by command in an empty directory, with `fwemu` on PATH (this interpreter).
`fwemu serve` keeps running in the background for the blocks after it (on a free port given as
FWEMU_PORT; from then on FIREWORKS_BASE_URL points at it, as its banner says, so no block needs an edit). Two kinds of
command are checked rather than run: `pip install ...` (this test environment is what
`scripts/test.sh` installed; the README's install lines must be what that script installs) and
`bash scripts/test.sh` itself (it is this very run). A `# exits N` comment sets a command's status.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib

import httpx
import pytest

from fwemu.emulator.server_process import stop_process
from fwemu.emulator.server_thread import free_port
from tests.docs.markdown import REPO, blocks, shell_commands

README = REPO / "README.md"
RUNNABLE = {"bash", "sh", "python"}
NOT_CODE = {"text"}


def test_every_block_says_what_it_is():
    for b in blocks(README):
        assert b.lang in RUNNABLE | NOT_CODE, f"{b.where(README)}: fence language {b.lang!r}; use bash, python or text"
    assert sum(b.lang in RUNNABLE for b in blocks(README)) >= 4


def check_pip(argv: list[str]) -> None:
    """`pip install X` in the README: X must be what scripts/test.sh installs (or an extra it covers)."""
    script = (REPO / "scripts" / "test.sh").read_text()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    for spec in argv[2:]:
        if spec == "-e":
            continue
        if spec.startswith("torch"):
            assert f"install --quiet {spec}" in script, spec
        elif spec.startswith("."):
            assert "-e '.[dev]'" in script
            wanted = spec.strip("'\"")[2:-1].split(",") if "[" in spec else []
            for extra in wanted:
                assert set(extras[extra]) <= set(extras["dev"]), f"extra {extra} is not covered by dev"
        else:
            pytest.fail(f"README installs {spec}, which scripts/test.sh does not")


@pytest.fixture
def shell(tmp_path):
    """An empty working directory, PATH with `fwemu` (this interpreter), and the servers started."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "fwemu"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m fwemu "$@"\n')
    shim.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    for name in ("examples", "client"):           # the README's relative paths are repo paths
        (work / name).symlink_to(REPO / name)
    port = free_port()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FWEMU_PORT": str(port),
           "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1", "TINKER_TELEMETRY": "0"}
    env.pop("FIREWORKS_API_KEY", None)
    env.pop("FWEMU_API_KEYS", None)
    env.pop("FIREWORKS_BASE_URL", None)           # set once the README's `fwemu serve` is up
    servers: list[subprocess.Popen] = []
    yield work, env, port, servers
    for proc in servers:
        stop_process(proc)


def wait_healthy(port: int, proc: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"fwemu serve exited {proc.returncode}: {log.read_text()}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_emulator/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail("fwemu serve from the README did not come up")


def run_in_session(text: str, cwd, env: dict) -> subprocess.CompletedProcess:
    """Run one command as in a shell session: what it exports (`eval "$(fwemu env)"`) stays for the next."""
    env_file = cwd / ".session-env"
    script = f'{text}\nrc=$?\nenv -0 > "{env_file}"\nexit $rc'
    out = subprocess.run(["sh", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if env_file.exists():
        pairs = [item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item]
        env.clear()
        env.update({k: v for k, v in pairs if k not in ("PWD", "OLDPWD", "SHLVL", "_")})
        env_file.unlink()
    return out


@pytest.mark.slow
def test_readme_blocks_run_as_written(shell):
    work, env, port, servers = shell
    ran = []
    for b in blocks(README):
        if b.lang == "python":
            out = subprocess.run([sys.executable, "-c", b.text], cwd=work, env=env, capture_output=True,
                                 text=True, timeout=600)
            assert out.returncode == 0, f"{b.where(README)}: python block failed\n{out.stdout}\n{out.stderr}"
            ran.append(f"python block at {b.where(README)}")
            continue
        if b.lang not in RUNNABLE:
            continue
        for cmd in shell_commands(b.text):
            argv = cmd.argv
            if argv[:2] == ["pip", "install"]:
                check_pip(argv)
                continue
            if argv == ["bash", "scripts/test.sh"]:
                assert (REPO / "scripts" / "test.sh").is_file()
                continue
            if argv[:2] == ["fwemu", "serve"]:
                assert not servers, "the README starts a second server"
                log = work / "serve.log"
                with open(log, "wb") as f:
                    servers.append(subprocess.Popen(argv, cwd=work, env=env, stdout=f, stderr=f))
                wait_healthy(port, servers[-1], log)
                env["FIREWORKS_BASE_URL"] = f"http://127.0.0.1:{port}"   # what the banner tells the user
                assert "API key fw-local-dev" in log.read_text()
                ran.append(cmd.text)
                continue
            out = run_in_session(cmd.text, work, env)
            assert out.returncode == cmd.expect_rc, (f"{b.where(README)}: `{cmd.text}` exited {out.returncode}, "
                                                     f"README says {cmd.expect_rc}\n{out.stdout}\n{out.stderr}")
            ran.append(cmd.text)
    assert any(r.startswith("fwemu demo") for r in ran) and any(r.startswith("fwemu serve") for r in ran)
    assert any(r.startswith("python block") for r in ran)
