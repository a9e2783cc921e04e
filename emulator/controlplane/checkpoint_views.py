"""How a stored checkpoint row looks on the wire, and the quirks and break switches that bend it.

Kept apart from the routes so the gateway, the admin API and the contract suite render rows the
same way the listing does.
"""

from __future__ import annotations

from fwemu.emulator import rules
from fwemu.emulator.inspect import Kind
from fwemu.emulator.settings import Settings
from fwemu.emulator.store import CheckpointRow, rfc3339


def listed_kind(row: CheckpointRow, settings: Settings) -> Kind | None:
    """The kind the listing reports: the inspector's verdict (or the writer's label under a break switch)."""
    if "trust-writer-label" in settings.breaks and row.claimed_kind:
        try:
            return Kind.parse(row.claimed_kind)
        except ValueError:
            return row.kind
    return row.kind


def listed_promotable(kind: Kind | None, settings: Settings) -> bool:
    if kind is None:
        return False
    if "arc-v2-promotable" in settings.breaks and kind is Kind.INFERENCE_ARC_V2:
        return True
    return rules.is_promotable(kind)


def checkpoint_json(row: CheckpointRow, settings: Settings) -> dict:
    kind = listed_kind(row, settings)
    return {
        "name": f"accounts/{row.account}/rlorTrainerJobs/{row.job_id}/checkpoints/{row.name}",
        "createTime": rfc3339(row.create_us),
        "updateTime": rfc3339(row.update_us),
        "checkpointType": kind.wire if kind else "CHECKPOINT_TYPE_UNSPECIFIED",
        "promotable": listed_promotable(kind, settings),
    }
