"""The decision order of docs/checkpoints.md: file list, one family, then that family's checks.

1. File list: only regular files, flat (no links, no subdirectories), at most MAX_FILES;
   pickle weight files are refused by name; harmless extras are ignored; anything unexpected
   is refused.
2. Exactly one family (DCP / PEFT / Hugging Face) must be present; a mix is refused.
3-5. The family's own checks (families.py) give the kind or a rejection.
6. Every rejection names the file and the rule; nothing is a kind by default.

`inspect_checkpoint` never raises for bad content: every way a directory can be wrong ends in a
rejection `Verdict`. An unexpected internal error also ends in a rejection (fail closed), with a
reason that says so, so that a bug cannot make a directory some kind.
"""

from __future__ import annotations

import hashlib
import os
import stat

from . import families
from .kinds import Verdict
from .names import (
    ADAPTER_CONFIG, ADAPTER_WEIGHTS, DCP_DATA_RE, DCP_METADATA, DCP_SUFFIX, DELTA_MANIFEST,
    HARMLESS_EXTRAS, HF_CONFIG, HF_INDEX, PICKLE_SUFFIXES, SAFETENSORS_SUFFIX,
)
from .reader import CheckpointDir, Rejected, list_entries

FAMILIES = ("DCP", "PEFT", "Hugging Face")
CHECKS = {"DCP": families.check_dcp, "PEFT": families.check_peft, "Hugging Face": families.check_hf}
INTERNAL_ERROR = "internal inspector error"


def family_of(name: str) -> str | None:
    """The family a file name belongs to, "extra" for a harmless extra, None if unexpected."""
    if name == DCP_METADATA or DCP_DATA_RE.fullmatch(name):
        return "DCP"
    if name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        return "PEFT"
    if name in (HF_CONFIG, HF_INDEX, DELTA_MANIFEST) or (
            name.endswith(SAFETENSORS_SUFFIX) and not name.startswith(".")):
        return "Hugging Face"
    if name in HARMLESS_EXTRAS:
        return "extra"
    return None


def _check_file_list(d: CheckpointDir) -> dict[str, list[str]]:
    """Step 1 and 2: every entry a known regular file; returns family -> its files (sorted)."""
    entries = list(d.entries.values())
    if not entries:
        raise Rejected(".", "empty directory; no checkpoint files")
    for e in entries:  # links and subdirectories first: they are never looked into
        if stat.S_ISLNK(e.mode):
            raise Rejected(e.name, "is a symbolic link; a checkpoint holds regular files only "
                                   "and links are never followed")
        if stat.S_ISDIR(e.mode):
            raise Rejected(e.name, "is a subdirectory; a checkpoint directory is flat")
        if not e.is_regular:
            raise Rejected(e.name, "is not a regular file")
    for e in entries:
        if e.name.lower().endswith(PICKLE_SUFFIXES):
            raise Rejected(e.name, "pickle weight file; pickles run code when loaded, so they are "
                                   "never accepted",
                           "save the weights as safetensors (model.safetensors or "
                           "adapter_model.safetensors)")
    found: dict[str, list[str]] = {}
    for e in entries:
        fam = family_of(e.name)
        if fam is None:
            if e.name.endswith(DCP_SUFFIX):
                raise Rejected(e.name, "unexpected DCP data file name (expected __<rank>_<n>.distcp)")
            raise Rejected(e.name, "unexpected file; a checkpoint holds DCP, PEFT or Hugging Face "
                                   "files (plus tokenizer files, generation_config.json, README.md)")
        if fam != "extra":
            found.setdefault(fam, []).append(e.name)
    present = [f for f in FAMILIES if f in found]
    if not present:
        raise Rejected(".", f"no checkpoint files (expected {DCP_METADATA}, {ADAPTER_CONFIG} "
                            f"or {HF_CONFIG}); only extras are present")
    if len(present) > 1:
        first, second = present[0], present[1]
        raise Rejected(found[second][0], f"{second} files mixed with {first} files "
                                         f"({found[first][0]}); a checkpoint directory holds "
                                         "exactly one format")
    return found


def inspect_checkpoint(path: str | os.PathLike, trace: list | None = None) -> Verdict:
    """Classify the checkpoint directory at `path` from its bytes: a kind, or a precise rejection.

    Reads the file list, JSON configs, safetensors headers and DCP metadata only; never the
    tensor data. Never raises for bad content. With `trace` (a list), each read is appended to
    it as (file, offset, bytes) - the dashboard's explain view shows them.
    """
    d = None
    try:
        d = CheckpointDir(path, trace)
        found = _check_file_list(d)
        (family,) = found
        kind, details = CHECKS[family](d)
        return Verdict(kind=kind, reason=None, file=None, details=details, bytes_read=d.bytes_read)
    except Rejected as r:
        details = {"hint": r.hint} if r.hint else {}
        return Verdict(kind=None, reason=r.reason, file=r.file, details=details,
                       bytes_read=d.bytes_read if d else 0)
    except Exception as e:  # fail closed: a bug must never make a directory some kind
        return Verdict(kind=None, reason=f".: {INTERNAL_ERROR} ({type(e).__name__}: {e})", file=".",
                       details={}, bytes_read=d.bytes_read if d else 0)


def fingerprint(path: str | os.PathLike) -> str:
    """sha256 over the sorted (name, size, mtime_ns) of the directory's entries; reads no content.

    Cheap enough to key a classification cache on: a changed, added, removed or replaced file
    changes the fingerprint. Raises OSError if `path` cannot be listed.
    """
    h = hashlib.sha256()
    for e in list_entries(path):
        h.update(os.fsencode(e.name))
        h.update(b"\0%d\0%d\n" % (e.size, e.mtime_ns))
    return h.hexdigest()
