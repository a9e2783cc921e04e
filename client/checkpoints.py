"""Save, resume and promote a training run, with the control plane as the source of truth.

Mirrors the cookbook's TrainingCheckpoints (docs/internals.md, "How the cookbook drives
checkpoints") and fixes the bugs known in the wild, each pinned by a regression test:

* rows are ordered by *parsed* createTime, never by the timestamp string (mixed precisions);
* skip-if-exists recognises sampler rows whatever 8-hex session suffix they carry, and DCP rows
  stored under another name for the same step; and it only skips when that row provably holds the
  trainer's current weights (a row left by an earlier attempt may not: then the save is written
  under a free name instead of being silently replaced by stale weights);
* a DCP save the trainer stored under another name is found in the listing, and dataloader.json
  is keyed by that listed name (so resume finds data_consumed instead of resetting it to 0);
* a listing failure never turns into a silent fresh start: it raises CheckpointListingError;
* promote_latest with nothing promotable names the job and the kinds it saw, and promotes nothing.

The recipe owns the other two fixes (no duplicate optimizer step on resume, checkpoint N never
containing batch N+1): it calls save() only after step N's optim_step has completed.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from fwemu.client.control_plane import CheckpointRow, ControlPlaneClient, Model, sort_newest_first
from fwemu.client.dataloader_state import DataloaderEntry, DataloaderState, step_from_name
from fwemu.client.errors import FwError, TrainerRequestError
from fwemu.client.trainer_client import TrainingModel, cross_job_ref, validate_checkpoint_ref

log = logging.getLogger(__name__)

_SUFFIX = re.compile(r"^-[0-9a-f]{8}$")


class CheckpointListingError(FwError):
    """The control plane could not list a job's checkpoints, so we refuse to guess."""


class NoPromotableCheckpointError(FwError):
    """promote_latest found no promotable row; nothing was promoted."""


@dataclass(frozen=True)
class ResumeInfo:
    """Where a run continues. `data_consumed_restored` is False when dataloader.json had no entry for
    the checkpoint (data_consumed is then 0 and the caller may derive it from the step)."""

    step: int
    data_consumed: int
    source_job_id: str | None
    checkpoint_name: str | None = None
    data_consumed_restored: bool = True


@dataclass(frozen=True)
class SaveResult:
    dcp_name: str | None            # the resumable row's listed name (None: not resumable)
    sampler_name: str | None        # the promotable row's listed name (None: not promotable)
    skipped: tuple[str, ...] = ()   # "dcp" / "sampler" when a row for this step already existed


def matches_logical_name(short_name: str, name: str) -> bool:
    """True when `short_name` is `name` itself or `name` plus an 8-hex session suffix."""
    return short_name == name or (short_name.startswith(name) and bool(_SUFFIX.match(short_name[len(name):])))


def newest_promotable(rows: list[CheckpointRow]) -> CheckpointRow | None:
    ordered = sort_newest_first([r for r in rows if r.promotable])
    return ordered[0] if ordered else None


def describe_kinds(rows: list[CheckpointRow]) -> str:
    """`TRAINING_LORA x2, INFERENCE_ARC_V2 x1`, or `no rows at all`."""
    counts = Counter(r.kind for r in rows)
    return ", ".join(f"{kind} x{n}" for kind, n in counts.most_common()) or "no rows at all"


