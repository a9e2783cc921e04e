"""Why a stored directory has its kind (or none): what the inspector read, and the rule that decided.

The store keeps the verdict (kind or reason, details); the explain view runs the inspector once
more on the stored directory with a read trace, so the page shows every file it listed (lstat
only), every byte range it read, and the deciding file and rule. The inspector reads headers and
metadata only, so this costs what a listing's re-check costs. `deciding_rule` is pure.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fwemu.emulator.inspect import Kind, Verdict

# classify / reader load on first use, as in emulator.inspect: `fwemu serve` start-up stays lean

_ACCEPT_RULES = {
    Kind.TRAINING: (".metadata", "DCP family: the safe-unpickled .metadata holds model.* tensors and optimizer "
                                 "state (exp_avg / exp_avg_sq), and no trainable tensor is a LoRA tensor"),
    Kind.TRAINING_LORA: (".metadata", "DCP family: the safe-unpickled .metadata holds model.* tensors and "
                                      "optimizer state, and every trainable tensor is a LoRA tensor "
                                      "(lora_A / lora_B)"),
    Kind.INFERENCE_LORA: ("adapter_config.json", "PEFT family: adapter_config.json says peft_type LORA with a "
                                                 "positive r, and adapter_model.safetensors pairs every lora_A "
                                                 "with a lora_B of that rank"),
    Kind.INFERENCE_BASE: ("config.json", "Hugging Face family: config.json names a model_type, the safetensors "
                                         "weights hold tensors, none is a LoRA tensor, and there is no ARC_V2 "
                                         "manifest (delta.json)"),
    Kind.INFERENCE_ARC_V2: ("delta.json", "Hugging Face family with an ARC_V2 manifest: delta.json declares "
                                          "format arc_v2 with a base_identity, and every shard is marked "
                                          "delta_format xor-v1 in its safetensors __metadata__"),
}


def deciding_rule(verdict: Verdict) -> tuple[str, str]:
    """(file, rule) that decided the verdict: the offending file and broken rule of a rejection,
    or the file and rule that make an accepted directory its kind."""
    if verdict.kind is None:
        reason = verdict.reason or ""
        file = verdict.file or reason.partition(": ")[0] or "."
        rule = reason.partition(": ")[2] or reason
        return file, rule
    return _ACCEPT_RULES[verdict.kind]


@dataclass(frozen=True)
class ListedFile:
    name: str
    size: int
    family: str       # "DCP", "PEFT", "Hugging Face", "extra", "unexpected" or "not a file"
    bytes_read: int   # bytes of this file the inspector read


@dataclass(frozen=True)
class Explanation:
    exists: bool
    verdict: Verdict | None
    files: list[ListedFile] = field(default_factory=list)
    reads: list[tuple[str, int, int]] = field(default_factory=list)   # (file, offset, bytes)
    deciding_file: str = ""
    deciding_rule: str = ""

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


def explain_dir(path: Path) -> Explanation:
    """Inspect `path` again with a read trace; a missing directory says so instead of raising."""
    import fwemu.emulator.inspect as inspector
    from fwemu.emulator.inspect.classify import family_of
    from fwemu.emulator.inspect.reader import list_entries

    if not os.path.isdir(path) or os.path.islink(path):
        return Explanation(exists=False, verdict=None, deciding_file=".", deciding_rule="the directory is missing")
    trace: list[tuple[str, int, int]] = []
    verdict = inspector.inspect_checkpoint(path, trace)
    per_file: dict[str, int] = {}
    for name, _offset, n in trace:
        per_file[name] = per_file.get(name, 0) + n
    try:
        entries = list_entries(path, cap=10_000)
    except OSError:
        entries = []
    files = []
    for e in entries:
        fam = (family_of(e.name) or "unexpected") if e.is_regular else "not a file"
        files.append(ListedFile(e.name, e.size, fam, per_file.get(e.name, 0)))
    file, rule = deciding_rule(verdict)
    return Explanation(True, verdict, files, trace, file, rule)


def dir_size(path: Path) -> int | None:
    """Total bytes of a checkpoint directory's entries (lstat only); None when it cannot be listed."""
    from fwemu.emulator.inspect.reader import list_entries

    try:
        return sum(e.size for e in list_entries(path, cap=10_000))
    except OSError:
        return None
