"""Reading a resumable DCP checkpoint of any accepted layout into tensors for the stand-in model.

`TrainerModel.load_state` asks for exactly the flat keys `dcp_mapping.map_checkpoint` chose and
nothing else, so extras (schedulers, data loader state, RNG) are never read. Two safety points:

* the layout comes from `.metadata` through the inspector's restricted unpickler, never from
  torch's `pickle.load`, so even this second look at the file runs no code;
* DCP stores non-tensor values (param-group fields) as pickles and its default planner reads
  them with `torch.load(weights_only=False)`, i.e. arbitrary code from an uploaded data file.
  `SafeBytesPlanner` reads them with `weights_only=True` (plain numbers, strings, tuples only).
"""

from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint.api import CheckpointException

from fwemu.emulator.inspect import dcp_layout, dcp_metadata
from fwemu.emulator.inspect.names import DCP_METADATA, MAX_DCP_METADATA


class LoadFailed(Exception):
    """The checkpoint could not be read; the message is the user-facing reason."""


class SafeBytesPlanner(DefaultLoadPlanner):
    """DefaultLoadPlanner on a flat dict of the checkpoint's own keys, whose non-tensor values
    are unpickled with torch's weights-only unpickler instead of plain pickle."""

    def __init__(self) -> None:
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self.refused: str | None = None   # the first entry whose pickle is more than plain values

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        fqn = read_item.dest_index.fqn
        try:
            self.state_dict[fqn] = torch.load(value, weights_only=True)
        except pickle.UnpicklingError:
            self.refused = self.refused or fqn
            raise


def read_layout(src: Path) -> dcp_layout.Layout:
    """The checkpoint's layout from its `.metadata`, read with the inspector's safe unpickler."""
    path = Path(src) / DCP_METADATA
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_DCP_METADATA + 1)
        if len(raw) > MAX_DCP_METADATA:
            raise LoadFailed(f"{DCP_METADATA} is over {MAX_DCP_METADATA} bytes")
        return dcp_layout.layout_of(dcp_metadata.validate(dcp_metadata.unpickle(raw)))
    except LoadFailed:
        raise
    except dcp_layout.LayoutError as exc:
        raise LoadFailed(f"not a resumable training state ({exc})") from None
    except Exception as exc:  # unsafe, malformed or unreadable metadata
        raise LoadFailed(f"unreadable {DCP_METADATA} ({type(exc).__name__}: {exc})") from None


def read_entries(src: Path, wanted: dict[str, Any], no_dist: bool = True) -> dict[str, Any]:
    """Fill `wanted` (flat key -> preallocated tensor, or None for a non-tensor) from `src`.

    With `no_dist=False` every rank of the default process group calls this together and its
    DTensors receive their own shards, whatever sharding the checkpoint was saved with."""
    planner = SafeBytesPlanner()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dcp.load(wanted, storage_reader=FileSystemReader(src), planner=planner, no_dist=no_dist)
    except (Exception, CheckpointException) as exc:  # CheckpointException is a BaseException
        if planner.refused:
            raise LoadFailed(f"entry {planner.refused} is a pickle of more than plain values (numbers, "
                             "strings, lists); it is never unpickled, since that would run its code") from None
        raise LoadFailed(f"its data files are truncated or corrupted ({_cause_line(exc)})") from None
    return wanted


def _cause_line(exc: BaseException) -> str:
    """DCP wraps per-rank tracebacks into its message; keep only the last line (the cause)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__
