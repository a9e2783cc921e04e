"""`{log_path}/run.json`: which trainer job a log_path belongs to, so a rerun reattaches to it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from fwemu.client.fileio import atomic_write_json
from fwemu.client.timeparse import format_rfc3339


FILE_NAME = "run.json"


@dataclass(frozen=True)
class RunRecord:
    job_id: str
    base_model: str
    lora_rank: int
    created_at: str

    @classmethod
    def load(cls, log_path: str | Path) -> "RunRecord | None":
        path = Path(log_path) / FILE_NAME
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(str(raw["job_id"]), str(raw["base_model"]), int(raw["lora_rank"]), str(raw.get("created_at", "")))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is unreadable ({exc}); delete it to start a new job, or pass "
                             "trainer_job_id to reattach to the old one") from None

    @classmethod
    def create(cls, log_path: str | Path, job_id: str, base_model: str, lora_rank: int) -> "RunRecord":
        record = cls(job_id, base_model, lora_rank, format_rfc3339(datetime.now(timezone.utc)))
        atomic_write_json(Path(log_path) / FILE_NAME, asdict(record))
        return record
