"""`{log_path}/dataloader.json`: the recipe state the server does not keep, per checkpoint name.

The control plane knows which checkpoints exist; only we know how far into the data each one was.
The file maps the name the control plane *lists* (which may differ from the name we asked for) to
`{"step", "data_consumed", "saved_at"}`, oldest first, capped at the newest `KEEP` entries.

A corrupt file must not stop a run, nor silently lose progress: it is moved aside and reported
loudly, and the run continues as if there were no bookkeeping.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from fwemu.client.fileio import atomic_write_json
from fwemu.client.timeparse import format_rfc3339

log = logging.getLogger(__name__)

FILE_NAME = "dataloader.json"
KEEP = 20


def step_from_name(name: str) -> int | None:
    """`step-12`, `step-12-<8hex suffix>`, `step-12-1` (a retried save), `step-12-1-<suffix>` -> 12;
    None for names that carry no step."""
    m = re.fullmatch(r"step-(\d+)(?:-\d{1,7})?(?:-[0-9a-f]{8})?", name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class DataloaderEntry:
    name: str
    step: int
    data_consumed: int
    saved_at: str | None = None


class DataloaderState:
    """Read and update dataloader.json under `log_path`."""

    def __init__(self, log_path: str | os.PathLike, keep: int = KEEP):
        self.path = Path(log_path) / FILE_NAME
        self.keep = keep

    def read(self) -> dict[str, DataloaderEntry]:
        """Entries by listed name, oldest first. Missing file -> {}; corrupt file -> {} + warning."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            return self._parse(json.loads(text))
        except (ValueError, TypeError) as exc:
            self._quarantine(str(exc))
            return {}

    def get(self, name: str) -> DataloaderEntry | None:
        return self.read().get(name)

    def record(self, name: str, step: int, data_consumed: int) -> DataloaderEntry:
        """Add or replace `name` as the newest entry, trim to `keep`, write atomically."""
        if step < 0 or data_consumed < 0:
            raise ValueError(f"step and data_consumed must be >= 0 (got {step}, {data_consumed})")
        entries = self.read()
        entries.pop(name, None)
        entry = DataloaderEntry(name, int(step), int(data_consumed), format_rfc3339(datetime.now(timezone.utc)))
        entries[name] = entry
        kept = list(entries.values())[-self.keep:]
        atomic_write_json(self.path, {
            e.name: {"step": e.step, "data_consumed": e.data_consumed, "saved_at": e.saved_at} for e in kept
        })
        return entry

    @staticmethod
    def _parse(raw: object) -> dict[str, DataloaderEntry]:
        if not isinstance(raw, dict):
            raise ValueError("top level is not an object")
        out: dict[str, DataloaderEntry] = {}
        for name, value in raw.items():
            if isinstance(value, int) and not isinstance(value, bool):
                # the plain `name -> data_consumed` form; the step can only come from the name
                step = step_from_name(name)
                if step is None:
                    raise ValueError(f"entry {name!r} has no step and its name carries none")
                out[name] = DataloaderEntry(name, step, value)
                continue
            if not isinstance(value, dict):
                raise ValueError(f"entry {name!r} is not an object")
            step, consumed = value.get("step"), value.get("data_consumed")
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (step, consumed)):
                raise ValueError(f"entry {name!r} needs non-negative integer step and data_consumed")
            saved_at = value.get("saved_at")
            out[name] = DataloaderEntry(name, step, consumed, saved_at if isinstance(saved_at, str) else None)
        return out

    def _quarantine(self, why: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        aside = self.path.with_name(f"{FILE_NAME}.corrupt-{stamp}")
        try:
            os.replace(self.path, aside)
            where = f"moved to {aside}"
        except OSError as exc:
            where = f"could not be moved aside ({exc})"
        log.warning(
            "!! %s is corrupt (%s); it was %s. Starting its bookkeeping afresh: resume will use the "
            "control plane's checkpoints but cannot restore data_consumed for them.", self.path, why, where)
