"""The vocabulary of the inspector: the five checkpoint kinds and the verdict on a directory.

`Kind` values are the bare names; the wire uses the `CHECKPOINT_TYPE_`-prefixed form, and both
spellings exist in the wild, so `Kind.parse` accepts either. A `Verdict` is what
`inspect_checkpoint` returns: exactly one kind, or a rejection naming the file and the rule
(`kind is None`). There is no "unknown" kind on purpose: nothing is a kind by default.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

WIRE_PREFIX = "CHECKPOINT_TYPE_"


class Kind(str, enum.Enum):
    """A checkpoint kind; the value is the bare name (`"INFERENCE_BASE"`)."""

    TRAINING = "TRAINING"
    TRAINING_LORA = "TRAINING_LORA"
    INFERENCE_BASE = "INFERENCE_BASE"
    INFERENCE_LORA = "INFERENCE_LORA"
    INFERENCE_ARC_V2 = "INFERENCE_ARC_V2"

    def __str__(self) -> str:  # f"{kind}" and str(kind) give the bare name, as the value does
        return self.value

    @property
    def wire(self) -> str:
        """The spelling the wire uses: `CHECKPOINT_TYPE_<NAME>`."""
        return WIRE_PREFIX + self.value

    @classmethod
    def parse(cls, s: "str | Kind") -> "Kind":
        """Accept `INFERENCE_BASE` and `CHECKPOINT_TYPE_INFERENCE_BASE` (and a Kind itself).

        Raises ValueError for anything else, `CHECKPOINT_TYPE_UNSPECIFIED` included: a row
        without a real kind must not silently become one.
        """
        if isinstance(s, Kind):
            return s
        if not isinstance(s, str):
            raise ValueError(f"not a checkpoint kind: {s!r}")
        name = s[len(WIRE_PREFIX):] if s.startswith(WIRE_PREFIX) else s
        try:
            return cls(name)
        except ValueError:
            raise ValueError(f"not a checkpoint kind: {s!r}") from None


@dataclass(frozen=True)
class Verdict:
    """The inspector's answer for one directory.

    kind:       the kind, or None when the directory was rejected.
    reason:     for a rejection, `"<file>: <rule broken>"`; None when accepted.
    file:       for a rejection, the offending file's name relative to the directory
                (`"."` for the directory itself); None when accepted.
    details:    JSON-safe facts (see docs/internals.md); a rejection may carry `hint`, a
                sentence saying what to do instead.
    bytes_read: every byte read from disk to reach the verdict (headers and metadata only).
    """

    kind: Kind | None
    reason: str | None = None
    file: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    bytes_read: int = 0

    @property
    def ok(self) -> bool:
        """True when the directory is a checkpoint of some kind."""
        return self.kind is not None
