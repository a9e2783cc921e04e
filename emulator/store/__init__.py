"""Metadata (SQLite) and blob directories, with atomic checkpoint and model commits."""

from fwemu.emulator.store.clock import Clock, rfc3339
from fwemu.emulator.store.store import (
    AlreadyExists,
    CheckpointRow,
    Job,
    NotFound,
    Rejected,
    Store,
    StoreError,
    decode_page_token,
)

__all__ = [
    "AlreadyExists", "CheckpointRow", "Clock", "Job", "NotFound", "Rejected", "Store", "StoreError",
    "decode_page_token", "rfc3339",
]
