"""`--driver cookbook[=PATH]`: the real cookbook's `TrainingCheckpoints` as the checkpoint logic under test.

The driver is the SDK driver (jobs, training, saves and promotion through fireworks-ai) plus the
cookbook class imported from a checkout - `training.utils.checkpoints.TrainingCheckpoints`, never
a copy - on the cookbook's own `ReconnectableClient` and the SDK's `TrainerJobManager` (its
control-plane lister), exactly as the recipes build it. `checkpoints_class` is an attribute so a
test can substitute a deliberately broken subclass.

`CookbookCheckpoints` adapts the cookbook class to the surface the suite calls (see
contracts/driver_api.py) without deciding anything for it: the rows a save produced are read from
the listing before and after the call, the row a resume loaded is the name the cookbook resolved,
and the cookbook's own exceptions are mapped onto the interface's (ValueError for a refused
argument combination, NoPromotableCheckpointError, FwError).

The cookbook needs tinker and fireworks-ai 1.2.9: run it from the compat venv
(`FWEMU_COOKBOOK=PATH bash scripts/compat_env.sh` prints its python).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fwemu.client.checkpoints import NoPromotableCheckpointError, ResumeInfo, SaveResult, matches_logical_name
from fwemu.client.errors import FwError
from fwemu.contracts.driver_api import CHECKPOINTS, DriverSpecError
from fwemu.contracts.drivers import SdkDriver

DEFAULT_CHECKOUT = "../shared/cookbook"
_RESUMABLE = ("TRAINING", "TRAINING_LORA")


def checkout_path(path: str | None) -> Path:
    """PATH, else $FWEMU_COOKBOOK, else ../shared/cookbook; must hold training/utils/checkpoints.py."""
    p = Path(path or os.environ.get("FWEMU_COOKBOOK") or DEFAULT_CHECKOUT).expanduser().resolve()
    if not (p / "training" / "utils" / "checkpoints.py").is_file():
        raise DriverSpecError(f"--driver cookbook: {p} is not a cookbook checkout (no training/utils/checkpoints.py)")
    return p


def import_cookbook(path: Path):
    """The checkout's `training` package (put first on sys.path); refuses one imported from elsewhere."""
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    try:
        ckpts = importlib.import_module("training.utils.checkpoints")
        client = importlib.import_module("training.utils.client")
    except Exception as exc:  # noqa: BLE001 - one line for the CLI (exit 2)
        raise DriverSpecError(f"--driver cookbook: importing the cookbook from {path} failed: {type(exc).__name__}: "
                              f"{exc} (run from the compat venv: scripts/compat_env.sh)") from exc
    where = Path(ckpts.__file__).resolve()
    if path not in where.parents:
        raise DriverSpecError(f"--driver cookbook: `training` is already imported from {where}, not {path}")
    return ckpts, client


def cookbook_driver_class(path: str | None, base: type | None = None) -> type:
    """`base` (default CookbookDriver) bound to the checkout at `path` (else $FWEMU_COOKBOOK, ../shared/cookbook)."""
    base = base or CookbookDriver
    root = checkout_path(path)
    ckpts, client = import_cookbook(root)
    return type(base.__name__, (base,), {"checkout": str(root), "checkpoints_class": ckpts.TrainingCheckpoints,
                                         "client_class": client.ReconnectableClient})


def load_script(root: Path, relpath: str):
    """A cookbook script (not a package module) loaded once from its file in the checkout."""
    path = root / relpath
    name = f"fwemu_cookbook_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or not path.is_file():
        raise DriverSpecError(f"--driver: {path} is not in the cookbook checkout")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module   # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


def _short(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1]


def _kind(row: dict) -> str:
    return str(row.get("checkpointType") or "").removeprefix("CHECKPOINT_TYPE_")


class _RecordingClient:
    """The cookbook's client, noting which checkpoint names it resolved and loaded (read-only view)."""

    def __init__(self, inner):
        self._inner = inner
        self.resolved: list[tuple[str, str | None]] = []
        self.loaded: list[str] = []

    def resolve_checkpoint_path(self, name: str, source_job_id: str | None = None) -> str:
        self.resolved.append((name, source_job_id))
        return self._inner.resolve_checkpoint_path(name, source_job_id=source_job_id)

    def load_state_with_optimizer(self, path: str, *a, **kw):
        self.loaded.append(path)
        return self._inner.load_state_with_optimizer(path, *a, **kw)

    def load_state(self, path: str, *a, **kw):
        self.loaded.append(path)
        return self._inner.load_state(path, *a, **kw)

    def __getattr__(self, item: str) -> Any:
        return getattr(self._inner, item)


