"""The harness's model of what the target must hold: jobs, rows, promoted models, weights lineage.

Pure bookkeeping, no I/O. The expectations are written from docs/invariants.md and docs/checkpoints.md
directly, not imported from the emulator's `rules.py`: an oracle that shares the code under
test would share its bugs.

Weights are tracked by *lineage*: where a model's weights started (`origin`: a fresh base for a
job's data stream, or another job's checkpoint) plus the exact data it was trained on, one
`(start, size)` pair per optimizer step. Two models with the same lineage must hold bitwise
equal weights, which is how R2 (interrupt + resume == straight run) is checked: the first time
the suite sees a lineage it records the probe logprobs; every later visit must match them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fwemu.contracts.invariants import PROMOTABLE, RESUMABLE

DATALOADER_KEEP = 20
_SUFFIX_RE = re.compile(r"^-[0-9a-f]{8}$")


def sampler_kind(lora: bool, checkpoint_type: str) -> tuple[str | None, str]:
    """(expected kind or None when the save must be refused, why) for a sampler save (docs/checkpoints.md)."""
    if lora:
        if checkpoint_type == "merged_base":
            return "INFERENCE_BASE", "LoRA merged_base: the adapter folded into full weights"
        return "INFERENCE_LORA", f"LoRA sampler save ({checkpoint_type}): always the full adapter"
    if checkpoint_type == "merged_base":
        return None, "merged_base on a full-parameter run has no adapter to fold"
    if checkpoint_type == "delta":
        return "INFERENCE_ARC_V2", "full-parameter delta against the job's newest base"
    return "INFERENCE_BASE", "full-parameter base"


def chain_type(lora: bool, base_saved: bool, explicit: str | None) -> str:
    """The weight-sync chain (SDK `resolve_next_checkpoint_type`): explicit wins; LoRA always base;
    full-parameter: base first, delta once a sampler save exists on this training client."""
    if explicit is not None:
        return explicit
    if lora:
        return "base"
    return "delta" if base_saved else "base"


def dcp_kind(lora: bool) -> str:
    return "TRAINING_LORA" if lora else "TRAINING"


def matches_logical(short: str, name: str) -> bool:
    return short == name or (short.startswith(name) and bool(_SUFFIX_RE.match(short[len(name):])))


Lineage = tuple  # (origin, data_seed, ((start, size), ...))


@dataclass
class RowModel:
    name: str
    kind: str                      # what the stored bytes are
    how: str                       # how it was made, for messages
    sampler_expect: str | None = None   # K4: the kind the chain rule demands (None: not a sampler save)
    step: int | None = None
    data_consumed: int | None = None
    lineage: Lineage | None = None  # resumable rows: the weights they hold
    probe: tuple | None = None
    first_listed: str | None = None     # createTime the first time it was listed
    certain: bool = True            # False while a fault left its existence open
    seq: int = 0                    # creation order (== createTime order on a correct server)
    rank: int | None = None         # LoRA rank of the writer of the bytes (0: full weights)
    base_name: str | None = None    # sampler saves: the name passed to the save (the path adds a suffix)
    replaces: str | None = None     # L4: createTime the replaced row of this name was listed with ("" unknown)

    @property
    def promotable(self) -> bool:
        return self.kind in PROMOTABLE

    @property
    def resumable(self) -> bool:
        return self.kind in RESUMABLE


@dataclass
class JobModel:
    job_id: str
    lora_rank: int
    log_path: str
    index: int
    rows: dict[str, RowModel] = field(default_factory=dict)
    deleted: bool = False
    deleted_age_s: float = 0.0      # L5: how far the clock moved since the delete
    purged: bool = False
    handle: Any = None
    sampler_saved: bool = False     # chain state of the live training client
    step: int = 0
    data_consumed: int = 0
    origin: tuple = ()
    steps: tuple = ()               # ((start, size), ...) trained since origin
    lost: tuple = ()                # steps trained before the last crash that resume rolled back
    init_ref: str | None = None     # "job:name" this job was initialised from
    dataloader: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (step, dc), oldest first
    ck: Any = None                  # the TrainingCheckpoints bound to the live client
    current: set[str] = field(default_factory=set)  # rows TrainingCheckpoints knows hold the trainer's weights
    current_valid: bool = False     # false once any trainer call outside TrainingCheckpoints moved the sequence

    def __repr__(self) -> str:  # what Hypothesis prints for a job in a failing program
        kind = f"LoRA r={self.lora_rank}" if self.lora_rank else "full"
        return f"<job {self.index}: {self.job_id} ({kind})>"

    @property
    def lora(self) -> bool:
        return self.lora_rank > 0

    @property
    def lineage(self) -> Lineage:
        return (self.origin, self.job_id, self.steps)

    def certain_rows(self) -> list[RowModel]:
        return sorted((r for r in self.rows.values() if r.certain), key=lambda r: r.seq)

    def record_entry(self, name: str, step: int, dc: int) -> None:
        """Mirror of dataloader.json: re-recording moves an entry to the newest end; keep the newest 20."""
        self.dataloader.pop(name, None)
        self.dataloader[name] = (step, dc)
        while len(self.dataloader) > DATALOADER_KEEP:
            self.dataloader.pop(next(iter(self.dataloader)))

    def newest_base(self) -> RowModel | None:
        bases = [r for r in self.certain_rows() if r.kind == "INFERENCE_BASE"]
        return bases[-1] if bases else None

    def touched(self) -> None:
        """A trainer call outside TrainingCheckpoints: its notion of "rows with these weights" lapses."""
        self.current_valid = False

    def note_state(self, name: str, *, replace: bool = False) -> None:
        """Mirror of TrainingCheckpoints._note_state after a save or load it made."""
        if replace or not self.current_valid:
            self.current = set()
        self.current.add(name)
        self.current_valid = True

    def holds_current(self) -> set[str]:
        return set(self.current) if self.current_valid else set()

    def free_name(self, name: str) -> str:
        """TrainingCheckpoints._free_name: `name`, else `name-1`, `name-2`... past every listed row."""
        taken = {r.name for r in self.certain_rows()}
        if name not in taken:
            return name
        n = 1
        while f"{name}-{n}" in taken:
            n += 1
        return f"{name}-{n}"

    def existing_dcp_for(self, name: str, step: int) -> RowModel | None:
        """What TrainingCheckpoints.save treats as "already saved": a resumable row of that name, or
        one whose dataloader.json entry has the same step (a renamed save)."""
        resumable = [r for r in self.certain_rows() if r.resumable]
        for r in resumable:
            if r.name == name:
                return r
        for r in reversed(resumable):
            entry = self.dataloader.get(r.name)
            if entry is not None and entry[0] == step:
                return r
        return None

    def same_name_promotable(self, name: str) -> list[RowModel]:
        return [r for r in reversed(self.certain_rows()) if r.promotable and matches_logical(r.name, name)]


@dataclass
class ModelRecord:
    model_id: str
    job_id: str
    row: str
    kind: str
    record: dict
    files: dict[str, bytes] | None = None   # the model's files when it was promoted (targets with BLOBS)


@dataclass
class World:
    """Everything the harness has done to one account in one example."""

    tag: str
    jobs: list[JobModel] = field(default_factory=list)
    models: dict[str, ModelRecord] = field(default_factory=dict)
    references: dict[Lineage, tuple] = field(default_factory=dict)  # lineage -> probe logprobs
    seq: int = 0
    counter: int = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.tag}-{self.counter}"

    def add_row(self, job: JobModel, row: RowModel) -> RowModel:
        row.seq = self.next_seq()
        if row.rank is None:
            row.rank = job.lora_rank
        job.rows[row.name] = row
        return row

    def newest_promotable(self, job: JobModel) -> RowModel | None:
        rows = [r for r in job.certain_rows() if r.promotable]
        return rows[-1] if rows else None

    def expected_resume(self, job: JobModel, policy: str = "newest-committed") -> tuple[RowModel | None, bool, str]:
        """(row automatic resume must load, whether dataloader.json knows it, why), per R1 and the
        checkpoint logic's declared resume policy: "newest-committed", the newest resumable row by
        time that dataloader.json has an entry for, else the newest resumable row (step from its
        name, data_consumed unknown); "newest-row", the newest resumable row, its entry if any (else
        data_consumed 0); no resumable row: a fresh start."""
        resumable = [r for r in job.certain_rows() if r.resumable]
        committed = [r for r in resumable if r.name in job.dataloader]
        if policy == "newest-row" and resumable:
            known = resumable[-1].name in job.dataloader
            return resumable[-1], known, ("newest resumable row" + ("" if known else
                                          " (no dataloader.json entry: data_consumed 0)"))
        if committed:
            return committed[-1], True, "newest resumable row with a dataloader.json entry"
        if resumable:
            return resumable[-1], False, "newest resumable row (no dataloader.json entry)"
        return None, False, "no resumable row"
