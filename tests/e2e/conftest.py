"""A real `fwemu serve` subprocess on a free loopback port, as a user would run it."""

from __future__ import annotations

import pytest

from fwemu.emulator.server_process import ServeProcess as _ServeProcess

KEYS = {"fw-e2e-a": "team-a", "fw-e2e-b": "team-b"}


def ServeProcess(data_dir) -> _ServeProcess:  # noqa: N802 - reads like the class it builds
    """`fwemu serve` with the two e2e accounts, telemetry left on (the emulator accepts it)."""
    args = [a for key, account in KEYS.items() for a in ("--api-key", f"{key}={account}")]
    return _ServeProcess(data_dir, args)


@pytest.fixture
def serve(tmp_path):
    server = ServeProcess(tmp_path / "state").start()
    yield server
    server.stop()
