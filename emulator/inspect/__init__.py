"""Checkpoint kind from bytes: pure Python, no torch, no HTTP.

    from fwemu.emulator.inspect import Kind, Verdict, inspect_checkpoint, fingerprint

`inspect_checkpoint(path)` reads a checkpoint directory's file list, JSON configs, safetensors
headers and DCP metadata (through a safe unpickler) and returns a `Verdict`: exactly one `Kind`,
or a rejection naming the file and the rule broken. See docs/checkpoints.md and
docs/internals.md. Modules: kinds (Kind, Verdict), names (file vocabulary and caps), reader
(counted, bounded reads), safetensors_header, dcp_metadata, families (per-family checks),
classify (the decision order), examples (writes example checkpoints; imports torch lazily), cli.
"""

from .kinds import Kind, Verdict

__all__ = ["Kind", "Verdict", "inspect_checkpoint", "fingerprint"]


def __getattr__(name: str):
    """inspect_checkpoint and fingerprint load the readers (~5 ms) on first use, not at `fwemu serve`
    start-up: the server needs only Kind until the first checkpoint is written or listed."""
    if name in ("inspect_checkpoint", "fingerprint"):
        from . import classify

        globals().update(inspect_checkpoint=classify.inspect_checkpoint, fingerprint=classify.fingerprint)
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