class CookbookCheckpoints:
    """The cookbook's TrainingCheckpoints behind the interface the contract machine calls."""

    # What the cookbook's code does where correct checkpoint logics differ (contracts/driver_api.py
    # POLICIES); the suite holds it to exactly these, and the report lists them.
    save_policy = "resave"           # save(): save_state(name) always; sampler skipped if `name` is promotable
    resume_policy = "newest-row"     # _latest_resumable(): newest row; _read_dataloader() -> 0 without an entry
    init_policy = "init-first"       # resume(): init_from_checkpoint is priority 1, before the run's own rows
    warning_loggers = ("training.utils.checkpoints",)     # where "Corrupt dataloader.json" is logged

    def __init__(self, inner, client: _RecordingClient | None, lister, job_id: str, log_path: str):
        self.inner = inner
        self.client = client
        self.lister = lister
        self.job_id = job_id
        self.log_path = log_path

    def _rows(self) -> dict[str, dict]:
        return {_short(r["name"]): r for r in self.lister.list_checkpoints(self.job_id)}

    def save(self, name: str, resumable: bool, promotable: bool, data_consumed: int | None = None) -> SaveResult:
        before = self._rows() if (resumable or promotable) else {}
        self.inner.save(name, resumable=resumable, promotable=promotable, data_consumed=data_consumed)
        after = self._rows()
        fresh = [(s, r) for s, r in after.items()
                 if s not in before or before[s].get("createTime") != r.get("createTime")]
        skipped: list[str] = []
        dcp = sampler = None
        if resumable:
            new = [s for s, r in fresh if _kind(r) in _RESUMABLE]
            dcp = new[-1] if new else None
            if dcp is None:
                skipped.append("dcp")
        if promotable:
            new = [s for s, r in fresh if r.get("promotable") is True]
            if new:
                sampler = new[-1]
            else:
                skipped.append("sampler")
                same = [s for s, r in after.items() if r.get("promotable") is True and matches_logical_name(s, name)]
                sampler = same[-1] if same else None
        return SaveResult(dcp, sampler, tuple(skipped))

    def dataloader_entry(self, name: str) -> tuple[int | None, int] | None:
        """The cookbook's bookkeeping for `name` as (step, data_consumed): its file holds only
        data_consumed ({name: int}); the step resume will restore comes from the name."""
        value = self._dataloader().get(name)
        if not isinstance(value, int):
            return None
        return importlib.import_module("training.utils.checkpoints")._step_from_name(name), value

    def _dataloader(self) -> dict:
        try:
            return json.loads((Path(self.log_path) / "dataloader.json").read_text())
        except (OSError, ValueError):
            return {}

    def resume(self, init_from_checkpoint: str | None = None,
               warm_start_from_adapter: str | None = None) -> ResumeInfo | None:
        if self.client is not None:
            self.client.resolved.clear()
        try:
            info = self.inner.resume(init_from_checkpoint=init_from_checkpoint,
                                     warm_start_from_adapter=warm_start_from_adapter)
        except (ValueError, FwError):
            raise
        except Exception as exc:  # noqa: BLE001 - the interface's error types, the cookbook's message
            if type(exc).__name__ == "UserConfigError":
                raise ValueError(str(exc)) from exc
            raise FwError(f"{type(exc).__name__}: {exc}") from exc
        if info is None:
            return None
        loaded = self.client.resolved[-1][0] if self.client is not None and self.client.resolved else None
        restored = loaded is not None and info.source_job_id in (None, self.job_id) and loaded in self._dataloader()
        return ResumeInfo(info.step, info.data_consumed, info.source_job_id, loaded,
                          data_consumed_restored=restored)

    def promote_latest(self, output_model_id: str, base_model: str):
        calls = []
        real = self.lister.promote_checkpoint

        def promote(*a, **kw):
            calls.append(kw)
            return real(*a, **kw)

        self.inner._fw_client = SimpleNamespace(list_checkpoints=self.lister.list_checkpoints,
                                                promote_checkpoint=promote)
        try:
            raw = self.inner.promote_latest(output_model_id, base_model)
        except RuntimeError as exc:
            if calls:
                raise FwError(f"{type(exc).__name__}: {exc}") from exc
            raise NoPromotableCheckpointError(str(exc)) from exc   # refused before promoting anything
        finally:
            self.inner._fw_client = self.lister
        return SimpleNamespace(raw=dict(raw))


