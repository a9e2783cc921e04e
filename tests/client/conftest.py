"""Fixtures for the client's integration tests: the emulator in-process (ASGI) and over real HTTP.

Every test gets the tiny stand-in model (FWEMU_MODEL_SIZE, unless the caller set one) and an
environment without the user's FIREWORKS_* variables, so nothing reaches a real service.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from fwemu.client.recipes.sft_loop import Config, WeightSyncConfig

KEY, ACCOUNT = "test-key", "test-acct"
BASE_MODEL = "accounts/fireworks/models/qwen3-8b"
TINY = "hidden=32,layers=1,heads=2,kv_heads=1,intermediate=64"
DATASET = Path(__file__).resolve().parents[2] / "client" / "data" / "tiny_chat.jsonl"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    for var in ("FIREWORKS_BASE_URL", "FIREWORKS_API_KEY", "FIREWORKS_TRAINER_GATEWAY_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FWEMU_MODEL_SIZE", os.environ.get("FWEMU_MODEL_SIZE") or TINY)
    monkeypatch.setenv("TINKER_TELEMETRY", "0")


@dataclass
class RequestLog:
    """(method, path, JSON body or None) of every request a client sent, in order."""

    calls: list[tuple[str, str, Any]] = field(default_factory=list)

    @staticmethod
    def op_of(method: str, path: str) -> str:
        return "list" if path.endswith("/checkpoints") and method == "GET" else path.rsplit("/", 1)[-1]

    def ops(self, *names: str) -> list[tuple[str, Any]]:
        """(op, body) of the gateway ops (and control-plane listings as 'list') among `names`, in order."""
        return [(op, body) for method, path, body in self.calls if (op := self.op_of(method, path)) in names]


class CountingTransport(httpx.BaseTransport):
    """Wrap a sync transport and record each request into a shared RequestLog."""

    def __init__(self, inner: httpx.BaseTransport, log: RequestLog,
                 fail: Callable[[httpx.Request], httpx.Response | None] | None = None):
        self.inner, self.log, self.fail = inner, log, fail

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            body = json.loads(request.content) if request.content else None
        except (httpx.RequestNotRead, ValueError):
            body = None
        self.log.calls.append((request.method, request.url.path, body))
        if self.fail is not None and (answer := self.fail(request)) is not None:
            return answer
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


@dataclass
class Emulator:
    """One emulator app plus how to reach it: `url` (real HTTP) or None (ASGI in-process)."""

    app: Any
    url: str | None

    @property
    def base_url(self) -> str:
        return self.url or "http://fwemu.test"

    def transport(self, log: RequestLog | None = None, fail=None) -> Any:
        """A fresh transport for one client run (clients close theirs when done)."""
        if self.url is None:
            from fwemu.client.transport import SyncBridgeTransport
            inner: httpx.BaseTransport = SyncBridgeTransport(httpx.ASGITransport(self.app))
        else:
            inner = httpx.HTTPTransport()
        return CountingTransport(inner, log or RequestLog(), fail) if (log or fail) else inner

    @property
    def store(self):
        return self.app.state.services.store

    def model_files(self, model_name: str) -> dict[str, bytes]:
        model_id = model_name.rsplit("/", 1)[-1]
        root = self.store.model_dir(ACCOUNT, model_id)
        return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()}

    def checkpoint_files(self, job_id: str, name: str) -> dict[str, bytes]:
        root = self.store.checkpoint_dir(ACCOUNT, job_id, name)
        return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()}

    def config(self, log_path: Path, *, log: RequestLog | None = None, fail=None, interval: int = 0,
               **overrides: Any) -> Config:
        values: dict[str, Any] = dict(log_path=str(log_path), base_model=BASE_MODEL, dataset=str(DATASET),
                                      lora_rank=4, batch_size=4, epochs=1, learning_rate=5e-3,
                                      base_url=self.base_url, api_key=KEY, ready_poll_s=0.02, progress=False)
        values.update(overrides)
        return Config(weight_sync=WeightSyncConfig(dcp_save_interval=interval),
                      transport=self.transport(log, fail), **values)

    def control_plane(self, **kw):
        from fwemu.client.control_plane import ControlPlaneClient
        return ControlPlaneClient(self.base_url, KEY, self.transport(), **kw)


def _settings(tmp: Path, quirks: frozenset[str] = frozenset()):
    from fwemu.emulator.settings import Settings
    return Settings(data_dir=tmp, api_keys={KEY: ACCOUNT}, startup_delay_s=0.01, quirks=quirks, breaks=frozenset())


@pytest.fixture(scope="module")
def http_emulator(tmp_path_factory):
    """One uvicorn server on a loopback port for a module's real-HTTP tests (tests use distinct jobs).

    The rename-dcp-saves quirk is on: it only changes names when the trainer's step differs from the
    caller's, and our client must cope with that on every path anyway."""
    from fwemu.emulator.server_thread import running_server

    settings = _settings(tmp_path_factory.mktemp("http-emulator"), frozenset({"rename-dcp-saves"}))
    with running_server(settings) as server:
        yield Emulator(server.app, server.url)


@pytest.fixture
def make_asgi_emulator(tmp_path):
    """Build in-process emulators with the given quirks; all are shut down after the test."""
    from fwemu.emulator.app import create_app

    apps = []

    def make(*quirks: str) -> Emulator:
        app = create_app(_settings(tmp_path / f"emu-{len(apps)}", frozenset(quirks)))
        apps.append(app)
        return Emulator(app, None)

    yield make
    for app in apps:
        app.state.services.close()
