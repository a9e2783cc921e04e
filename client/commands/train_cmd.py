"""Run the sft_loop recipe from a TOML config (`--config`) and/or flags (flags win).

TOML keys are Config's field names; `dcp_save_interval` may sit at top level or in a
`[weight_sync]` table; a relative `dataset` path is read relative to the TOML file. Rerun the
same command after an interruption and it resumes. Example: examples/sft/run.toml.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib
from pathlib import Path

from fwemu.client.commands._common import add_connection_args, connection, human_errors

# flag -> (Config field, type)
_FLAGS = {
    "log_path": str, "base_model": str, "dataset": str, "tokenizer_model": str, "output_model_id": str,
    "lora_rank": int, "learning_rate": float, "epochs": int, "batch_size": int, "max_seq_len": int,
    "dcp_save_interval": int, "init_from_checkpoint": str, "trainer_job_id": str, "max_steps": int, "seed": int,
}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE.toml", help="TOML file with Config fields")
    for name, typ in _FLAGS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=typ, default=None)
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    add_connection_args(parser)


def read_config(path: Path) -> dict:
    """The TOML table; a relative `dataset` is taken relative to the file, so examples run from anywhere."""
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"--config {path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    dataset = values.get("dataset")
    if isinstance(dataset, str) and not Path(dataset).is_absolute():
        values["dataset"] = str(path.parent / dataset)
    return values


def build_config(args: argparse.Namespace):
    """Config from the TOML file overlaid with the flags that were given."""
    from fwemu.client.recipes.sft_loop import Config, WeightSyncConfig

    values: dict = {}
    if args.config:
        values = read_config(Path(args.config))
    ws = values.pop("weight_sync", {}) or {}
    if not isinstance(ws, dict):
        raise ValueError("[weight_sync] must be a table")
    if "dcp_save_interval" in values:
        ws["dcp_save_interval"] = values.pop("dcp_save_interval")
    for name in _FLAGS:
        value = getattr(args, name)
        if value is None:
            continue
        if name == "dcp_save_interval":
            ws["dcp_save_interval"] = value
        else:
            values[name] = value
    known = {f.name for f in dataclasses.fields(Config)} - {"weight_sync", "transport"}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown config key(s): {', '.join(sorted(unknown))}")
    unknown_ws = set(ws) - {f.name for f in dataclasses.fields(WeightSyncConfig)}
    if unknown_ws:
        raise ValueError(f"unknown [weight_sync] key(s): {', '.join(sorted(unknown_ws))}")
    missing = [k for k in ("log_path", "base_model", "dataset") if not values.get(k)]
    if missing:
        raise ValueError(f"missing required setting(s): {', '.join(missing)} (in --config or as flags)")
    base_url, api_key = connection(args)
    values.setdefault("base_url", base_url)
    values.setdefault("api_key", api_key)
    if args.no_progress:
        values["progress"] = False
    return Config(weight_sync=WeightSyncConfig(**ws), **values)


@human_errors
def run(args: argparse.Namespace) -> int:
    from fwemu.client.recipes.sft_loop import main

    cfg = build_config(args)
    try:
        summary = main(cfg)
    except KeyboardInterrupt:
        return 130  # the recipe already printed where the run can resume
    print(json.dumps(summary, indent=2, default=str))
    return 0
