"""List a trainer job's checkpoints: name, kind, promotable, created (oldest first, as served)."""

from __future__ import annotations

import argparse
import json

from fwemu.client.commands._common import add_connection_args, control_plane, human_errors, table
from fwemu.client.control_plane import CheckpointRow
from fwemu.client.timeparse import format_rfc3339


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", metavar="JOB", help="trainer job id")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    add_connection_args(parser)


def render(rows: list[CheckpointRow]) -> str:
    if not rows:
        return "(no checkpoints)"
    return table([[r.short_name, r.kind, "yes" if r.promotable else "no",
                   format_rfc3339(r.create_time) if r.create_time else str(r.raw.get("createTime", "?"))]
                  for r in rows], ["NAME", "KIND", "PROMOTABLE", "CREATED"])


@human_errors
def run(args: argparse.Namespace) -> int:
    with control_plane(args) as cp:
        rows = cp.list_checkpoints(args.job)
    if args.json:
        print(json.dumps([{"name": r.name, "kind": r.kind, "promotable": r.promotable,
                           "createTime": r.raw.get("createTime")} for r in rows], indent=2))
    else:
        print(render(rows))
    return 0
