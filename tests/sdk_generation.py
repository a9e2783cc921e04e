"""Which fireworks-ai SDK generation the real-SDK tests run under, and where its tinker layer lives.

CI runs every `real_sdk` test twice: under the newest 1.2.x (fwemu's dev install) and under the
cookbook's pinned 1.2.9 + tinker 0.23 (the compat venv, docs/compat.md). The two generations
differ in one way these tests touch: 1.2.30 vendors tinker inside the SDK
(``fireworks.training.sdk.types``, ``fireworks.training.sdk._core...``), while 1.2.9 imports the
separate ``tinker`` package for the same classes. Only that location is branched on here; user
code (``FiretitanServiceClient``, ``TrainerJobManager``, ...) is the same in both.
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import version

SDK_VERSION = version("fireworks-ai")

# Feature test rather than a version cut-off: the release that started vendoring is not recorded
# here, and what matters is where the installed one keeps the module.
VENDORS_TINKER = importlib.util.find_spec("fireworks.training.sdk.types") is not None

if VENDORS_TINKER:
    sdk_types = importlib.import_module("fireworks.training.sdk.types")
    sdk_training_client = importlib.import_module("fireworks.training.sdk._core.lib.public_interfaces.training_client")
else:  # 1.2.9 + tinker 0.23: the SDK builds on the tinker package itself
    sdk_types = importlib.import_module("tinker.types")
    sdk_training_client = importlib.import_module("tinker.lib.public_interfaces.training_client")

# 1.2.30's DeploymentConfig opts out of deployment shapes with accept_shapeless_risk=True (sent as
# acceptShapelessRisk=true); 1.2.9 has no such field and creates a shapeless deployment without it.
_deployment_fields = importlib.import_module("fireworks.training.sdk.deployment").DeploymentConfig.__dataclass_fields__
SHAPELESS = {"accept_shapeless_risk": True} if "accept_shapeless_risk" in _deployment_fields else {}

# TrainingClient.unload_model (POST .../unload_model) exists in 1.2.30's vendored tinker, not in tinker 0.23.
HAS_UNLOAD_MODEL = hasattr(importlib.import_module("fireworks.training.sdk").FiretitanTrainingClient, "unload_model")

# close(): 1.2.30's vendored InternalClientHolder.close() triggers a telemetry flush and waits for
# it to drain; tinker 0.23's only cancels the 10 s periodic flush, so a sub-second session under
# 1.2.9 posts no telemetry at all (nothing for the emulator to accept or stall on).
DRAINS_TELEMETRY_ON_CLOSE = VENDORS_TINKER

# DeploymentInfo.base_model: parsed by 1.2.30; 1.2.9's DeploymentInfo has no such field (the
# deployment's baseModel is still on the wire, read it from the raw body there).
DEPLOYMENT_INFO_HAS_BASE_MODEL = "base_model" in importlib.import_module(
    "fireworks.training.sdk.deployment").DeploymentInfo.__dataclass_fields__