class TrainingCheckpoints:
    """Checkpoint orchestration for one trainer job and one local `log_path`.

    `trainer` is the live TrainingModel; `control_plane` lists and promotes. After a save the
    listing is polled (every `poll_s`, up to `appear_timeout_s`) until the new row shows, because
    a real control plane may list a fresh save a little later.
    """

    def __init__(self, trainer: TrainingModel, control_plane: ControlPlaneClient, trainer_id: str,
                 log_path: str, lora_rank: int = 0, *, appear_timeout_s: float = 30.0, poll_s: float = 0.25,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        self.trainer = trainer
        self.control_plane = control_plane
        self.trainer_id = trainer_id
        self.log_path = log_path
        self.lora_rank = lora_rank
        self.dataloader = DataloaderState(log_path)
        self.appear_timeout_s = appear_timeout_s
        self.poll_s = poll_s
        self._sleep = sleep
        self._clock = clock
        # Listed rows known to hold the trainer's current weights; valid while the model's seq_id
        # has not moved since (any forward_backward/optim_step/load invalidates it).
        self._state_rows: set[str] = set()
        self._state_seq: int | None = None

    def _current_state_rows(self) -> set[str]:
        return self._state_rows if self._state_seq == self.trainer.last_seq_id else set()

    def _note_state(self, row_name: str, seq_before: int, *, replace: bool = False) -> None:
        """Record that `row_name` holds the state the trainer has now (after the call that began at `seq_before`)."""
        if replace or self._state_seq != seq_before:
            self._state_rows = set()
        self._state_rows.add(row_name)
        self._state_seq = self.trainer.last_seq_id

    # -- listing -----------------------------------------------------------------------------
    def list_rows(self, purpose: str) -> list[CheckpointRow]:
        """The job's rows; any failure (after the client's retries) is a CheckpointListingError."""
        try:
            return self.control_plane.list_checkpoints(self.trainer_id)
        except (FwError, ValueError) as exc:
            raise CheckpointListingError(
                f"could not list the checkpoints of trainer job {self.trainer_id} ({purpose}): {exc}. "
                "Refusing to continue: guessing here could restart training from step 0 or save over "
                "existing progress. Fix the connection and rerun with the same log_path to pick up "
                "where the run stopped."
            ) from exc

    def _existing_dcp_row(self, rows: list[CheckpointRow], name: str, step: int | None) -> CheckpointRow | None:
        """A resumable row for this save: listed under `name`, or under another name that
        dataloader.json already maps to the same step (a renamed save of an earlier attempt)."""
        resumable = [r for r in rows if r.resumable]
        for row in resumable:
            if row.short_name == name:
                return row
        if step is not None:
            entries = self.dataloader.read()
            for row in sort_newest_first(resumable):
                entry = entries.get(row.short_name)
                if entry is not None and entry.step == step:
                    return row
        return None

    # -- save --------------------------------------------------------------------------------
    def save(self, name: str, resumable: bool, promotable: bool, data_consumed: int | None = None,
             *, step: int | None = None) -> SaveResult:
        """Save `name` as a resumable DCP checkpoint and/or a promotable sampler checkpoint.

        `step` defaults to the number in `step-N`; with `data_consumed` it is recorded in
        dataloader.json under the listed DCP name. A row that already exists for this save is
        reused rather than written twice (a rerun after the final save, for instance).
        """
        if not (resumable or promotable):
            raise ValueError("save() needs resumable=True or promotable=True")
        validate_checkpoint_ref(name)
        step = step if step is not None else step_from_name(name)
        if resumable and data_consumed is not None and step is None:
            raise ValueError(f"cannot tell the step of {name!r}: pass step=")
        before = self.list_rows(f"before saving {name}")
        current = self._current_state_rows()
        skipped: list[str] = []
        dcp_name = sampler_name = None

        if resumable:
            existing = self._existing_dcp_row(before, name, step)
            if existing is not None and existing.short_name in current:
                log.info("resumable checkpoint for %s already listed as %s with these weights; not saving it again",
                         name, existing.short_name)
                dcp_name = existing.short_name
                skipped.append("dcp")
            else:
                save_as = self._free_name(name, before)
                seq_before = self.trainer.last_seq_id
                path, save_as, refused = self._save_state_under_free_name(save_as)
                # names refused as existing belong to earlier saves: never mistake them for this one
                dcp_name = self._listed_dcp_name(path, save_as, {r.short_name for r in before} | refused)
                self._note_state(dcp_name, seq_before)
            if data_consumed is not None:
                self.dataloader.record(dcp_name, step, data_consumed)

        if promotable:
            same_name = [r for r in sort_newest_first(before) if r.promotable and matches_logical_name(r.short_name, name)]
            # a sampler row of this name holds the current weights if we wrote it since the last change,
            # or if it was saved together with the DCP row the trainer holds now (a rerun of a final save)
            existing = next((r for r in same_name if r.short_name in current or dcp_name in current), None)
            if existing is not None:
                log.info("promotable checkpoint for %s already listed as %s; not saving it again", name,
                         existing.short_name)
                sampler_name = existing.short_name
                skipped.append("sampler")
            else:
                seq_before = self.trainer.last_seq_id
                save_as = self._free_sampler_name(name, before)
                saved = self.trainer.save_weights_for_sampler(save_as, checkpoint_type="base")
                sampler_name = self._listed_sampler_name(saved.path, saved.snapshot_name, save_as)
                self._note_state(sampler_name, seq_before)
        return SaveResult(dcp_name, sampler_name, tuple(skipped))

    @staticmethod
    def _free_name(name: str, rows: list[CheckpointRow]) -> str:
        """`name`, or `name-1`, `name-2`... when a row of an earlier attempt already uses it."""
        taken = {r.short_name for r in rows}
        if name not in taken:
            return name
        n = 1
        while f"{name}-{n}" in taken:
            n += 1
        log.warning("checkpoint %s already exists from an earlier attempt and may hold other weights; "
                    "saving this one as %s-%d", name, name, n)
        return f"{name}-{n}"

    def _save_state_under_free_name(self, save_as: str, attempts: int = 20) -> tuple[str, str, set[str]]:
        """save_state, moving on to `name-1`, `name-2`... when the trainer already holds the name;
        returns (reported path, name used, names refused as existing).

        The listing can lag behind the trainer (a row saved just before, an earlier attempt whose
        answer was lost), so a name that looked free may not be: never overwrite, pick the next one.
        """
        base, refused = save_as, set()
        for n in range(1, attempts + 1):
            try:
                return self.trainer.save_state(save_as), save_as, refused
            except TrainerRequestError as exc:
                if exc.category != "user" or "already exists" not in exc.message:
                    raise
                refused.add(save_as)
                log.warning("checkpoint %s already exists on the trainer (the listing had not shown it yet); "
                            "saving this one as %s-%d", save_as, base, n)
                save_as = f"{base}-{n}"
        raise FwError(f"could not find a free checkpoint name after {base} ({attempts} tries)")

    def _free_sampler_name(self, name: str, rows: list[CheckpointRow]) -> str:
        """A logical name whose `<name>-<session suffix>` is not listed yet.

        The same training client saving `step-N` promotable twice (new weights in between) would
        otherwise send the same qualified name again and be refused as already existing.
        """
        suffix = getattr(self.trainer, "session_suffix", None)
        taken = {r.short_name for r in rows}
        candidate, n = name, 0
        while suffix and f"{candidate}-{suffix}" in taken:
            n += 1
            candidate = f"{name}-{n}"
        return candidate

    def _poll(self, what: str, find: Callable[[list[CheckpointRow]], CheckpointRow | None]) -> CheckpointRow | None:
        deadline = self._clock() + self.appear_timeout_s
        while True:
            found = find(self.list_rows(what))
            if found is not None or self._clock() >= deadline:
                return found
            self._sleep(self.poll_s)

    def _listed_dcp_name(self, path: str, name: str, before: set[str]) -> str:
        """The name the control plane lists for the DCP save just made.

        In order: the path the trainer reported, the caller's name, else the newest resumable row
        that was not listed before the save (a trainer that renamed the save).
        """
        def find(rows: list[CheckpointRow]) -> CheckpointRow | None:
            resumable = [r for r in rows if r.resumable]
            for wanted in (path, name):
                for row in resumable:
                    if row.short_name == wanted:
                        return row
            new = sort_newest_first([r for r in resumable if r.short_name not in before])
            if len(new) > 1:
                log.warning("several new resumable rows after saving %s (%s); using the newest",
                            name, ", ".join(r.short_name for r in new))
            return new[0] if new else None

        row = self._poll(f"after saving {name}", find)
        if row is None:
            log.warning("!! save_state(%r) reported path %r but no new resumable row was listed within %.0fs; "
                        "dataloader.json is keyed by %r, which resume will only find if the row appears",
                        name, path, self.appear_timeout_s, path)
            return path
        if row.short_name != name:
            log.info("trainer stored %s as %s; dataloader.json is keyed by the listed name", name, row.short_name)
        return row.short_name

    def _listed_sampler_name(self, path: str, snapshot: str, name: str) -> str:
        def find(rows: list[CheckpointRow]) -> CheckpointRow | None:
            for row in rows:
                if row.short_name in (path, snapshot):
                    return row
            return None

        row = self._poll(f"after the sampler save of {name}", find)
        if row is None:
            log.warning("!! sampler save %s (path %r) is not listed after %.0fs; promotion may not find it",
                        snapshot, path, self.appear_timeout_s)
            return path
        if not row.promotable:
            raise FwError(f"sampler save {row.short_name} is listed as {row.kind}, which is not promotable")
        return row.short_name

    # -- resume ------------------------------------------------------------------------------
    def resume(self, init_from_checkpoint: str | None = None,
               warm_start_from_adapter: str | None = None) -> ResumeInfo | None:
        """Load the state a run should continue from; None means a fresh start.

        * `init_from_checkpoint="job:name"`: this job -> restore weights, optimizer, step and
          data_consumed of that checkpoint; another job -> its weights via `cross_job://job/name`,
          step 0, data_consumed 0 (only while this job has no checkpoint of its own: after an
          interruption the run's own progress wins, or it would start over every time).
        * otherwise the newest resumable row by parsed createTime that dataloader.json knows.
        * `warm_start_from_adapter`: a PEFT adapter for a fresh LoRA run (not with init_from_checkpoint).
        """
        if init_from_checkpoint and warm_start_from_adapter:
            raise ValueError("init_from_checkpoint and warm_start_from_adapter are mutually exclusive")
        if warm_start_from_adapter and self.lora_rank <= 0:
            raise ValueError("warm_start_from_adapter needs lora_rank > 0")
        rows = self.list_rows("resume")
        if init_from_checkpoint:
            source_job, ckpt = _parse_init_ref(init_from_checkpoint)
            if source_job == self.trainer_id:
                return self._resume_same_job(rows, ckpt)
            own = self._auto_resume(rows)
            if own is not None:
                log.warning("init_from_checkpoint=%s ignored: this run already has its own checkpoint %s "
                            "(step %d) and continues from it", init_from_checkpoint, own.checkpoint_name, own.step)
                return own
            ref = cross_job_ref(source_job, ckpt)
            log.info("initialising weights from %s; step and data_consumed start at 0", ref)
            self.trainer.load_state(ref, optimizer=False)
            return ResumeInfo(0, 0, source_job, ckpt)
        info = self._auto_resume(rows)
        if info is not None:
            return info
        if warm_start_from_adapter:
            log.info("fresh start from adapter %s", warm_start_from_adapter)
            self.trainer.load_adapter(warm_start_from_adapter)
            return ResumeInfo(0, 0, None, None)
        log.info("no resumable checkpoint on job %s: starting at step 0", self.trainer_id)
        return None

    def _resume_same_job(self, rows: list[CheckpointRow], ckpt: str) -> ResumeInfo:
        listed = [r for r in rows if r.resumable]
        if not any(r.short_name == ckpt for r in listed):
            names = ", ".join(r.short_name for r in sort_newest_first(listed)) or "none"
            raise FwError(f"job {self.trainer_id} has no resumable checkpoint named {ckpt!r} "
                          f"(resumable rows: {names})")
        return self._load(ckpt, self.dataloader.read().get(ckpt))

    def _auto_resume(self, rows: list[CheckpointRow]) -> ResumeInfo | None:
        resumable = sort_newest_first([r for r in rows if r.resumable])
        if not resumable:
            return None
        entries = self.dataloader.read()
        committed = next((r for r in resumable if r.short_name in entries), None)
        if committed is None:
            return self._load(resumable[0].short_name, None)
        newer = resumable[:resumable.index(committed)]
        if newer:
            log.warning("!! newer checkpoint(s) %s have no dataloader.json entry (the run probably stopped "
                        "between the save and its bookkeeping); resuming from %s instead",
                        ", ".join(r.short_name for r in newer), committed.short_name)
        return self._load(committed.short_name, entries[committed.short_name])

    def _load(self, name: str, entry: DataloaderEntry | None) -> ResumeInfo:
        if entry is None:
            step = step_from_name(name)
            if step is None:
                raise FwError(f"checkpoint {name!r} has no dataloader.json entry and its name carries no step; "
                              f"resume it explicitly with init_from_checkpoint='{self.trainer_id}:<name>' "
                              "after restoring dataloader.json")
            log.warning("!! no dataloader.json entry for %s in %s: restoring weights, optimizer and step %d, "
                        "but data_consumed is unknown", name, self.dataloader.path, step)
        log.info("resuming from %s", name)
        seq_before = self.trainer.last_seq_id
        self.trainer.load_state(name, optimizer=True)
        self._note_state(name, seq_before, replace=True)
        if entry is None:
            return ResumeInfo(step, 0, self.trainer_id, name, data_consumed_restored=False)
        return ResumeInfo(entry.step, entry.data_consumed, self.trainer_id, name)

    # -- promote -----------------------------------------------------------------------------
    def promote_latest(self, output_model_id: str, base_model: str) -> Model:
        """Promote the newest promotable row (parsed createTime) by its 4-segment name."""
        rows = self.list_rows("promote")
        row = newest_promotable(rows)
        if row is None:
            raise NoPromotableCheckpointError(
                f"trainer job {self.trainer_id} has no promotable checkpoint (kinds seen: {describe_kinds(rows)}); "
                "save one with save(..., promotable=True) first. Nothing was promoted.")
        log.info("promoting %s -> %s", row.short_name, output_model_id)
        return self.control_plane.promote_checkpoint(row.name, output_model_id, base_model)


def _parse_init_ref(spec: str) -> tuple[str, str]:
    job, sep, name = spec.strip().partition(":")
    if not sep or not job or not name:
        raise ValueError(f"init_from_checkpoint must be '<job_id>:<checkpoint_name>', got {spec!r}")
    validate_checkpoint_ref(job)
    validate_checkpoint_ref(name)
    return job, name
