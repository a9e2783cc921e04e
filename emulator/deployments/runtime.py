"""What the deployment routes share: the row store, one lock per deployment, and the loaded models.

Held on `services.extensions["deployments"]` (created with the app, no torch import). A model is
built the first time a deployment serves a request or hot-loads a snapshot, and kept per
(account, deployment) together with the hot-load version it was built from; a restarted emulator
rebuilds it from the persisted version directory on first use.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

from fwemu.emulator.deployments.store import Deployment, DeploymentStore
from fwemu.emulator.services import Services

EXTENSION_KEY = "deployments"


class DeploymentRuntime:
    def __init__(self, services: Services):
        self.services = services
        self.store = DeploymentStore(services.store)
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.RLock] = defaultdict(threading.RLock)
        self._engines: dict[tuple[str, str], tuple[str | None, Any]] = {}
        self.last_request_us: dict[tuple[str, str], int] = {}

    def lock(self, account: str, deployment_id: str) -> threading.RLock:
        """Serialises hot loads (and model builds) of one deployment."""
        with self._guard:
            return self._locks[(account, deployment_id)]

    def engine(self, dep: Deployment):
        """The model serving `dep` now: built from its current version (or its base) when not cached."""
        key, version = (dep.account, dep.deployment_id), dep.hot_load.get("version")
        cached = self._engines.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        with self.lock(*key):
            cached = self._engines.get(key)
            if cached is not None and cached[0] == version:
                return cached[1]
            from fwemu.emulator.deployments import engine as engines  # torch on first use

            if version is None:
                built = engines.base_engine(dep.base_model)
            else:
                path = self.store.version_dir(dep.account, dep.deployment_id, version)
                built = (engines.lora_engine(path, dep.base_model) if dep.hot_load.get("kind") == "lora"
                         else engines.full_engine(path))
            self._engines[key] = (version, built)
            return built

    def put_engine(self, dep: Deployment, engine: Any) -> None:
        self._engines[(dep.account, dep.deployment_id)] = (dep.hot_load.get("version"), engine)

    def forget(self, account: str, deployment_id: str) -> None:
        self._engines.pop((account, deployment_id), None)
        self.last_request_us.pop((account, deployment_id), None)

    def reset(self) -> None:
        self._engines.clear()
        self.last_request_us.clear()
        self.store.reset()

    def close(self) -> None:
        self._engines.clear()


def install(services: Services) -> DeploymentRuntime:
    runtime = DeploymentRuntime(services)
    services.extensions[EXTENSION_KEY] = runtime
    return runtime


def runtime_of(services: Services) -> DeploymentRuntime:
    runtime = services.extensions.get(EXTENSION_KEY)
    return runtime if runtime is not None else install(services)
