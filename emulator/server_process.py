"""`fwemu serve` as a subprocess on a free loopback port, as a user runs it (e2e tests, the crash loop).

The in-process twin is `emulator.server_thread`; this one is for what only a real process shows:
start-up from the CLI, restarts on the same data dir, and SIGKILL at any instant.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import httpx

from fwemu.emulator.server_thread import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]


class ServeProcess:
    def __init__(self, data_dir: Path, args: Sequence[str] = (), *, env: dict[str, str] | None = None,
                 log_path: Path | None = None):
        self.data_dir, self.args, self.log_path = Path(data_dir), list(args), log_path
        self.env = {**os.environ, **(env or {})}
        self.env.pop("FWEMU_FAULT_PLAN", None)  # a plan must be asked for explicitly
        self.proc: subprocess.Popen | None = None
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> "ServeProcess":
        """Start on a fresh free port and wait for /_emulator/health to answer 200."""
        self.port = free_port()
        argv = [sys.executable, "-m", "fwemu.emulator.cli", "serve", "--port", str(self.port),
                "--data-dir", str(self.data_dir), "--startup-delay", "0", *self.args]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(argv, env=self.env, stdout=out, stderr=out, cwd=REPO_ROOT)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                where = f"; see {self.log_path}" if self.log_path else ""
                raise RuntimeError(f"fwemu serve exited with {self.proc.returncode} at start-up{where}")
            try:
                if httpx.get(f"{self.url}/_emulator/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"fwemu serve did not answer on {self.url} within {timeout_s}s")

    def sigkill(self) -> bool:
        """SIGKILL; False when the process had already died on its own (an injected crash)."""
        assert self.proc is not None
        alive = self.proc.poll() is None
        if alive:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        return alive

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen | None, grace_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after `grace_s`; a no-op for a process that already ended."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
