"""Running the real cookbook against a real `fwemu serve`: the recipe environment, runs, the crash.

A recipe's wall time is mostly the cookbook's own waiting (after every DCP save with a data
cursor, TrainingCheckpoints sleeps 15 s for the control plane to settle), so the runs a test
session needs are started together and each test waits for its own. The environment is exactly
what a user gets from ``eval "$(fwemu env ...)"`` plus PYTHONPATH=<cookbook>: it is produced by
running that eval in ``sh`` with the compat venv's ``fwemu``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.compat.venv import Compat

DRIVER = Path(__file__).with_name("drive_recipe.py")
RUN_TIMEOUT_S = 600
JOB_RE = re.compile(r"Created trainer job: (\S+)")


def recipe_env(compat: Compat, base_url: str, data_dir: Path, home: Path) -> dict[str, str]:
    """The environment after ``eval "$(fwemu env --base-url URL --data-dir DIR)"`` in a clean shell."""
    home.mkdir(parents=True, exist_ok=True)
    start = {k: v for k, v in os.environ.items() if not k.startswith(("FIREWORKS_", "HF_", "WANDB_", "FWEMU_"))}
    start.update(HOME=str(home), PYTHONNOUSERSITE="1")
    start.pop("PYTHONPATH", None)
    fwemu = compat.python.parent / "fwemu"
    script = f'eval "$("{fwemu}" env --base-url "$1" --data-dir "$2")" && env -0'
    done = subprocess.run(["sh", "-c", script, "sh", base_url, str(data_dir)], env=start,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    env = dict(item.split("=", 1) for item in done.stdout.decode().split("\0") if "=" in item)
    env["PYTHONPATH"] = str(compat.cookbook)   # the cookbook's own instructions: import training.*
    return env


@dataclass
class Run:
    """One recipe process: its log (stdout+stderr), exit status and main()'s RESULT line."""
    name: str
    log: Path
    proc: subprocess.Popen | None = None
    returncode: int | None = None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait(self, timeout: float = RUN_TIMEOUT_S) -> "Run":
        assert self.proc is not None
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait()
            raise AssertionError(f"{self.name} ran past {timeout}s; log tail:\n{self.text()[-4000:]}")
        return self

    def result(self) -> dict:
        """main()'s return value; fails with the log tail when the recipe did not finish."""
        self.wait()
        lines = [ln for ln in self.text().splitlines() if ln.startswith("RESULT ")]
        assert self.returncode == 0 and lines, f"{self.name} exited {self.returncode}; log tail:\n{self.text()[-6000:]}"
        return json.loads(lines[-1][len("RESULT "):])

    def job_id(self, pattern: re.Pattern = JOB_RE) -> str | None:
        found = pattern.search(self.text())
        return found.group(1) if found else None


def start(compat: Compat, env: dict[str, str], name: str, recipe: str, spec: dict, workdir: Path) -> Run:
    """Start ``drive_recipe.py <recipe> <spec>`` with the compat venv's python, cwd `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    run = Run(name=name, log=workdir / f"{name}.log")
    out = open(run.log, "ab")
    try:
        run.proc = subprocess.Popen([str(compat.python), str(DRIVER), recipe, json.dumps(spec)], env=env,
                                    stdout=out, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
    finally:
        out.close()
    return run


def list_rows(base_url: str, api_key: str, job_id: str) -> list[dict]:
    """The control plane's checkpoint rows for a job (raw HTTP: the referee, not the SDK under test)."""
    rows, token = [], ""
    while True:
        r = httpx.get(f"{base_url}/v1/accounts/local/rlorTrainerJobs/{job_id}/checkpoints",
                      params={"pageSize": 200, "pageToken": token}, headers={"authorization": f"Bearer {api_key}"},
                      timeout=30)
        r.raise_for_status()
        body = r.json()
        rows += body.get("checkpoints", [])
        token = body.get("nextPageToken", "")
        if not token:
            return rows


@dataclass
class CrashAndResume:
    """Run 1 is SIGKILLed once a DCP row is listed and its data cursor is on disk; run 2 resumes.

    "On disk" matters: the cookbook writes dataloader.json only after its 15 s settle wait, so a
    kill between the row appearing and that write would resume the step with a zero cursor (the
    cookbook's behaviour, not the emulator's). The kill is sent at the first poll (20 ms) that
    sees both; what was listed at that instant is kept for the test.
    """
    compat: Compat
    env: dict[str, str]
    spec: dict
    workdir: Path
    base_url: str
    api_key: str
    kill_at: str                     # the DCP row name to wait for, e.g. "step-3"
    recipe: str = "sft_loop"         # the cookbook recipe both runs start (names the logs too)
    job_re: re.Pattern = JOB_RE      # finds run 1's (policy) trainer job id in its log
    first: Run | None = None
    second: Run | None = None
    job_id: str | None = None
    rows_at_kill: list[dict] = field(default_factory=list)
    cursor_at_kill: dict = field(default_factory=dict)
    error: str = ""
    _thread: threading.Thread | None = None

    def begin(self) -> "CrashAndResume":
        self._thread = threading.Thread(target=self._drive, name="crash-and-resume", daemon=True)
        self._thread.start()
        return self

    def _drive(self) -> None:
        try:
            prefix = self.recipe.split("_")[0]
            self.first = start(self.compat, self.env, f"{prefix}-crash-run1", self.recipe, dict(self.spec),
                               self.workdir)
            cursor_file = Path(self.spec["log_path"]) / "dataloader.json"
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while time.monotonic() < deadline and self.first.proc.poll() is None:
                self.job_id = self.job_id or self.first.job_id(self.job_re)
                if self.job_id and cursor_file.exists():
                    cursor = json.loads(cursor_file.read_text() or "{}")
                    if self.kill_at in cursor:
                        os.killpg(self.first.proc.pid, signal.SIGKILL)
                        self.cursor_at_kill = cursor
                        break
                time.sleep(0.02)
            self.first.wait(60)
            if not self.cursor_at_kill:
                self.error = f"run 1 ended (rc {self.first.returncode}) before {self.kill_at} was saved"
                return
            self.rows_at_kill = list_rows(self.base_url, self.api_key, self.job_id)
            spec = {**self.spec, "trainer": {**self.spec.get("trainer", {}), "job_id": self.job_id}}
            self.second = start(self.compat, self.env, f"{prefix}-crash-run2", self.recipe, spec, self.workdir)
            self.second.wait()
        except Exception as exc:  # reported by the test that joins this thread
            self.error = f"{type(exc).__name__}: {exc}"

    def join(self, timeout: float = 2 * RUN_TIMEOUT_S) -> "CrashAndResume":
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "crash-and-resume did not finish"
        return self
