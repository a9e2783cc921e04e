"""List the trainer jobs of your account: id, state, base model, LoRA rank, created (oldest first)."""

from __future__ import annotations

import argparse
import json

from fwemu.client.commands._common import add_connection_args, control_plane, human_errors, table
from fwemu.client.control_plane import TrainerJob


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    add_connection_args(parser)


def render(jobs: list[TrainerJob]) -> str:
    if not jobs:
        return "(no trainer jobs; `fwemu demo` or `fwemu train` creates one)"
    return table([[j.job_id, j.state, j.base_model or "?", str(j.lora_rank) if j.lora_rank else "-",
                   str(j.raw.get("createTime", "?"))] for j in jobs],
                 ["JOB", "STATE", "BASE MODEL", "LORA", "CREATED"])


@human_errors
def run(args: argparse.Namespace) -> int:
    with control_plane(args) as cp:
        jobs = cp.list_jobs()
    if args.json:
        print(json.dumps([{"name": j.name, "jobId": j.job_id, "state": j.state, "baseModel": j.base_model,
                           "loraRank": j.lora_rank, "createTime": j.raw.get("createTime")} for j in jobs], indent=2))
    else:
        print(render(jobs))
    return 0
