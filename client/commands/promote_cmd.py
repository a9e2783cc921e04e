"""Promote a trainer job's checkpoint to a model (default: the newest promotable row)."""

from __future__ import annotations

import argparse
import sys

from fwemu.client.checkpoints import NoPromotableCheckpointError, describe_kinds, matches_logical_name, newest_promotable
from fwemu.client.commands._common import add_connection_args, control_plane, human_errors
from fwemu.client.errors import FwApiError, FwError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--job-id", required=True, help="trainer job id")
    parser.add_argument("--output-model-id", required=True, help="id of the new model (a-z, 0-9, '-')")
    parser.add_argument("--base-model", required=True, help="the job's base model, e.g. accounts/fireworks/models/qwen3-8b")
    parser.add_argument("--checkpoint-name", default=None,
                        help="promote this row (its listed name, or the name it was saved as without the "
                             "8-hex session suffix) instead of the newest promotable one")
    add_connection_args(parser)


@human_errors
def run(args: argparse.Namespace) -> int:
    with control_plane(args) as cp:
        rows = cp.list_checkpoints(args.job_id)
        if args.checkpoint_name:
            matches = [r for r in rows if matches_logical_name(r.short_name, args.checkpoint_name)]
            if not matches:
                names = ", ".join(r.short_name for r in rows) or "none"
                raise FwError(f"job {args.job_id} has no checkpoint {args.checkpoint_name!r} (rows: {names})")
            row = next((r for r in reversed(matches) if r.promotable), matches[-1])
        else:
            row = newest_promotable(rows)
            if row is None:
                raise NoPromotableCheckpointError(
                    f"job {args.job_id} has no promotable checkpoint (kinds seen: {describe_kinds(rows)}); "
                    "nothing was promoted")
        try:
            model = cp.promote_checkpoint(row.name, args.output_model_id, args.base_model)
        except FwApiError as exc:
            print(f"error: promotion of {row.short_name} ({row.kind}) was refused: {exc.message}", file=sys.stderr)
            return 1
    peft = f", LoRA r={model.peft_rank} on {model.peft_base_model}" if model.peft_base_model else ""
    print(f"promoted {row.short_name} ({row.kind}) -> {model.name}  [{model.kind}, {model.state}{peft}]")
    return 0