class CookbookDriver(SdkDriver):
    """The SDK driver with the cookbook's TrainingCheckpoints (R1, R4, R6, R7 through the cookbook's logic)."""

    name = "cookbook"
    caps = frozenset({CHECKPOINTS})
    checkout: str = ""
    checkpoints_class: type | None = None     # training.utils.checkpoints.TrainingCheckpoints, or a subclass
    client_class: type | None = None          # training.utils.client.ReconnectableClient
    # The cookbook waits for the control plane to list a save; a local emulator lists it at once.
    waits = dict(save_appear_timeout_s=5.0, save_stabilize_s=0.0, save_poll_s=0.01)

    @classmethod
    def bind(cls) -> type:
        """Named as module:Class: this class on the checkout of $FWEMU_COOKBOOK (else ../shared/cookbook)."""
        return cls if cls.checkpoints_class is not None else cookbook_driver_class(None, cls)

    def checkpoints(self, handle, job_id: str, log_path: str, lora_rank: int) -> CookbookCheckpoints:
        client = None
        if handle is not None:
            client = _RecordingClient(self.client_class.from_training_client(
                handle.tc, base_model=self.target.base_model, lora_rank=lora_rank, job_id=job_id,
                service=handle.service))
        inner = self.checkpoints_class(client, self.mgr, trainer_id=job_id, log_path=log_path,
                                       lora_rank=lora_rank, **self.waits)
        return CookbookCheckpoints(inner, client, self.mgr, job_id, log_path)


# ----------------------------------------------------------------------------- the promote scripts
class _ScriptPromote(CookbookCheckpoints):
    """promote_latest resolved by a function of one of the cookbook's tool scripts, then promoted
    by its 4-segment name; the rest is the cookbook's TrainingCheckpoints."""

    resolve = None   # (lister, job_id) -> the chosen row's full name

    def promote_latest(self, output_model_id: str, base_model: str):
        try:
            full_name = type(self).resolve(self.lister, self.job_id)
        except (SystemExit, TimeoutError) as exc:   # the scripts' "nothing promotable" exits
            raise NoPromotableCheckpointError(str(exc)) from exc
        raw = self.lister.promote_checkpoint(name=full_name, output_model_id=output_model_id, base_model=base_model)
        return SimpleNamespace(raw=dict(raw))


class _ScriptDriver(CookbookDriver):
    script = ""

    @staticmethod
    def pick(module, lister, job_id: str) -> str:
        raise NotImplementedError

    def checkpoints(self, handle, job_id: str, log_path: str, lora_rank: int) -> CookbookCheckpoints:
        base = super().checkpoints(handle, job_id, log_path, lora_rank)
        module = load_script(Path(self.checkout), self.script)
        pick = type(self).pick
        cls = type("ScriptPromote", (_ScriptPromote,), {"resolve": staticmethod(
            lambda lister, job: pick(module, lister, job))})
        return cls(base.inner, base.client, base.lister, base.job_id, base.log_path)


class PromoteScriptDriver(_ScriptDriver):
    """promote_latest = training/examples/tools/promote_checkpoint.py `_resolve_checkpoint(checkpoint_name=None)`."""

    name = "cookbook-promote-script"
    script = "training/examples/tools/promote_checkpoint.py"

    @staticmethod
    def pick(module, lister, job_id: str) -> str:
        return module._resolve_checkpoint(lister, job_id, checkpoint_name=None).full_name


class MergeScriptDriver(_ScriptDriver):
    """promote_latest = merge_lora_and_promote.py `_resolve_merged_checkpoint` with the empty name prefix
    (every row matches it, so its sort alone picks the row); its 15 s poll sleep is cut to 10 ms and
    its timeout to 0.2 s (a local emulator lists a save at once)."""

    name = "cookbook-merge-script"
    script = "training/examples/tools/merge_lora_and_promote.py"

    @staticmethod
    def pick(module, lister, job_id: str) -> str:
        import time

        module.time = SimpleNamespace(time=time.time, sleep=lambda s: time.sleep(min(s, 0.01)))
        return module._resolve_merged_checkpoint(lister, job_id, "", 0.2)["name"]
