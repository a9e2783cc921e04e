"""A real `fwemu serve` subprocess on a free loopback port, as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from emulator.server_thread import free_port

KEYS = {"fw-e2e-a": "team-a", "fw-e2e-b": "team-b"}


class ServeProcess:
    def __init__(self, data_dir: Path, extra_args: tuple[str, ...] = ()):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ServeProcess":
        args = [sys.executable, "-m", "emulator.cli", "serve", "--port", str(self.port),
                "--data-dir", str(self.data_dir), "--startup-delay", "0", *self.extra_args]
        for key, account in KEYS.items():
            args += ["--api-key", f"{key}={account}"]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env={**os.environ, "TINKER_TELEMETRY": "0"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fwemu serve exited: {self.proc.stdout.read().decode()}")
            try:
                if httpx.get(f"{self.url}/_emulator/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("fwemu serve did not become healthy in 30 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def serve(tmp_path):
    server = ServeProcess(tmp_path / "state").start()
    yield server
    server.stop()
