"""Emulator settings: one dataclass, filled from flags or the environment.

Kept free of FastAPI so tests and the CLI build settings the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEV_API_KEY = "fw-local-dev"
DEV_ACCOUNT = "local"

# Test-only switches that break exactly one rule each, so the contract suite can prove it
# catches a broken target (docs/invariants.md F2). Never enable them outside such a test.
BREAK_SWITCHES = {
    "arc-v2-promotable": "ARC_V2 rows are listed as promotable (breaks K2)",
    "newest-first": "checkpoint rows are listed newest first (breaks L1)",
    "trust-writer-label": "a row's type is taken from the writer's label, not the bytes (breaks K1)",
    "promote-any": "promotion of a non-promotable row is accepted (breaks K3)",
    "drop-optimizer-state": "DCP saves silently drop the optimizer state (breaks R1/R2)",
    "lora-delta-merged": "LoRA delta sampler saves are written as merged full weights (breaks K4)",
}

# Behaviours of the real service that users want to reproduce locally (README: Quirks).
QUIRKS = {
    "mixed-precision-timestamps": "createTime alternates between whole seconds and microseconds",
    "rename-dcp-saves": "LoRA save_state stores the DCP checkpoint under another name than the caller's",
    "slow-operations": "async promotion operations finish only after N polls (quirk_operation_polls)",
    "listing-delay": "new rows appear in listings only after quirk_listing_delay_s seconds",
    "list-failures": "every other checkpoint listing answers 503 UNAVAILABLE",
}


def parse_api_keys(text: str) -> dict[str, str]:
    """Parse "k1=a1,k2=a2" into {key: account}; raises ValueError on a malformed pair."""
    keys: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, account = pair.partition("=")
        if not sep or not key or not account:
            raise ValueError(f"api key mapping {pair!r} is not KEY=ACCOUNT")
        keys[key] = account
    return keys


def default_api_keys() -> dict[str, str]:
    env = os.environ.get("FWEMU_API_KEYS")
    if env:
        return parse_api_keys(env)
    return {os.environ.get("FIREWORKS_API_KEY") or DEV_API_KEY: DEV_ACCOUNT}


def _ranks_from_env() -> int:
    from fwemu.emulator.trainer.rank_group import ranks_from_env  # no torch: stdlib only at import

    return ranks_from_env()


def _split(name: str) -> frozenset[str]:
    return frozenset(filter(None, (s.strip() for s in os.environ.get(name, "").split(","))))


@dataclass
class Settings:
    data_dir: Path | None = None            # None: in-memory SQLite + a temporary blob dir
    api_keys: dict[str, str] = field(default_factory=default_api_keys)
    # CREATING -> PENDING -> RUNNING over this long; 0: a new job is RUNNING at once, so the SDK's
    # first poll sees it ready and create_and_wait never sleeps its 5 s poll interval (docs/wire.md A.4)
    startup_delay_s: float = 0.0
    retention_days: float = 30.0             # deleted jobs keep their checkpoints this long
    max_import_bytes: int = 64 << 30
    max_import_files: int = 10_000
    max_control_plane_body_bytes: int = 1 << 20
    max_gateway_body_bytes: int = 64 << 20
    # fsync every published blob and commit SQLite with synchronous=FULL: survives power loss.
    # Off by default: every write is still atomic and survives a crash (or SIGKILL) of the emulator.
    fsync: bool = field(default_factory=lambda: os.environ.get("FWEMU_FSYNC", "") not in ("", "0"))
    allow_path_import: bool = True           # checkpoints:import by sourcePath for a local same-user client
    quirks: frozenset[str] = field(default_factory=lambda: _split("FWEMU_QUIRKS"))
    breaks: frozenset[str] = field(default_factory=lambda: _split("FWEMU_BREAK"))
    quirk_operation_polls: int = 3
    quirk_listing_delay_s: float = 1.0
    future_long_poll_s: float = 5.0          # retrieve_future waits this long before try_again
    seq_gap_timeout_s: float = 30.0          # a missing seq_id fails the requests held behind it
    # fault plan (emulator.faults): JSON text or a JSON file path; default env FWEMU_FAULT_PLAN
    fault_plan: str | None = field(default_factory=lambda: os.environ.get("FWEMU_FAULT_PLAN") or None)
    # processes per trainer model (docs/multirank.md): 1 = the one-process trainer; N > 1 runs
    # FSDP2 over N ranks; default env FWEMU_TRAINER_RANKS. trainer_precision bf16: CUDA only.
    trainer_ranks: int = field(default_factory=lambda: _ranks_from_env())
    trainer_precision: str = field(default_factory=lambda: os.environ.get("FWEMU_TRAINER_PRECISION") or "fp32")

    def __post_init__(self) -> None:
        if self.data_dir is not None:
            self.data_dir = Path(self.data_dir)
        unknown = (set(self.quirks) - set(QUIRKS)) | (set(self.breaks) - set(BREAK_SWITCHES))
        if unknown:
            raise ValueError(f"unknown quirk or break switch: {', '.join(sorted(unknown))}")
        self.quirks = frozenset(self.quirks)
        if isinstance(self.trainer_ranks, bool) or not isinstance(self.trainer_ranks, int) or self.trainer_ranks < 1:
            raise ValueError(f"trainer_ranks must be an int >= 1, got {self.trainer_ranks!r}")
        if self.trainer_precision not in ("fp32", "bf16"):
            raise ValueError(f"trainer_precision must be fp32 or bf16, got {self.trainer_precision!r}")
        self.breaks = frozenset(self.breaks)
