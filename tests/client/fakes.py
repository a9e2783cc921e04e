"""In-memory stand-ins for the control plane and one trainer model, to test TrainingCheckpoints'
decisions in isolation (the integration tests run the same scenarios against the emulator)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from fwemu.client.control_plane import CheckpointRow, Model
from fwemu.client.errors import FwApiError
from fwemu.client.trainer_client import SamplerSave

ACCOUNT = "acct"
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


def wire_row(job: str, name: str, kind: str, create_time: str, promotable: bool | None = None) -> dict:
    if promotable is None:
        promotable = kind in ("INFERENCE_BASE", "INFERENCE_LORA")
    return {"name": f"accounts/{ACCOUNT}/rlorTrainerJobs/{job}/checkpoints/{name}",
            "checkpointType": f"CHECKPOINT_TYPE_{kind}", "promotable": promotable, "createTime": create_time}


@dataclass
class FakeControlPlane:
    """Rows per job, listed oldest first; `fail_listing` makes list_checkpoints raise like a dead server."""

    rows: dict[str, list[dict]] = field(default_factory=dict)
    fail_listing: bool = False
    promoted: list[tuple[str, str, str]] = field(default_factory=list)
    clock: datetime = T0
    whole_second_stamps: bool = False   # alternate precisions like the real service

    def add(self, job: str, name: str, kind: str) -> dict:
        self.clock += timedelta(milliseconds=300)
        n = len(self.rows.get(job, []))
        if self.whole_second_stamps and n % 2 == 0:
            stamp = self.clock.strftime("%Y-%m-%dT%H:%M:%SZ")
        else:
            stamp = self.clock.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        row = wire_row(job, name, kind, stamp)
        self.rows.setdefault(job, []).append(row)
        return row

    def list_checkpoints(self, job_id: str, page_size: int = 200) -> list[CheckpointRow]:
        if self.fail_listing:
            raise FwApiError(503, 14, "UNAVAILABLE", "listing is down")
        return [CheckpointRow.from_wire(r) for r in self.rows.get(job_id, [])]

    def promote_checkpoint(self, name: str, output_model_id: str, base_model: str) -> Model:
        self.promoted.append((name, output_model_id, base_model))
        return Model.from_wire({"name": f"accounts/{ACCOUNT}/models/{output_model_id}", "state": "READY",
                                "kind": "HF_PEFT_ADDON"})


@dataclass
class FakeTrainer:
    """Writes rows into `cp` the way the service does: DCP under the caller's name (or `rename`),
    sampler saves under `<name>-<suffix>`."""

    cp: FakeControlPlane
    job: str
    lora: bool = True
    session_suffix: str = "0badcafe"
    rename: dict[str, str] = field(default_factory=dict)     # caller name -> stored name
    report_renamed_path: bool = False                         # False: echo the caller's name (a lying trainer)
    calls: list[tuple] = field(default_factory=list)

    @property
    def last_seq_id(self) -> int:
        return len(self.calls)

    def train_step(self) -> None:
        self.calls.append(("optim_step",))

    def save_state(self, name: str) -> str:
        stored = self.rename.get(name, name)
        self.cp.add(self.job, stored, "TRAINING_LORA" if self.lora else "TRAINING")
        self.calls.append(("save_state", name))
        return stored if self.report_renamed_path else name

    def save_weights_for_sampler(self, name: str, checkpoint_type: str = "base") -> SamplerSave:
        snapshot = f"{name}-{self.session_suffix}"
        self.cp.add(self.job, snapshot, "INFERENCE_LORA" if self.lora else "INFERENCE_BASE")
        self.calls.append(("save_sampler", name, checkpoint_type))
        return SamplerSave(snapshot, snapshot)

    def load_state(self, path: str, optimizer: bool = True) -> None:
        self.calls.append(("load_state", path, optimizer))

    def load_adapter(self, path: str) -> None:
        self.calls.append(("load_adapter", path))
