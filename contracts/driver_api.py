"""The driver interface: what the contract suite needs from a client under test, and how a team plugs in its own.

`fwemu contracts --driver module:Class` imports `Class` from `module` (importable from the current
directory or PYTHONPATH) and drives the suite through it. A driver is a class with:

* `name: str` and `caps: frozenset[str]` (a subset of `CAPS`): the rules the suite may drive
  through it. A rule needing a capability the driver lacks is disabled and its invariants show
  as "not exercised" with the reason - never as passed.
* `__init__(target, account)`; `reconnect()` (after an emulator restart); `close()`.
* `create_job(lora_rank, job_id) -> job_id` (RUNNING when it returns); `delete_job(job_id)`.
* `connect(job_id, lora_rank) -> handle`: a training client with `train_step(datums) -> metrics`,
  `probe() -> tuple` (`fwemu.contracts.data.probe_key` of the forward logprobs on `data.PROBE`),
  `save_state(name) -> name`, `save_sampler(name, checkpoint_type | None) -> name`,
  `load_state(name, optimizer: bool)`, `abandon()` (drop without closing) and `close()`.
* `promote(full_checkpoint_name, model_id) -> dict` (the model resource as the server sent it).
* with `CHECKPOINTS`: `checkpoints(handle | None, job_id, log_path, lora_rank)` returning the
  checkpoint logic under test, with our client's `TrainingCheckpoints` surface:
  `save(name, resumable, promotable, data_consumed) -> SaveResult`,
  `resume(init_from_checkpoint=None, warm_start_from_adapter=None) -> ResumeInfo | None` and
  `promote_latest(model_id, base_model) -> Model` (raising `NoPromotableCheckpointError`).
* with `FAULTS`: `plan` (a `contracts.faults.FaultPlan` its transport obeys) and `cp` (our
  `ControlPlaneClient`). With `CRASH`: `handle.abandon()` really leaves the session behind.

Where correct checkpoint logics legitimately differ, its checkpoints object declares which
behaviour it promises (`POLICIES`; an undeclared one is our client's, the first value of each), and
the suite holds it to exactly that: a declared policy changes what is expected, never whether the
loaded weights, step, data position and rows are checked. The report lists the declared ones.

* `resume_policy`: `"newest-committed"` resumes the newest resumable row that has a
  dataloader.json entry (a newer row without one is a save whose bookkeeping was lost); `"newest-row"`
  resumes the newest resumable row and restores data_consumed 0 when it has no entry (the cookbook).
* `init_policy`: `"own-rows-first"` ignores init_from_checkpoint once the run has its own resumable
  row; `"init-first"` always loads init_from_checkpoint when it is set (the cookbook's documented
  priority: a rerun with the same config starts from the init row again, at step 0).
* `save_policy`: `"free-name"` reuses a row known to hold the current weights, else saves under the
  first free name `name`, `name-1`, ...; `"resave"` always writes the DCP row under `name` (the new
  row replaces a listed one, L4) and skips the sampler write when a promotable row of that logical
  name is already listed, whatever weights it holds (the cookbook).

The easy way to write one is to subclass a built-in driver and swap the part under test, e.g.
`OurDriver` with another `checkpoints_class` (see tests/contracts/test_driver_api.py).
"""

from __future__ import annotations

import importlib
import re

CHECKPOINTS = "checkpoints"   # TrainingCheckpoints rules (R1 auto-resume, R4-R7)
FAULTS = "faults"             # wire faults (F1)
CRASH = "crash"               # drop a client without closing it
CAPS = frozenset({CHECKPOINTS, FAULTS, CRASH})

POLICIES = {
    "resume_policy": ("newest-committed", "newest-row"),
    "init_policy": ("own-rows-first", "init-first"),
    "save_policy": ("free-name", "resave"),
}

REQUIRED = ("create_job", "connect", "promote", "delete_job", "reconnect", "close")
_SPEC_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class DriverSpecError(ValueError):
    """A `--driver` value that names no usable driver; its message is one line (the CLI exits 2)."""


def load_driver_class(spec: str) -> type:
    """`"package.module:Class"` -> the class, checked against the interface above."""
    if not _SPEC_RE.match(spec or ""):
        raise DriverSpecError(f"--driver {spec!r}: expected client, sdk, cookbook[=PATH] or module:Class")
    module_name, _, attr = spec.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is a bad spec, said in one line
        raise DriverSpecError(f"--driver {spec!r}: cannot import {module_name}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")) from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise DriverSpecError(f"--driver {spec!r}: {module_name} has no attribute {attr}")
        obj = getattr(obj, part)
    return check_driver_class(obj, spec)


def check_driver_class(cls, spec: str) -> type:
    if not isinstance(cls, type):
        raise DriverSpecError(f"--driver {spec!r} is a {type(cls).__name__}, not a driver class")
    missing = [m for m in REQUIRED if not callable(getattr(cls, m, None))]
    caps = getattr(cls, "caps", None)
    if missing:
        raise DriverSpecError(f"--driver {spec!r}: {cls.__name__} lacks {', '.join(missing)} "
                              "(see the driver interface in contracts/README.md)")
    if not isinstance(caps, (set, frozenset)) or not set(caps) <= CAPS:
        raise DriverSpecError(f"--driver {spec!r}: {cls.__name__}.caps must be a frozenset of "
                              f"{sorted(CAPS)}, got {caps!r}")
    if CHECKPOINTS in caps and not callable(getattr(cls, "checkpoints", None)):
        raise DriverSpecError(f"--driver {spec!r}: {cls.__name__} claims {CHECKPOINTS!r} but has no checkpoints()")
    return cls


def policy(checkpoints, name: str) -> str:
    """The `name` policy a checkpoints object declares (its default when it declares none)."""
    allowed = POLICIES[name]
    value = getattr(checkpoints, name, None) or allowed[0]
    if value not in allowed:
        raise DriverSpecError(f"{type(checkpoints).__name__}.{name} = {value!r}: expected one of {list(allowed)}")
    return value

