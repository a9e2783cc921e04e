"""Checkpoint kind from bytes: pure Python, no torch, no HTTP.

    from emulator.inspect import Kind, Verdict, inspect_checkpoint, fingerprint

`inspect_checkpoint(path)` reads a checkpoint directory's file list, JSON configs, safetensors
headers and DCP metadata (through a safe unpickler) and returns a `Verdict`: exactly one `Kind`,
or a rejection naming the file and the rule broken. See the design's CHECKPOINTS.md and
docs/internals.md. Modules: kinds (Kind, Verdict), names (file vocabulary and caps), reader
(counted, bounded reads), safetensors_header, dcp_metadata, families (per-family checks),
classify (the decision order), examples (writes example checkpoints; imports torch lazily), cli.
"""

from .classify import fingerprint, inspect_checkpoint
from .kinds import Kind, Verdict

__all__ = ["Kind", "Verdict", "inspect_checkpoint", "fingerprint"]
